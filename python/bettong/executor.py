"""FunctionExecutor: PyWren/Lithops-style parallel functions on a Bettong pool.

The hot path of a map, per item: one pickle.dumps (in a list comprehension), one
future object, one dict entry; the items go to the pool in CALLS messages of up to a
few thousand calls, each sent as soon as it is pickled so that the workers start
while the rest is prepared. Results are resolved in batches by the receiver thread
and unpickled only when asked for.
"""

import collections
import itertools
import math
import operator
import os
import sys
import threading
import weakref

from . import _localpool

# The rest of the package (the extension, futures, serialization, storage) is
# imported by the first executor made, once it has started its local pool: the
# pool and its workers start while these import (_load). Nothing below uses
# them before an executor exists.
_LAZY = frozenset((
    "_near", "_pool", "Raw", "Unsafe", "bytes_arg_payload", "cloudpickle_dumps", "dumps_args",
    "dumps_function", "function_fingerprint", "quick_snapshot", "shipped_function", "short_repr",
    "payload_size", "_MISSING", "_bettong",
    "ChunkedResults", "ChunkFunction", "EnvFunction", "LimitedFunction", "ALL_COMPLETED",
    "FINISHED", "CancelledError", "FutureList", "Job", "ResponseFuture", "make_items",
    "resolve_local", "results_of", "wait_futures", "Storage", "_is_pickle"))
_loaded = False


def _load():
    global _loaded, _near, _pool, Raw, Unsafe, bytes_arg_payload, cloudpickle_dumps
    global dumps_args, dumps_function, function_fingerprint, quick_snapshot, shipped_function
    global payload_size, _MISSING, _bettong
    global short_repr, ChunkedResults, ChunkFunction, EnvFunction, LimitedFunction
    global ALL_COMPLETED, FINISHED, CancelledError, FutureList, Job, ResponseFuture
    global make_items, resolve_local, results_of, wait_futures, Storage, _PID, _is_pickle
    if _loaded:
        return
    from . import _bettong, _near, _pool
    from ._serial import (_MISSING, Raw, Unsafe, bytes_arg_payload, cloudpickle_dumps,
                          dumps_args, dumps_function, function_fingerprint, payload_size,
                          quick_snapshot, shipped_function, short_repr)
    from ._worker import ChunkedResults, ChunkFunction, EnvFunction, LimitedFunction
    from .futures import (ALL_COMPLETED, FINISHED, CancelledError, FutureList, Job,
                          ResponseFuture, _is_pickle, make_items, resolve_local, results_of,
                          wait_futures)
    from .storage import Storage
    _PID = _pool.PID
    _loaded = True


def __getattr__(name):
    """The names _load imports, for who reads them from this module first."""
    if name in _LAZY:
        _load()
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


try:  # pickle.dumps itself, without the module around it (re, struct...): the
    # executor forks its pool as soon as it is made, and what it imports before
    # is on the way of the first call
    from _pickle import dumps as _dumps
except ImportError:
    from pickle import dumps as _dumps
_PID = None  # _pool.PID once loaded: [this process's id], kept across forks
_MODULES = sys.modules  # no persistent object can exist before bettong.objects is imported
_MAIN = b"__main__"
_E = {}  # the kwargs of a call without any (never mutated)

# Calls per CALLS message when the caller gives no chunksize: a small first one so
# the workers start at once, then bigger ones.
_FIRST_CHUNK = 256
# call_asyncs in a row recorded in one Job (see FunctionExecutor._note_call)
_CALLS_PER_JOB = 256
_MAX_CHUNK = 8192

# Options of a call (map, call_async, map_reduce) beyond the positional ones,
# each done as it says (see _Ship); anything else is refused. (Lithops' other
# spellings are the `lithops` compatibility package's.)
_CALL_OPTIONS = frozenset(("runtime_memory", "include_modules", "exclude_modules"))
_REDUCE_OPTIONS = _CALL_OPTIONS | {"map_runtime_memory", "reduce_runtime_memory"}


def _check_options(where, options, allowed=frozenset()):
    unknown = set(options) - allowed
    if unknown:
        hint = ""
        if unknown & {"config", "backend", "storage", "log_level", "obj_chunk_size",
                      "obj_chunk_number", "spawn_reducer", "runtime", "mode"}:
            hint = " (Lithops' spellings: `import lithops`, see the user guide)"
        raise TypeError(f"{where}() got unexpected keyword argument(s): "
                        f"{', '.join(sorted(unknown))}{hint}")


def _memory_mb(value, what="runtime_memory"):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{what} must be a positive number of MiB, not {value!r}")
    return value


def _module_list(value, what):
    if value is None:
        return ()
    if isinstance(value, str) or not all(isinstance(m, str) for m in value):
        raise ValueError(f"{what} must be a list of module names, not {value!r}")
    return tuple(value)


