"""The executor API (docs: /work/shared/specs/executor-api.md), in process, on a
local pool of 2 workers: call_async, map (argument binding, extra_args, `id`,
chunksize), map_reduce, wait, get_result, the module-level helpers, futures,
PoolExecutor and the PyWren aliases.

The functions sent to the workers are defined in this module, which is pickled
by value (cloudpickle.register_pickle_by_value), so the workers never import it."""

import concurrent.futures
import os
import sys
import threading
import time

import cloudpickle
import pytest

from conftest import bin_sanitized
from executor_helpers import RESULT_TIMEOUT, bettong_procs, descendants, stat, wait_all_gone

import bettong  # noqa: E402  (executor_helpers puts python/ on sys.path)

cloudpickle.register_pickle_by_value(sys.modules[__name__])

T = RESULT_TIMEOUT


# ------------------------------------------------------------------ remote functions

def add1(x):
    return x + 1


def square(x):
    return x * x


def add(a, b):
    return a + b


def add3(a, b, c):
    return (a, b, c)


def ident(x):
    return x


def with_id(x, id):
    return (x, id)


def kw_with_id(a, id, b=0):
    return (a, b, id)


def sleep_ret(seconds, value=None):
    time.sleep(seconds)
    return value if value is not None else seconds


def pid_of(_x=None):
    return os.getpid()


def slow_then_value(x):
    # later items finish first, so "in iterdata order" means something
    time.sleep(0.03 * (6 - x))
    return x


def collect(results):
    return (list(results), os.getpid())


def sum_all(results):
    return sum(results)


def touch_and_sleep(path, seconds):
    with open(path, "w") as f:
        f.write(str(os.getpid()))
    time.sleep(seconds)
    return "slept"


def fail_value(msg):
    raise ValueError(msg)


class PickleCounter:
    """Counts, in the caller, how many times it is pickled."""
    count = 0

    def __init__(self, payload):
        self.payload = payload

    def __getstate__(self):
        PickleCounter.count += 1
        return {"payload": self.payload}


# ------------------------------------------------------------------ fixtures

@pytest.fixture(scope="module")
def ex():
    e = bettong.FunctionExecutor(workers=2)
    try:
        yield e
    finally:
        e.close()


@pytest.fixture
def fresh():
    """A private executor for tests that look at everything it made."""
    made = []

    def make(**kw):
        kw.setdefault("workers", 2)
        e = bettong.FunctionExecutor(**kw)
        made.append(e)
        return e

    try:
        yield make
    finally:
        for e in made:
            e.close()


def results(fs):
    return [f.result(timeout=T) for f in fs]


def timings(*fs):
    """The futures' stats relative to the first one's submission, for messages."""
    t0 = min(stat(f, "submitted") for f in fs)
    return "; ".join("call %s: worker %s, started +%.3f s, finished +%.3f s" % (
        f.call_id, stat(f, "worker"), stat(f, "started") - t0, stat(f, "finished") - t0)
        for f in fs)


def wait_file(path, timeout=15):
    deadline = time.monotonic() + timeout
    while not os.path.exists(path) or os.path.getsize(path) == 0:
        assert time.monotonic() < deadline, "the call never started (no %s)" % path
        time.sleep(0.01)


# ------------------------------------------------------------------ call_async

def test_call_async_single_value(ex):
    f = ex.call_async(add1, 41)
    assert f.result(timeout=T) == 42


def test_call_async_binds_tuple_and_dict(ex):
    assert ex.call_async(add, (2, 3)).result(timeout=T) == 5
    assert ex.call_async(add, {"a": "x", "b": "y"}).result(timeout=T) == "xy"
    # a list is not a tuple: it is the single first argument
    assert ex.call_async(ident, [1, 2]).result(timeout=T) == [1, 2]


def test_call_async_runs_on_a_worker(ex):
    assert ex.call_async(pid_of, None).result(timeout=T) != os.getpid()


def test_call_async_extra_env(ex):
    def getenv(name):
        return os.environ.get(name)

    f = ex.call_async(getenv, "BT_EXEC_EXTRA_ENV", extra_env={"BT_EXEC_EXTRA_ENV": "yes-42"})
    assert f.result(timeout=T) == "yes-42"


# ------------------------------------------------------------------ map

def test_map_single_binding_in_order(ex):
    fs = ex.map(square, range(20))
    assert isinstance(fs, list) and len(fs) == 20
    assert results(fs) == [x * x for x in range(20)]


def test_map_results_in_iterdata_order_when_finishing_out_of_order(ex):
    fs = ex.map(slow_then_value, range(6))
    assert ex.get_result(fs, timeout=T) == list(range(6))


