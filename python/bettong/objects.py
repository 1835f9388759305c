"""Persistent objects: dataClay-style objects kept in a Bettong store.

    import bettong
    bettong.connect("127.0.0.1:7450")            # or $BETTONG_STORE

    class Car(bettong.Persistent):
        speed: float                              # annotated: persistent state
        plate: str

        @bettong.active
        def accelerate(self, dv):                 # runs in the store
            self.speed += dv
            return self.speed

    car = Car(); car.speed = 0.0; car.plate = "B-1"
    car.make_persistent(alias="mine")             # car is now a proxy
    car.accelerate(5.0)                           # a CALL to the master copy
    Car.get_by_alias("mine").speed                # a GET_FIELD

The contract is shared/specs/objects-api.md; the wire protocol src/store/sproto.h,
spoken by the C extension bettong._store.

What runs where
---------------
- A local (not yet persistent) object is a plain Python object: everything runs
  in-process, with no overhead.
- make_persistent() turns the object itself into a proxy: its class is switched to
  a generated subclass (same name, isinstance still holds) in which
    * every annotated field (of the class and its bases) is a remote field: reading
      it is a GET_FIELD, assigning it a SET_FIELD;
    * every @active method is a remote call (CALL): it runs in the store on the
      master copy, one call at a time per object, and is durable before it
      returns; an exception re-raises here with its type, message and the remote
      traceback (as __cause__), and the object is left as it was;
    * every other method (not @active), property and dunder runs locally, on the
      proxy, as dataClay does: its reads and writes of annotated fields are remote
      gets and sets (one request each, not atomic together), other attributes stay
      local to the proxy;
    * an attribute the class lacks raises AttributeError, as on a local object.
- Arguments and results are pickled (protocol 5; cloudpickle when they name
  __main__). A persistent object inside them travels as a reference: a proxy here,
  the live object in the store. A local (not yet persistent) Persistent object
  inside arguments, a field assignment or dc_update is made persistent first (as
  make_persistent does with the objects a state references) and travels as a
  reference too; afterwards it is a proxy.
- A proxy pickled for anything else (an executor's function or argument, a stream
  message) pickles as a reference and is usable after unpickling in another
  process: it connects lazily to $BETTONG_STORE ($BETTONG_STORE_SECRET, else
  $BETTONG_SECRET). connect() sets $BETTONG_STORE (and $BETTONG_STORE_SECRET) so
  that workers started afterwards find the store.

make_persistent, pipelines and durability
-----------------------------------------
With an alias, make_persistent() waits for the store's durable acknowledgement
and raises AliasTaken itself if the alias is taken (dataClay's contract), about
one fsync per call. Without an alias it is write-behind, and inside a pipeline
so is a call with an alias:

    with bettong.pipeline():                      # this thread, until the block ends
        for i, rec in enumerate(records):
            Rec(rec).make_persistent(alias=f"rec-{i}")   # queued, not waited for
    # here every call above is on disk, or AliasTaken/... was raised

BETTONG_PIPELINE=1 in the environment makes every thread of the process
pipeline as if its code ran inside pipeline() (for code that cannot be
changed, such as dataClay applications): a taken alias then raises at the next
sync point, not at the call.

Queued calls (the object is a proxy at once) are sent in order, in batched
PERSIST requests (one durable transaction each): once a batch holds 2000
objects or 4 MiB of state, about 20 ms after its first object, or at a sync
point.

Sync points wait until every call queued before them (by any thread) is on
disk, then raise the first failure: any request whose answer is used (a lookup
by alias -- that alias too -- or id, a call or a field read or write on a
proxy, add_alias, delete_alias, get_aliases, delete, dc_clone, dc_update, a
make_persistent with an alias outside a pipeline or with the backend_id of
another backend: those are waited for), reading obj.id, pickling a
proxy, flush(), leaving a pipeline() block, connect() and disconnect(), and
process exit (atexit; the failure is printed, nothing can raise there). When a
sync point returns, everything queued before it is on disk: a store killed with
SIGKILL right after loses none of it.

Failures: the store's state is always a prefix of the queued calls. The first
call that fails, and every call queued or made after it until the sync point,
are not applied: their objects turn back into local objects with their fields.
The sync point raises the store's error class (AliasTaken for a taken alias,
NotFound, else StoreError) with a message naming the call
("make_persistent(alias='rec-7') of a Rec failed: the alias 'rec-7' is taken.
... it and the 992 make_persistent calls made after it were not applied ...")
and the store's error as __cause__; it is raised once, and later calls work
again. A prefix, rather than "every other call": the store ends as the same
code would have left it without the pipeline (it would have stopped at the
exception), and no stored object can refer to an object whose creation failed.
A batch is one transaction, so finding the failing call stores the failed
batch again in halves (about 2 log2(2000) waited requests, only on failure).

Memory is bounded: one batch in flight and one filling; a make_persistent that
fills the next batch waits until the one in flight is acknowledged
(backpressure), so at most about 2 x (2000 objects or 4 MiB of state) are
queued whatever the rate.

Classes
-------
A class goes to the store (CLASS) the first time one of its objects is stored:
"module:qualname" (the store imports it when it can) and its code by value
(cloudpickle; the class's module is pickled by value with it unless something in
it does not pickle), so models defined in a script's __main__ or in a module the
store cannot import work without deploying anything. Its class id is a 64-bit
hash of that pickle: the same in every process that runs the same class source.
An object that comes back as a reference gets this process's class of the same
module and name when there is one (so isinstance holds), else the store's copy
(GET_CLASS).

Identity: a process has one proxy per stored object (a weak identity map), so
looking the same object up twice, or getting it back from a call, gives the same
proxy: `is` and == (identity, the default) say whether two proxies are the same
object.

Inside the store
----------------
`bettong store` imports this module too (model classes refer to it) and gives it
_bettong_instore (src/store/spy.c): there, an instance of a Persistent class made
during an active method's call becomes a persistent object of that store at once
(Persistent.__new__), and make_persistent, add_alias, get_aliases, get_by_alias
and get_by_id work on the store's own registry -- no network, in the call's one
commit (sproto.h).

Threads: each thread has its own connection to the store (opened on first use);
everything here may be used from any thread. A forked child opens its own. A
connection that the store closed while it was idle (the store restarted) is
replaced transparently; a request interrupted while waiting (Ctrl-C) drops its
connection, and the next request opens a new one.
"""

import atexit
import contextlib
import copy
import functools
import hashlib
import importlib
import io
import itertools
import os
import pickle
import pickletools
import sys
import threading
import time
import types
import warnings
import weakref

import cloudpickle

from .errors import BettongError, RemoteError, RemoteTraceback

try:
    from . import _store
except ImportError as e:  # pragma: no cover - reported when a store is used
    _store = None
    _IMPORT_ERROR = e

try:
    # Only inside `bettong store` (src/store/spy.c makes it): the store's own
    # registry, for code of model classes that runs there (see "Inside the store").
    import _bettong_instore as _instore
except ImportError:
    _instore = None

try:
    from .errors import AuthenticationError, ProtocolError, RefusedError
except ImportError:  # pragma: no cover
    ProtocolError = ConnectionError
    RefusedError = PermissionError
    AuthenticationError = PermissionError

__all__ = [
    "connect", "disconnect", "flush", "pipeline", "Persistent", "DataClayObject", "active",
    "activemethod", "NotFound", "DoesNotExist", "AliasTaken", "StoreError", "NotConnected",
    "RemoteError", "persistent_fields", "is_persistent", "StillReferenced", "NotAVersion",
    "unload",
    "dclayMethod",
    "replicas_of",
]

# ------------------------------------------------------------------ protocol numbers
# (src/store/sproto.h; also in bettong._store)
_CLASS, _PERSIST, _LOOKUP_ALIAS, _LOOKUP_ID, _CALL = 10, 11, 12, 13, 14
_GET_FIELD, _SET_FIELD, _GET_STATE, _UPDATE, _ADD_ALIAS = 15, 16, 17, 18, 19
_DELETE_ALIAS, _ALIASES, _DELETE, _GET_CLASS, _BACKENDS, _MOVE = 20, 21, 22, 23, 24, 25
_REPLICATE, _REPLICA_PUT, _REPLICA_DROP, _FORWARD, _UNLOAD = 26, 27, 28, 29, 30
_OK, _REF, _RAISED, _FAILED, _CLASS_BYTES, _BACKEND_LIST = 40, 41, 42, 43, 44, 45
_ERR_NOT_FOUND, _ERR_ALIAS_TAKEN, _ERR_NO_ATTRIBUTE = 1, 2, 3
_ERR_BAD_REQUEST, _ERR_UNKNOWN_CLASS, _ERR_INTERNAL = 4, 5, 6
_ERR_REFERENCED, _ERR_FORWARDED = 7, 8

_REF_TAG = "bettong.obj"   # persistent ids: (_REF_TAG, object_id, class_id)
_MAIN = b"__main__"

# Write-behind: a batch is sent once it holds this many objects or bytes, or this
# long after its first object.
_WB_MAX_OBJECTS = 2000
_WB_MAX_BYTES = 4 * 1024 * 1024
_WB_DELAY = 0.02


# ------------------------------------------------------------------ errors

class StoreError(BettongError):
    """The store could not do what was asked (storage failure, bad request, ...)."""


class NotFound(StoreError, LookupError):
    """No object with that alias or id (it was never stored, or was deleted)."""


DoesNotExist = NotFound


class AliasTaken(StoreError, ValueError):
    """The alias already names another object."""


class StillReferenced(StoreError):
    """delete() of an object that stored objects still refer to (the store refuses
    it: remove those references, or delete the objects holding them, first)."""


class NotAVersion(StoreError):
    """consolidate_version() of an object that is not a version (new_version()
    made none of it)."""


class NotConnected(StoreError):
    """No store configured: call bettong.connect(address) or set $BETTONG_STORE."""


def _failed(code, message):
    if code == _ERR_NOT_FOUND:
        return NotFound(message)
    if code == _ERR_ALIAS_TAKEN:
        return AliasTaken(message)
    if code == _ERR_NO_ATTRIBUTE:
        return AttributeError(message)
    if code == _ERR_BAD_REQUEST:
        return StoreError(f"the store refused the request: {message}")
    if code == _ERR_REFERENCED:
        return StillReferenced(message)
    return StoreError(message)


def _remote_exception(payload):
    """The exception to raise for a RAISED answer: pickled (exception or None,
    type name, message, traceback text)."""
    try:
        exc, type_name, message, tb = _loads(payload)
    except Exception as e:  # the exception's class is not importable here, ...
        return RemoteError("<unknown>", f"the remote exception could not be unpickled: {e!r}")
    if not isinstance(exc, BaseException):
        exc = RemoteError(type_name, message, tb)
    if tb:
        text = tb if tb.endswith("\n") else tb + "\n"
        exc.__cause__ = RemoteTraceback(f'\n"""\n{text}"""')
    return exc


def _answer_error(a):
    """The exception for an answer that is not the expected one."""
    t = a[0]
    if t == _FAILED:
        return _failed(a[2], a[3])
    if t == _RAISED:
        return _remote_exception(a[2])
    return ProtocolError(f"unexpected answer of type {t} from the store")


# ------------------------------------------------------------------ configuration
# and connections