class _Ship:
    """How a call's function is sent and run: runtime_memory (MiB the call may
    add to its worker's address space, see _worker.LimitedFunction), and the
    modules pickled by value (include_modules) or by reference (exclude_modules)
    with it (see _serial.shipped_function)."""

    __slots__ = ("memory", "include", "exclude")

    def __init__(self, memory=None, include=(), exclude=()):
        self.memory = memory
        self.include = include
        self.exclude = exclude

    @classmethod
    def of(cls, options, memory_key="runtime_memory", default_memory=None):
        """The _Ship of a call's options, or None when they ask for nothing."""
        memory = _memory_mb(options.get(memory_key), memory_key)
        if memory is None:
            memory = default_memory
        include = _module_list(options.get("include_modules"), "include_modules")
        exclude = _module_list(options.get("exclude_modules"), "exclude_modules")
        if memory is None and not include and not exclude:
            return None
        return cls(memory, include, exclude)

    @property
    def modules(self):
        return bool(self.include or self.exclude)


def _wrap(func, extra_env, ship):
    """The function the workers run: func, with extra_env and the memory limit."""
    if ship is not None and ship.memory:
        return LimitedFunction(func, extra_env, ship.memory)
    return EnvFunction(func, extra_env) if extra_env else func


def _timeout_ms(timeout):
    if timeout is None or timeout == 0:
        return 0
    if timeout < 0:
        raise ValueError("timeout must be positive")
    return min(0xFFFFFFFF, max(1, math.ceil(timeout * 1000)))


def _retries(retries):
    retries = int(retries or 0)
    if not 0 <= retries <= 0xFFFF:
        raise ValueError("retries must be between 0 and 65535")
    return retries


_params_cache = weakref.WeakKeyDictionary()


def _params(func):
    """{parameter name: position, or None for keyword-only} of func (cached: the
    signature of a builtin is parsed from text, which is slow)."""
    try:
        return _params_cache[func]
    except (KeyError, TypeError):
        pass
    out = _code_params(func)
    if out is None:
        out = _signature_params(func)
    try:
        _params_cache[func] = out
    except TypeError:
        pass
    return out


_FUNCTION = type(_params)


def _code_params(func):
    """_params of a plain Python function, read from its code object (what
    inspect.signature reads, without importing inspect: it is the slowest
    import on the way to a first call); None for any other callable, or a
    function that says it has another signature (__wrapped__, __signature__)."""
    if type(func) is not _FUNCTION or "__wrapped__" in func.__dict__ \
            or "__signature__" in func.__dict__:
        return None
    code = func.__code__
    npos = code.co_argcount
    names = code.co_varnames[:npos + code.co_kwonlyargcount]
    out = {}
    for i, name in enumerate(names):
        if i < code.co_posonlyargcount:
            continue
        out[name] = i if i < npos else None
    return out


def _signature_params(func):
    import inspect  # (not at import: it is slow to import, and many never need it)
    try:
        sig = inspect.signature(func)
    except (TypeError, ValueError):
        return {}
    out = {}
    pos = 0
    for p in sig.parameters.values():
        if p.kind == p.POSITIONAL_ONLY:
            pos += 1
        elif p.kind == p.POSITIONAL_OR_KEYWORD:
            out[p.name] = pos
            pos += 1
        elif p.kind == p.KEYWORD_ONLY:
            out[p.name] = None
    return out


_SPECIAL = frozenset((tuple, dict, bytes))


def _special_payload(x):
    """The payload of an item that is a tuple (positional arguments), a dict
    (keyword arguments) or a bytes (sent without a copy when large)."""
    t = type(x)
    if t is tuple:
        return _dumps((x, _E), 5)
    if t is dict:
        return _dumps(((), x), 5)
    raw = bytes_arg_payload(x)
    return raw if raw is not None else _dumps(((x,), _E), 5)


