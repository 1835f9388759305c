"""Serialization of functions and call arguments.

Functions go with the standard pickler when that gives what cloudpickle would
(see _PlainPickler): functions a worker can import by name, and functions
without a closure sent by value (those of __main__, lambdas), rebuilt on the
worker by bettong._fn as cloudpickle does. Any other goes with cloudpickle
(closures, classes of __main__ travel by value). Arguments go with plain pickle (protocol
5, fast, in C) unless that fails or the pickle names __main__ (a class or
function of the caller's script, which a worker's __main__ does not have):
then with cloudpickle, which sends those by value.

Cheap to import (it is on the way to an executor's first result): cloudpickle,
reprlib and the opcode tables are imported when first needed.
"""

import io
import marshal
import sys
import types

from . import _fn

try:
    from _pickle import Pickler as _Pickler, dumps as _dumps, loads as _loads
except ImportError:  # an interpreter without the C pickler
    from pickle import Pickler as _Pickler, dumps as _dumps, loads as _loads
try:
    from _blake2 import blake2b as _blake2b  # what hashlib.blake2b is
except ImportError:
    from hashlib import blake2b as _blake2b


class _Cloudpickle:
    """cloudpickle, imported when first used: it is the largest import of the
    client, and an executor starts its pool before it needs it (so the pool
    starts while it is imported). Once imported, the module replaces this."""

    def __getattr__(self, name):
        import cloudpickle as module
        globals()["cloudpickle"] = module
        return getattr(module, name)


cloudpickle = _Cloudpickle()


def cloudpickle_dumps(obj):
    """cloudpickle.dumps(obj, 5)."""
    return cloudpickle.dumps(obj, 5)

_MAIN = b"__main__"
_short = None


def short_repr(obj):
    global _short
    try:
        if _short is None:
            import reprlib
            r = reprlib.Repr()
            r.maxstring = 60
            r.maxother = 80
            _short = r
        return _short.repr(obj)
    except Exception:
        return f"<{type(obj).__name__} object>"


def dumps_args(obj):
    """Pickle a call's (args, kwargs). Raises what cloudpickle raised."""
    try:
        p = _dumps(obj, 5)
        if _MAIN not in p:
            return p
    except Exception:
        pass
    return cloudpickle.dumps(obj, 5)


# A call whose one argument is a large bytes object: its pickle, ((b,), {}) in
# protocol 5, is a fixed head (PROTO 5, BINBYTES, the length), the bytes and a
# fixed tail; it is sent as those three pieces, so the bytes are not copied into
# a pickle first (the worker receives exactly what pickle.dumps would give).
BIG_BYTES_ARG = 128 * 1024


def _bytes_arg_tail():
    tail = None
    for n in (BIG_BYTES_ARG, 3 * BIG_BYTES_ARG + 7):
        data = b"\0" * n
        p = _dumps(((data,), {}), 5)
        head = b"\x80\x05B" + n.to_bytes(4, "little")
        if not p.startswith(head) or p[7:7 + n] != data:
            return None
        if tail is not None and p[7 + n:] != tail:
            return None
        tail = p[7 + n:]
    return tail


_BYTES_ARG_TAIL = False  # False: not checked yet (on first use: it pickles 0.5 MB)


def bytes_arg_payload(b):
    """The pickle of ((b,), {}) as (head, b, tail), or None when b is too small,
    too large or pickle does not lay it out as expected."""
    global _BYTES_ARG_TAIL
    n = len(b)
    if n < BIG_BYTES_ARG or n >= 1 << 32:
        return None
    if _BYTES_ARG_TAIL is False:
        _BYTES_ARG_TAIL = _bytes_arg_tail()
    if _BYTES_ARG_TAIL is None:
        return None
    return (b"\x80\x05B" + n.to_bytes(4, "little"), b, _BYTES_ARG_TAIL)


def payload_size(p):
    return sum(map(len, p)) if type(p) is tuple else len(p)


def digest(payload):
    return _blake2b(payload, digest_size=16).digest()


