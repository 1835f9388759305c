"""Where a call would rather run: the store backend that holds the persistent
object it works on, so that the pool can send it to a worker started next to
that backend (`bettong worker --join POOL --near-store NAME`).

The pool matches names: a call carries the name of a backend (its `bettong
store --name`), a worker the name it joined with. This module turns what the
caller gives into that name, on the client, before the calls are sent:

- near=None (the default): automatic. The first argument of a call that is a
  persistent object (a proxy) decides: for an item of iterdata that is a tuple,
  its first element that is one; for a dict, its first value that is one;
  otherwise the item itself. Calls with no persistent argument have no
  preference. Nothing is asked of the store unless a proxy is met.
- near=False: no preference for any call.
- near=True: each call's first argument is what it is near: a persistent
  object, an object id (str), a backend id or name, or a Backend.
- near=callable: called with each item of iterdata; returns any of those (or
  None: no preference).
- near=<anything else>: every call is near it (a backend name or id, a
  Backend, a persistent object, an object id).

An object's backend comes from bettong.objects.backend_of (cached by the
objects layer; the first look-up of an object id asks the store once), a
backend id's name from bettong.objects.backends() (asked once per map).
"""

import sys


def _objects():
    """bettong.objects if it was imported: without it no proxy can exist."""
    return sys.modules.get("bettong.objects")


def _first_persistent(x, objects):
    """The item's first argument that is a persistent object, or None."""
    t = type(x)
    if t is tuple:
        cands = x
    elif t is dict:
        cands = x.values()
    else:
        cands = (x,)
    P = objects.Persistent
    for v in cands:
        if isinstance(v, P) and "_bettong_id" in v.__dict__:
            return v
    return None


def _is_proxy(v):
    objects = _objects()
    return objects is not None and isinstance(v, objects.Persistent)


def _first_argument(x):
    t = type(x)
    if t is tuple:
        return x[0] if x else None
    if t is dict:
        return next(iter(x.values()), None)
    return x


class Places:
    """Names the backend each call is near, for one submission."""

    def __init__(self, near):
        self.near = near
        self._names = None      # backend id -> name
        self._by_name = None    # the names, as a set

    # ---- backends
    def _load(self):
        objects = _objects()
        if objects is None:
            from . import objects
        table = objects.backends()
        self._names = {bid: b.name for bid, b in table.items()}
        self._by_name = set(self._names.values())

    def _name_of_id(self, bid):
        if self._names is None:
            self._load()
        name = self._names.get(bid)
        if name is None:  # a backend that joined since: ask once more
            self._load()
            name = self._names.get(bid)
        return name

    # ---- one value
    def resolve(self, v):
        """The backend name for v: None, a persistent object, a Backend, a
        backend id or name, an object id. TypeError for anything else; an
        unknown object id raises bettong.NotFound."""
        if v is None or v is False:
            return None
        objects = _objects()
        if objects is None:
            from . import objects
        if isinstance(v, objects.Persistent):
            if "_bettong_id" not in v.__dict__:
                return None  # not persistent: it is with the caller
            return self._name_of_id(objects.backend_of(v))
        if isinstance(v, objects.Backend):
            return v.name
        uuid = sys.modules.get("uuid")  # (a UUID can only come from a loaded uuid)
        if uuid is not None and isinstance(v, uuid.UUID):
            v = str(v)
        if isinstance(v, str):
            if self._names is None:
                self._load()
            if v in self._by_name:
                return v
            name = self._names.get(v)
            if name is not None:
                return name
            return self.resolve(objects.Persistent.get_by_id(v))
        raise TypeError(f"near= names a persistent object, an object id, a backend id or "
                        f"name, or a Backend; got {type(v).__name__}")

    # ---- a submission
    def of_items(self, items):
        """A list of names (None: no preference), one per item, or None when no
        call has a preference."""
        near = self.near
        if near is False:
            return None
        if near is None:
            objects = _objects()
            if objects is None:
                return None
            first = _first_persistent
            targets = [first(x, objects) for x in items]
            if not any(t is not None for t in targets):
                return None
        elif near is True:
            targets = [_first_argument(x) for x in items]
        elif callable(near) and not isinstance(near, (str, tuple)) and not _is_proxy(near):
            targets = [near(x) for x in items]
        else:
            name = self.resolve(near)
            return None if name is None else [name] * len(items)
        resolve = self.resolve
        out = [resolve(t) for t in targets]
        return out if any(p is not None for p in out) else None


def maybe_near(x):
    """Whether automatic locality might give x a preference (a persistent
    object, or a tuple or dict that may hold one): the hot call_async path
    leaves such calls to the one that looks."""
    objects = _objects()
    if objects is None:
        return False
    return _first_persistent(x, objects) is not None


def chunk_places(places, n, k):
    """The name of each chunk of k items out of n: the one its items share,
    else None."""
    out = []
    for s in range(0, n, k):
        part = places[s:s + k]
        first = part[0]
        out.append(first if all(p == first for p in part) else None)
    return out


def groups(places, start, m):
    """Indexes start..start+m-1 grouped by place, in order of first use:
    [(place, [index, ...]), ...]."""
    by = {}
    for i in range(start, start + m):
        by.setdefault(places[i], []).append(i)
    return list(by.items())