class _Binding:
    """How items of iterdata become pickled (args, kwargs).

    A tuple binds positionally, a dict by keyword (exact types: a namedtuple or an
    OrderedDict is one value), anything else is the single first argument.
    extra_args (a tuple/list, or a dict) is appended, or merged. A parameter named
    `id` gets the item's index, one named `storage` the executor's Storage."""

    def __init__(self, func, extra_args, storage, what):
        self.what = what
        params = _params(func)
        self.extra_pos = ()
        self.extra_kw = None
        if extra_args is None:
            pass
        elif isinstance(extra_args, dict):
            self.extra_kw = dict(extra_args)
        elif isinstance(extra_args, (tuple, list)):
            self.extra_pos = tuple(extra_args)
        else:
            self.extra_pos = (extra_args,)
        self.want_id = "id" in params
        self.id_pos = params.get("id")
        self.storage = storage
        self.want_storage = "storage" in params and storage is not None
        self.storage_pos = params.get("storage")
        self.simple = not (self.extra_pos or self.extra_kw or self.want_id or self.want_storage)

    def bind(self, i, x):
        t = type(x)
        extra_kw = self.extra_kw
        if t is tuple:
            args = x + self.extra_pos if self.extra_pos else x
            kwargs = dict(extra_kw) if extra_kw else {}
        elif t is dict:
            args = self.extra_pos
            kwargs = {**x, **extra_kw} if extra_kw else dict(x)
        else:
            args = (x,) + self.extra_pos
            kwargs = dict(extra_kw) if extra_kw else {}
        if self.want_id and "id" not in kwargs and (self.id_pos is None or len(args) <= self.id_pos):
            kwargs["id"] = i
        if (self.want_storage and "storage" not in kwargs
                and (self.storage_pos is None or len(args) <= self.storage_pos)):
            kwargs["storage"] = self.storage
        return args, kwargs

    def one(self, i, x):
        try:
            if self.simple:
                t = type(x)
                if t is bytes and (raw := bytes_arg_payload(x)) is not None:
                    return raw
                obj = ((x,), _E) if t is not tuple and t is not dict else (
                    (x, _E) if t is tuple else ((), x))
            else:
                obj = self.bind(i, x)
            return dumps_args(obj)
        except Exception as e:
            raise TypeError(f"cannot pickle argument {i} of {self.what}: {short_repr(x)}: {e}") from e

    def calls(self, items, base):
        """The (args, kwargs) of each item."""
        if self.simple:
            T, D, E = tuple, dict, _E
            return [((x,), E) if (t := type(x)) is not T and t is not D
                    else ((x, E) if t is T else ((), x)) for x in items]
        bind = self.bind
        return [bind(base + j, x) for j, x in enumerate(items)]

    def payloads(self, items, base):
        if self.simple:
            E, dumps, special, S = _E, _dumps, _special_payload, _SPECIAL
            try:
                out = [dumps(((x,), E), 5) if type(x) not in S else special(x) for x in items]
            except Exception:
                out = None
            if out is not None:
                if any(map(operator.contains, out, itertools.repeat(_MAIN))):
                    for j, p in enumerate(out):
                        if _MAIN in p:  # something of the caller's script: by value
                            out[j] = self.one(base + j, items[j])
                return out
        one = self.one
        return [one(base + j, x) for j, x in enumerate(items)]


def chunk_payload(binding, items, base):
    """The pickled arguments of a chunk's call: ([(args, kwargs), ...],), {}; or,
    when the binding is the simple one (see ChunkFunction.raw), ([item, ...],), {}:
    the items themselves, bound on the worker."""
    obj = ((items if binding.simple else binding.calls(items, base),), _E)
    try:
        p = _dumps(obj, 5)
        if _MAIN not in p:
            return p
    except Exception:
        pass
    try:
        return cloudpickle_dumps(obj)
    except Exception:
        for j, x in enumerate(items):  # name the item that does not pickle
            binding.one(base + j, x)
        raise


class _Reduce:
    """The reduce of a map_reduce: sent once every map call is done, with the list
    of map results (still pickled: they are unpickled on the worker)."""

    def __init__(self, executor, client, pf, maps, future, timeout_ms, retries, storage):
        self.client = client
        self.pf = pf
        self.maps = maps
        self.future = future
        self.timeout_ms = timeout_ms
        self.retries = retries
        self.storage = storage
        self.remaining = len(maps)
        self.lock = threading.Lock()
        future._cancel_hook = self.cancel
        future.map_futures = maps
        self.func_id = client.pin_function(pf)  # sent now; unpinned once fired
        # A chunked map's calls are its chunks: told once per chunk, not per item.
        watched = getattr(maps, "_chunks", None) or maps
        self.remaining = len(watched)
        if not maps:
            self.fire()
        else:
            for f in watched:
                f.add_done_callback(self.one_done)

    def one_done(self, f):
        with self.lock:
            self.remaining -= 1
            last = self.remaining == 0
        if last:
            self.client.defer(self.fire)

    def cancel(self, future):
        with self.lock:
            sent = future._call_id is not None
            if not sent:
                resolve_local([future], cancelled=True)
        if sent:
            return future.cancel()
        ids = [f._call_id for f in self.maps if not f.done()]
        if ids:
            try:
                self.client.conn.cancel(ids)
            except OSError:
                pass
        return True

    def fire(self):
        rf = self.future
        try:
            with self.lock:
                if rf.done():
                    return
                failed = next((f for f in self.maps
                               if f._state != FINISHED or not f.succeeded()), None)
                if failed is not None:
                    if failed.cancelled():
                        exc = CancelledError(f"map call {failed._call_id} of the map_reduce was cancelled")
                    else:
                        exc = failed.exception()
                    resolve_local([rf], exc=exc)
                    return
                if self.maps and self.maps[0]._chunk is not None:
                    parts = []
                    chunks = getattr(self.maps, "_chunks", None)
                    if chunks is None:
                        chunks = dict.fromkeys(f._chunk for f in self.maps)
                    for c in chunks:
                        ev = c._ev  # its payload is dropped only once _result is set
                        if len(ev) == 10 and _is_pickle(ev[9]):
                            parts.append(ev[9])
                        else:  # (taken as the value, or out of band: decoded here)
                            c._decode()
                            parts.append(c._result[0])
                    values = ChunkedResults(parts)
                else:
                    values = []
                    for f in self.maps:
                        ev = f._ev  # its payload is dropped only once _result is set
                        n = len(ev)
                        if n == 10 and _is_pickle(ev[9]):
                            values.append(Raw(ev[9]))
                        elif n == 11:
                            values.append(ev[9])
                        else:  # (out of band: decoded here)
                            f._decode()
                            values.append(f._result)
                kwargs = {"storage": self.storage} if self.storage is not None else {}
                payload = _dumps(((values,), kwargs), 5)
                del values
                client = self.client
                call_id = client.call_ids(1)
                rf._call_id = call_id
                client.submit(self.func_id, self.timeout_ms, self.retries, call_id, [payload],
                              [rf])
        except BaseException as e:
            resolve_local([rf], exc=e)
        finally:
            self.client.unpin_function(self.pf)