_cfg_lock = threading.RLock()
_address = None          # "host:port" once configured
_secret = b""
_tls = threading.local()  # .c: this thread's connection
_registered = set()      # class ids this store has been sent (this session)
_attention = 0           # nonzero: write-behind objects unacknowledged, or an error


def _extension():
    if _store is None:
        raise ImportError(
            "bettong's store extension (bettong._store) is not built: run `make` in the "
            f"Bettong repository ({_IMPORT_ERROR})")
    return _store


def _env_secret():
    s = os.environ.get("BETTONG_STORE_SECRET")
    if s is None:
        s = os.environ.get("BETTONG_SECRET", "")
    return s


def _as_bytes(secret):
    if secret is None:
        return b""
    if isinstance(secret, str):
        return secret.encode("utf-8", "surrogateescape")
    return bytes(secret)


class Session:
    """What connect() returns: the store's address and name; close() disconnects."""

    def __init__(self, address, name):
        self.address = address
        self.name = name

    def close(self):
        disconnect()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return f"<bettong store {self.name!r} at {self.address}>"


def connect(address=None, secret=None):
    """Use the store at `address` ("host:port"; default $BETTONG_STORE) with
    `secret` (default $BETTONG_STORE_SECRET, else $BETTONG_SECRET) from now on, in
    every thread. Connects this thread at once (raising if the store cannot be
    reached or refuses us). Also sets $BETTONG_STORE (and $BETTONG_STORE_SECRET) so
    that processes started from here on (executor workers) use the same store."""
    global _address, _secret, _tls, _registered
    _extension()
    if address is None:
        address = os.environ.get("BETTONG_STORE")
        if not address:
            raise NotConnected("no store address: pass one to connect() or set BETTONG_STORE")
    if secret is None:
        secret = _env_secret()
    secret = _as_bytes(secret)
    if _address is not None and _attention:
        flush()
    _wb.drop_connection()
    with _cfg_lock:
        if address != _address or secret != _secret:
            _registered = set()
            _forget_directory()
        _address, _secret = address, secret
        _tls = threading.local()
        os.environ["BETTONG_STORE"] = address
        if secret:
            os.environ["BETTONG_STORE_SECRET"] = secret.decode("utf-8", "surrogateescape")
        else:
            os.environ.pop("BETTONG_STORE_SECRET", None)
    c = _get_conn()
    return Session(address, c.store_name)


def _forget_directory():
    global _home_id, _multi
    with _dir_lock:
        _backends.clear()
        _where.clear()
        _replicas.clear()
        _home_id = None
        _multi = False


def disconnect():
    """Send what make_persistent queued, then close this process's connections and
    forget the address (the next use connects again from $BETTONG_STORE)."""
    global _address, _secret, _tls
    try:
        if _address is not None and _attention:
            flush()
    finally:
        _wb.drop_connection()
        with _cfg_lock:
            old = _tls
            _tls = threading.local()
            _address, _secret = None, b""
        _forget_directory()
        c = getattr(old, "c", None)
        if c is not None:
            c.close()
        for c in getattr(old, "others", {}).values():
            c.close()


def _configured():
    global _address, _secret
    with _cfg_lock:
        if _address is None:
            addr = os.environ.get("BETTONG_STORE")
            if not addr:
                raise NotConnected(
                    "not connected to a store: call bettong.connect(address) or set "
                    "BETTONG_STORE")
            _address, _secret = addr, _as_bytes(_env_secret())
        return _address, _secret


def _client_name():
    return f"{os.path.basename(sys.argv[0] if sys.argv and sys.argv[0] else 'python')}[{os.getpid()}]"


def _get_conn():
    """This thread's connection, opened if needed (no write-behind check)."""
    c = getattr(_tls, "c", None)
    if c is not None:
        return c
    address, secret = _configured()
    tls = _tls
    c = _extension().Connection(address, secret, _client_name())
    if _home_id is None:
        _load_directory(c)
    tls.c = c
    return c


def _drop_conn(c):
    """Forget a connection that failed (the next request opens a new one)."""
    if getattr(_tls, "c", None) is c:
        try:
            del _tls.c
        except AttributeError:
            pass
    c.close()


def _conn_slow():
    """The connection, after the write-behind queue was acknowledged (so that no
    request can overtake a PERSIST sent before it) and its errors raised."""
    if _attention:
        _wb.settle()
    return _get_conn()


def _this_conn():
    """This thread's connection to the configured store, once the objects
    queued by make_persistent are acknowledged."""
    try:
        c = _tls.c
    except AttributeError:
        c = None
    if c is None or _attention:
        c = _conn_slow()
    return c


def _request(*args):
    """One request and its answer on this thread's connection, after the objects
    queued by make_persistent are acknowledged. A connection the store closed
    while idle (the store restarted) is replaced once; any other connection
    failure drops the connection and raises. In a service of several backends a
    request about an object goes to the backend that holds it. A request naming
    a consolidated version goes to its original."""
    c = _this_conn()
    if _forwards and args[0] in _BY_OBJECT:
        args = _unforward(args)
    for _hop in range(_MAX_HOPS):
        if _multi and args[0] in _BY_OBJECT:
            a = _request_routed(args)
        else:
            a = _send_on(c, args)
        if not _forwarded(a):
            return a
        args = _follow(args, a)
    return a


# ------------------------------------------------------------------ versions
#
# consolidate_version() replaces every version of the chain by a forward to the
# original (FORWARD, sproto.h): a request naming one fails FORWARDED with the
# original's id, and is sent again naming it; proxies of the version become
# proxies of the original.

_forwards = {}      # object id -> the id it was forwarded to
_MAX_HOPS = 8
_VERSION_KEY = "_bt_version"   # in a version's stored state: (original id, [version ids])


def _forwarded(a):
    return a[0] == _FAILED and a[2] == _ERR_FORWARDED


def _note_forward(oid, target):
    _forwards[oid] = target
    p = _proxies.get(oid)
    if p is not None:
        p.__dict__["_bettong_id"] = target


def _unforward(args):
    oid = args[1]
    target = _forwards.get(oid)
    if target is None:
        return args
    for _hop in range(_MAX_HOPS):
        nxt = _forwards.get(target)
        if nxt is None:
            break
        target = nxt
    return (args[0], target) + tuple(args[2:])


def _follow(args, a):
    """args was answered FORWARDED: the same request for the original."""
    _note_forward(args[1], a[3])
    return (args[0], a[3]) + tuple(args[2:])


def _became_forward(obj, target):
    """In a store, after FORWARD: the live object of the version becomes the
    original's, so that the live objects here holding it see the original. When
    this store holds the original, obj shares its live object's attributes;
    else obj becomes a proxy of it."""
    d = obj.__dict__
    if _instore is not None:
        try:
            live = _instore.lookup_id(target)
        except NotFound:
            live = None
        if live is not None and live is not obj:
            object.__setattr__(obj, "__dict__", live.__dict__)
            return
    cid = d.get("_bettong_cid")
    d.clear()
    d["_bettong_id"] = target
    d["_bettong_cid"] = cid
    object.__setattr__(obj, "__class__", _proxy_class(type(obj)))


def _version_state(state):
    """A stored state without its version mark (what users see of it)."""
    if isinstance(state, dict) and _VERSION_KEY in state:
        state = dict(state)
        del state[_VERSION_KEY]
    return state


def _version_mark(obj):
    """(original id, [version ids]) of a version (a proxy), else None."""
    if "_bettong_id" not in obj.__dict__:
        return None
    try:
        mark = _ask((_GET_FIELD, obj.__dict__["_bettong_id"], _VERSION_KEY))
    except AttributeError:
        return None
    return mark


def _new_version(obj, backend_id=None):
    oid = _oid(obj)
    a = _request(_GET_STATE, oid)
    if a[0] != _OK:
        raise _answer_error(a)
    state = _loads(a[2])
    if not isinstance(state, dict):
        raise StoreError(f"{type(obj).__qualname__} keeps its own state (__getstate__): "
                         "versions need objects whose state is their fields")
    oid = obj.__dict__["_bettong_id"]   # an id forwarded meanwhile names the original
    mark = state.pop(_VERSION_KEY, None)
    state[_VERSION_KEY] = (mark[0], list(mark[1]) + [oid]) if mark else (oid, [])
    cid = obj.__dict__["_bettong_cid"]
    if _home_id is None:
        _get_conn()
    bid = _backend(backend_id).id if backend_id is not None else _home_id
    vid = _new_oid()
    if cid not in _registered and cid in _classes:
        _register(*_class_record(_classes[cid]))
    if _attention:
        _wb.settle()
    _send_persist([(vid, cid, None, _dumps(state))], bid)
    if _multi:
        _where[vid] = bid
    return _proxy_for(vid, cid)


def _consolidate_version(obj):
    oid = _oid(obj)
    a = _request(_GET_STATE, oid)
    if a[0] != _OK:
        raise _answer_error(a)
    state = _loads(a[2])
    mark = state.pop(_VERSION_KEY, None) if isinstance(state, dict) else None
    if not mark:
        raise NotAVersion(f"Object {oid} is not a version!")
    original, chain = mark
    a = _request(_UPDATE, original, _dumps_refs(state))
    if a[0] != _OK:
        raise _answer_error(a)
    for vid in list(chain) + [oid]:
        a = _request(_FORWARD, vid, original)
        if a[0] != _OK and not (a[0] == _FAILED and a[2] == _ERR_NOT_FOUND):
            raise _answer_error(a)   # (one consolidated before is gone: fine)
        _note_forward(vid, original)
    obj.__dict__["_bettong_id"] = original


def _request_direct(*args):
    """A request that need not wait for the write-behind queue (the queue's own
    PERSISTs, class registrations and lookups)."""
    return _send_on(_get_conn(), args)


def _send_on(c, args):
    try:
        return c.request(*args)
    except (TypeError, ValueError, OverflowError):
        raise  # the request could not be encoded: nothing was sent
    except BaseException as e:
        # The connection failed, or the wait was interrupted (Ctrl-C): its answer
        # would come later, on a connection no one reads any more.
        _drop_conn(c)
        if isinstance(e, _store.StaleConnection):
            return _send_on(_get_conn(), args)   # a fresh connection is never stale
        raise


def _ask_failed(c, e, args):
    """c.ask(*args) raised e: as _send_on does, drop the connection and send again
    on a new one if the store had closed it while idle (nothing was sent), else
    raise."""
    if isinstance(e, (TypeError, ValueError, OverflowError)):
        raise e  # the request could not be encoded: nothing was sent
    _drop_conn(c)
    if isinstance(e, _store.StaleConnection):
        c = _get_conn()   # a fresh connection is never stale
        try:
            return c.ask(*args)
        except BaseException as e2:
            if not isinstance(e2, (TypeError, ValueError, OverflowError)):
                _drop_conn(c)
            raise
    raise e


# ------------------------------------------------------------------ several backends
#
# A service of several backends (`bettong store --metadata`): every object lives
# on one backend, and requests about it go to that backend, on this thread's
# connection to it. The list of backends comes from the store connect() named
# (BACKENDS, whose first entry is that store itself); where an object lives
# from lookups (REF names the backend) and from make_persistent, cached. A
# request that finds its object gone (NOT_FOUND) looks the object up once more
# and follows it. A backend that cannot be reached fails the requests about
# its own objects only.

# Inside a store that is a backend of a service (set by `bettong store`).
_IN_SERVICE = os.environ.get("BETTONG_STORE_SERVICE") == "1"