def test_map_tuple_binding(ex):
    assert results(ex.map(add, [(1, 2), (3, 4), ("a", "b")])) == [3, 7, "ab"]


def test_map_dict_binding(ex):
    assert results(ex.map(add, [{"a": 1, "b": 2}, {"b": "y", "a": "x"}])) == [3, "xy"]


def test_map_list_item_is_single_argument(ex):
    assert results(ex.map(ident, [[1, 2], [3]])) == [[1, 2], [3]]


def test_map_extra_args_appended_to_tuple(ex):
    assert results(ex.map(add3, [(1, 2), (3, 4)], extra_args=(10,))) == [(1, 2, 10), (3, 4, 10)]


def test_map_extra_args_after_single_value(ex):
    assert results(ex.map(add, [1, 2], extra_args=(10,))) == [11, 12]


def test_map_extra_args_merged_into_dict(ex):
    fs = ex.map(add3, [{"a": 1}, {"a": 2, "b": 20}], extra_args={"b": 5, "c": 7})
    got = results(fs)
    assert got[0] == (1, 5, 7)
    # the item and extra_args together give every parameter
    assert got[1][0] == 2 and got[1][2] == 7


def test_map_id_parameter(ex):
    assert results(ex.map(with_id, ["a", "b", "c"])) == [("a", 0), ("b", 1), ("c", 2)]


def test_map_id_with_dict_binding(ex):
    fs = ex.map(kw_with_id, [{"a": 1}, {"a": 2, "b": 3}])
    assert results(fs) == [(1, 0, 0), (2, 3, 1)]


@pytest.mark.parametrize("chunksize", [1, 7, 100, 1000])
def test_map_chunksize(ex, chunksize):
    fs = ex.map(square, range(100), chunksize=chunksize)
    assert len(fs) == 100
    assert ex.get_result(fs, timeout=T) == [x * x for x in range(100)]


def test_map_chunksize_futures_in_any_order(ex):
    # The list is looked at as runs of one chunk's items (one walk, in C): any
    # slice, order or mix of maps' futures still gives each future its own value.
    a = ex.map(square, range(10), chunksize=4)
    b = ex.map(square, range(10, 17), chunksize=3)
    one = ex.call_async(square, 99)
    mixed = a[5:] + b[::-1] + a[:5] + [b[0], b[0], one] + a[:4] + a[:4] + a[4:8] + [b[6]]
    want = ([x * x for x in range(5, 10)] + [x * x for x in range(16, 9, -1)]
            + [x * x for x in range(5)] + [100, 100, 99 * 99] + [x * x for x in range(4)] * 2
            + [x * x for x in range(4, 8)] + [16 * 16])
    assert ex.get_result(mixed, timeout=T) == want
    done, not_done = bettong.wait(mixed, timeout=T)
    assert done == mixed and not not_done
    assert [f.result() for f in mixed] == want
    # other kinds of futures in the list: waited for the standard way
    other = concurrent.futures.Future()
    other.set_result(7)
    done, not_done = bettong.wait([other] + a, timeout=T)
    assert done == [other] + a and not not_done


def test_map_chunksize_with_id(ex):
    fs = ex.map(with_id, list("abcdefghij"), chunksize=3)
    assert results(fs) == [(c, i) for i, c in enumerate("abcdefghij")]


def fail_on_odd(x):
    if x % 2:
        raise ValueError(f"odd {x}")
    return x


def test_map_chunksize_binding_forms(ex):
    # tuples bind positionally, dicts by keyword, anything else is the argument
    # (bound on the worker: the chunk carries the items themselves)
    assert results(ex.map(add, [(1, 2), (3, 4), (5, 6)], chunksize=2)) == [3, 7, 11]
    assert results(ex.map(add, [{"a": 1, "b": 2}, {"a": 3, "b": 4}], chunksize=2)) == [3, 7]
    assert results(ex.map(ident, [[1], "s", None], chunksize=2)) == [[1], "s", None]
    assert results(ex.map(add, [(1,), (2,)], extra_args=(10,), chunksize=2)) == [11, 12]


def test_map_chunksize_futures_per_item(ex):
    fs = ex.map(fail_on_odd, range(10), chunksize=4)
    assert len(fs) == 10 and len(set(map(id, fs))) == 10
    assert all(isinstance(f, concurrent.futures.Future) for f in fs)
    done, not_done = bettong.wait(fs, timeout=T)
    assert len(done) == 10 and not not_done
    for i, f in enumerate(fs):
        assert f.done()
        if i % 2:
            assert f.errored() and not f.succeeded()
            assert isinstance(f.exception(), ValueError) and f"odd {i}" in str(f.exception())
            with pytest.raises(ValueError, match=f"odd {i}"):
                f.result()
        else:
            assert f.succeeded() and f.result() == i
        assert f.stats["call_id"] == fs[i - i % 4].stats["call_id"]  # one call per chunk
    out = ex.get_result(fs, throw_except=False)
    assert out[0::2] == [0, 2, 4, 6, 8]
    assert all(isinstance(e, ValueError) for e in out[1::2])


