"""Functions sent by value without cloudpickle: the worker's side.

_serial.dumps_function sends a plain function (one without a closure whose
defaults and the globals it uses pickle with the standard pickler) as a pickle
of `function(head, values)`: its code marshalled, its names, and the pickle of
the values it captures. This module rebuilds it as cloudpickle would: a new
globals dict holding the defining module's __package__, __name__, __path__ and
__file__, __builtins__, and the globals the code uses (modules imported by
name, the function itself where its code names it, the rest by value); then
the function's name, qualname, module, doc, defaults, keyword defaults,
annotations and attributes.

Imported by a worker when it loads such a function: only what is loaded
already at start-up (marshal, sys, types).
"""

import marshal
import sys
import types

import _frozen_importlib_external

# The bytecode a code object is marshalled for: a worker whose interpreter
# reads another bytecode (another CPython minor version, another
# implementation) refuses the function instead of running it wrong.
INTERPRETER = (sys.implementation.name, _frozen_importlib_external.MAGIC_NUMBER)

# head: (INTERPRETER, marshalled code, name, qualname, module, base globals,
#        global names in order, {name: module name}, names of the function
#        itself, submodules to import)
# values: pickle of ({name: value}, defaults, kwdefaults, annotations, doc,
#         attributes)
_HEAD_LEN = 10


class InterpreterMismatch(ImportError):
    """The function's code was compiled for another interpreter."""


def _module(name):
    __import__(name)
    return sys.modules[name]


def function(head, values):
    """The function head and values describe (see _serial.plain_payload)."""
    if type(head) is not tuple or len(head) != _HEAD_LEN:
        raise ValueError("bettong: malformed function payload")
    (interp, code, name, qualname, module, base, order, modules, selves, submodules) = head
    if interp != INTERPRETER:
        raise InterpreterMismatch(
            f"the function {qualname!r} was sent by an interpreter whose bytecode is "
            f"{interp[0]} {bytes(interp[1]).hex()}, but this worker runs {INTERPRETER[0]} "
            f"{INTERPRETER[1].hex()} ({sys.version.split()[0]}): run the workers with the "
            f"caller's Python version")
    import pickle  # (loaded already: this runs inside pickle.loads)
    used, defaults, kwdefaults, annotations, doc, attrs = pickle.loads(values)
    for sub in submodules:
        _module(sub)
    g = dict(base)
    g["__builtins__"] = __builtins__
    fn = types.FunctionType(marshal.loads(code), g, name, defaults, None)
    for n in order:
        if n in modules:
            g[n] = _module(modules[n])
        elif n in selves:
            g[n] = fn
        else:
            g[n] = used[n]
    g["__builtins__"] = __builtins__
    fn.__qualname__ = qualname
    fn.__module__ = module
    fn.__doc__ = doc
    fn.__kwdefaults__ = kwdefaults
    fn.__annotations__ = annotations
    if attrs:
        fn.__dict__.update(attrs)
    return fn