_BY_OBJECT = frozenset((_CALL, _GET_FIELD, _SET_FIELD, _GET_STATE, _UPDATE, _ADD_ALIAS,
                        _ALIASES, _DELETE, _MOVE, _REPLICATE, _FORWARD))
_dir_lock = threading.Lock()
_backends = {}      # backend id -> Backend
_home_id = None     # the backend connect() named (None: not asked yet)
_multi = False      # more than one backend: route requests
_where = {}         # object id -> backend id
_replicas = {}      # object id -> frozenset of the backend ids holding replicas (REF)
_READS = frozenset((_GET_FIELD, _GET_STATE))   # what a replica answers


class Backend(tuple):
    """One backend of the service: (id, name, address)."""

    __slots__ = ()

    def __new__(cls, bid, name, address):
        return tuple.__new__(cls, (bid, name, address))

    id = property(lambda self: self[0])
    name = property(lambda self: self[1])
    address = property(lambda self: self[2])

    def __repr__(self):
        return f"<bettong backend {self.name!r} {self.id} at {self.address}>"


def _load_directory(c):
    """Ask connection c (to the configured store) for the service's backends."""
    global _home_id, _multi
    a = c.request(_BACKENDS)
    if a[0] != _BACKEND_LIST or not a[2]:
        raise _answer_error(a)
    with _dir_lock:
        _backends.clear()
        for bid, name, address in a[2]:
            _backends[bid] = Backend(bid, name, address)
        _home_id = a[2][0][0]
        _multi = len(_backends) > 1


def backends():
    """The backends of the connected service, {backend id: Backend(id, name,
    address)}; one for a store that runs alone. Asks the store again."""
    _load_directory(_get_conn())
    return dict(_backends)


def _backend(bid):
    """A backend by id (str or uuid.UUID); the list is asked again once if it is
    not known. KeyError if the service has no such backend."""
    bid = str(bid)
    b = _backends.get(bid)
    if b is None:
        _load_directory(_get_conn())
        b = _backends.get(bid)
    if b is None:
        raise KeyError(f"no backend with id {bid} in the service")
    return b


def _conn_to(bid, timeout=None):
    """This thread's connection to backend bid (opened within timeout seconds,
    default the extension's)."""
    if bid == _home_id:
        return _get_conn()
    others = getattr(_tls, "others", None)
    if others is None:
        others = _tls.others = {}
    c = others.get(bid)
    if c is not None and not c.closed:
        return c
    b = _backend(bid)
    _address_, secret = _configured()
    kw = {} if timeout is None else {"timeout": timeout}
    try:
        c = _extension().Connection(b.address, secret, _client_name(), **kw)
    except (ConnectionError, OSError) as e:
        # It may have restarted elsewhere: ask for the list once more.
        _load_directory(_get_conn())
        again = _backends.get(bid)
        if again is None or again.address == b.address:
            raise ConnectionError(f"backend {b.name!r} ({b.id}) at {b.address} cannot be "
                                  f"reached: {e}") from e
        c = _extension().Connection(again.address, secret, _client_name(), **kw)
    others[bid] = c
    return c


def _drop_conn_to(bid, c):
    others = getattr(_tls, "others", None)
    if others is not None and others.get(bid) is c:
        del others[bid]
    c.close()


def _send_to(bid, args):
    """One request on this thread's connection to backend bid (replaced once if
    the backend closed it while idle)."""
    if bid == _home_id:
        return _send_on(_get_conn(), args)
    for attempt in (0, 1):
        c = _conn_to(bid)
        try:
            return c.request(*args)
        except (TypeError, ValueError, OverflowError):
            raise
        except BaseException as e:
            _drop_conn_to(bid, c)
            if attempt == 0 and isinstance(e, _store.StaleConnection):
                continue
            if isinstance(e, ConnectionError):
                b = _backends.get(bid)
                name = b.name if b else bid
                raise ConnectionError(f"backend {name!r} failed: {e}") from e
            raise


def _note_location(oid, bid):
    """A REF said backend bid holds oid. A backend this process does not know
    (the list was asked while the service was incomplete, say just after its
    Redis restarted) makes it ask for the list again."""
    if bid not in _backends and _home_id is not None:
        try:
            _load_directory(_get_conn())
        except Exception:
            pass   # the next request that needs it asks again
    if _multi:
        _where[oid] = bid


def _locate(oid, fresh=False):
    """The backend that holds object oid (asked of the configured store unless
    cached). NotFound if no backend has it."""
    if not fresh:
        bid = _where.get(oid)
        if bid is not None:
            return bid
    a = _send_on(_get_conn(), (_LOOKUP_ID, oid))
    if a[0] != _REF:
        raise _answer_error(a)
    bid = a[4] or _home_id
    if a[2] != oid:   # a consolidated version: its original's REF
        _note_forward(oid, a[2])
        if _multi:
            _where[oid] = bid
    _note_ref(a)
    return bid


def _note_ref(a):
    """What a REF answer says of its object: where its master copy is, and
    which backends hold replicas of it."""
    oid = a[2]
    _note_location(oid, a[4] or _home_id)
    reps = a[5] if len(a) > 5 else ()
    if reps:
        _replicas[oid] = frozenset(reps)
    else:
        _replicas.pop(oid, None)


def _read_here(args):
    """A read the backend connect() named can answer: it holds a replica."""
    return args[0] in _READS and _home_id in _replicas.get(args[1], ())


def _replica_missed(oid):
    """The home backend answered NOT_FOUND for a replica it was believed to
    hold (dropped meanwhile): read the master from now on."""
    reps = _replicas.get(oid)
    if reps is not None:
        _replicas[oid] = reps - {_home_id}


def _request_routed(args):
    if _forwards:
        args = _unforward(args)
    oid = args[1]
    if _read_here(args):
        a = _send_on(_get_conn(), args)
        if not (a[0] == _FAILED and a[2] == _ERR_NOT_FOUND):
            return a
        _replica_missed(oid)
    bid = _locate(oid)
    a = _send_to(bid, args)
    if a[0] == _FAILED and a[2] == _ERR_NOT_FOUND:
        # It moved, or was deleted: look once more.
        _where.pop(oid, None)
        try:
            again = _locate(oid, fresh=True)
        except NotFound:
            return a
        if again != bid:
            a = _send_to(again, args)
    return a


def unload(backend_id=None):
    """Drop from the store's memory (backend backend_id's, default the one
    connect() named) every loaded object that no running request or other
    loaded object holds: the next request about one loads it from disk. Every
    acknowledged change is on disk already: nothing is lost. Returns how many
    objects were dropped."""
    if _home_id is None:
        _get_conn()
    bid = _home_id if backend_id is None else _backend(backend_id).id
    a = _send_to(bid, (_UNLOAD,))
    if a[0] != _OK:
        raise _answer_error(a)
    return _loads(a[2])


def backend_of(obj):
    """The id of the backend that holds obj's master copy (None for an object
    that is not persistent)."""
    oid = obj.__dict__.get("_bettong_id") if isinstance(obj, Persistent) else None
    if oid is None:
        return None
    if _instore is not None:
        # In a store: one of its own live objects (maybe made by the running
        # call, not on disk yet) is here.
        try:
            if _instore.lookup_id(oid) is obj:
                return os.environ.get("BETTONG_STORE_BACKEND_ID")
        except NotFound:
            pass
    if _attention:
        _wb.settle()
    if _home_id is None:
        _get_conn()
    return _locate(oid) if _multi else _home_id


def _move_held(bid, oid):
    """In a store, for a move of object oid to backend bid that a crash
    interrupted: does bid hold oid (the move went through)? Raises when bid
    cannot be asked."""
    a = _send_to(bid, (_LOOKUP_ID, oid))
    if a[0] == _FAILED and a[2] == _ERR_NOT_FOUND:
        return False
    if a[0] != _REF:
        raise _answer_error(a)
    return a[2] == oid and (a[4] or bid) == bid


def _move_finish(oid, bid):
    """In a store: finish a move that a crash interrupted after backend bid took
    the object (a MOVE to this store itself, in a thread: it runs in the
    object's queue, after the request that found the mark)."""
    def run():
        try:
            a = _send_to(os.environ["BETTONG_STORE_BACKEND_ID"], (_MOVE, oid, bid))
            if a[0] != _OK:
                raise _answer_error(a)
            print(f"bettong store: the interrupted move of {oid} is finished", file=sys.stderr,
                  flush=True)
        except Exception as e:
            print(f"bettong store: the interrupted move of {oid} could not be finished ({e}); "
                  "it is tried again when the object is next loaded", file=sys.stderr,
                  flush=True)
    threading.Thread(target=run, daemon=True, name="bettong-move-finish").start()


def _resolve_moves(oids):
    """In a store, at start: objects with a move mark a stop left. A request
    about each (to this store, once it serves) loads it, which resolves the
    move (spy.c resolve_move)."""
    def run():
        for oid in oids:
            try:
                _send_to(os.environ["BETTONG_STORE_BACKEND_ID"], (_GET_STATE, oid))
            except Exception as e:
                print(f"bettong store: the move of {oid} could not be resolved now ({e}); it "
                      "is when the object is next loaded", file=sys.stderr, flush=True)
    threading.Thread(target=run, daemon=True, name="bettong-resolve-moves").start()


def _adopt(bid, oid, cid, qual, data, state, aliases):
    """In a store moving an object out (MOVE): give it to backend bid -- its
    class, its state as stored, its aliases (claimed by this object's id, so
    bid may take them over) -- and return once bid holds it durably."""
    for args in ((_CLASS, cid, qual, data),
                 (_PERSIST, [(oid, cid, aliases[0] if aliases else None, state)])):
        a = _send_to(bid, args)
        if a[0] != _OK:
            raise _answer_error(a)
    for alias in aliases[1:]:
        a = _send_to(bid, (_ADD_ALIAS, oid, alias))
        if a[0] != _OK:
            raise _answer_error(a)


def _became_remote(obj):
    """In a store, after obj (a live object) moved to another backend: obj
    becomes a proxy of it in place, so the live objects here that hold it reach
    it there."""
    d = obj.__dict__
    oid, cid = d["_bettong_id"], d["_bettong_cid"]
    d.clear()
    d["_bettong_id"] = oid
    d["_bettong_cid"] = cid
    object.__setattr__(obj, "__class__", _proxy_class(type(obj)))


# Replicas: the master's side, called by the store (src/store/spy.c) from the
# Python thread running the request, as a client of the replicas' backends.

_REPLICA_TIMEOUT = float(os.environ.get("BETTONG_REPLICA_TIMEOUT", "5"))


def _replicate(bid, oid, cid, master, state, qual, data):
    """REPLICATE: give backend bid a replica of object oid (its class, its
    stored state) and return once bid holds it durably."""
    with _owed_lock:
        _owed_drops.pop((oid, bid), None)
    for args in ((_CLASS, cid, qual, data), (_REPLICA_PUT, oid, cid, master, state)):
        a = _send_to(bid, args)
        if a[0] != _OK:
            raise _answer_error(a)


def _answer_for(c, req, deadline):
    """The answer to request req on c, or None past the deadline."""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        for a in c.recv(left):
            if a[1] == req:
                return a