def test_map_chunksize_callbacks_and_waits(ex):
    seen = []
    fs = ex.map(sleep_ret, [0.3] * 6, chunksize=3)
    for f in fs[2:4]:
        f.add_done_callback(lambda f: seen.append(f))
    done, not_done = bettong.wait(fs, return_when=bettong.ANY_COMPLETED, timeout=T)
    assert done and all(f.done() for f in done)
    assert list(concurrent.futures.as_completed(fs, timeout=T))
    assert results(fs) == [0.3] * 6
    deadline = time.monotonic() + T
    while len(seen) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sorted(map(id, seen)) == sorted(map(id, fs[2:4]))
    late = []
    fs[0].add_done_callback(late.append)  # done already: called at once
    assert late == [fs[0]]


def test_map_chunksize_cancel_item_cancels_its_chunk(fresh):
    e = fresh(workers=1)
    blocker = e.call_async(sleep_ret, 1.0)
    fs = e.map(square, range(6), chunksize=3)
    assert fs[4].cancel()
    assert fs[3].cancelled() and fs[5].cancelled()
    with pytest.raises(concurrent.futures.CancelledError):
        fs[3].result(timeout=T)
    assert results(fs[:3]) == [0, 1, 4]
    assert blocker.result(timeout=T) == 1.0


def test_map_chunksize_futures_are_freed(ex):
    # The items' futures are not tracked by the cycle collector (they are made in
    # C, a chunk at a time); a cycle through one (a callback that refers to the
    # list of futures, added while its chunk runs) must still be collected.
    import gc
    import weakref
    items = [(0.3 if i % 100 == 0 else 0, i + 1) for i in range(300)]
    fs = ex.map(sleep_ret, items, chunksize=100)
    fs[7].add_done_callback(lambda f, fs=fs: fs)
    fs[150].add_done_callback(lambda f: None)
    assert not fs[7].done()
    assert ex.get_result(fs, timeout=T) == list(range(1, 301))
    refs = [weakref.ref(fs[0]._chunk), weakref.ref(fs[7]), weakref.ref(fs[8]),
            weakref.ref(fs[150]._chunk)]
    del fs
    gc.collect()
    assert [r() for r in refs] == [None] * 4


SCALE = 1
FACTORS = [1]


def scaled(x):
    return x * SCALE


def scaled_by_list(x):
    return x * FACTORS[0]


def env_value(name):
    return os.environ.get(name)


def test_call_async_in_a_row_sees_what_the_function_uses_change(ex):
    # call_async keeps what it prepared for the function it was last given; a
    # change of a global the function uses (an immutable value, or something it
    # cannot compare cheaply, a list) must still reach the workers.
    global SCALE
    try:
        assert [ex.call_async(scaled, i).result(timeout=T) for i in (1, 2, 3)] == [1, 2, 3]
        SCALE = 10
        assert [ex.call_async(scaled, i).result(timeout=T) for i in (1, 2)] == [10, 20]
        FACTORS[0] = 7
        assert [ex.call_async(scaled_by_list, i).result(timeout=T) for i in (1, 2)] == [7, 14]
        FACTORS[0] = 3
        assert ex.call_async(scaled_by_list, 2).result(timeout=T) == 6
    finally:
        SCALE = 1
        FACTORS[0] = 1


def test_call_async_in_a_row_with_options_and_other_functions(fresh):
    e = fresh()
    adders = [(lambda k: (lambda x: x + k))(k) for k in range(3)]
    fs = [e.call_async(adders[i % 3], 100) for i in range(9)]
    assert [f.result(timeout=T) for f in fs] == [100, 101, 102] * 3
    assert e.call_async(env_value, "BT_HOT_TEST").result(timeout=T) is None
    assert e.call_async(env_value, "BT_HOT_TEST", extra_env={"BT_HOT_TEST": "x"}).result(
        timeout=T) == "x"
    assert e.call_async(env_value, "BT_HOT_TEST").result(timeout=T) is None
    with pytest.raises(TimeoutError):
        e.call_async(sleep_ret, 5, timeout=0.2).result(timeout=T)
    assert e.call_async(square, 3).result(timeout=T) == 9
    e.close()  # a new pool on the next call
    assert e.call_async(square, 4).result(timeout=T) == 16
    assert e.call_async(square, 5).result(timeout=T) == 25