class _Hot:
    """What call_async prepared for the function it was last given (held weakly),
    so that a loop of call_async on one function skips the lookups: the
    binding, the pickled function (still checked against the function's
    fingerprint on every call, as _pickled does, unless it travels by
    reference) and its id in the pool's registry, pinned while it is kept.

    `call(executor, func, data)` (with the executor's _hot_lock held) is the
    future of func(data), or None when the slow path must run: a
    _bettong.HotCall, which checks the client (the executor's current one, open,
    made by this process, not a stale sub-call client) and the function (by
    the identities of _serial.quick_snapshot, else by its fingerprint), pickles
    ((data,), {}) (binding.one when the binding or the item is not the simple
    kind, or the pickle names __main__), then makes the future, holds the call
    back in the client's out queue (Client.submit_one) and notes it in the
    executor's Jobs (_note_call), in one C call."""

    __slots__ = ("ref", "binding", "pf", "fp", "client", "func_id", "call")

    def __init__(self, ex, ref, binding, pf, fp, client, func_id):
        self.ref = ref
        self.binding = binding
        self.pf = pf
        self.fp = fp
        self.client = client
        self.func_id = func_id
        check = None
        if fp is not None:
            def check(f, fp=fp):
                try:
                    return function_fingerprint(f) == fp
                except Unsafe:
                    return False
        self.call = _bettong.HotCall(
            ids=client._ids, client=client, pending=client._pending, outq=client._outq,
            pid_list=_PID, pid=client.pid, parent_task=client.parent_task, stale=_stale_subcall,
            quick=quick_snapshot(ref()) if fp is not None else None, missing=_MISSING,
            check=check, binding=binding, simple=binding.simple, dumps=_dumps, kwargs=_E,
            protocol=5, func_id=func_id, tms=ex._tms, retries=ex._retries,
            future_type=ResponseFuture, payload_size=payload_size, jobs=ex._jobs,
            max_args=_pool._MAX_ARGS, outq_max=_pool._OUTQ_MAX, per_job=_CALLS_PER_JOB)

    def drop(self):
        try:
            self.client.unpin_function(self.pf)
        except Exception:  # noqa: BLE001 (a closed connection: nothing to unpin)
            pass