def _to_replicas(bids, args):
    """Send args to every backend in bids at once, then wait for every
    answer (at most BETTONG_REPLICA_TIMEOUT seconds in all). The failures, as
    [(backend id, why)]; a connection that failed or timed out is dropped."""
    sent, failed = [], []
    for bid in bids:
        for attempt in (0, 1):
            c = None
            try:
                c = _conn_to(bid, timeout=_REPLICA_TIMEOUT)
                req = c.send(*args)
                c.flush()
                sent.append((bid, c, req))
            except BaseException as e:
                if c is not None:
                    _drop_conn_to(bid, c)
                if attempt == 0 and _store is not None and isinstance(e, _store.StaleConnection):
                    continue   # closed while idle (it restarted): nothing was sent
                if not isinstance(e, Exception):
                    raise
                failed.append((bid, f"{type(e).__name__}: {e}"))
            break
    deadline = time.monotonic() + _REPLICA_TIMEOUT
    for bid, c, req in sent:
        try:
            a = _answer_for(c, req, deadline)
        except Exception as e:
            _drop_conn_to(bid, c)
            failed.append((bid, f"{type(e).__name__}: {e}"))
            continue
        if a is None:
            _drop_conn_to(bid, c)   # its answer would come later, to no one
            failed.append((bid, f"no answer within {_REPLICA_TIMEOUT:g} s"))
        elif a[0] != _OK:
            failed.append((bid, str(_answer_error(a))))
    return failed


def _replica_push(oid, cid, master, state, bids):
    """Write-through: the new state of object oid to every replica in bids,
    each stored durably before this returns. The failures [(bid, why)]: the
    master unlists them, and they are owed a drop."""
    failed = _to_replicas(bids, (_REPLICA_PUT, oid, cid, master, state))
    _owe_drops(oid, failed)
    return failed


def _replica_drop(oid, bids):
    """Before a DELETE or MOVE: every replica in bids forgets oid. The
    failures [(bid, why)] (a replica already gone is none), owed."""
    failed = _to_replicas(bids, (_REPLICA_DROP, oid))
    failed = [f for f in failed if "no replica with id" not in f[1]]
    _owe_drops(oid, failed)
    return failed


# A replica the master dropped because its backend did not answer may still be
# on that backend, stale, and be read there by a client that learned of it
# earlier. The master owes it a REPLICA_DROP: a thread of the master's store
# sends the owed drops about once a second until each backend takes its own
# (they are in memory: a master restarted meanwhile forgets them).
_owed_drops = {}            # (object id, backend id) -> why it was dropped
_owed_lock = threading.Lock()
_owed_wake = threading.Event()
_owed_thread = None
_OWED_EVERY = 1.0           # seconds between rounds


def _owe_drops(oid, failed):
    global _owed_thread
    if not failed:
        return
    with _owed_lock:
        for bid, why in failed:
            _owed_drops[(oid, bid)] = why
        if _owed_thread is None or not _owed_thread.is_alive():
            _owed_thread = threading.Thread(target=_send_owed_drops, daemon=True,
                                            name="bettong-owed-drops")
            _owed_thread.start()


def _send_owed_drops():
    while True:
        _owed_wake.wait(_OWED_EVERY)
        with _owed_lock:
            owed = list(_owed_drops)
        if not owed:
            return
        for oid, bid in owed:
            failed = _to_replicas([bid], (_REPLICA_DROP, oid))
            if not failed or "no replica with id" in failed[0][1]:
                with _owed_lock:
                    _owed_drops.pop((oid, bid), None)
                name = _backends[bid].name if bid in _backends else bid
                print(f"bettong store: the stale replica of {oid} on backend {name!r} "
                      "is dropped", file=sys.stderr, flush=True)


def replicas_of(obj):
    """The ids of the backends holding a read-only replica of obj (a set; the
    master's backend is not among them). Asks the service."""
    oid = _oid(obj)
    if _attention:
        _wb.settle()
    if _home_id is None:
        _get_conn()
    if not _multi:
        return set()
    _locate(oid, fresh=True)
    return set(_replicas.get(oid, ()))


def _new_replica(obj, backend_id=None):
    """Persistent.new_replica for one object: the backend it went to, or None
    when there was nothing to do (warned)."""
    oid = _oid(obj)
    if _attention:
        _wb.settle()
    if _home_id is None:
        _get_conn()
    master = _locate(oid, fresh=True) if _multi else _home_id
    have = _replicas.get(oid, frozenset())
    if backend_id is None:
        # dataClay: a backend without a copy yet. The one this client is
        # connected to first (its reads then stay here), then in list order.
        free = [b for b in backends() if b != master and b not in have]
        if not free:
            warnings.warn("All available backends have a replica", stacklevel=3)
            return None
        bid = free[0]
    else:
        bid = _backend(backend_id).id
        if bid in have:
            warnings.warn("The backend already has a replica", stacklevel=3)
            return None
        if bid == master:
            return None    # the master copy is there
    a = _request(_REPLICATE, oid, bid)
    if a[0] != _OK:
        raise _answer_error(a)
    _replicas[oid] = _replicas.get(oid, frozenset()) | {bid}
    return bid


def _move(obj, backend_id):
    """Move obj's master copy to another backend (a persistent object)."""
    oid = _oid(obj)
    if _attention:
        _wb.settle()
    if _home_id is None:
        _get_conn()
    bid = _backend(backend_id).id
    if backend_of(obj) == bid:
        return
    a = _request(_MOVE, oid, bid)
    if a[0] != _OK:
        raise _answer_error(a)
    _where[oid] = bid
    _replicas.pop(oid, None)   # a move drops the replicas


def _placed(ents, bid):
    """Objects just stored on backend bid."""
    if _multi:
        for ent in ents:
            _where[ent[1]] = bid


def _reset_after_fork():
    global _tls, _wb, _attention, _id_prefix, _id_counter, _dir_lock
    _tls = threading.local()
    _dir_lock = threading.Lock()
    _wb = _WriteBehind()
    _attention = 0
    _id_prefix = _oid_prefix() << 64   # ids unique from the parent's
    _id_counter = itertools.count(1)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


# ------------------------------------------------------------------ classes

# Per-class caches (plain dicts: a Persistent class lives as long as the process).
_fields_cache = {}
_records = {}                            # cls -> (class_id, qualname, pickle)
_classes = {}                            # class_id -> class
_proxy_classes = {}
_cp_lock = threading.Lock()              # cloudpickle's by-value registry


def _classfield_names(doc):
    """The field names of dataClay 2.x `@ClassField name type` lines in a class
    docstring, in order."""
    if not isinstance(doc, str) or "@ClassField" not in doc:
        return []
    out = []
    for line in doc.splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] == "@ClassField" and words[1].isidentifier():
            out.append(words[1])
    return out


def _declare_classfields(cls):
    """dataClay 2.x models declare their persistent fields in the class docstring
    (`@ClassField name type`): each becomes an annotation of the class (type: the
    rest of the line, as text) unless the class annotates it itself, so it is a
    persistent field exactly as an annotated one is (client and store alike)."""
    doc = cls.__dict__.get("__doc__")
    names = _classfield_names(doc)
    if not names:
        return
    ann = cls.__dict__.get("__annotations__")
    if not isinstance(ann, dict):
        ann = {}
        type.__setattr__(cls, "__annotations__", ann)
    for line in doc.splitlines():
        words = line.split(None, 2)
        if len(words) >= 2 and words[0] == "@ClassField" and words[1] in names:
            ann.setdefault(words[1], words[2].strip() if len(words) > 2 else "Any")


def persistent_fields(cls):
    """The persistent fields of a Persistent class: its annotated names and its
    bases', in definition order (ClassVar annotations and _bt names excluded)."""
    try:
        return _fields_cache[cls]
    except KeyError:
        pass
    except TypeError:
        return ()
    cls = getattr(cls, "_bt_base", cls)
    out = []
    for k in reversed(cls.__mro__):
        ann = k.__dict__.get("__annotations__")
        if not ann or not isinstance(ann, dict):
            continue
        for name, t in ann.items():
            if name.startswith("_bt") or name in out:
                continue
            text = t if isinstance(t, str) else repr(t)
            if text.startswith(("ClassVar", "typing.ClassVar")):
                continue
            out.append(name)
    res = tuple(out)
    _fields_cache[cls] = res
    return res


def active(fn):
    """Mark a method as active: on a proxy it runs in the store, on the master copy
    (alias: activemethod). On a local object it is a plain method."""
    if not isinstance(fn, types.FunctionType):
        raise TypeError(f"@active is for methods (functions), not {type(fn).__name__}")
    fn._bettong_active = True
    return fn


def dclayMethod(*args, **declared):
    """dataClay 2.x's method decorator: `@dclayMethod(arg='type', return_='type')`
    (or bare `@dclayMethod`) marks an active method, as @active does; the types are
    documentation only."""
    if len(args) == 1 and not declared and isinstance(args[0], types.FunctionType):
        return active(args[0])
    if args:
        raise TypeError("dclayMethod takes keyword arguments (arg='type', return_='type')")
    return active


def _is_active(v):
    return getattr(v, "_bettong_active", False) is True and isinstance(v, types.FunctionType)


def _qualname(cls):
    return f"{cls.__module__}:{cls.__qualname__}"


def _load_class(module, qualname, data):
    """Inside a class pickle: the class, from its by-value pickle `data` (the store
    imports module.qualname first when it can). The class keeps the record it
    came in (its class id, name and pickle), so that a store that hands it on
    (to another backend) hands on the same class, not a copy of its own under
    another id."""
    cls = pickle.loads(data)
    if isinstance(cls, type) and cls not in _records:
        rec_data = _make_class_pickle(module, qualname, data)
        cid = int.from_bytes(hashlib.blake2b(rec_data, digest_size=8).digest(), "big")
        _records[cls] = (cid, f"{module}:{qualname}", rec_data)
        _classes.setdefault(cid, cls)
    return cls


def _code_digest(h, co, depth=0):
    h.update(co.co_code)
    h.update(repr((co.co_names, co.co_varnames, co.co_freevars, co.co_cellvars,
                   co.co_argcount, co.co_kwonlyargcount)).encode())
    for c in co.co_consts:
        if isinstance(c, types.CodeType):
            if depth < 8:
                _code_digest(h, c, depth + 1)
        elif isinstance(c, frozenset):
            h.update(repr(sorted(map(repr, c))).encode())
        else:
            h.update(repr(c).encode("utf-8", "replace"))


def _class_digest(cls):
    """A digest of a class's name and code, the same in every process for the same
    class source (used as cloudpickle's tracker id, so that a class pickled by
    value gives the same bytes, hence the same class id, from every process, and
    one class object in the store)."""
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{cls.__module__}\0{cls.__qualname__}\0".encode())
    for name in sorted(cls.__dict__):
        v = cls.__dict__[name]
        h.update(name.encode() + b"\0")
        if isinstance(v, (classmethod, staticmethod)):
            v = v.__func__
        if isinstance(v, property):
            for f in (v.fget, v.fset, v.fdel):
                if isinstance(f, types.FunctionType):
                    _code_digest(h, f.__code__)
        elif isinstance(v, types.FunctionType):
            _code_digest(h, v.__code__)
        elif isinstance(v, (int, float, str, bytes, bool, type(None))):
            h.update(repr(v).encode())
        elif name == "__annotations__" and isinstance(v, dict):
            h.update(repr(list(v)).encode())
        else:
            h.update(type(v).__qualname__.encode())
    return h.hexdigest()