def test_map_empty_iterdata(ex):
    assert ex.map(square, []) == []
    assert ex.map(square, iter(())) == []
    assert ex.get_result([], timeout=T) == []


def test_map_of_a_generator(ex):
    assert results(ex.map(square, (x for x in range(5)))) == [0, 1, 4, 9, 16]


def test_map_extra_env(ex):
    def getenv(name):
        return os.environ.get(name)

    fs = ex.map(getenv, ["BT_EXEC_MAP_ENV"] * 3, extra_env={"BT_EXEC_MAP_ENV": "m"})
    assert results(fs) == ["m"] * 3
    # the variable was for those calls only
    assert ex.call_async(getenv, "BT_EXEC_MAP_ENV").result(timeout=T) is None


def test_map_pickles_the_function_once(ex):
    PickleCounter.count = 0
    big = PickleCounter(b"z" * 100000)

    def uses_big(x):
        return len(big.payload) + x

    fs = ex.map(uses_big, range(40))
    assert results(fs) == [100000 + x for x in range(40)]
    assert 1 <= PickleCounter.count <= 2, (
        "the function (with its closure) was pickled %d times for a map of 40 items"
        % PickleCounter.count)


# ------------------------------------------------------------------ map_reduce

def test_map_reduce_gets_results_in_iterdata_order(ex):
    rf = ex.map_reduce(slow_then_value, range(6), collect)
    got, reduce_pid = rf.result(timeout=T)
    assert got == list(range(6))
    assert reduce_pid != os.getpid(), "reduce_func ran in the caller, not on a worker"
    assert stat(rf, "worker") is not None


def test_map_reduce_sum_and_extra_args(ex):
    rf = ex.map_reduce(add, [1, 2, 3], sum_all, extra_args=(100,))
    assert rf.result(timeout=T) == 306


def test_map_reduce_get_result_single_value(fresh):
    e = fresh()
    rf = e.map_reduce(square, range(10), sum_all)
    assert e.get_result(rf, timeout=T) == sum(x * x for x in range(10))


def test_map_reduce_map_error_fails_reduce(ex):
    rf = ex.map_reduce(fail_value, ["map-failed-7"], sum_all)
    with pytest.raises(ValueError, match="map-failed-7"):
        rf.result(timeout=T)


# ------------------------------------------------------------------ wait

def test_wait_all_completed(ex):
    fs = ex.map(sleep_ret, [0.05, 0.1, 0.02, 0.08])
    done, not_done = ex.wait(fs, return_when=bettong.ALL_COMPLETED, timeout=T,
                             show_progressbar=False)
    assert len(done) == 4 and len(not_done) == 0
    assert all(f.done() for f in fs)


def test_wait_any_completed(ex):
    fast = ex.call_async(sleep_ret, 0.01)
    slow = ex.call_async(sleep_ret, 1.5)
    t0 = time.monotonic()
    done, not_done = ex.wait([slow, fast], return_when=bettong.ANY_COMPLETED, timeout=T,
                             show_progressbar=False)
    elapsed = time.monotonic() - t0
    slow.result(timeout=T)
    assert fast in done and slow in not_done, timings(fast, slow)
    assert elapsed < 1.2, "ANY_COMPLETED waited %.2f s for the slow call" % elapsed


def test_wait_always_is_one_look(ex):
    slow = ex.call_async(sleep_ret, 1.0)
    t0 = time.monotonic()
    done, not_done = ex.wait([slow], return_when=bettong.ALWAYS, show_progressbar=False)
    assert time.monotonic() - t0 < 0.5
    assert slow in not_done and len(done) == 0
    slow.result(timeout=T)
    done, not_done = ex.wait([slow], return_when=bettong.ALWAYS, show_progressbar=False)
    assert slow in done and len(not_done) == 0


def test_wait_timeout_returns_what_is_done(ex):
    fast = ex.call_async(sleep_ret, 0.0)
    fast.result(timeout=T)
    slow = ex.call_async(sleep_ret, 1.5)
    t0 = time.monotonic()
    done, not_done = ex.wait([fast, slow], return_when=bettong.ALL_COMPLETED, timeout=0.3,
                             show_progressbar=False)
    elapsed = time.monotonic() - t0
    assert 0.25 <= elapsed < 1.2, "wait(timeout=0.3) returned after %.2f s" % elapsed
    assert fast in done and slow in not_done
    slow.result(timeout=T)


def test_wait_default_fs_is_this_executors_futures(fresh):
    e = fresh()
    fs = e.map(sleep_ret, [0.01, 0.02])
    done, not_done = e.wait(timeout=T, show_progressbar=False)
    assert set(done) >= set(fs) and len(not_done) == 0