class PickledFunction:
    """A function serialized once: payload, digest, and whether it travels by
    reference only (nothing of it is captured by value, so the payload can be
    reused for as long as the function object lives)."""

    __slots__ = ("payload", "digest", "by_reference", "__weakref__")

    def __init__(self, payload, by_reference):
        self.payload = payload
        self.digest = digest(payload)
        self.by_reference = by_reference


def dumps_function(fn):
    """fn pickled as cloudpickle.dumps(fn, 5) would, as a PickledFunction:
    with the standard pickler when that gives the same function in the worker
    (no need to import cloudpickle on either side), else with cloudpickle."""
    registry = _registry()
    if not registry:
        pf = _dumps_plain(fn)
        if pf is not None:
            return pf
    try:
        payload = cloudpickle.dumps(fn, 5)
    except Exception as e:
        raise TypeError(f"cannot pickle the function {short_repr(fn)}: {e}") from e
    by_ref = (isinstance(fn, (types.FunctionType, types.BuiltinFunctionType))
              and b"cloudpickle" not in payload)
    return PickledFunction(payload, by_ref)


def _dumps_plain(fn):
    """fn as a PickledFunction made by the standard pickler (_PlainPickler),
    or None when it might not give what cloudpickle gives (cloudpickle's
    registry of modules sent by value is empty here)."""
    buf = io.BytesIO()
    pickler = _PlainPickler(buf)
    try:
        pickler.dump(fn)
    except Exception:
        return None
    by_ref = (isinstance(fn, (types.FunctionType, types.BuiltinFunctionType))
              and not pickler.by_value)
    return PickledFunction(buf.getvalue(), by_ref)


class _NotPlain(Exception):
    """cloudpickle would pickle this otherwise than the standard pickler."""


# Types cloudpickle reduces its own way (its dispatch table, by exact type):
# what holds one goes with cloudpickle. By name, not to import their modules.
_CLOUDPICKLE_TYPES = frozenset((
    "builtins.classmethod", "builtins.staticmethod", "builtins.property", "builtins.cell",
    "builtins.code", "builtins.getset_descriptor", "builtins.method", "builtins.mappingproxy",
    "builtins.memoryview", "builtins.dict_keys", "builtins.dict_values", "builtins.dict_items",
    "collections.odict_keys", "collections.odict_values", "collections.odict_items",
    "builtins.odict_keys", "builtins.odict_values", "builtins.odict_items",
    "abc.abstractmethod", "abc.abstractclassmethod", "abc.abstractstaticmethod",
    "abc.abstractproperty", "_io.TextIOWrapper", "logging.Logger", "logging.RootLogger",
    "_weakrefset.WeakSet", "typing.TypeVar"))
_SINGLETON_TYPES = (type(None), type(Ellipsis), type(NotImplemented))