class FunctionExecutor:
    """Runs functions on a pool of Bettong workers.

    FunctionExecutor()                      a local pool, one worker per core
    FunctionExecutor(workers=8)             a local pool of 8 workers
    FunctionExecutor(address="host:port")   a running pool (secret=, or $BETTONG_SECRET;
                                            address= defaults to $BETTONG_POOL if set)

    The local pool starts when the executor is made (it starts in the background
    while the first call is prepared) and is reused; close() (or the with block,
    or the end of the program) stops it. `storage` / `storage_dir` choose the
    Storage handed to functions with a `storage` parameter. `timeout` (seconds) and
    `retries` are the defaults of every call."""

    def __init__(self, workers=None, address=None, secret=None, storage=None,
                 storage_dir=None, timeout=None, retries=0, show_progressbar=None,
                 name=None, max_workers=None, runtime_memory=None, **options):
        _check_options("FunctionExecutor", options)
        self._memory = _memory_mb(runtime_memory)
        if workers is None:
            workers = max_workers
        if workers is not None and int(workers) < 1:
            raise ValueError("workers must be at least 1")
        if address is None:
            address = os.environ.get("BETTONG_POOL") or None
        self._workers = int(workers) if workers is not None else None
        self.address = address
        self._secret = secret
        # The local pool starts now, in the background: its process and workers
        # start while the rest is imported and the first call prepared.
        self._finalizer = None
        self._starting = None
        if address is None:
            try:
                self._starting = _localpool.start_local(self._workers, secret)
            except Exception:  # reported where it was: on first use, starting it again
                self._starting = None
            if self._starting is not None:
                self._finalizer = weakref.finalize(self, self._starting.abandon)
        _load()
        if isinstance(storage, Storage):
            self.storage = storage
        elif storage_dir is not None:
            self.storage = Storage(storage_dir)
        else:  # None, or a Lithops backend name ("localhost")
            self.storage = Storage()
        self._timeout = timeout
        self._tms = _timeout_ms(timeout)
        self._retries = _retries(retries)
        self._show = show_progressbar
        self._name = name
        self._client = None
        self._lock = threading.Lock()
        self._jobs = {}            # Jobs not wholly collected (get_result()/wait() without fs)
        self._recent = collections.deque(maxlen=16)  # weakrefs to recent FutureLists (plot)
        self._pf_cache = weakref.WeakKeyDictionary()
        self._chunk_pfs = weakref.WeakKeyDictionary()  # fn's pickle -> ChunkFunction pickles
        self._bindings = weakref.WeakKeyDictionary()  # call_async's, per function
        self._hot = None  # call_async's last function, prepared (_Hot)
        self._calls_job = None  # the Job of the latest call_asyncs in a row
        self._hot_lock = threading.Lock()

    # ------------------------------------------------------------ the pool
    def _get_client(self):
        c = self._client
        if (c is not None and not c.closed and not c._closing and c.pid == _PID[0]
                and not (c.parent_task and _stale_subcall(c))):
            return c
        with self._lock:
            c = self._client
            if (c is None or c.closed or c._closing or c.pid != os.getpid()
                    or (c.parent_task and _stale_subcall(c))):
                if c is not None and c.parent_task and not c.closed:
                    c.release()  # a way back in from a call that is over
                if c is not None and c.closed and c.pid == os.getpid():
                    c.close()  # the pool went away: reap what is left of it
                self._client = None
                local, self._starting = self._starting, None
                if local is not None and local.proc.poll() is not None:
                    # it stopped waiting for us (`bettong pool --exit-with-client`
                    # waits 120 s for its first client): start another
                    local.abandon()
                    local = None
                c = self._client = _pool.Client(self.address, self._secret, self._workers,
                                                self._name, local=local)
                # An executor dropped without close() does not leave its pool running
                # for the rest of the program: it closes once its calls are done.
                if self._finalizer is not None:
                    self._finalizer.detach()
                self._finalizer = weakref.finalize(self, c.release)
        return c

    @property
    def workers(self):
        """Workers of the pool (starts it if needed)."""
        return self._get_client().workers

    def status(self):
        """{'workers', 'queued', 'running'} from the pool."""
        w, q, r = self._get_client().status()
        return {"workers": w, "queued": q, "running": r}

    def close(self):
        """Stop the local pool (or disconnect from a remote one). Calls still in flight
        are cancelled. The executor starts a new pool if used again."""
        with self._lock:
            c, self._client = self._client, None
            local, self._starting = self._starting, None
            if self._finalizer is not None:
                self._finalizer.detach()
                self._finalizer = None
        if local is not None:
            local.abandon()
        with self._hot_lock:
            self._hot = None  # (its pin goes with the connection)
        if c is not None:
            c.close()

    shutdown = close

    def clean(self):
        """Nothing to remove: arguments and results travel in the pool's
        messages, never through storage (the `lithops` package's clean()
        removes its jobs' temporary objects)."""

    def _interrupt(self):
        with self._lock:
            c, self._client = self._client, None
        if c is not None:
            c.interrupt()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            pending = [f for j in list(self._jobs.values()) for f in j.futures if not f.done()]
            if pending:
                wait_futures(pending, show_progressbar=False, on_interrupt=self._interrupt)
        elif self._client is not None:
            self._client.cancel_all()
        self.close()
        return False

    def __repr__(self):
        where = self.address or ("local pool" if self._client or self._starting
                                 else "local pool (not started)")
        return f"<bettong.FunctionExecutor {where}>"

    # ------------------------------------------------------------ submitting
    def _pickled(self, fn):
        """fn pickled, reusing an earlier pickle of the same function object when it
        travels by reference, or when nothing it captured has changed since."""
        cache = self._pf_cache
        try:
            ent = cache.get(fn)
        except TypeError:  # not weakly referenceable
            return dumps_function(fn)
        try:
            fp = function_fingerprint(fn)
        except Unsafe:
            fp = None
        if ent is not None:
            old_fp, pf = ent
            if pf.by_reference or (fp is not None and fp == old_fp):
                return pf
        pf = dumps_function(fn)
        if pf.by_reference or fp is not None:
            try:
                cache[fn] = (fp, pf)
            except TypeError:
                pass
        return pf

    def _submit_items(self, func, items, binding, extra_env, chunksize, timeout, retries,
                      near=None, ship=None):
        """Send one call per item (chunksize None or 1) or one per chunk of
        chunksize items, each near the store backend `near` says (see
        bettong._near), run as `ship` says (_Ship); returns a future per item,
        in order."""
        fn = _wrap(func, extra_env, ship)
        if chunksize is not None:
            chunksize = int(chunksize)
            if chunksize < 1:
                raise ValueError("chunksize must be at least 1")
        n = len(items)
        chunked = chunksize is not None and chunksize > 1 and n > 1
        if ship is not None and ship.modules:
            pf = shipped_function(ChunkFunction(fn, binding.simple) if chunked else fn,
                                  ship.include, ship.exclude)
        else:
            pf = self._chunk_function(fn, binding.simple) if chunked else self._pickled(fn)
        tms = self._tms if timeout is None else _timeout_ms(timeout)
        retries = self._retries if retries is None else _retries(retries)
        if n == 0:
            return FutureList()
        places = _near.Places(near).of_items(items)  # before anything is sent
        client = self._get_client()
        if client._outq:
            client.flush()  # calls made before this map go first
        func_id = client.pin_function(pf)
        futures = FutureList()
        try:
            if chunked:
                self._send_chunks(client, func_id, tms, retries, items, binding, chunksize,
                                  futures, places)
            else:
                self._send_calls(client, func_id, tms, retries, items, binding, futures, places)
        except BaseException:
            if futures:
                client.withdraw(futures)
            raise
        finally:
            client.unpin_function(pf)
        return futures

    @staticmethod
    def _submit_near(client, func_id, tms, retries, first, payloads, futs, places):
        """Calls first.. with places[j] the backend call first+j is near: one
        CALLS message per backend (the pool reads a preference per message)."""
        if places is None:
            client.submit(func_id, tms, retries, first, payloads, futs)
            return
        for place, idx in _near.groups(places, 0, len(futs)):
            if len(idx) == len(futs):
                client.submit(func_id, tms, retries, first, payloads, futs, place)
            else:
                client.submit(func_id, tms, retries, [first + j for j in idx],
                              [payloads[j] for j in idx], [futs[j] for j in idx], place)

    @staticmethod
    def _send_calls(client, func_id, tms, retries, items, binding, futures, places=None):
        # A small first message so the workers start at once, then bigger ones.
        RF = ResponseFuture
        n = len(items)
        start, step = 0, _FIRST_CHUNK
        while start < n:
            payloads = binding.payloads(items[start:start + step], start)
            m = len(payloads)
            first = client.call_ids(m)
            futs = [RF(client, i) for i in range(first, first + m)]
            FunctionExecutor._submit_near(client, func_id, tms, retries, first, payloads, futs,
                                          None if places is None else places[start:start + m])
            futures += futs
            start += m
            step = min(step * 2, _MAX_CHUNK)

    def _chunk_function(self, fn, raw):
        """ChunkFunction(fn, raw) pickled; the pickle is reused while fn's is (a
        new wrapper per map would otherwise be pickled by value every time)."""
        pf = self._pickled(fn)
        key = ("chunks", raw)
        ent = self._chunk_pfs.get(pf)
        if ent is None:
            ent = self._chunk_pfs[pf] = {}
        cpf = ent.get(key)
        if cpf is None:
            cpf = ent[key] = dumps_function(ChunkFunction(fn, raw))
        return cpf

    @staticmethod
    def _send_chunks(client, func_id, tms, retries, items, binding, k, futures, places=None):
        # One call per k items; a message holds up to _MAX_CHUNK items' worth. The
        # items' futures are made in C (make_items), all at once once the calls are
        # sent (see _bettong.chunk_items). A chunk is near the backend all its items
        # are near (else nowhere).
        RF = ResponseFuture
        n = len(items)
        cplaces = None if places is None else _near.chunk_places(places, n, k)
        start = 0
        per_msg = max(1, _FIRST_CHUNK // k)
        chunks = futures._chunks = []
        while start < n:
            end = min(n, start + per_msg * k)
            payloads = [chunk_payload(binding, items[s:s + k], s) for s in range(start, end, k)]
            m = len(payloads)
            first = client.call_ids(m)
            carriers = [RF(client, first + j) for j in range(m)]
            chunks += carriers
            c0 = start // k
            FunctionExecutor._submit_near(client, func_id, tms, retries, first, payloads,
                                          carriers,
                                          None if cplaces is None else cplaces[c0:c0 + m])
            start = end
            per_msg = min(per_msg * 2, max(1, _MAX_CHUNK // k))
        futures += make_items(chunks, k, n)

    def _record(self, kind, futures):
        if futures:
            Job(kind, futures, self._jobs, getattr(futures, "_chunks", None))
            if isinstance(futures, FutureList):
                self._recent.append(weakref.ref(futures))

    def _send_one(self, fn, payload, timeout, retries, near=None, ship=None):
        """One call of fn with an already pickled (args, kwargs), near the store
        backend named `near` (None: anywhere): its future."""
        if ship is not None and ship.modules:
            pf = shipped_function(fn, ship.include, ship.exclude)
        else:
            pf = self._pickled(fn)
        tms = self._tms if timeout is None else _timeout_ms(timeout)
        retries = self._retries if retries is None else _retries(retries)
        client = self._get_client()
        func_id = client.pin_function(pf)
        try:
            call_id = client.call_ids(1)
            f = ResponseFuture(client, call_id)
            client.submit_one(func_id, tms, retries, call_id, payload, f, near)
        finally:
            client.unpin_function(pf)
        return f

    def call_async(self, func, data, extra_env=None, timeout=None, retries=None, near=None,
                   **options):
        """Run func once on data (bound like one map item). Returns its future.
        near: as for map (by default, near the backend of the first argument
        that is a persistent object)."""
        ship = None
        if options or self._memory:
            _check_options("call_async", options, _CALL_OPTIONS)
            ship = _Ship.of(options, default_memory=self._memory)
        hot = self._hot
        if (hot is not None and hot.ref() is func and ship is None and extra_env is None
                and timeout is None
                and retries is None and near is None
                and ("bettong.objects" not in _MODULES or not _near.maybe_near(data))):
            with self._hot_lock:  # (its function stays pinned until it is sent)
                f = hot.call(self, func, data) if hot is self._hot else None
            if f is not None:
                return f
        f = self._call_async(func, data, extra_env, timeout, retries, near, ship)
        if extra_env is None and timeout is None and retries is None and ship is None:
            self._make_hot(func)
        return f

    def _make_hot(self, func):
        """Keep what call_async prepared for func for its next call (see _Hot)."""
        client = self._client
        binding = self._bindings.get(func)
        pf = self._pickled(func)
        try:
            fp = None if pf.by_reference else function_fingerprint(func)
            ref = weakref.ref(func)
        except (Unsafe, TypeError):
            fp = ref = None  # pickled again for every call: nothing to keep
        with self._hot_lock:
            old = self._hot
            if (old is not None and old.ref() is func and old.client is client
                    and old.pf is pf and old.binding is binding):
                return
            self._hot = None
            if old is not None:
                old.drop()
            if ref is not None and binding is not None and client is not None:
                self._hot = _Hot(self, ref, binding, pf, fp, client, client.pin_function(pf))

    def _call_async(self, func, data, extra_env, timeout, retries, near=None, ship=None):
        binding = self._bindings.get(func) if extra_env is None else None
        if binding is None:
            binding = _Binding(func, None, self.storage, "call_async")
            if extra_env is None:
                try:
                    self._bindings[func] = binding
                except TypeError:
                    pass
        places = _near.Places(near).of_items([data])
        payload = binding.one(0, data)
        fn = _wrap(func, extra_env, ship)
        f = self._send_one(fn, payload, timeout, retries, places[0] if places else None, ship)
        with self._hot_lock:
            self._note_call(f)
        return f

    def _note_call(self, f):
        """Record a call_async's future (with _hot_lock held): calls in a row
        share one Job, up to _CALLS_PER_JOB of them (a Job per call costs as
        much as the rest of the call; a shared one keeps the futures it holds
        until all of them are collected, hence the bound)."""
        job = self._calls_job
        jobs = self._jobs
        if (job is not None and 0 < job.left and len(job.futures) < _CALLS_PER_JOB
                and jobs and next(reversed(jobs)) == id(job) and jobs[id(job)] is job):
            job.futures.append(f)
            job.left += 1
            f._job = job
        else:
            self._calls_job = Job("call_async", [f], jobs)

    def map(self, map_function, map_iterdata, extra_args=None, extra_env=None, chunksize=None,
            timeout=None, retries=None, near=None, **options):
        """One call of map_function per item of map_iterdata; futures in order.

        near: where each call would rather run, for pools with workers started
        next to store backends (`bettong worker --near-store NAME`). None (the
        default): next to the backend holding the call's first argument that is
        a persistent object, if any; False: anywhere; True: the first argument
        is a persistent object, an object id or a backend; a callable: called
        with each item, returns one of those; anything else: every call near
        that backend or object. A call goes to a free worker near its backend,
        else to any free worker (it never waits for a busy one). Each future's
        stats["worker_near"] says where it ran.

        runtime_memory=MiB: each call may grow its worker's address space by at
        most that much (else it fails with MemoryError); include_modules /
        exclude_modules: module names sent by value with the function / by
        reference (imported by the workers)."""
        _check_options("map", options, _CALL_OPTIONS)
        ship = _Ship.of(options, default_memory=self._memory)
        items = map_iterdata if isinstance(map_iterdata, list) else list(map_iterdata)
        binding = _Binding(map_function, extra_args, self.storage, "map")
        fs = self._submit_items(map_function, items, binding, extra_env, chunksize, timeout,
                                retries, near, ship)
        self._record("map", fs)
        return fs

    def map_reduce(self, map_function, map_iterdata, reduce_function, extra_args=None,
                   extra_env=None, chunksize=None, timeout=None, retries=None, near=None,
                   **options):
        """A map, then reduce_function(list of the map results, in iterdata order) on a
        worker as soon as the maps are done. Returns the reduce's future (its
        `map_futures` attribute holds the map's). A failed map call fails the reduce
        with the same exception. runtime_memory (or map_runtime_memory and
        reduce_runtime_memory), include_modules, exclude_modules: as for map."""
        _check_options("map_reduce", options, _REDUCE_OPTIONS)
        mem = options.get("runtime_memory")
        mship = _Ship.of(options, "map_runtime_memory", _memory_mb(mem) or self._memory)
        rship = _Ship.of(options, "reduce_runtime_memory", _memory_mb(mem) or self._memory)
        rfn = _wrap(reduce_function, extra_env, rship)
        if rship is not None and rship.modules:
            rpf = shipped_function(rfn, rship.include, rship.exclude)
        else:
            rpf = self._pickled(rfn)
        rstorage = self.storage if "storage" in _params(reduce_function) else None
        items = map_iterdata if isinstance(map_iterdata, list) else list(map_iterdata)
        binding = _Binding(map_function, extra_args, self.storage, "map_reduce")
        maps = self._submit_items(map_function, items, binding, extra_env, chunksize, timeout,
                                  retries, near, mship)
        client = self._get_client()
        rf = ResponseFuture(client, None)
        _Reduce(self, client, rpf, maps, rf,
                _timeout_ms(self._timeout if timeout is None else timeout),
                self._retries if retries is None else _retries(retries), rstorage)
        self._record("map_reduce", [rf])
        return rf

    def _reduce_of(self, maps, reduce_function, extra_env=None, timeout=None, retries=None,
                   **options):
        """reduce_function(list of the results of `maps`) on a worker once they are
        done: its future. maps: futures of this executor's calls, one call each
        (not items of a chunked map). For the `lithops` package's one reducer
        per object."""
        _check_options("_reduce_of", options, _CALL_OPTIONS)
        if any(f._chunk is not None for f in maps):
            raise ValueError("a reduce over some calls cannot take items of a chunked map")
        rship = _Ship.of(options, default_memory=self._memory)
        rfn = _wrap(reduce_function, extra_env, rship)
        if rship is not None and rship.modules:
            rpf = shipped_function(rfn, rship.include, rship.exclude)
        else:
            rpf = self._pickled(rfn)
        rstorage = self.storage if "storage" in _params(reduce_function) else None
        client = self._get_client()
        rf = ResponseFuture(client, None)
        _Reduce(self, client, rpf, list(maps), rf,
                _timeout_ms(self._timeout if timeout is None else timeout),
                self._retries if retries is None else _retries(retries), rstorage)
        self._record("map_reduce", [rf])
        return rf

    # ------------------------------------------------------------ results
    def _uncollected(self):
        jobs = list(self._jobs.values())
        fs = [f for j in jobs for f in j.futures if not f._collected]
        single = len(jobs) == 1 and jobs[0].kind in ("call_async", "map_reduce") and len(fs) == 1
        return fs, single

    def wait(self, fs=None, return_when="ALL_COMPLETED", timeout=None, show_progressbar=None,
             **options):
        """Wait for futures (all this executor's uncollected ones by default).
        Returns (done, not_done). return_when: ALL_COMPLETED, ANY_COMPLETED, ALWAYS."""
        if fs is None:
            fs, _ = self._uncollected()
        elif isinstance(fs, ResponseFuture):
            fs = [fs]
        show = self._show if show_progressbar is None else show_progressbar
        return wait_futures(fs, return_when, timeout, show, on_interrupt=self._interrupt)

    def get_result(self, fs=None, timeout=None, show_progressbar=None, throw_except=True,
                   **options):
        """Results in the order of fs (a list), one value for one future, or for every
        uncollected future of this executor when fs is None (one value if that is a
        single call_async or map_reduce). The first failure (in order) is raised once
        all are done; with throw_except=False it is returned in place."""
        single = False
        if fs is None:
            fs, single = self._uncollected()
        elif isinstance(fs, ResponseFuture):
            fs, single = [fs], True
        elif not isinstance(fs, list):
            fs = list(fs)
        show = self._show if show_progressbar is None else show_progressbar
        out = results_of(fs, timeout, show, throw_except, on_interrupt=self._interrupt)
        return out[0] if single else out

    def plot(self, fs=None, path=None, dst=None):
        """A PNG timeline of the calls (one row per worker) at `path`; needs matplotlib."""
        from .plot import plot_timeline
        if fs is None:  # the uncollected futures, and recent maps still referenced
            fs = self._uncollected()[0]
            seen = {id(f) for f in fs}
            for ref in self._recent:
                lst = ref()
                for f in lst or ():
                    if id(f) not in seen:
                        seen.add(id(f))
                        fs.append(f)
        elif isinstance(fs, ResponseFuture):
            fs = [fs]
        return plot_timeline(list(fs), path or dst or "bettong-timeline.png")


def _stale_subcall(client):
    """Whether a sub-call client (see _pool.subcall_ticket) was made in another
    call than the one running now: a new call needs its own way back in."""
    ticket = _pool.subcall_ticket()
    return ticket is None or ticket[1] != client.parent_task


def default_executor(**kwargs):
    """PyWren's name for a FunctionExecutor."""
    return FunctionExecutor(**kwargs)


def local_executor(**kwargs):
    """PyWren's name for a FunctionExecutor on a local pool."""
    return FunctionExecutor(**kwargs)