# ------------------------------------------------------------------ get_result

def test_get_result_list_and_single(ex):
    fs = ex.map(square, range(5))
    assert ex.get_result(fs, timeout=T, show_progressbar=False) == [0, 1, 4, 9, 16]
    f = ex.call_async(square, 9)
    assert ex.get_result(f, timeout=T) == 81


def test_get_result_timeout_raises(ex):
    slow = ex.call_async(sleep_ret, 1.5)
    t0 = time.monotonic()
    with pytest.raises((TimeoutError, concurrent.futures.TimeoutError)):
        ex.get_result([slow], timeout=0.2, show_progressbar=False)
    assert time.monotonic() - t0 < 1.2
    assert slow.result(timeout=T) == 1.5


def test_get_result_none_single_call_async(fresh):
    e = fresh()
    e.call_async(square, 12)
    assert e.get_result(timeout=T) == 144


def test_get_result_none_only_uncollected(fresh):
    e = fresh()
    e.call_async(square, 3)
    assert e.get_result(timeout=T) == 9
    e.map(square, [4, 5])
    assert e.get_result(timeout=T) == [16, 25]
    e.map_reduce(square, [1, 2, 3], sum_all)
    assert e.get_result(timeout=T) == 14
    # a call_async and a map, both uncollected: every result, in the order made
    e.call_async(add1, 0)
    e.map(add1, [10, 20])
    assert e.get_result(timeout=T) == [1, 11, 21]


def test_get_result_none_call_asyncs_in_a_row(fresh):
    # call_asyncs in a row share a record of what is uncollected: the order made,
    # partial collection, and a map in between must all come out right
    e = fresh()
    fs = [e.call_async(add1, i) for i in range(600)]
    assert fs[10].result(timeout=T) == 11 and fs[599].result(timeout=T) == 600
    m = e.map(add1, [1000, 2000])
    g = e.call_async(add1, 5)
    want = [i + 1 for i in range(600) if i not in (10, 599)] + [1001, 2001, 6]
    assert e.get_result(timeout=T) == want
    assert e.get_result(timeout=T) == []
    one = e.call_async(add1, 41)
    assert e.get_result(timeout=T) == 42 and one.done() and m[0].done() and g.done()


def test_get_result_raises_the_call_exception(ex):
    fs = ex.map(fail_value, ["get-result-err-1"])
    with pytest.raises(ValueError, match="get-result-err-1"):
        ex.get_result(fs, timeout=T)


# ------------------------------------------------------------------ module-level helpers

def test_module_level_wait_and_get_all_results(ex, fresh):
    e2 = fresh()
    fs = ex.map(square, [1, 2]) + e2.map(square, [3, 4])
    done, not_done = bettong.wait(fs, return_when=bettong.ALL_COMPLETED, timeout=T)
    assert len(done) == 4 and not not_done
    assert bettong.get_all_results(fs) == [1, 4, 9, 16]


def test_module_level_wait_any(ex):
    fast = ex.call_async(sleep_ret, 0.0)
    slow = ex.call_async(sleep_ret, 1.0)
    done, not_done = bettong.wait([slow, fast], return_when=bettong.ANY_COMPLETED, timeout=T)
    ok = fast in done and slow in not_done
    slow.result(timeout=T)
    assert ok, timings(fast, slow)


# ------------------------------------------------------------------ futures

def test_future_done_succeeded_errored(ex):
    ok = ex.call_async(square, 3)
    bad = ex.call_async(fail_value, "errored-1")
    ok.result(timeout=T)
    with pytest.raises(ValueError):
        bad.result(timeout=T)
    assert ok.done() and ok.succeeded() and not ok.errored()
    assert bad.done() and bad.errored() and not bad.succeeded()


def test_future_not_done_while_running(ex):
    slow = ex.call_async(sleep_ret, 0.8)
    assert not slow.done() and not slow.succeeded() and not slow.errored()
    with pytest.raises((TimeoutError, concurrent.futures.TimeoutError)):
        slow.result(timeout=0.05)
    assert slow.result(timeout=T) == 0.8


def test_future_exception(ex):
    ok = ex.call_async(square, 3)
    bad = ex.call_async(fail_value, "exc-2")
    assert ok.exception(timeout=T) is None
    e = bad.exception(timeout=T)
    assert isinstance(e, ValueError) and "exc-2" in str(e)


