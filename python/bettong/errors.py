"""The exceptions of bettong, and how a failed call's payload becomes one."""

from _pickle import loads as _loads  # (not pickle: the module imports re, struct...)

try:  # the extension defines the connection-level errors
    from ._bettong import AuthenticationError, ProtocolError, RefusedError
except ImportError:  # a worker or a machine without the build: still importable
    class RefusedError(PermissionError):
        """The pool refused the connection (a wrong or missing secret, ...)."""

    class AuthenticationError(RefusedError):
        """The server could not prove it knows the shared secret (the secrets
        differ, or it is not the real service): the client refused it before
        reading anything it sent. Retrying cannot help."""

    class ProtocolError(ConnectionError):
        """The peer broke the pool protocol."""


class BettongError(Exception):
    """Base class of bettong's own errors."""


class RemoteError(BettongError):
    """A call failed on a worker and its exception could not be rebuilt here.

    `type_name` is the remote exception's qualified type name, `message` its text
    and `traceback` the remote traceback as text."""

    def __init__(self, type_name, message, traceback=""):
        super().__init__(type_name, message, traceback)
        self.type_name = type_name
        self.message = message
        self.traceback = traceback

    def __str__(self):
        return f"{self.type_name}: {self.message}" if self.message else str(self.type_name)


class WorkerDied(BettongError):
    """The worker running the call died (segfault, os._exit, out of memory, ...)."""


class PoolError(BettongError, ConnectionError):
    """The pool could not be started, or the connection to it was lost."""


class RemoteTraceback(Exception):
    """Carries a worker's traceback text; set as the __cause__ of a re-raised
    remote exception so that it is printed with it."""

    def __init__(self, tb):
        super().__init__(tb)
        self.tb = tb

    def __str__(self):
        return self.tb


def _with_remote_traceback(exc, tb):
    if tb:
        text = tb if tb.endswith("\n") else tb + "\n"
        exc.__cause__ = RemoteTraceback(f'\n"""\n{text}"""')
    return exc


def raised_exception(payload):
    """The exception to raise for a CALL_RAISED payload: pickled (exception or
    None, type name, message, traceback text)."""
    try:
        described = _loads(payload)
    except Exception as e:  # the exception's class is not importable here, ...
        return RemoteError("<unknown>", f"the remote exception could not be unpickled: {e!r}")
    return rebuilt_exception(described)


def rebuilt_exception(described):
    """The exception for (exception or None, type name, message, traceback text)."""
    exc, type_name, message, tb = described
    if not isinstance(exc, BaseException):
        exc = RemoteError(type_name, message, tb)
    return _with_remote_traceback(exc, tb)


def _text(payload):
    return bytes(payload).decode("utf-8", "replace")


def worker_died(payload):
    return WorkerDied(_text(payload) or "the worker running the call died")


def timed_out(payload):
    return TimeoutError(_text(payload) or "the call ran past its timeout")


def call_error(payload):
    """CALL_ERROR: the pool or worker could not run the call at all (the function
    would not unpickle, the result would not pickle, ...)."""
    text = _text(payload)
    first, _, rest = text.partition("\n")
    return _with_remote_traceback(RemoteError("bettong.CallError", first, rest), rest)
