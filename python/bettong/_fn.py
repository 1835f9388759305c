"""Functions sent by value without cloudpickle: the worker's side.

_serial's standard pickler (see _serial.dumps_function) sends a function
without a closure that a worker cannot import by name as cloudpickle does, in
two steps: make() builds it from its marshalled code over a new globals dict
holding the defining module's __package__, __name__, __path__ and __file__
(one dict for the functions of one pickle that shared their globals), and
setstate() adds the globals the code uses (modules by name through module(),
functions, classes, values), names, doc, defaults, keyword defaults,
annotations and attributes: the same steps, in the same order, as
cloudpickle's _make_function and _function_setstate, so the function and its
globals dict are the ones cloudpickle gives.

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



class InterpreterMismatch(ImportError):
    """The function's code was compiled for another interpreter."""


def module(name):
    """The module `name`, imported (cloudpickle's subimport)."""
    __import__(name)
    return sys.modules[name]


def make(interpreter, code, base, qualname):
    """A function of the code marshalled in `code` over the globals dict
    `base` (shared by the functions of one pickle that shared their globals
    in the caller; setstate fills it); the rest comes with setstate."""
    if interpreter != INTERPRETER:
        raise InterpreterMismatch(
            f"the function {qualname!r} was sent by an interpreter whose bytecode is "
            f"{interpreter[0]} {bytes(interpreter[1]).hex()}, but this worker runs "
            f"{INTERPRETER[0]} {INTERPRETER[1].hex()} ({sys.version.split()[0]}): run the "
            f"workers with the caller's Python version")
    base["__builtins__"] = __builtins__
    return types.FunctionType(marshal.loads(code), base, None, None, None)


def setstate(fn, state):
    """Complete a function make() made: the globals its code uses (the
    submodules its code may reach were imported while unpickling the state),
    names, doc, defaults, annotations and attributes."""
    (name, qualname, module_name, doc, defaults, kwdefaults, annotations, attrs, used,
     _submodules) = state
    if attrs:
        fn.__dict__.update(attrs)
    g = fn.__globals__
    g.update(used)
    g["__builtins__"] = __builtins__
    fn.__name__ = name
    fn.__qualname__ = qualname
    fn.__annotations__ = annotations
    fn.__kwdefaults__ = kwdefaults
    fn.__defaults__ = defaults
    fn.__module__ = module_name
    fn.__doc__ = doc