def test_future_add_done_callback(ex):
    seen, ev = [], threading.Event()

    def cb(fut):
        seen.append(fut)
        ev.set()

    f = ex.call_async(sleep_ret, 0.2)
    f.add_done_callback(cb)
    assert ev.wait(T), "the callback was never called"
    assert seen == [f] and f.done()
    # added after it is done: called at once
    later = []
    f.add_done_callback(later.append)
    deadline = time.monotonic() + 5
    while not later and time.monotonic() < deadline:
        time.sleep(0.01)
    assert later == [f]
    time.sleep(0.1)
    assert len(seen) == 1, "callback called %d times" % len(seen)


def test_future_stats(ex):
    t_before = time.time()
    fs = ex.map(sleep_ret, [0.05, 0.05, 0.05, 0.05])
    results(fs)
    t_after = time.time()
    for f in fs:
        sub, start, fin = stat(f, "submitted"), stat(f, "started"), stat(f, "finished")
        assert sub <= start <= fin, (sub, start, fin)
        assert stat(f, "worker") is not None
        # timings on one clock (seconds since the epoch), and the call took its 50 ms
        assert t_before - 1 <= sub <= t_after + 1, (t_before, sub, t_after)
        assert fin - start >= 0.045, (start, fin)


def test_cancel_queued_call(fresh, tmp_path):
    e = fresh(workers=1)
    path = str(tmp_path / "started")
    long = e.call_async(touch_and_sleep, (path, 1.5))
    wait_file(path)
    queued = e.call_async(square, 5)
    queued_map = e.map(square, [6, 7, 8])
    assert queued.cancel() is True
    assert [f.cancel() for f in queued_map] == [True, True, True]
    assert long.cancel() is False, "a running call cannot be dropped"
    assert queued.done()
    with pytest.raises(concurrent.futures.CancelledError):
        queued.result(timeout=T)
    assert long.result(timeout=T) == "slept"
    finished = e.call_async(square, 4)
    assert finished.result(timeout=T) == 16
    assert finished.cancel() is False
    assert finished.result(timeout=T) == 16
    # the cancelled calls never ran: the worker is free for new work at once
    t0 = time.monotonic()
    assert e.call_async(square, 2).result(timeout=T) == 4
    assert time.monotonic() - t0 < 2


def test_cancel_call_queued_behind_a_long_call_of_a_fast_function(fresh):
    """The pool may send calls ahead to a worker; one that has not started there
    yet has still not started: cancel() drops it (the spec: "drops a call that
    has not started")."""
    e = fresh(workers=1)
    e.get_result(e.map(sleep_ret, [0.0005] * 20), timeout=T)   # sleep_ret is known fast
    long = e.call_async(sleep_ret, 1.5)                        # this call is not
    queued = e.call_async(sleep_ret, 0.0005)
    time.sleep(0.3)
    assert not queued.done()
    assert queued.cancel() is True, "a call waiting behind a running one was not dropped"
    with pytest.raises(concurrent.futures.CancelledError):
        queued.result(timeout=T)
    assert long.result(timeout=T) == 1.5


# ------------------------------------------------------------------ executors

def test_executor_with_block_and_close_stop_the_pool():
    mine = os.getpid()
    before = set(bettong_procs(descendants(mine)))
    with bettong.FunctionExecutor(workers=2) as e:
        assert e.call_async(square, 7).result(timeout=T) == 49
        started = [r for r in bettong_procs(descendants(mine)) if r not in before]
        assert started, "no pool/worker process seen while the executor was open"
        # the pool is reused, not restarted, by later calls
        pids1 = set(e.get_result(e.map(pid_of, range(4)), timeout=T))
        pids2 = set(e.get_result(e.map(pid_of, range(4)), timeout=T))
        now = [r for r in bettong_procs(descendants(mine)) if r not in before]
        assert set(now) == set(started), (started, now)
        assert (pids1 | pids2) <= {r.pid for r in started}, (pids1, pids2, started)
    wait_all_gone(started, 5, "after the with block")


def test_close_is_idempotent():
    e = bettong.FunctionExecutor(workers=1)
    assert e.call_async(square, 2).result(timeout=T) == 4
    e.close()
    e.close()


def test_workers_option_sets_the_pool_size(fresh):
    e = fresh(workers=3)
    fs = e.map(sleep_ret, [0.4] * 6, extra_args=(None,))
    results(fs)
    assert len({stat(f, "worker") for f in fs}) == 3


def test_two_executors_at_once(fresh):
    a, b = fresh(), fresh()
    fa = a.map(sleep_ret, [0.1] * 6, extra_args=("a",))
    fb = b.map(sleep_ret, [0.1] * 6, extra_args=("b",))
    pa = a.map(pid_of, range(4))
    pb = b.map(pid_of, range(4))
    assert results(fa) == ["a"] * 6
    assert results(fb) == ["b"] * 6
    assert not set(results(pa)) & set(results(pb)), "two executors shared worker processes"


