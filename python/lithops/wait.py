"""Lithops' wait() and get_result() on Bettong futures.

return_when is a percentage of the futures given: ALL_COMPLETED (100),
ANY_COMPLETED (-1: at least one), ALWAYS (0: one look, no waiting) or any
number in between. A timeout that passes raises TimeoutError (Lithops sets an
alarm). The futures that ended are then read in order (status(), or result()
with download_results): with throw_except the first failed call's exception is
raised.
"""

import time

from bettong.futures import ANY_COMPLETED as _B_ANY, wait_futures as _wait_futures

from lithops.future import ResponseFuture
from lithops.utils import FuturesList

ALWAYS = 0
ANY_COMPLETED = -1
ALL_COMPLETED = 100

THREADPOOL_SIZE = 64
WAIT_DUR_SEC = 1


def _is_done(f, download_results):
    return f.done if download_results else (f.success or f.done)


def _check_done(fs, return_when, download_results):
    n = sum(1 for f in fs if _is_done(f, download_results) or f._bf.done())
    if return_when == ANY_COMPLETED:
        return n >= 1
    return int(n * 100 / len(fs)) >= return_when


def _check_return_when(return_when):
    if isinstance(return_when, bool) or not isinstance(return_when, (int, float)) or not (
            return_when == ANY_COMPLETED or 0 <= return_when <= 100):
        raise ValueError(f"return_when must be ALWAYS, ANY_COMPLETED, ALL_COMPLETED or a "
                         f"percentage (0-100), not {return_when!r}")


def _block(fs, return_when, download_results, timeout, show_progressbar):
    """Wait (on the Bettong futures) until return_when holds; TimeoutError past
    timeout."""
    deadline = None if timeout is None else time.monotonic() + timeout
    pending = [f._bf for f in fs if not f._bf.done() and not _is_done(f, download_results)]
    show = bool(show_progressbar)  # (Bettong's bar: on a terminal only)
    while not _check_done(fs, return_when, download_results):
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            raise TimeoutError(f"Timeout of {timeout} seconds exceeded waiting for function "
                               "activations to finish")
        if return_when == ALL_COMPLETED:
            _wait_futures(pending, timeout=left, show_progressbar=show, lists=False)
        else:
            _wait_futures(pending, _B_ANY, timeout=left, show_progressbar=False, lists=False)
        pending = [b for b in pending if not b.done()]


def _read(fs, download_results, throw_except):
    """Read the outcome of every future whose call ended (in order); the
    futures a call returned join fs (Lithops' function composition)."""
    seen = set(map(id, fs))
    i = 0
    while i < len(fs):
        f = fs[i]
        i += 1
        if f._state is None and f._bf.done():
            if download_results:
                f.result(throw_except=throw_except)
            else:
                f.status(throw_except=throw_except)
        for g in f._new_futures or ():
            if id(g) not in seen:
                seen.add(id(g))
                fs.append(g)


def wait(fs, internal_storage=None, job_monitor=None, throw_except=True,
         return_when=ALL_COMPLETED, download_results=False, timeout=None,
         threadpool_size=THREADPOOL_SIZE, wait_dur_sec=None, show_progressbar=True,
         futures_from_executor_wait=False):
    """Wait for futures (of any executor); returns (fs_done, fs_notdone)."""
    if not fs:
        return
    if type(fs) is not list and type(fs) is not FuturesList:
        fs = [fs]
    _check_return_when(return_when)
    for f in fs:
        if not isinstance(f, ResponseFuture):
            raise TypeError(f"lithops.wait() takes lithops futures, not {type(f).__name__}")
    not_done = [f for f in fs if not _is_done(f, download_results)]
    if not_done and return_when != ALWAYS:
        watched = not_done if futures_from_executor_wait else fs
        _block(watched, return_when, download_results, timeout, show_progressbar)
    _read(fs, download_results, throw_except)
    fs_done = [f for f in fs if _is_done(f, download_results)]
    fs_notdone = [f for f in fs if not _is_done(f, download_results)]
    return fs_done, fs_notdone


def get_result(fs=None, internal_storage=None, throw_except=True, timeout=None,
               threadpool_size=THREADPOOL_SIZE, wait_dur_sec=None, show_progressbar=True):
    """The results of futures (of any executor), in order; the map futures of a
    map_reduce give none (their reduce does)."""
    if type(fs) is not list and type(fs) is not FuturesList:
        fs = [fs]
    fs_done, _ = wait(fs=fs, throw_except=throw_except, timeout=timeout,
                      download_results=True, show_progressbar=show_progressbar)
    return [f.result(throw_except=throw_except) for f in fs_done
            if not f.futures and f._produce_output]


__all__ = ["wait", "get_result", "ALWAYS", "ANY_COMPLETED", "ALL_COMPLETED"]