class _PlainPickler(_Pickler):
    """The standard pickler (protocol 5, in C), which pickles what cloudpickle
    pickles as cloudpickle would (the same objects in the worker) and refuses
    (_NotPlain) the rest:
    - a function a worker imports by name (its module is imported, not
      __main__, and holds it under its qualname), a class likewise: by name;
    - another function without a closure: by value, as cloudpickle does
      (bettong._fn.make and setstate rebuild it), its globals dict shared with
      the other functions of the pickle that share it here;
    - a module in sys.modules: imported by name (not __main__);
    - a class not importable by name, a function with a closure, a module not
      in sys.modules, an object of a type cloudpickle reduces its own way:
      refused;
    - anything else: as pickle does (so does cloudpickle)."""

    def __init__(self, file):
        super().__init__(file, 5)
        self.globals_ref = {}
        self.by_value = False

    def reducer_override(self, obj):
        t = type(obj)
        if t is types.FunctionType:
            if importable(obj):
                return NotImplemented
            return self._function_reduce(obj)
        if t is types.ModuleType:
            name = obj.__name__
            if name == "__main__" or name not in sys.modules:
                raise _NotPlain(name)
            return (_fn.module, (name,))
        if isinstance(obj, type):
            if obj in _SINGLETON_TYPES or importable(obj):
                return NotImplemented
            raise _NotPlain(obj)
        if (f"{t.__module__}.{t.__qualname__}" in _CLOUDPICKLE_TYPES
                or isinstance(obj, types.ModuleType)):
            raise _NotPlain(t)
        return NotImplemented

    def _function_reduce(self, fn):
        """cloudpickle's _dynamic_function_reduce, without a closure."""
        g = fn.__globals__
        if fn.__closure__ is not None or type(g) is not dict or fn.__module__ is None:
            raise _NotPlain(fn)
        self.by_value = True
        base = self.globals_ref.get(id(g))
        if base is None:
            base = self.globals_ref[id(g)] = {
                k: g[k] for k in ("__package__", "__name__", "__path__", "__file__") if k in g}
        code = fn.__code__
        used = {k: g[k] for k in _global_names(code) if k in g}
        state = (fn.__name__, fn.__qualname__, fn.__module__, fn.__doc__, fn.__defaults__,
                 fn.__kwdefaults__, fn.__annotations__, fn.__dict__, used,
                 _submodules(code, used.values()))
        return (_fn.make, (_fn.INTERPRETER, marshal.dumps(code), base, fn.__qualname__), state,
                None, None, _fn.setstate)


def _submodules(code, values):
    """The submodules, imported here, of the packages among values that code
    may reach by attribute (cloudpickle's _find_imported_submodules: they are
    imported in the worker before the function is completed)."""
    subs = []
    names = None
    for m in values:
        if isinstance(m, types.ModuleType) and getattr(m, "__package__", None):
            if names is None:
                names = set(code.co_names)
            prefix = m.__name__ + "."
            for name in list(sys.modules):
                if name is not None and name.startswith(prefix):
                    if not set(name[len(prefix):].split(".")) - names:
                        subs.append(sys.modules[name])
    return subs


class Raw:
    """An already pickled value placed inside another pickle: it unpickles as the
    value itself (pickle.loads of the bytes), so a map's results reach a reduce
    without being unpickled and pickled again on the way. The class itself never
    appears in the stream."""

    __slots__ = ("payload",)

    def __init__(self, payload):
        self.payload = payload

    def __reduce__(self):
        return (_loads, (self.payload,))


# ------------------------------------------------------------------ reuse of a
# function pickled by value
#
# A function of __main__ (or a lambda, a closure) is pickled with what it uses:
# the globals its code names, its closure cells, its defaults. Pickling it again
# for every call_async costs tens of microseconds, but reusing the first pickle is
# only right while what it captured is unchanged. The fingerprint below records
# that, cheaply, when everything captured is an immutable value (numbers,
# strings, tuples of them), a module, a class, a builtin or a function (compared
# by identity; a function pickled by value is fingerprinted in turn). Anything
# else (a list, a dict, an object: it could have changed in place) makes the
# function "unsafe": it is pickled again for every call.

class Unsafe(Exception):
    """What a function captures cannot be compared cheaply."""


_code_names = {}
_CODE_NAMES_MAX = 1024
_ATOMS = frozenset((int, float, complex, str, bytes, bool, type(None), range,
                    type(Ellipsis), type(NotImplemented)))
_EMPTY_CELL = object()
_MISSING = object()
_MAX_DEPTH = 4
_MAX_ITEMS = 64

# The opcodes that name a global (what cloudpickle looks for with dis), and
# EXTENDED_ARG, by interpreter version: read from the opcode module (1 ms to
# import, dis 3 ms) unless known here; tests/py/test_plain_functions.py checks
# these against it.
_KNOWN_OPS = {(3, 11): (116, 97, 98, 144)}
_ops = None


