"""Objects that run on the workers (kept import-light: the extension is not needed)."""

import os
from _pickle import dumps as _dumps, loads as _loads


def _set_env(env):
    """Set env's variables; what they were (None: unset), for _restore_env."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    return saved


def _restore_env(saved):
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


class EnvFunction:
    """Runs `func` with extra environment variables set for the duration of the
    call (map/call_async's extra_env), then puts the environment back."""

    def __init__(self, func, env):
        self.func = func
        self.env = {str(k): str(v) for k, v in env.items()}

    def __call__(self, *args, **kwargs):
        saved = _set_env(self.env)
        try:
            return self.func(*args, **kwargs)
        finally:
            _restore_env(saved)

    def __repr__(self):
        return f"<{self.func!r} with extra_env {sorted(self.env)}>"


def _address_space():
    """The bytes this process has mapped now (Linux: /proc/self/statm)."""
    with open("/proc/self/statm", "rb") as f:
        pages = int(f.read().split()[0])
    return pages * os.sysconf("SC_PAGE_SIZE")


class LimitedFunction:
    """Runs `func` with what map/call_async's runtime_memory and extra_env ask
    for the duration of one call, then puts the worker back as it was.

    memory_mb: the call may grow its worker's address space by at most that many
    MiB: RLIMIT_AS is lowered to what is mapped now plus that, around the call
    only (a soft limit, raised again afterwards; the hard limit is untouched).
    An allocation past it fails, so the call fails with MemoryError. (If the
    worker's own threads cannot allocate meanwhile, the worker dies and is
    replaced: the call then fails with WorkerDied.)"""

    def __init__(self, func, env=None, memory_mb=None):
        self.func = func
        self.env = {str(k): str(v) for k, v in (env or {}).items()}
        self.memory_mb = memory_mb

    def __call__(self, *args, **kwargs):
        saved = _set_env(self.env)
        limit = None
        try:
            if self.memory_mb:
                import resource
                limit = resource.getrlimit(resource.RLIMIT_AS)
                want = _address_space() + int(self.memory_mb) * 1024 * 1024
                if limit[0] != resource.RLIM_INFINITY:  # never above a limit already there
                    want = min(want, limit[0])
                resource.setrlimit(resource.RLIMIT_AS, (want, limit[1]))
            return self.func(*args, **kwargs)
        finally:
            if limit is not None:
                import resource
                resource.setrlimit(resource.RLIMIT_AS, limit)
            _restore_env(saved)

    def __repr__(self):
        return f"<{self.func!r} with memory {self.memory_mb} MiB, extra_env {sorted(self.env)}>"


class ChunkFunction:
    """Runs `func` over a chunk of calls (map with chunksize): one pool call for
    many items. Returns (results, errors): results in order (None where the call
    failed), errors None or {index: (exception or None, type name, message,
    traceback text)} -- what a failed call's payload holds.

    The calls are a list of (args, kwargs); or, with raw, the map's items
    themselves, bound here as the executor binds an item without extra_args, id
    or storage: a tuple positionally, a dict by keyword, anything else as the one
    argument (the caller then pickles only the items, as multiprocessing does)."""

    def __init__(self, func, raw=False):
        self.func = func
        self.raw = raw

    def __call__(self, calls):
        func = self.func
        out = []
        append = out.append
        errors = None
        raw = getattr(self, "raw", False)
        T, D = tuple, dict
        if raw:
            kinds = set(map(type, calls))
            if T not in kinds and D not in kinds:
                # Every item is the one argument: the calls run in C (map), and
                # a call that raises is recorded where it stands (the results
                # before it are in out already) before going on with the rest.
                it = iter(calls)
                while True:
                    try:
                        out.extend(map(func, it))
                        return out, errors
                    except BaseException as e:  # noqa: B902 (the caller gets it back)
                        if errors is None:
                            errors = {}
                        errors[len(out)] = describe(e)
                        append(None)
        for i, c in enumerate(calls):
            try:
                if not raw:
                    append(func(*c[0], **c[1]))
                elif (t := type(c)) is not T and t is not D:
                    append(func(c))
                elif t is T:
                    append(func(*c))
                else:
                    append(func(**c))
            except BaseException as e:  # noqa: B902 (the caller gets it back)
                append(None)
                if errors is None:
                    errors = {}
                errors[i] = describe(e)
        return out, errors

    def __repr__(self):
        return f"<chunks of {self.func!r}>"


def describe(e):
    """(exception, type name, message, traceback) of an exception raised by a
    call; the exception is None when it would not pickle."""
    import traceback  # (only when a call fails: it imports linecache, tokenize, re...)
    tb = e.__traceback__
    tb = tb.tb_next if tb is not None and tb.tb_next is not None else tb  # not our frame
    text = "".join(traceback.format_exception(type(e), e, tb))
    try:
        _dumps(e, 5)
        exc = e
    except Exception:
        try:
            import cloudpickle
            cloudpickle.dumps(e, 5)
            exc = e
        except Exception:
            exc = None
    e.__traceback__ = None  # the result is pickled with it otherwise
    return (exc, type(e).__qualname__, str(e), text)


def join_chunks(parts):
    """The map results a reduce receives from chunked calls: each part is a
    chunk's pickled (results, errors) or its results list, in order."""
    out = []
    for p in parts:
        out.extend(_loads(p)[0] if isinstance(p, bytes) else p)
    return out


class ChunkedResults:
    """Pickles as the concatenated results of chunks (see join_chunks)."""

    __slots__ = ("parts",)

    def __init__(self, parts):
        self.parts = parts

    def __reduce__(self):
        return (join_chunks, (self.parts,))
