"""call_async's prepared path (executor._Hot, done in C by _bettong.HotCall): a
call_async on the function of the previous one. Whatever it skips must not
change what a call does: the function changed in place, arguments it does not
pickle itself, the futures it makes (state, callbacks, cancel, errors), the
executor's record of uncollected calls, many threads at once, a script's own
classes as arguments."""

import gc
import json
import os
import sys
import threading
import weakref

import cloudpickle
import pytest

from conftest import wait_until
from executor_helpers import RESULT_TIMEOUT, run_script

import bettong  # noqa: E402  (executor_helpers puts python/ on sys.path)
from bettong import _bettong, executor as _executor
from bettong.futures import ResponseFuture

cloudpickle.register_pickle_by_value(sys.modules[__name__])

T = RESULT_TIMEOUT


def inc(x):
    return x + 1


def ident(x):
    return x


def boom(x):
    raise ValueError("boom %s" % x)


def gated(gate):
    """A function that returns x once the FIFO gate is opened for writing and
    closed (open_gate): a call that holds its worker until the test says."""
    def ret_when_open(x):
        with open(gate) as f:
            f.read()
        return x
    return ret_when_open


def open_gate(gate):
    """Once a call waits at gate (it has the FIFO open for reading), let it go."""
    def writer():
        try:
            return os.open(gate, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:  # ENXIO: no reader yet
            return None
    os.close(wait_until(writer, T, "the call to wait at its gate"))


@pytest.fixture
def ex():
    e = bettong.FunctionExecutor(workers=2)
    try:
        yield e
    finally:
        e.close()


def hot_calls(e, fn, args):
    """Futures of call_async(fn, a) for each a, checking that every call after
    the first took the prepared path."""
    fs = [e.call_async(fn, args[0])]
    hot = e._hot
    assert hot is not None and hot.ref() is fn
    for a in args[1:]:
        fs.append(e.call_async(fn, a))
        assert e._hot is hot
    return fs


def test_call_ids_counter():
    ids = _bettong.CallIds()
    assert ids.take(1) == 1
    assert ids.take(5) == 2
    assert ids.take(0) == 7
    assert ids.take(1) == 7
    with pytest.raises(TypeError):
        _bettong.CallIds(3)
    with pytest.raises(TypeError):
        _bettong.HotCall(ids=ids)


def test_hot_futures_are_plain_response_futures(ex):
    fs = hot_calls(ex, inc, list(range(50)))
    assert all(type(f) is ResponseFuture for f in fs)
    ids = [f.call_id for f in fs]
    assert len(set(ids)) == 50 and ids == sorted(ids)
    seen = []
    fs[-1].add_done_callback(lambda f: seen.append(f.result()))
    assert [f.result(timeout=T) for f in fs] == list(range(1, 51))
    assert all(f.done() and f.succeeded() and not f.cancelled() for f in fs)
    assert seen == [50]
    assert fs[0].stats["call_id"] == fs[0].call_id


def test_hot_call_that_raises(ex):
    fs = hot_calls(ex, boom, [1, 2])
    with pytest.raises(ValueError, match="boom 2"):
        fs[1].result(timeout=T)
    assert isinstance(fs[0].exception(timeout=T), ValueError)


def test_hot_call_cancelled_before_it_runs(tmp_path):
    gate = str(tmp_path / "gate")
    os.mkfifo(gate)
    held = gated(gate)
    e = bettong.FunctionExecutor(workers=1)
    try:
        first = e.call_async(held, 1.0)
        queued = e.call_async(held, 1.5)  # the prepared path; waits for the worker
        assert e._hot is not None
        assert queued.cancel() and queued.cancelled()
        open_gate(gate)
        assert first.result(timeout=T) == 1.0
        with pytest.raises(bettong.CancelledError):
            queued.result(timeout=T)
    finally:
        e.close()


def test_function_changed_in_place_between_calls(ex):
    def f(x):
        return x + 1

    def g(x):
        return x * 100

    assert [r.result(timeout=T) for r in hot_calls(ex, f, [1, 2])] == [2, 3]
    f.__code__ = g.__code__  # same function object, other code
    assert ex.call_async(f, 3).result(timeout=T) == 300
    f.__defaults__ = (7,)
    assert ex.call_async(f, 4).result(timeout=T) == 400
    f.note = "an attribute"  # (pickled with it: checked by fingerprint, not identities)
    assert ex.call_async(f, 5).result(timeout=T) == 500


def test_function_redefined_between_calls(ex):
    ns = {}
    exec("def h(x):\n    return x + 1\n", ns)
    assert ex.call_async(ns["h"], 1).result(timeout=T) == 2
    assert ex.call_async(ns["h"], 2).result(timeout=T) == 3
    exec("def h(x):\n    return x - 1\n", ns)
    assert ex.call_async(ns["h"], 2).result(timeout=T) == 1


def test_arguments_the_prepared_path_hands_to_the_binding(ex):
    def two(a, b=0):
        return (a, b)

    fs = hot_calls(ex, two, [1, (2, 3), {"a": 4, "b": 5}, b"x" * 10, None])
    assert [f.result(timeout=T) for f in fs] == [(1, 0), (2, 3), (4, 5), (b"x" * 10, 0),
                                                 (None, 0)]


def test_unpicklable_argument_on_the_prepared_path(ex):
    assert ex.call_async(ident, 1).result(timeout=T) == 1
    with pytest.raises(TypeError, match="cannot pickle argument 0 of call_async"):
        ex.call_async(ident, threading.Lock())
    assert ex.call_async(ident, 2).result(timeout=T) == 2


def test_closed_executor_starts_again_on_the_prepared_function(ex):
    assert [f.result(timeout=T) for f in hot_calls(ex, inc, [1, 2])] == [2, 3]
    ex.close()
    fs = [ex.call_async(inc, i) for i in range(3)]
    assert [f.result(timeout=T) for f in fs] == [1, 2, 3]


def test_calls_in_a_row_grouped_into_jobs_and_freed(ex):
    n = 3 * _executor._CALLS_PER_JOB + 5
    fs = hot_calls(ex, inc, list(range(n)))
    jobs = list(ex._jobs.values())
    assert [len(j.futures) for j in jobs] == [256, 256, 256, 5]
    assert all(f._job is not None for f in fs)
    m = ex.map(inc, [1000])  # a map in between: the next call_async starts a new Job
    g = ex.call_async(inc, 5)
    assert len(ex._jobs) == 6 and g._job is not jobs[-1]
    assert ex.get_result(timeout=T) == [i + 1 for i in range(n)] + [1001, 6]
    assert ex._jobs == {} and m[0].done()
    refs = [weakref.ref(f) for f in fs[::50]]
    del fs, jobs, m, g
    gc.collect()
    assert all(r() is None for r in refs)


def test_calls_from_many_threads(ex):
    ex.call_async(inc, 0).result(timeout=T)
    out = {}

    def caller(k):
        out[k] = [ex.call_async(inc, k * 1000 + i) for i in range(300)]

    threads = [threading.Thread(target=caller, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(T)
    fs = [f for k in range(4) for f in out[k]]
    assert len({f.call_id for f in fs}) == len(fs) == 1200
    want = [k * 1000 + i + 1 for k in range(4) for i in range(300)]
    assert sorted(ex.get_result(timeout=T)) == want  # every uncollected call, once
    assert ex._jobs == {}
    assert [f.result(timeout=T) for f in fs] == want


MAIN_ARGUMENT = r'''
import json
import bettong

class Point:                 # of the script: pickled by value, not by reference
    def __init__(self, x):
        self.x = x

def get_x(p):
    return p.x

ex = bettong.FunctionExecutor(workers=1)
fs = [ex.call_async(get_x, Point(i)) for i in range(5)]
hot = ex._hot is not None
print(json.dumps({"hot": hot, "out": [f.result() for f in fs]}))
ex.close()
'''


def test_argument_of_the_callers_script():
    r = run_script(MAIN_ARGUMENT)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1]) == {"hot": True,
                                                             "out": [0, 1, 2, 3, 4]}


def test_plain_arguments_pickled_in_c_as_pickle_does():
    # HotCall writes the pickle of ((x,), {}) itself for the plainest x: byte
    # for byte what pickle.dumps makes, else it leaves x to pickle.dumps.
    import pickle
    import random
    rnd = random.Random(15)
    values = [None, True, False, 0.0, -0.0, 1.5, float("inf"), 1e308, "", "ab", "x" * 255,
              "__main__"]
    values += [s * (1 << k) + d for k in range(64) for s in (1, -1) for d in (-1, 0, 1)]
    values += [rnd.randint(-(1 << 63), (1 << 63) - 1) for _ in range(2000)]
    for v in values:
        if type(v) is int and not -(1 << 63) <= v < (1 << 63):
            continue  # (left to pickle.dumps: below)
        assert _bettong.simple_args_pickle(v) == pickle.dumps(((v,), {}), 5), v
    for v in (1 << 63, -(1 << 63) - 1, "x" * 256, "é", 3j, b"b", (1,), [1], True.__class__):
        assert _bettong.simple_args_pickle(v) is None, v


def test_plain_arguments_on_the_prepared_path(ex):
    values = [None, True, -1, 1 << 40, -(1 << 63), 1 << 70, 2.5, "text", "x" * 300, "é",
              "__main__"]
    fs = hot_calls(ex, ident, values)
    assert [f.result(timeout=T) for f in fs] == values