def _global_ops():
    global _ops
    if _ops is None:
        known = None
        if sys.implementation.name == "cpython":
            known = _KNOWN_OPS.get(sys.version_info[:2])
        if known is None:
            import opcode
            m = opcode.opmap
            known = (m["LOAD_GLOBAL"], m["STORE_GLOBAL"], m["DELETE_GLOBAL"], m["EXTENDED_ARG"])
        # Since 3.11 LOAD_GLOBAL's argument is the name's index times 2 (plus
        # one when it pushes a NULL first).
        _ops = known + (1 if sys.version_info >= (3, 11) else 0,)
    return _ops


def _scan_global_names(co, found):
    """Append to found the names co's global instructions use, then those of
    the code objects among its constants (nested functions, comprehensions,
    classes), recursively; what dis.get_instructions would give. The
    bytecode is read as (opcode, argument) byte pairs; inline caches are
    zeros in co_code."""
    load, store, delete, extended, shift = _global_ops()
    names = co.co_names
    code = co.co_code
    ext = 0
    for i in range(0, len(code), 2):
        op = code[i]
        arg = code[i + 1] | ext
        if op == extended:
            ext = arg << 8
            continue
        ext = 0
        if op == load:
            found.append(names[arg >> shift])
        elif op == store or op == delete:
            found.append(names[arg])
    for c in co.co_consts:
        if type(c) is types.CodeType:
            _scan_global_names(c, found)


def _global_names(co):
    """Names of the globals a code object (and the code nested in it) uses, in
    order of first use, each once (cloudpickle's _extract_code_globals)."""
    names = _code_names.get(co)
    if names is None:
        found = []
        _scan_global_names(co, found)
        names = tuple(dict.fromkeys(found))
        # Consulted on every call_async of a function pickled by value; bounded,
        # as it keeps the code objects alive.
        if len(_code_names) >= _CODE_NAMES_MAX:
            _code_names.clear()
        _code_names[co] = names
    return names


def _registry():
    """cloudpickle's pickle-by-value registry (module names), empty when
    cloudpickle is not imported (nothing can have been registered then)."""
    cp = sys.modules.get("cloudpickle")
    if cp is None:
        return ()
    try:
        return cp.list_registry_pickle_by_value()
    except AttributeError:  # an old cloudpickle
        return ()


def _by_value_module(name, registry):
    """True when cloudpickle sends the module `name` (or what it holds) by
    value: it or a package above it is in its registry."""
    while name:
        if name in registry:
            return True
        name = name.rpartition(".")[0]
    return False


def importable(obj):
    """True when pickle would send obj by reference (module.qualname) and a
    worker can import it: not __main__, not a module cloudpickle sends by value."""
    mod = getattr(obj, "__module__", None)
    qual = getattr(obj, "__qualname__", None)
    if not mod or not qual or mod == "__main__" or "<" in qual:
        return False
    m = sys.modules.get(mod)
    if m is None:
        return False
    registry = _registry()
    if registry and _by_value_module(mod, registry):
        return False
    o = m
    for part in qual.split("."):
        o = getattr(o, part, None)
    return o is obj


def _fp(v, depth):
    t = type(v)
    if t in _ATOMS:
        return (t, v)
    if t is tuple or t is frozenset:
        if len(v) > _MAX_ITEMS:
            raise Unsafe
        return (t, tuple(_fp(x, depth) for x in v))
    if t is types.FunctionType:
        if importable(v):
            return v
        if depth >= _MAX_DEPTH:
            raise Unsafe
        return (v, function_fingerprint(v, depth + 1))
    if isinstance(v, (types.ModuleType, type, types.BuiltinFunctionType)):
        return v
    raise Unsafe


def function_fingerprint(fn, depth=0):
    """A value equal for as long as the pickle of fn would be the same; raises
    Unsafe when that cannot be told cheaply."""
    if type(fn) is not types.FunctionType or fn.__dict__:
        raise Unsafe
    parts = [fn.__code__, fn.__name__, fn.__qualname__, fn.__module__]
    if fn.__defaults__:
        parts.append(_fp(fn.__defaults__, depth))
    if fn.__kwdefaults__:
        parts.append(tuple((k, _fp(v, depth)) for k, v in fn.__kwdefaults__.items()))
    if fn.__closure__:
        for cell in fn.__closure__:
            try:
                v = cell.cell_contents
            except ValueError:
                v = _EMPTY_CELL
            parts.append(_EMPTY_CELL if v is _EMPTY_CELL else _fp(v, depth))
    g = fn.__globals__
    for name in _global_names(fn.__code__):
        v = g.get(name, _MISSING)
        parts.append((name, _MISSING if v is _MISSING else _fp(v, depth)))
    return tuple(parts)