def _seed_tracker(classes):
    """Give classes cloudpickle has not tracked yet a deterministic tracker id."""
    try:
        from cloudpickle import cloudpickle as cp
        by_class = cp._DYNAMIC_CLASS_TRACKER_BY_CLASS
        by_id = cp._DYNAMIC_CLASS_TRACKER_BY_ID
        lock = cp._DYNAMIC_CLASS_TRACKER_LOCK
    except (ImportError, AttributeError):
        return
    for k in classes:
        try:
            with lock:
                if k in by_class:
                    continue
                tid = _class_digest(k)
                if tid in by_id:  # an identical class already loaded: leave it
                    continue
                by_class[k] = tid
                by_id[tid] = k
        except Exception:
            pass


def _local_persistent_classes(cls):
    """cls, its Persistent bases, and the Persistent classes of its module."""
    out = [k for k in cls.__mro__ if isinstance(k, type) and issubclass(k, Persistent)
           and k is not Persistent]
    mod = sys.modules.get(cls.__module__)
    if mod is not None:
        for v in list(vars(mod).values()):
            if isinstance(v, type) and issubclass(v, Persistent) and v is not Persistent \
                    and v not in out:
                out.append(v)
    return out


def _importable_module(cls):
    """The module to pickle by value with cls, if cls is importable from one (not
    __main__, not bettong itself)."""
    name = cls.__module__
    if not name or name == "__main__" or name == "bettong" or name.startswith("bettong."):
        return None
    mod = sys.modules.get(name)
    if mod is None:
        return None
    o = mod
    for part in cls.__qualname__.split("."):
        o = getattr(o, part, None)
    return mod if o is cls else None


def _pickle_class_by_value(cls):
    mod = _importable_module(cls)
    with _cp_lock:
        _seed_tracker(_local_persistent_classes(cls))
        if mod is None:
            return cloudpickle.dumps(cls, 5)
        registered = False
        try:
            if mod.__name__ not in cloudpickle.list_registry_pickle_by_value():
                cloudpickle.register_pickle_by_value(mod)
                registered = True
            return cloudpickle.dumps(cls, 5)
        except Exception:
            # Something of its module does not pickle by value (a lock, a socket,
            # ...): by reference; the store must be able to import it.
            pass
        finally:
            if registered:
                try:
                    cloudpickle.unregister_pickle_by_value(mod)
                except Exception:
                    pass
        return cloudpickle.dumps(cls, 5)


def _class_record(cls):
    """(class_id, qualname, class pickle) of a Persistent class, computed once."""
    rec = _records.get(cls)
    if rec is not None:
        return rec
    cls = getattr(cls, "_bt_base", cls)
    rec = _records.get(cls)
    if rec is not None:
        return rec
    qual = _qualname(cls)
    try:
        inner = _pickle_class_by_value(cls)
    except Exception as e:
        raise TypeError(f"cannot pickle the class {qual}: {e}") from e
    data = _make_class_pickle(cls.__module__, cls.__qualname__, inner)
    cid = int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")
    rec = (cid, qual, data)
    _records[cls] = rec
    _classes.setdefault(cid, cls)
    return rec


class _LoadClassCall:
    """Pickles as the call _load_class(module, qualname, data)."""

    def __init__(self, module, qualname, data):
        self.args = (module, qualname, data)

    def __reduce__(self):
        return (_load_class, self.args)


def _make_class_pickle(module, qualname, data):
    return pickle.dumps(_LoadClassCall(module, qualname, data), 5)


def _class_pickle_parts(data):
    """(module, qualname, inner pickle) of a class pickle made here, without
    loading the class; None for any other pickle."""

    class _U(pickle.Unpickler):
        def find_class(self, module, name):
            if module == __name__ and name == "_load_class":
                return lambda m, q, d: ("parts", m, q, d)
            raise pickle.UnpicklingError("not a bettong class pickle")

    try:
        r = _U(io.BytesIO(data)).load()
    except Exception:
        return None
    if isinstance(r, tuple) and len(r) == 4 and r[0] == "parts":
        return r[1], r[2], r[3]
    return None


def _local_class(module, qualname):
    """The Persistent class module.qualname of this process, if it has one."""
    mod = sys.modules.get(module)
    if mod is None and module != "__main__":
        try:
            mod = importlib.import_module(module)
        except Exception:
            mod = None
    if mod is None:
        return None
    o = mod
    for part in qualname.split("."):
        o = getattr(o, part, None)
        if o is None:
            return None
    if isinstance(o, type) and issubclass(o, Persistent):
        return o
    return None


def _tracked_local(data, qualname):
    """The class of this process that a store's by-value class pickle was made
    from, if any: cloudpickle names a class it pickles by value with a tracker
    id (_seed_tracker makes it the same in every process), and loading such a
    pickle here would give back this process's class after setting the
    pickled attributes on it -- a store's copy (its module name, its own
    functions) would overwrite this process's class."""
    try:
        from cloudpickle import cloudpickle as cp
        by_id = cp._DYNAMIC_CLASS_TRACKER_BY_ID
        for _op, arg, _pos in pickletools.genops(data):
            if isinstance(arg, str) and len(arg) == 32:
                k = by_id.get(arg)
                if isinstance(k, type) and issubclass(k, Persistent) \
                        and k.__qualname__ == qualname:
                    return k
    except Exception:
        pass
    return None


def _class_for(cid, hint=None, oid=None):
    """The class of an object whose class id is cid: known here, the hint if it is
    that class, this process's class of the same name, or the store's pickle
    (asked of the backend that holds object oid when the configured one lacks
    it)."""
    cls = _classes.get(cid)
    if cls is not None:
        return cls
    if hint is not None:
        try:
            if _class_record(hint)[0] == cid:
                return hint
        except Exception:
            pass
    a = _request_direct(_GET_CLASS, cid)
    if a[0] == _FAILED and a[2] == _ERR_NOT_FOUND and _multi and oid is not None:
        a = _send_to(_locate(oid), (_GET_CLASS, cid))
    if a[0] != _CLASS_BYTES:
        raise _answer_error(a)
    data = a[2]
    parts = _class_pickle_parts(data)
    cls = None
    if parts is not None:
        cls = _local_class(parts[0], parts[1]) or _tracked_local(parts[2], parts[1])
        if cls is None:
            cls = pickle.loads(parts[2])
    else:
        cls = pickle.loads(data)
    if not (isinstance(cls, type) and issubclass(cls, Persistent)):
        raise StoreError(f"class {cid:#x} in the store is not a Persistent class")
    _classes.setdefault(cid, cls)
    return _classes[cid]


def _register(cid, qual, data, force=False):
    if cid in _registered and not force:
        return
    a = _request_direct(_CLASS, cid, qual, data)
    if a[0] != _OK:
        raise _answer_error(a)
    _registered.add(cid)


def _register_ids(cids):
    """Send the classes of these ids again (the store answered UNKNOWN_CLASS)."""
    for cid in set(cids):
        cls = _classes.get(cid)
        if cls is not None:
            _register(*_class_record(cls), force=True)


# ------------------------------------------------------------------ pickling

_ATOMS = frozenset((int, float, str, bytes, bool, type(None), complex))
_pickle_dumps = pickle.dumps
_pickle_loads = pickle.loads
_UnpicklingError = pickle.UnpicklingError


def _ref_of(obj, assign):
    """The persistent id of a Persistent object, or None to pickle it by value.
    `assign`, when given, makes a local object persistent (returns its new id)."""
    d = obj.__dict__
    oid = d.get("_bettong_id")
    if oid is not None:
        return (_REF_TAG, oid, d["_bettong_cid"])
    if assign is None:
        return None
    return (_REF_TAG, assign(obj), _class_record(type(obj))[0])


class _Pickler(pickle.Pickler):
    def __init__(self, f, assign):
        super().__init__(f, 5)
        self.assign = assign

    def persistent_id(self, obj):
        if isinstance(obj, Persistent):
            return _ref_of(obj, self.assign)
        return None


class _CloudPickler(cloudpickle.Pickler):
    def __init__(self, f, assign):
        super().__init__(f, 5)
        self.assign = assign

    def persistent_id(self, obj):
        if isinstance(obj, Persistent):
            return _ref_of(obj, self.assign)
        return None


def _flat(v):
    """True for a value with no object inside that pickle could need to treat
    specially: atoms, and short lists and tuples of atoms."""
    t = type(v)
    if t in _ATOMS:
        return True
    if (t is list or t is tuple) and len(v) <= 32:
        for x in v:
            if type(x) not in _ATOMS:
                return False
        return True
    return False


def _dumps_state(fields, assign):
    """Pickle a state dict (plain pickle when it is flat: the common case)."""
    for v in fields.values():
        if not _flat(v):
            return _dumps(fields, assign)
    return _pickle_dumps(fields, 5)


def _dumps(obj, assign=None):
    """Pickle a value for the store: persistent objects as references; cloudpickle
    when plain pickle fails or names __main__."""
    f = io.BytesIO()
    try:
        _Pickler(f, assign).dump(obj)
        data = f.getvalue()
        if _MAIN not in data:
            return data
    except Exception:
        pass
    f = io.BytesIO()
    _CloudPickler(f, assign).dump(obj)
    return f.getvalue()


_NOARGS = b""   # a CALL without arguments (sproto.h)


def _dumps_args(args, kwargs):
    atoms = _ATOMS
    for a in args:
        if type(a) not in atoms:
            return _dumps_refs((args, kwargs))
    if kwargs:
        for v in kwargs.values():
            if type(v) not in atoms:
                return _dumps_refs((args, kwargs))
    return _pickle_dumps((args, kwargs), 5)


def _dumps_refs(value):
    """Pickle a value whose local Persistent objects are to be made persistent
    (stored now, durably) and sent as references."""
    if _flat(value):
        return _pickle_dumps(value, 5)
    new = []
    data = _dumps(value, _assigner(new))
    if new:
        _persist_now(new, None)
    return data


class _Unpickler(pickle.Unpickler):
    def persistent_load(self, pid):
        if type(pid) is tuple and len(pid) == 3 and pid[0] == _REF_TAG:
            return _proxy_for(pid[1], pid[2])
        raise _UnpicklingError(f"unknown persistent id {pid!r}")


def _loads(data):
    try:
        return _pickle_loads(data)
    except _UnpicklingError:
        return _Unpickler(io.BytesIO(data)).load()


class _RefCollector(pickle.Unpickler):
    """Reads a pickled state only for the persistent references in it."""

    def __init__(self, f):
        super().__init__(f)
        self.refs = []

    def persistent_load(self, pid):
        if type(pid) is tuple and len(pid) == 3 and pid[0] == _REF_TAG:
            self.refs.append((pid[1], pid[2]))
            return None
        raise _UnpicklingError(f"unknown persistent id {pid!r}")


def _references(obj):
    """The (object id, class id) of every persistent object obj's stored state
    refers to, without making proxies of them."""
    a = _request(_GET_STATE, _oid(obj))
    if a[0] != _OK:
        raise _answer_error(a)
    r = _RefCollector(io.BytesIO(a[2]))
    r.load()
    return r.refs


# ------------------------------------------------------------------ proxies

_proxies = weakref.WeakValueDictionary()  # object id -> proxy