def test_aliases():
    for factory in (bettong.default_executor, bettong.local_executor):
        e = factory(workers=2)
        try:
            assert isinstance(e, bettong.FunctionExecutor)
            assert e.call_async(square, 6).result(timeout=T) == 36
        finally:
            e.close()


def test_default_executor_one_worker_per_core():
    with bettong.FunctionExecutor() as e:
        n = len(os.sched_getaffinity(0))
        fs = e.map(sleep_ret, [0.3] * (2 * n), extra_args=(None,))
        results(fs)
        assert len({stat(f, "worker") for f in fs}) == n


# ------------------------------------------------------------------ PoolExecutor

def test_pool_executor_submit_map_shutdown():
    pe = bettong.PoolExecutor(workers=2)
    try:
        assert isinstance(pe, concurrent.futures.Executor)
        f = pe.submit(add, 1, 2)
        assert f.result(timeout=T) == 3
        assert pe.submit(add, a="x", b="y").result(timeout=T) == "xy"
        assert list(pe.map(square, range(10))) == [x * x for x in range(10)]
        assert list(pe.map(add, [1, 2, 3], [10, 20, 30])) == [11, 22, 33]
        assert list(pe.map(square, range(50), chunksize=8)) == [x * x for x in range(50)]
        bad = pe.submit(fail_value, "pool-exec-err")
        with pytest.raises(ValueError, match="pool-exec-err"):
            bad.result(timeout=T)
        assert pe.submit(pid_of).result(timeout=T) != os.getpid()
    finally:
        pe.shutdown(wait=True)
    with pytest.raises(RuntimeError):
        pe.submit(add, 1, 2)


def test_pool_executor_with_block_waits():
    with bettong.PoolExecutor(workers=2) as pe:
        fs = [pe.submit(sleep_ret, 0.1, i) for i in range(4)]
    assert all(f.done() for f in fs)
    assert [f.result(timeout=0) for f in fs] == [0, 1, 2, 3]


def test_pool_executor_map_timeout():
    with bettong.PoolExecutor(workers=1) as pe:
        it = pe.map(sleep_ret, [1.5], timeout=0.2)
        with pytest.raises((TimeoutError, concurrent.futures.TimeoutError)):
            list(it)


# ------------------------------------------------------------------ more shapes

def no_args():
    return "none given"


def test_binding_edge_cases(ex):
    assert ex.call_async(ident, None).result(timeout=T) is None
    assert ex.get_result(ex.map(no_args, [(), ()]), timeout=T) == ["none given"] * 2
    assert ex.call_async(ident, ((1, 2),)).result(timeout=T) == (1, 2)
    assert ex.call_async(ident, {"x": {"a": 1}}).result(timeout=T) == {"a": 1}