def quick_snapshot(fn):
    """For the plainest functions (no closure, keyword defaults or attributes;
    defaults and the globals it uses all plain values, modules, classes or
    builtins): what tells, by identity checks only, that fn still has the
    fingerprint it has now (see function_fingerprint): (code, defaults, name,
    qualname, module, globals, names of the globals it uses, their values or
    _MISSING). None for any other function. (Read by quick_check, and in C by
    _bettong.HotCall: the same checks.)"""
    if type(fn) is not types.FunctionType or fn.__dict__ or fn.__closure__ or fn.__kwdefaults__:
        return None
    defaults = fn.__defaults__
    if defaults is not None and any(type(x) not in _ATOMS for x in defaults):
        return None
    code = fn.__code__
    g = fn.__globals__
    if type(g) is not dict:
        return None
    names = tuple(_global_names(code))
    seen = []
    for name in names:
        v = g.get(name, _MISSING)
        if (v is not _MISSING and type(v) not in _ATOMS
                and not isinstance(v, (types.ModuleType, type, types.BuiltinFunctionType))):
            return None  # (a function, whose own fingerprint would be needed)
        seen.append(v)
    return (code, defaults, fn.__name__, fn.__qualname__, fn.__module__, g, names, tuple(seen))


def quick_check(fn):
    """A callable telling, by identity checks only, that fn still has the
    fingerprint it has now (see quick_snapshot); None when that cannot be told."""
    snap = quick_snapshot(fn)
    if snap is None:
        return None
    code, defaults, name, qual, mod, g, names, seen = snap
    pairs = tuple(zip(names, seen))
    get = g.get

    def unchanged(f):
        if (f.__code__ is not code or f.__defaults__ is not defaults or f.__dict__
                or f.__closure__ is not None or f.__kwdefaults__ is not None
                or f.__name__ is not name or f.__qualname__ is not qual
                or f.__module__ is not mod or f.__globals__ is not g):
            return False
        for k, v in pairs:
            if get(k, _MISSING) is not v:
                return False
        return True

    return unchanged


# ------------------------------------------------------------------ modules by
# value or by reference (map/call_async's include_modules / exclude_modules)

def _module(name):
    if not isinstance(name, str) or not name or name.endswith((".py", ".so")):
        raise ValueError(f"include_modules/exclude_modules take module names, not {name!r}")
    import importlib
    try:
        return importlib.import_module(name)
    except ImportError as e:
        raise ValueError(f"include_modules: cannot import module {name!r}: {e}") from e


def shipped_function(fn, include=None, exclude=None):
    """fn pickled (a PickledFunction, never cached) with the modules named in
    `include` sent by value (their code travels with the function: the workers
    need not be able to import them) and those in `exclude` by reference (the
    workers import them), whatever cloudpickle's registry says otherwise. The
    registry is put back as it was afterwards."""
    include = [m for m in (include or ()) if m not in (exclude or ())]
    exclude = list(exclude or ())
    registered = set(cloudpickle.list_registry_pickle_by_value())
    added, removed = [], []
    try:
        for name in include:
            if name not in registered:
                cloudpickle.register_pickle_by_value(_module(name))
                added.append(name)
        for name in exclude:
            if name in registered and name in sys.modules:
                cloudpickle.unregister_pickle_by_value(sys.modules[name])
                removed.append(name)
        return dumps_function(fn)
    finally:
        for name in added:
            cloudpickle.unregister_pickle_by_value(sys.modules[name])
        for name in removed:
            cloudpickle.register_pickle_by_value(sys.modules[name])