def _proxy_for(oid, cid, hint=None, backend=None):
    if _IN_SERVICE and _instore is not None:
        # In a backend, an object it holds is its live object, never a proxy
        # through its own port (a call reading its own object that way would
        # wait behind itself in that object's queue).
        try:
            return _instore.lookup_id(oid)
        except NotFound:
            pass
    if backend is not None:
        _note_location(oid, backend)
    p = _proxies.get(oid)
    if p is not None:
        return p
    if _forwards and oid in _forwards:
        oid = _unforward((None, oid))[1]
        p = _proxies.get(oid)
        if p is not None:
            return p
    cls = _class_for(cid, hint, oid)
    p = object.__new__(_proxy_class(cls))
    d = p.__dict__
    d["_bettong_id"] = oid
    d["_bettong_cid"] = cid
    return _proxies.setdefault(oid, p)


def _rebuild(cls, oid, cid):
    """Unpickling a proxy pickled for another process."""
    local = _local_class(cls.__module__, cls.__qualname__) if cls.__module__ == "__main__" \
        else None
    cls = local or cls
    _classes.setdefault(cid, cls)
    p = _proxies.get(oid)
    if p is not None:
        return p
    p = object.__new__(_proxy_class(cls))
    d = p.__dict__
    d["_bettong_id"] = oid
    d["_bettong_cid"] = cid
    return _proxies.setdefault(oid, p)


def _oid(obj):
    oid = obj.__dict__.get("_bettong_id")
    if oid is None:
        raise StoreError(f"this {type(obj).__name__} object is not persistent "
                         "(make_persistent() it first)")
    return oid


class _Field:
    """A persistent field on a proxy: a remote get and set."""

    __slots__ = ("name",)

    def __init__(self, name):
        self.name = name

    def __get__(self, obj, typ=None):
        if obj is None:
            return self
        return _ask((_GET_FIELD, obj.__dict__["_bettong_id"], self.name))

    def __set__(self, obj, value):
        oid = obj.__dict__["_bettong_id"]
        data = _dumps_refs(value)
        a = _request(_SET_FIELD, oid, self.name, data)
        if a[0] != _OK:
            raise _answer_error(a)

    def __delete__(self, obj):
        raise AttributeError(f"the persistent field {self.name!r} of a persistent object "
                             "cannot be deleted")


def _ask(args):
    """A request about an object whose OK answer is the caller's value. On the
    configured store through the extension's fast path (c.ask: a plain value
    comes back unpickled by C); in a service of several backends, routed to
    the backend that holds the object."""
    if _forwards:
        args = _unforward(args)
    c = _this_conn()
    bid = _home_id
    here = False
    if _multi:
        here = _read_here(args)   # a replica next to us answers reads
        bid = _home_id if here else _locate(args[1])
        if bid != _home_id:
            c = _conn_to(bid)
    try:
        plain, a = c.ask(*args)
    except BaseException as e:
        if bid == _home_id:
            plain, a = _ask_failed(c, e, args)
        elif isinstance(e, _store.StaleConnection):   # closed while idle: nothing sent
            _drop_conn_to(bid, c)
            plain, a = False, _request_routed(args)
        else:
            if not isinstance(e, (TypeError, ValueError, OverflowError)):
                _drop_conn_to(bid, c)
            if isinstance(e, ConnectionError):
                raise ConnectionError(f"backend {_backends[bid].name!r} failed: {e}") from e
            raise
    if plain:
        return a
    if _multi and a[0] == _FAILED and a[2] == _ERR_NOT_FOUND:
        if here:
            _replica_missed(args[1])
        a = _request_routed(args)   # it moved (or the replica went): follow it
    if _forwarded(a):
        a = _request(*_follow(args, a))
    if a[0] == _OK:
        return _loads(a[2])
    raise _answer_error(a)


def _remote_method(name, fn):
    def method(self, *args, **kwargs):
        return _ask((_CALL, self.__dict__["_bettong_id"], name,
                     _dumps_args(args, kwargs) if (args or kwargs) else _NOARGS))

    if _is_coroutine_function(fn):
        method = _awaitable_call(method)
    functools.update_wrapper(method, fn)
    method._bettong_active = True
    method._bettong_remote = True
    return method


def _is_coroutine_function(fn):
    import inspect
    return inspect.iscoroutinefunction(fn)


def _awaitable_call(call):
    """An active `async def` on a proxy: calling it returns an awaitable that runs
    the (blocking) call in a thread of the awaiting loop's default executor, so
    it can be awaited from any asyncio loop. The store runs the method itself:
    what it does with the coroutine the method returns is the store's."""

    async def method(self, *args, **kwargs):
        import asyncio
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, functools.partial(call, self, *args, **kwargs))

    return method


def _proxy_reduce_ex(self, protocol):
    if _attention:
        _wb.settle()
    d = self.__dict__
    return (_rebuild, (type(self)._bt_base, d["_bettong_id"], d["_bettong_cid"]))


def _proxy_class(cls):
    """The proxy subclass of a Persistent class (made once per class)."""
    pc = _proxy_classes.get(cls)
    if pc is not None:
        return pc
    if "_bt_base" in cls.__dict__:
        return cls
    ns = {
        "__slots__": (),
        "__module__": cls.__module__,
        "__qualname__": cls.__qualname__,
        "__doc__": cls.__doc__,
        "_bt_base": cls,
        "__reduce_ex__": _proxy_reduce_ex,
    }
    for f in persistent_fields(cls):
        ns[f] = _Field(f)
    seen = set(ns)
    for k in cls.__mro__:
        for name, v in k.__dict__.items():
            if name in seen:
                continue
            seen.add(name)
            if _is_active(v):
                ns[name] = _remote_method(name, v)
    pc = type(cls)(cls.__name__, (cls,), ns)
    _proxy_classes[cls] = pc
    return pc


def is_persistent(obj):
    """True if obj is a proxy to a stored object."""
    return isinstance(obj, Persistent) and "_bettong_id" in obj.__dict__


# ------------------------------------------------------------------ make_persistent

def _oid_prefix():
    """64 random bits (a UUID's first half, version 4) for this process's ids."""
    return (int.from_bytes(os.urandom(8), "big") & ~0xF000) | 0x4000


_id_prefix = _oid_prefix() << 64
_id_counter = itertools.count(1)
_VARIANT = 0b10 << 62


def _new_oid():
    """A new object id: UUID text (version 4 form) made of this process's random
    prefix and a counter: unique without a system call per object (os.urandom
    costs ~15 us on some VMs)."""
    h = "%032x" % (_id_prefix | _VARIANT | next(_id_counter))
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _assigner(new):
    """An `assign` for _dumps: gives each local Persistent object met a new id and
    appends it to `new` (as [obj, oid]); the same object gets the same id."""
    seen = {}

    def assign(obj):
        ent = seen.get(id(obj))
        if ent is None:
            ent = [obj, _new_oid()]
            seen[id(obj)] = ent
            new.append(ent)
        return ent[1]

    assign.seen = seen
    return assign


def _collect(root, alias, new=None):
    """PERSIST items for root (if given) and every local Persistent object reachable
    from its persistent state (and from the objects in `new`). Returns (items,
    entries): entries are [obj, oid, cid, fields] for the objects to turn into
    proxies once stored."""
    if new is None:
        new = []
    assign = _assigner(new)
    if root is not None:
        assign(root)
    else:
        for ent in new:
            assign.seen[id(ent[0])] = ent
    items = []
    out = []
    nbytes = 0
    i = 0
    while i < len(new):
        obj, oid = new[i][0], new[i][1]
        i += 1
        cls = type(obj)
        rec = _records.get(cls)
        if rec is None:
            rec = _class_record(cls)
        cid = rec[0]
        if cid not in _registered:
            _register(*rec)
        d = obj.__dict__
        fields = {f: d[f] for f in persistent_fields(cls) if f in d}
        if _custom_getstate(cls):
            state = _dumps(obj.__getstate__(), assign)
        else:
            state = _dumps_state(fields, assign)
        nbytes += len(state)
        items.append((oid, cid, alias if obj is root else None, state))
        out.append([obj, oid, cid, fields])
    return items, out, nbytes


_custom_cache = {}


def _custom_getstate(cls):
    """True if the class defines its own __getstate__ (not object's): its
    persistent state is then what __getstate__ returns (see Persistent)."""
    try:
        return _custom_cache[cls]
    except KeyError:
        pass
    g = getattr(cls, "__getstate__", None)
    res = g is not None and g is not getattr(object, "__getstate__", None)
    _custom_cache[cls] = res
    return res


def _apply_state(obj, state):
    """Give a new local object a stored state, as loading it in the store does:
    __setstate__(state) if the class has one, else the (dict) state's items."""
    setstate = getattr(type(obj), "__setstate__", None)
    if setstate is not None:
        obj.__setstate__(state)
    else:
        obj.__dict__.update(state)


def _to_proxy(ent):
    obj, oid, cid, fields = ent
    d = obj.__dict__
    for f in fields:
        d.pop(f, None)
    d["_bettong_id"] = oid
    d["_bettong_cid"] = cid
    object.__setattr__(obj, "__class__", _proxy_class(type(obj)))  # past a frozen __setattr__
    _proxies[oid] = obj


def _to_local(ent):
    obj, oid, cid, fields = ent
    d = obj.__dict__
    if d.get("_bettong_id") != oid:
        return
    base = getattr(type(obj), "_bt_base", None)
    if base is not None:
        object.__setattr__(obj, "__class__", base)
    d.pop("_bettong_id", None)
    d.pop("_bettong_cid", None)
    d.update(fields)
    if _proxies.get(oid) is obj:
        del _proxies[oid]


def _send_persist(items, bid=None):
    """PERSIST items on the configured store, or on backend bid."""
    if bid is None or bid == _home_id:
        a = _request_direct(_PERSIST, items)
        if a[0] == _FAILED and a[2] == _ERR_UNKNOWN_CLASS:
            _register_ids(it[1] for it in items)
            a = _request_direct(_PERSIST, items)
    else:
        a = _send_to(bid, (_PERSIST, items))
        if a[0] == _FAILED and a[2] == _ERR_UNKNOWN_CLASS:
            # That backend has not seen these classes yet.
            for cid in {it[1] for it in items}:
                cls = _classes.get(cid)
                if cls is not None:
                    r = _send_to(bid, (_CLASS,) + tuple(_class_record(cls)))
                    if r[0] != _OK:
                        raise _answer_error(r)
            a = _send_to(bid, (_PERSIST, items))
    if a[0] != _OK:
        raise _answer_error(a)


def _persist_now(new, alias, root=None, backend=None):
    """Store root / the objects in `new` (and what they reference) now, durably,
    on the configured store or backend `backend`, then turn them into
    proxies."""
    items, ents, _ = _collect(root, alias, new if root is None else None)
    if _attention:
        _wb.settle()
    with _wb.flush_lock:
        _send_persist(items, backend)
    for ent in ents:
        _to_proxy(ent)
    _placed(ents, backend or _home_id)


# Answer codes that blame one make_persistent call of a batch (not the store or
# the connection): the batch is then stored call by call up to that one.
_PER_CALL_CODES = (_ERR_ALIAS_TAKEN, _ERR_BAD_REQUEST, _ERR_NOT_FOUND, _ERR_NO_ATTRIBUTE)


