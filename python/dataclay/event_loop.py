"""dataClay's event loop helpers (dataclay.event_loop) on Bettong.

dataClay runs its client machinery on one asyncio loop in a thread of its own
(the "dc event loop"), started by Client.start(). Bettong's client is
synchronous (one connection per thread), so the loop is only there for code
written against dataClay:

    get_dc_event_loop()              the loop (None before a Client started one)
    run_dc_coroutine(f, *a, **kw)    run f(*a, **kw) (a coroutine function) on the
                                     loop and wait for its result; from any thread
                                     but the loop's own
    dc_to_thread_io / _cpu(f, ...)   await f(...) run in a thread pool

The async a_* methods of DataClayObject and Client run the synchronous call in
a thread of this module's pool and await it (asyncio.wrap_future): they can be
awaited from any event loop, the dc loop included.
"""

import asyncio
import concurrent.futures
import contextvars
import functools
import os
import threading

__all__ = ["get_dc_event_loop", "set_dc_event_loop", "run_dc_coroutine", "EventLoopThread",
           "dc_to_thread_cpu", "dc_to_thread_io"]

dc_event_loop = None
_loop_lock = threading.Lock()

try:
    cpu_count = len(os.sched_getaffinity(0))
except (AttributeError, OSError):
    cpu_count = os.cpu_count() or 1

cpu_bound_executor = concurrent.futures.ThreadPoolExecutor(
    max_workers=cpu_count, thread_name_prefix="dataclay-cpu")
io_bound_executor = concurrent.futures.ThreadPoolExecutor(
    max_workers=max(4, cpu_count * 2), thread_name_prefix="dataclay-io")


def _after_fork_in_child():
    """A forked child has neither the loop's thread nor the pools' threads."""
    global dc_event_loop, cpu_bound_executor, io_bound_executor, _loop_lock
    dc_event_loop = None
    _loop_lock = threading.Lock()
    cpu_bound_executor = concurrent.futures.ThreadPoolExecutor(
        max_workers=cpu_bound_executor._max_workers, thread_name_prefix="dataclay-cpu")
    io_bound_executor = concurrent.futures.ThreadPoolExecutor(
        max_workers=io_bound_executor._max_workers, thread_name_prefix="dataclay-io")


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def set_dc_event_loop(loop):
    global dc_event_loop
    dc_event_loop = loop


def get_dc_event_loop():
    """The dc event loop, or None if no Client has started one in this process."""
    return dc_event_loop


class EventLoopThread(threading.Thread):
    """A daemon thread running `loop` forever; `ready` is set once it runs."""

    def __init__(self, loop):
        super().__init__(daemon=True, name="EventLoopThread")
        self.loop = loop
        self.ready = threading.Event()

    def run(self):
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self.ready.set)
        self.loop.run_forever()


def _ensure_dc_event_loop():
    """The dc event loop, started in a thread of its own if there is none."""
    global dc_event_loop
    loop = dc_event_loop
    if loop is not None and not loop.is_closed():
        return loop
    with _loop_lock:
        loop = dc_event_loop
        if loop is None or loop.is_closed():
            loop = asyncio.new_event_loop()
            t = EventLoopThread(loop)
            t.start()
            t.ready.wait()
            loop._dc_thread = t
            dc_event_loop = loop
    return loop


def _in_loop_thread(loop):
    t = getattr(loop, "_dc_thread", None)
    return t is not None and t.ident == threading.get_ident()


def run_dc_coroutine(func, *args, **kwargs):
    """Run func(*args, **kwargs), a coroutine function, on the dc event loop and
    return its result (re-raising its exception). Starts the loop if no Client
    did (e.g. inside the store). Not from the loop's own thread: that would wait
    for itself (await func(...) there instead)."""
    loop = _ensure_dc_event_loop()
    if _in_loop_thread(loop):
        raise RuntimeError("run_dc_coroutine() was called from the dataClay event loop's own "
                           "thread, where it would wait for itself: await the coroutine there")
    return asyncio.run_coroutine_threadsafe(func(*args, **kwargs), loop).result()


async def _dc_to_thread(func, executor, *args, **kwargs):
    ctx = contextvars.copy_context()
    return await asyncio.wrap_future(
        executor.submit(functools.partial(ctx.run, func, *args, **kwargs)))


async def dc_to_thread_cpu(func, /, *args, **kwargs):
    """await func(*args, **kwargs) run in the CPU-bound thread pool."""
    return await _dc_to_thread(func, cpu_bound_executor, *args, **kwargs)


async def dc_to_thread_io(func, /, *args, **kwargs):
    """await func(*args, **kwargs) run in the I/O-bound thread pool (where the
    a_* methods run their synchronous call)."""
    return await _dc_to_thread(func, io_bound_executor, *args, **kwargs)