def pattern_bytes(n, seed):
    import hashlib
    block = hashlib.sha256(str(seed).encode()).digest() * 2048  # 64 KiB
    return (block * (n // len(block) + 1))[:n]


class BytesSub(bytes):
    pass


def make_result(kind, n):
    b = pattern_bytes(n, n)
    if kind == "bytes":
        return b
    if kind == "sub":
        return BytesSub(b)
    return ("t", b, len(b))


@pytest.mark.parametrize("n", [65535, 65536, 1 << 20, 24 * 1000 * 1000 + 7])
def test_large_bytes_results(ex, n):
    # A bytes result of 64 KiB and more travels as itself (no pickle copy in the
    # worker, read into the result's own memory here): same value, same type.
    f = ex.call_async(make_result, ("bytes", n))
    r = f.result(timeout=T)
    assert type(r) is bytes and r == pattern_bytes(n, n)
    assert f.succeeded() and f.stats["worker"] is not None


def test_large_bytes_like_results_keep_their_type(ex):
    n = 3 << 20
    sub, tup = ex.get_result([ex.call_async(make_result, ("sub", n)),
                              ex.call_async(make_result, ("tuple", n))], timeout=T)
    assert type(sub) is BytesSub and sub == pattern_bytes(n, n)
    assert tup == ("t", pattern_bytes(n, n), n)
    # several in a row (the pool reuses its memory of a large frame)
    fs = ex.map(make_result, [("bytes", (5 << 20) + i) for i in range(4)])
    for i, r in enumerate(ex.get_result(fs, timeout=T)):
        assert r == pattern_bytes((5 << 20) + i, (5 << 20) + i)


def test_large_map_keeps_order(ex):
    n = 20000
    fs = ex.map(add1, range(n))
    assert len(fs) == n
    assert ex.get_result(fs, timeout=T) == list(range(1, n + 1))


def test_submit_from_many_threads(ex):
    out, errs = {}, []

    def job(t):
        try:
            fs = ex.map(add, [(t, i) for i in range(300)])
            single = ex.call_async(square, t)
            out[t] = (ex.get_result(fs, timeout=T), single.result(timeout=T))
        except BaseException as e:  # reported below
            errs.append(e)

    threads = [threading.Thread(target=job, args=(t,)) for t in range(6)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(T)
    assert not errs, errs
    assert all(not th.is_alive() for th in threads)
    for t in range(6):
        assert out[t] == ([t + i for i in range(300)], t * t)


def test_close_with_calls_in_flight():
    e = bettong.FunctionExecutor(workers=2)
    running = e.map(sleep_ret, [20, 20])
    queued = e.map(sleep_ret, [20] * 4)
    time.sleep(0.3)
    t0 = time.monotonic()
    e.close()
    assert time.monotonic() - t0 < 5, "close() waited for the calls in flight"
    for f in running + queued:
        assert f.done(), "close() left a future pending"
        with pytest.raises(BaseException) as info:
            f.result(timeout=1)
        assert not isinstance(info.value, (TimeoutError, AssertionError))


def raise_system_exit(code):
    sys.exit(code)


def test_system_exit_in_function_is_an_exception(ex):
    f = ex.call_async(raise_system_exit, 3)
    with pytest.raises(SystemExit) as info:
        f.result(timeout=T)
    assert info.value.code == 3
    assert ex.get_result(ex.map(square, [1, 2]), timeout=T) == [1, 4]


def test_plot(ex, tmp_path):
    fs = ex.map(sleep_ret, [0.05] * 4)
    results(fs)
    path = tmp_path / "timeline.png"
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="matplotlib"):
            ex.plot(fs, str(path))
        return
    ex.plot(fs, str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------ options that do what they say

def _alloc(mib):
    return len(bytearray(mib * 1024 * 1024))


@pytest.mark.skipif(bin_sanitized(), reason="RLIMIT_AS cannot work under AddressSanitizer, "
                    "whose shadow memory needs terabytes of address space")
def test_runtime_memory_is_a_per_call_limit(ex):
    fs = ex.map(_alloc, [200, 8], runtime_memory=48)
    with pytest.raises(MemoryError):
        fs[0].result(timeout=T)
    assert fs[1].result(timeout=T) == 8 * 1024 * 1024
    assert ex.call_async(_alloc, 200).result(timeout=T) == 200 * 1024 * 1024  # no limit left
    rf = ex.map_reduce(_alloc, [8, 8], sum, map_runtime_memory=48)
    assert rf.result(timeout=T) == 16 * 1024 * 1024
    with pytest.raises(ValueError, match="runtime_memory"):
        ex.map(_alloc, [1], runtime_memory=0)


def test_lithops_options_are_refused_not_ignored(ex):
    for opts in ({"log_level": "DEBUG"}, {"obj_chunk_size": 1 << 20}, {"spawn_reducer": 20}):
        with pytest.raises(TypeError, match="import lithops"):
            ex.map(_alloc, [1], **opts)
    with pytest.raises(TypeError, match="config"):
        bettong.FunctionExecutor(config={})
    with pytest.raises(ValueError, match="module names"):
        ex.map(_alloc, [1], include_modules=["some/file.py"])


def _params_cases():
    import functools

    def positional_only(x, /, y, *args, z=1, w, **kw):
        pass

    def nothing():
        pass

    def with_id(id, storage=None):
        pass

    @functools.wraps(with_id)
    def wrapped(*a, **k):
        pass

    def said(a, b):
        pass
    said.__signature__ = __import__("inspect").signature(nothing)

    class K:
        def m(self, x):
            pass
    return [positional_only, nothing, with_id, wrapped, said, lambda q, *, r: 0,
            K().m, K.m, print, functools.partial(with_id, 1)]


@pytest.mark.parametrize("fn", _params_cases(), ids=lambda f: getattr(f, "__name__", "partial"))
def test_parameters_read_without_inspect_match_the_signature(fn):
    """A plain function's parameters are read from its code (inspect is slow to
    import, on the way of a first call); anything else, and a function that
    declares another signature (functools.wraps, __signature__), goes to
    inspect.signature. Both must tell `id` and `storage` the same."""
    from bettong import executor
    got = executor._code_params(fn)
    want = executor._signature_params(fn)
    declares = getattr(fn, "__dict__", {})
    if (type(fn).__name__ == "function" and "__wrapped__" not in declares
            and "__signature__" not in declares):
        assert got == want
    else:
        assert got is None
    assert executor._params(fn) == want