class _Batch:
    """make_persistent calls in call order: items (PERSIST entries) and ents (their
    objects, [obj, oid, cid, fields]) side by side; ends[k] is where call k's
    entries end (its root object first)."""

    __slots__ = ("items", "ents", "ends", "nbytes")

    def __init__(self):
        self.items = []
        self.ents = []
        self.ends = []
        self.nbytes = 0

    def start(self, k):
        return self.ends[k - 1] if k else 0

    def calls(self, lo, hi):
        """The PERSIST entries of calls lo..hi-1."""
        return self.items[self.start(lo):self.ends[hi - 1]]

    def what(self, k):
        """Call k as an error message names it."""
        s = self.start(k)
        obj, alias = self.ents[s][0], self.items[s][2]
        cls = getattr(type(obj), "_bt_base", type(obj))
        call = f"make_persistent(alias={alias!r})" if alias else "make_persistent()"
        return f"{call} of a {cls.__qualname__}"


class _Failure:
    """The first queued make_persistent call that failed, kept until a sync point
    raises it (_WriteBehind.settle)."""

    __slots__ = ("exc", "what", "later")

    def __init__(self, exc, what, later):
        self.exc = exc      # what the store (or the connection) said
        self.what = what    # the call, e.g. "make_persistent(alias='x') of a Car"
        self.later = later  # calls made after it, not applied

    def exception(self):
        """The exception a sync point raises: the store's error class (AliasTaken,
        NotFound, StoreError) with the call, the store's message and what was
        not applied; the store's error as __cause__."""
        n = self.later
        msg = (f"{self.what} failed: {self.exc}. It was not waited for (pipelined): it "
               f"and the {n} make_persistent call{'' if n == 1 else 's'} made after it "
               f"{'was' if n == 1 else 'were'} not applied (their objects are local "
               f"objects again); the calls before it are stored")
        cls = type(self.exc) if isinstance(self.exc, StoreError) else StoreError
        e = cls(msg)
        e.__cause__ = self.exc
        return e


class _WriteBehind:
    """make_persistent calls not yet acknowledged: those without an alias, and
    those with one inside pipeline().

    Calls are queued in call order and sent in batched PERSIST requests (one
    durable transaction each) on a connection of their own (used only under
    flush_lock), one batch in flight at a time: the next batch fills while the
    store stores the previous one. A call that fills the next batch waits for
    the one in flight: that is the memory bound, at most two batches of
    _WB_MAX_OBJECTS objects or _WB_MAX_BYTES of state (plus one call's objects).

    The store's state is always a prefix of the calls: when one fails, it and
    every later call are not applied (their objects turn back into local
    objects), and the failure is kept until a sync point raises it (settle);
    calls made meanwhile are not applied either. A batch that failed because of
    one of its calls (a taken alias) is stored again call range by call range
    to find that call (_store_prefix)."""

    def __init__(self):
        self.lock = threading.Lock()         # queue, unacked, failure, statistics
        self.flush_lock = threading.RLock()  # the connection and the batch in flight
        self.queue = _Batch()
        self.unacked = 0                     # objects queued or in flight
        self.failure = None                  # a _Failure until settle() raises it
        self.inflight = None                 # (conn, req_id, batch)
        self.inflight_bytes = 0
        self.conn = None
        self.waiting = False                 # a thread waits for the batch in flight
        self.peak_objects = 0                # most objects unacknowledged at once
        self.peak_bytes = 0                  # most state bytes queued + in flight
        self.wake = threading.Event()
        self.thread = None

    def _update_attention(self):
        global _attention
        _attention = self.unacked + (1 if self.failure is not None else 0)

    def _note_peaks(self):
        if self.unacked > self.peak_objects:
            self.peak_objects = self.unacked
        b = self.queue.nbytes + self.inflight_bytes
        if b > self.peak_bytes:
            self.peak_bytes = b

    def add(self, items, ents, nbytes):
        """Queue one make_persistent call (its objects are proxies already). Returns
        False if it is not applied because an earlier call failed and no sync
        point has raised that yet: its objects are local objects again."""
        with self.lock:
            refused = self.failure is not None
            if refused:
                self.failure.later += 1
            else:
                q = self.queue
                first = not q.items
                q.items += items
                q.ents += ents
                q.ends.append(len(q.items))
                q.nbytes += nbytes
                self.unacked += len(items)
                self._note_peaks()
                self._update_attention()
                full = len(q.items) >= _WB_MAX_OBJECTS or q.nbytes >= _WB_MAX_BYTES
        if refused:
            for ent in ents:
                _to_local(ent)
            return False
        if full:
            self.push()
        elif first:
            self._start_timer()
        return True

    def _start_timer(self):
        if self.thread is None:
            with self.lock:
                if self.thread is None:
                    self.thread = threading.Thread(target=self._run, name="bettong-persist",
                                                   daemon=True)
                    self.thread.start()
        self.wake.set()

    def _run(self):
        pause = threading.Event()
        while True:
            self.wake.wait()
            self.wake.clear()
            pause.wait(_WB_DELAY)
            if _wb is not self:
                return
            try:
                self.flush()
            except BaseException:
                pass   # kept as the failure for the next sync point

    def _connection(self):
        c = self.conn
        if c is None or c.closed:
            address, secret = _configured()
            c = self.conn = _extension().Connection(address, secret, _client_name())
        return c

    def _drop(self, c):
        """Close a connection whose stream is of no more use (lost, interrupted)."""
        if self.conn is c:
            self.conn = None
        c.close()

    def drop_connection(self):
        with self.flush_lock:
            c, self.conn = self.conn, None
            if c is not None:
                c.close()

    def _acked(self, n):
        with self.lock:
            self.unacked -= n
            self._update_attention()

    def _fail_from(self, batch, k, exc):
        """Call k of batch failed with exc, the calls before it are stored: it, the
        rest of the batch and everything queued are not applied."""
        what = batch.what(k)
        s = batch.start(k)
        with self.lock:
            queued, self.queue = self.queue, _Batch()
            self.unacked -= len(batch.items) - s + len(queued.items)
            later = len(batch.ends) - k - 1 + len(queued.ends)
            if self.failure is None:
                self.failure = _Failure(exc, what, later)
            else:
                self.failure.later += 1 + later
            self._update_attention()
        for ent in itertools.chain(batch.ents[s:], queued.ents):
            _to_local(ent)

    def _send(self, batch):
        """Send a batch without waiting for its answer."""
        for attempt in (0, 1):
            c = None
            try:
                c = self._connection()
                req = c.send(_PERSIST, batch.items)
                c.flush()
            except BaseException as e:
                if c is not None and (isinstance(e, ConnectionError)
                                      or not isinstance(e, Exception)):
                    self._drop(c)
                if attempt == 0 and _store is not None and isinstance(e, _store.StaleConnection):
                    continue
                self._fail_from(batch, 0, e)
                if not isinstance(e, Exception):
                    raise   # Ctrl-C: the failure is also kept for the next sync point
                return
            with self.lock:
                self.inflight_bytes = batch.nbytes
            self.inflight = (c, req, batch)
            return

    def _persist(self, c, items):
        """One PERSIST on c, waited for (a class the store lacks is sent first)."""
        a = c.request(_PERSIST, items)
        if a[0] == _FAILED and a[2] == _ERR_UNKNOWN_CLASS:
            _register_ids(it[1] for it in items)
            a = c.request(_PERSIST, items)
        return a

    def _wait_inflight(self):
        inf = self.inflight
        if inf is None:
            return
        self.inflight = None
        c, req, batch = inf
        self.waiting = True
        try:
            a = None
            while a is None:
                for ans in c.recv():
                    if ans[1] == req:
                        a = ans
            if a[0] == _FAILED and a[2] == _ERR_UNKNOWN_CLASS:
                a = self._persist(c, batch.items)
        except BaseException as e:
            self._drop(c)   # lost or interrupted: the stream is of no more use
            self._fail_from(batch, 0, e)
            if not isinstance(e, Exception):
                raise
            return
        finally:
            self.waiting = False
            with self.lock:
                self.inflight_bytes = 0
        if a[0] == _OK:
            self._acked(len(batch.items))
        elif a[0] == _FAILED and a[2] in _PER_CALL_CODES and len(batch.ends) > 1:
            self._store_prefix(c, batch, a[2], _answer_error(a))
        else:
            self._fail_from(batch, 0, _answer_error(a))

    def _store_calls(self, c, batch, lo, hi):
        """Store calls lo..hi-1 of batch in one PERSIST, waited for: None (stored),
        else (answer code, exception)."""
        items = batch.calls(lo, hi)
        a = self._persist(c, items)
        if a[0] == _OK:
            self._acked(len(items))
            return None
        return (a[2] if a[0] == _FAILED else None), _answer_error(a)

    def _store_prefix(self, c, batch, code, exc):
        """batch failed as a whole with exc (one transaction: nothing of it is
        stored), blaming one of its calls. Store its calls in order up to the
        first that fails on its own, halving the failing range each time (about
        2 log2(n) waited requests, only after a failure), then fail from that
        one. Invariant: calls before lo are stored; calls lo..hi-1 failed
        together with exc."""
        n = len(batch.ends)
        lo, hi = 0, n
        try:
            while code in _PER_CALL_CODES and hi - lo > 1:
                mid = (lo + hi) // 2
                err = self._store_calls(c, batch, lo, mid)
                if err is not None:
                    hi, (code, exc) = mid, err
                    continue
                lo = mid
                # mid..hi-1 again without the calls before; should they pass now
                # (another client freed an alias meanwhile), the rest of the batch.
                while lo < n:
                    err = self._store_calls(c, batch, lo, hi)
                    if err is not None:
                        code, exc = err
                        break
                    lo, hi = hi, n
                else:
                    return   # everything stored
        except BaseException as e:
            self._drop(c)
            self._fail_from(batch, lo, e)
            if not isinstance(e, Exception):
                raise
            return
        self._fail_from(batch, lo, exc)

    def push(self):
        """Send what is queued (once the batch in flight is acknowledged)."""
        with self.flush_lock:
            self._wait_inflight()
            with self.lock:
                batch, self.queue = self.queue, _Batch()
            if batch.items:
                self._send(batch)

    def flush(self):
        """Send what is queued and wait until the store has it (or it failed: the
        failure is kept for settle)."""
        with self.flush_lock:
            self.push()
            self._wait_inflight()

    def settle(self):
        """A sync point: every call queued before it is stored, durably, or failed;
        a failure is raised (once), as _Failure.exception says."""
        self.flush()
        with self.lock:
            f, self.failure = self.failure, None
            self._update_attention()
        if f is not None:
            raise f.exception()


_wb = _WriteBehind()


def flush():
    """A sync point: send the make_persistent() calls queued (write-behind, and
    pipelined ones) and wait until the store has them on disk. Raises the
    failure of the first of them that failed (see _Failure.exception)."""
    _wb.settle()


_pl = threading.local()   # .depth: pipeline() blocks this thread is in


# BETTONG_PIPELINE=1: every thread of the process pipelines, as if its code
# ran inside pipeline() (for programs that cannot be changed, dataClay's say);
# sync points as inside a block, the last one at exit.
_PIPELINE_ALL = os.environ.get("BETTONG_PIPELINE", "") not in ("", "0")


def _pipelining():
    return _PIPELINE_ALL or getattr(_pl, "depth", 0) > 0


def _check_alias(alias):
    """What the extension would refuse when it encodes the batch (it would fail
    the whole batch there): raised by the call itself instead."""
    if not isinstance(alias, str):
        raise TypeError(f"an alias is a str, not {type(alias).__name__}")
    if len(alias.encode("utf-8")) > 0xFFFF:
        raise ValueError("an alias is at most 65535 bytes of UTF-8")


