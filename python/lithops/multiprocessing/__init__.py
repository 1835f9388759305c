"""lithops.multiprocessing on Bettong: multiprocessing's Pool on a Bettong pool
(bettong.PoolExecutor: a local pool, or $BETTONG_POOL).

Pool(processes, initializer, initargs): apply, apply_async, map, map_async,
starmap, starmap_async, imap, imap_unordered, close, terminate, join, and the
with block. The initializer runs once in each worker process before its first
task of this Pool. Process, Queue, Pipe, Manager, locks and shared memory are
not available (they need a channel between calls that Bettong's workers do not
have): importing them raises ImportError, using maxtasksperchild ValueError.
"""

import os
import threading
import uuid
from multiprocessing import TimeoutError  # noqa: A004 (multiprocessing's own)

import bettong
from bettong.futures import ANY_COMPLETED, wait as _bettong_wait


def cpu_count():
    return os.cpu_count() or 1


_initialized = set()  # (in a worker) the Pools whose initializer ran here


class _Initialized:
    """func, after the Pool's initializer has run once in this process."""

    def __init__(self, func, key, initializer, initargs):
        self.func = func
        self.key = key
        self.initializer = initializer
        self.initargs = initargs

    def __call__(self, *args, **kwargs):
        if self.key not in _initialized:
            self.initializer(*self.initargs)
            _initialized.add(self.key)
        return self.func(*args, **kwargs)


class _Star:
    def __init__(self, func):
        self.func = func

    def __call__(self, args):
        return self.func(*args)


class AsyncResult:
    """multiprocessing's AsyncResult over Bettong futures."""

    def __init__(self, futures, single, callback=None, error_callback=None):
        self._fs = futures
        self._single = single
        self._done_event = threading.Event()
        self._callback = callback
        self._error_callback = error_callback
        self._left = len(futures)
        self._lock = threading.Lock()
        if not futures:
            self._finish()
        for f in futures:
            f.add_done_callback(self._one_done)

    def _one_done(self, f):
        with self._lock:
            self._left -= 1
            last = self._left == 0
        if last:
            self._finish()

    def _finish(self):
        try:
            if self._callback is not None or self._error_callback is not None:
                exc = next((e for e in (f.exception() for f in self._fs) if e is not None), None)
                if exc is None:
                    if self._callback is not None:
                        self._callback(self._values())
                elif self._error_callback is not None:
                    self._error_callback(exc)
        finally:
            self._done_event.set()

    def _values(self):
        values = [f.result() for f in self._fs]
        return values[0] if self._single else values

    def ready(self):
        return self._done_event.is_set()

    def successful(self):
        if not self.ready():
            raise ValueError(f"{self!r} not ready")
        return all(f.exception() is None for f in self._fs)

    def wait(self, timeout=None):
        self._done_event.wait(timeout)

    def get(self, timeout=None):
        if not self._done_event.wait(timeout):
            raise TimeoutError
        return self._values()


class Pool:
    """multiprocessing.Pool on Bettong workers (processes: a local pool's size)."""

    def __init__(self, processes=None, initializer=None, initargs=(), maxtasksperchild=None,
                 context=None):
        if maxtasksperchild is not None:
            raise ValueError("lithops.multiprocessing on Bettong: maxtasksperchild is not "
                             "available (workers are reused)")
        if processes is not None and processes < 1:
            raise ValueError("Number of processes must be at least 1")
        self._px = bettong.PoolExecutor(workers=processes)
        self._fx = self._px._fx
        self._init = (initializer, tuple(initargs)) if initializer is not None else None
        self._key = uuid.uuid4().hex
        self._state = "RUN"
        self._pending = []

    def _fn(self, func):
        if self._init is None:
            return func
        return _Initialized(func, self._key, *self._init)

    def _check(self):
        if self._state != "RUN":
            raise ValueError("Pool not running")

    def _submit(self, func, items, chunksize=None):
        """One call per item ((args, kwargs) pairs); the futures."""
        from bettong.pool_executor import _Args
        self._check()
        fs = self._fx._submit_items(self._fn(func), list(items), _Args("Pool"), None,
                                    chunksize, None, None)
        self._pending += fs
        return list(fs)

    def apply_async(self, func, args=(), kwds={}, callback=None, error_callback=None):
        return AsyncResult(self._submit(func, [(tuple(args), dict(kwds))]), True, callback,
                           error_callback)

    def apply(self, func, args=(), kwds={}):
        return self.apply_async(func, args, kwds).get()

    def map_async(self, func, iterable, chunksize=None, callback=None, error_callback=None):
        return AsyncResult(self._submit(func, [((x,), {}) for x in iterable], chunksize), False,
                           callback, error_callback)

    def map(self, func, iterable, chunksize=None):
        return self.map_async(func, iterable, chunksize).get()

    def starmap_async(self, func, iterable, chunksize=None, callback=None, error_callback=None):
        return AsyncResult(self._submit(func, [(tuple(a), {}) for a in iterable], chunksize),
                           False, callback, error_callback)

    def starmap(self, func, iterable, chunksize=None):
        return self.starmap_async(func, iterable, chunksize).get()

    def imap(self, func, iterable, chunksize=1):
        fs = self._submit(func, [((x,), {}) for x in iterable], chunksize)
        return (f.result() for f in fs)

    def imap_unordered(self, func, iterable, chunksize=1):
        fs = self._submit(func, [((x,), {}) for x in iterable], chunksize)

        def gen():
            left = list(fs)
            while left:
                done, left = _bettong_wait(left, ANY_COMPLETED)
                for f in done:
                    yield f.result()
        return gen()

    def close(self):
        self._state = "CLOSE"

    def terminate(self):
        self._state = "TERMINATE"
        self._px.shutdown(wait=False, cancel_futures=True)

    def join(self):
        if self._state == "RUN":
            raise ValueError("Pool is still running")
        if self._pending:
            _bettong_wait(self._pending)
            self._pending = []
        self._px.shutdown(wait=True)

    def __enter__(self):
        self._check()
        return self

    def __exit__(self, exc_type, exc, tb):
        self.terminate()


_UNAVAILABLE = {"Process", "Queue", "SimpleQueue", "JoinableQueue", "Pipe", "Manager", "Lock",
                "RLock", "Semaphore", "BoundedSemaphore", "Condition", "Event", "Barrier",
                "Value", "Array", "RawValue", "RawArray", "getpid"}


def __getattr__(name):
    if name in _UNAVAILABLE:
        raise ImportError(f"lithops.multiprocessing on Bettong: {name} is not available "
                          "(only Pool and cpu_count)")
    raise AttributeError(f"module 'lithops.multiprocessing' has no attribute {name!r}")