@contextlib.contextmanager
def pipeline():
    """Inside this block (this thread), make_persistent(alias=...) does not wait
    for the store: its object becomes a proxy at once and the call is queued and
    batched with the others (and with the write-behind ones without an alias).
    Leaving the block is a sync point: it waits until every call queued before
    is on disk, and raises the first failure (AliasTaken for a taken alias,
    naming the call); the calls before the failing one are stored, it and every
    later one are not (their objects are local again). Other sync points: see
    the module documentation. A block left by an exception still waits for the
    calls but leaves their failure to the next sync point. Nestable; also a
    decorator."""
    depth = getattr(_pl, "depth", 0)
    _pl.depth = depth + 1
    ok = False
    try:
        yield
        ok = True
    finally:
        _pl.depth = depth
        if ok:
            flush()
        elif _attention:
            _wb.flush()


@atexit.register
def _flush_at_exit():
    if _attention and _address is not None:
        try:
            _wb.settle()
        except BaseException as e:
            print(f"bettong: objects made persistent could not be stored: {e}", file=sys.stderr)


# ------------------------------------------------------------------ the base class

class Persistent:
    """Base class of persistent objects (alias: DataClayObject).

    Annotated fields are the persistent state; @active methods run in the store on
    a proxy. See the module's documentation for the details.

    State: a class that defines its own __getstate__ stores what it returns (any
    picklable value; persistent objects in it as references) instead of its
    annotated fields; a class that defines __setstate__ gets the stored state
    through it when the object is loaded (in the store, by dc_clone) instead of
    the state's items going into the instance dict -- exactly what pickle does."""

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        if "_bt_base" not in cls.__dict__:      # not a proxy class
            _declare_classfields(cls)

    if _instore is not None:
        def __new__(cls, *args, **kwargs):
            # Inside the store, an object made during an active method's call is
            # a persistent object of this store at once (dataClay's behaviour).
            obj = super().__new__(cls)
            _instore.created(obj)
            return obj

    def make_persistent(self, alias=None, backend_id=None):
        """Store this object (and the local Persistent objects its state references)
        in the store; afterwards this object is a proxy to the stored copy. With an
        alias the call waits for the store (AliasTaken if the alias is taken),
        except inside pipeline(); without, it is write-behind (see the module
        documentation). In a service of several backends the objects go to the
        backend connect() named, or to backend_id (its id, a str or uuid.UUID:
        KeyError if there is none), and the call waits for it. On a proxy:
        backend_id moves it there (move()), alias adds the alias (waited for).
        Inside an active method (in the store): the object is this store's, in
        the call's commit, unless backend_id names another backend."""
        if _instore is not None and _instore.in_call() and (
                backend_id is None
                or str(backend_id) == os.environ.get("BETTONG_STORE_BACKEND_ID")):
            _instore.persist(self, alias)    # this store, in the call's commit
            return None
        if _instore is not None and backend_id is not None and _instore.in_call():
            names = _instore.release(self)   # made by this call: not stored yet
            if names is not None:
                bid = _backend(backend_id).id
                _persist_now(None, alias or (names[0] if names else None), root=self,
                             backend=bid)
                for name in names[1:] if alias is None else names:
                    self.add_alias(name)
                return None
        if "_bettong_id" in self.__dict__:
            if backend_id is not None:
                _move(self, backend_id)
            if alias is not None:
                self.add_alias(alias)
            return None
        if backend_id is not None:
            if _home_id is None:
                _get_conn()
            bid = _backend(backend_id).id
            if bid != _home_id:
                _persist_now(None, alias, root=self, backend=bid)
                return None
        if alias is not None:
            if not _pipelining():
                _persist_now(None, alias, root=self)
                return None
            _check_alias(alias)
        items, ents, nbytes = _collect(self, alias)
        for ent in ents:
            _to_proxy(ent)
        _placed(ents, _home_id)
        _wb.add(items, ents, nbytes)
        return None

    def move(self, backend_id, recursive=False, remotes=True):
        """Move the object's master copy (state and aliases) to backend
        backend_id; its id stays, so references to it keep working. With
        recursive, the objects it refers to (directly or through others) go
        too: those on its own backend, and with remotes also those on other
        backends. A local object is made persistent there instead."""
        if not is_persistent(self):
            self.make_persistent(backend_id=backend_id)
            return None
        if not recursive:
            _move(self, backend_id)
            return None
        if _home_id is None:
            _get_conn()
        target = _backend(backend_id).id
        source = backend_of(self)
        seen = set()
        todo = [(self.__dict__["_bettong_id"], self.__dict__["_bettong_cid"])]
        while todo:
            oid, cid = todo.pop()
            if oid in seen:
                continue
            seen.add(oid)
            obj = _proxy_for(oid, cid)
            if obj is not self and not remotes and backend_of(obj) != source:
                continue   # a reference held elsewhere stays, and is not followed
            todo.extend(_references(obj))
            _move(obj, target)
        return None

    def new_replica(self, backend_id=None, recursive=False, remotes=True):
        """Make a read-only replica of the object on backend backend_id (by
        default one that has no copy yet, the backend connected to first; when
        every backend has one, a warning and nothing else). Reads (fields,
        dc_clone) by a client connected to a backend holding a replica are
        answered there; everything else goes to the master copy, which sends
        every change to its replicas before it answers: a read on a replica
        that starts after a change was acknowledged sees it. With recursive,
        the objects it refers to (directly or through others) get a replica
        there too: those on its own backend, and with remotes also those on
        other backends."""
        if not is_persistent(self):
            raise StoreError(f"this {type(self).__name__} object is not persistent "
                             "(make_persistent() it first)")
        bid = _new_replica(self, backend_id)
        if not recursive:
            return None
        if bid is None:
            if backend_id is None:
                return None
            bid = _backend(backend_id).id
        source = backend_of(self)
        seen = {self.__dict__["_bettong_id"]}
        todo = list(_references(self))
        while todo:
            oid, cid = todo.pop()
            if oid in seen:
                continue
            seen.add(oid)
            obj = _proxy_for(oid, cid)
            where = backend_of(obj)
            if not remotes and where != source:
                continue   # a reference held elsewhere is not copied, nor followed
            todo.extend(_references(obj))
            if where != bid and bid not in replicas_of(obj):
                _new_replica(obj, bid)
        return None

    # -- lookups
    @classmethod
    def get_by_alias(cls, alias):
        """A proxy to the object named alias (NotFound if there is none)."""
        if _instore is not None:
            try:
                return _instore.lookup_alias(alias)     # the live object, in the store
            except NotFound:
                if not _IN_SERVICE:
                    raise                               # else: on another backend?
        a = _request(_LOOKUP_ALIAS, alias)
        if a[0] == _REF:
            if _multi:
                _note_ref(a)
            return _proxy_for(a[2], a[3], cls if cls is not Persistent else None, a[4])
        raise _answer_error(a)

    @classmethod
    def get_by_id(cls, object_id):
        """A proxy to the object with this id (NotFound if there is none)."""
        if _instore is not None:
            try:
                return _instore.lookup_id(str(object_id))
            except NotFound:
                if not _IN_SERVICE:
                    raise
        a = _request(_LOOKUP_ID, str(object_id))
        if a[0] == _REF:
            if _multi:
                _note_ref(a)
            return _proxy_for(a[2], a[3], cls if cls is not Persistent else None, a[4])
        raise _answer_error(a)

    @property
    def id(self):
        """The object's id (a UUID text), None while it is not persistent."""
        oid = self.__dict__.get("_bettong_id")
        if oid is not None and _attention:
            _wb.settle()
        return oid

    def getID(self):
        return self.id

    # -- aliases
    def add_alias(self, alias):
        if _instore is not None and _instore.in_call():
            _instore.add_alias(self, alias)
            return
        a = _request(_ADD_ALIAS, _oid(self), alias)
        if a[0] != _OK:
            raise _answer_error(a)

    @classmethod
    def delete_alias(cls, alias):
        a = _request(_DELETE_ALIAS, alias)
        if a[0] == _FAILED and a[2] == _ERR_NOT_FOUND and _multi:
            # An alias of an object on another backend: removed there.
            ref = _request(_LOOKUP_ALIAS, alias)
            if ref[0] == _REF and ref[4] and ref[4] != _home_id:
                a = _send_to(ref[4], (_DELETE_ALIAS, alias))
        if a[0] != _OK:
            raise _answer_error(a)

    def get_aliases(self):
        """The object's aliases (a set)."""
        if _instore is not None:
            _oid(self)
            return _instore.aliases(self)
        a = _request(_ALIASES, _oid(self))
        if a[0] != _OK:
            raise _answer_error(a)
        return set(_loads(a[2]) or ())

    # -- deletion
    def delete(self):
        """Remove the object from the store (with its aliases). Refused
        (StillReferenced) while stored objects refer to it."""
        oid = _oid(self)
        a = _request(_DELETE, oid)
        if a[0] != _OK:
            raise _answer_error(a)
        if _proxies.get(oid) is self:
            del _proxies[oid]
        _replicas.pop(oid, None)

    # -- versions
    def new_version(self, backend_id=None):
        """A version of this persistent object: a new persistent object (its own
        id, on backend_id or the backend connect() named) holding a copy of its
        persistent state, to change without touching the original. A version's
        new_version() makes a version of the version. consolidate_version()
        merges it back."""
        return _new_version(self, backend_id)

    def consolidate_version(self):
        """Make this version's state the original's, durably; from then on this
        object, and every version of its chain, names the original (requests and
        stored references reach the original). NotAVersion for an object that
        is not a version."""
        _consolidate_version(self)

    # -- copies
    def dc_clone(self):
        """A local, non-persistent copy of the object's current persistent state."""
        oid = self.__dict__.get("_bettong_id")
        base = getattr(type(self), "_bt_base", type(self))
        if oid is None:
            return copy.deepcopy(self)
        a = _request(_GET_STATE, oid)
        if a[0] != _OK:
            raise _answer_error(a)
        state = _version_state(_loads(a[2]))
        obj = object.__new__(base)
        _apply_state(obj, state)
        return obj

    @classmethod
    def dc_clone_by_alias(cls, alias):
        return cls.get_by_alias(alias).dc_clone()

    def dc_update(self, other):
        """Replace the stored object's persistent fields with other's."""
        if is_persistent(other):
            other = other.dc_clone()
        d = other.__dict__
        fields = {f: d[f] for f in persistent_fields(type(other)) if f in d}
        oid = self.__dict__.get("_bettong_id")
        if oid is None:
            self.__dict__.update(fields)
            return None
        data = _dumps_refs(fields)
        a = _request(_UPDATE, oid, data)
        if a[0] != _OK:
            raise _answer_error(a)
        return None

    @classmethod
    def dc_update_by_alias(cls, alias, other):
        cls.get_by_alias(alias).dc_update(other)

    def __repr__(self):
        oid = self.__dict__.get("_bettong_id")
        name = type(self).__qualname__
        if oid is None:
            return f"<{name} object (not persistent) at {id(self):#x}>"
        return f"<{name} {oid}>"


DataClayObject = Persistent
activemethod = active


if _instore is not None:
    _instore.setup(Persistent, _class_record, _new_oid, NotFound, AliasTaken)
