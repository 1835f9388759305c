"""Failures of calls: user exceptions (type, message, remote traceback), exceptions
that cannot be pickled, per-call timeouts, retries, workers that die (SIGKILL,
os._exit, a segfault), and functions, arguments or results that cannot be pickled.
After each failure the pool must keep working."""

import os
import signal
import sys
import threading
import time
import traceback
from pathlib import Path

import cloudpickle
import pytest

from executor_helpers import RESULT_TIMEOUT, descendants, stat

import bettong  # noqa: E402

cloudpickle.register_pickle_by_value(sys.modules[__name__])

T = RESULT_TIMEOUT
THIS_FILE = Path(__file__).resolve()


# ------------------------------------------------------------------ remote functions

def square(x):
    return x * x


def pid_of(_x=None):
    return os.getpid()


def sleep_ret(seconds):
    time.sleep(seconds)
    return seconds


def raise_value_error(msg):
    raise ValueError(msg)  # BT-RAISE-VALUE


def deeper(n):
    if n == 0:
        return 1 // n  # BT-RAISE-ZERO
    return deeper(n - 1)


def raise_key_error(k):
    return {}[k]


class BadError(Exception):
    """Cannot be pickled: holds a lock."""

    def __init__(self, msg):
        super().__init__(msg)
        self.lock = threading.Lock()


def raise_unpicklable(msg):
    raise BadError(msg)  # BT-RAISE-BAD


def write_pid_then_sleep(path, seconds):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(os.getpid()))
    os.rename(tmp, path)
    time.sleep(seconds)
    return "survived"


def exit_now(code):
    os._exit(code)


def segfault(_x):
    import ctypes
    return ctypes.string_at(0)


def flaky(path, fail_times, mode="raise"):
    """Fails its first `fail_times` attempts (counted in a file), then returns
    the number of the attempt that succeeded."""
    with open(path, "a") as f:
        f.write("x")
    attempts = os.path.getsize(path)
    if attempts <= fail_times:
        if mode == "exit":
            os._exit(3)
        if mode == "sleep":
            time.sleep(30)
        raise RuntimeError("attempt %d failed on purpose" % attempts)
    return attempts


def return_generator(_x):
    return (i for i in range(3))


def return_lock(_x):
    return threading.Lock()


def ident(x):
    return x


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


def line_of(tag, path=THIS_FILE):
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if tag in line:
            return i
    raise AssertionError(tag)


def chain_text(exc):
    """Everything Python would print for `exc`, its causes and contexts."""
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


def still_works(e):
    assert e.get_result(e.map(square, range(6)), timeout=T) == [x * x for x in range(6)]


def wait_pid_file(path, timeout=15):
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        assert time.monotonic() < deadline, "the call never started"
        time.sleep(0.01)
    return int(Path(path).read_text())


def kill_our_worker(pid, sig=signal.SIGKILL):
    """Kill a worker process, only after checking that this test process started it."""
    mine = {r.pid for r in descendants(os.getpid())}
    assert pid in mine, "pid %d reported by the call is not a descendant of the test" % pid
    os.kill(pid, sig)


# ------------------------------------------------------------------ user exceptions

def test_exception_same_type_and_message(ex):
    f = ex.call_async(raise_value_error, "bad value 1234")
    with pytest.raises(ValueError) as info:
        f.result(timeout=T)
    assert str(info.value) == "bad value 1234"
    assert type(info.value) is ValueError


def test_remote_traceback_in_the_chain(ex):
    f = ex.call_async(raise_value_error, "tb check")
    with pytest.raises(ValueError) as info:
        f.result(timeout=T)
    text = chain_text(info.value)
    assert "raise_value_error" in text, text
    assert "line %d" % line_of("BT-RAISE-VALUE") in text, text


def test_remote_traceback_deep_stack(ex):
    f = ex.call_async(deeper, 3)
    with pytest.raises(ZeroDivisionError) as info:
        f.result(timeout=T)
    text = chain_text(info.value)
    assert text.count("in deeper") >= 4, text
    assert "line %d" % line_of("BT-RAISE-ZERO") in text


def test_key_error_keeps_its_key(ex):
    with pytest.raises(KeyError) as info:
        ex.call_async(raise_key_error, "missing-key-9").result(timeout=T)
    assert info.value.args == ("missing-key-9",)


def test_user_exception_class_from_importable_module(ex):
    from exec_apps import errors_mod
    f = ex.call_async(errors_mod.raise_custom, ("custom failure", 77))
    with pytest.raises(errors_mod.CustomError) as info:
        f.result(timeout=T)
    assert info.value.code == 77 and info.value.message == "custom failure"
    assert "raise_custom" in chain_text(info.value)


def test_get_result_and_map_reraise(ex):
    fs = ex.map(raise_value_error, ["m0", "m1"])
    with pytest.raises(ValueError, match="m0"):
        ex.get_result(fs, timeout=T)
    mixed = ex.map(square, [1, 2]) + ex.map(raise_value_error, ["m2"])
    assert [f.result(timeout=T) for f in mixed[:2]] == [1, 4]
    assert isinstance(mixed[2].exception(timeout=T), ValueError)
    assert mixed[2].errored() and not mixed[2].succeeded()


def test_unpicklable_exception_is_remote_error(ex):
    f = ex.call_async(raise_unpicklable, "cannot pickle me 55")
    with pytest.raises(bettong.RemoteError) as info:
        f.result(timeout=T)
    e = info.value
    text = str(e) + "\n" + chain_text(e)
    assert "BadError" in text and "cannot pickle me 55" in text, text
    assert "raise_unpicklable" in text, "no remote traceback text in:\n" + text
    still_works(ex)


# ------------------------------------------------------------------ timeouts

def test_call_timeout(ex):
    t0 = time.monotonic()
    f = ex.call_async(sleep_ret, 30, timeout=1)
    with pytest.raises(TimeoutError):
        f.result(timeout=T)
    assert time.monotonic() - t0 < 8, "the timed-out call was not stopped in time"
    assert f.errored()
    still_works(ex)


def test_map_timeout_only_fails_slow_calls(ex):
    fs = ex.map(sleep_ret, [0.01, 20, 0.02], timeout=1)
    assert fs[0].result(timeout=T) == 0.01
    assert fs[2].result(timeout=T) == 0.02
    with pytest.raises(TimeoutError):
        fs[1].result(timeout=T)
    still_works(ex)


# ------------------------------------------------------------------ retries

def test_retries_two_succeeds_after_two_failures(ex, tmp_path):
    path = str(tmp_path / "attempts")
    f = ex.call_async(flaky, (path, 2), retries=2)
    assert f.result(timeout=T) == 3
    assert os.path.getsize(path) == 3


def test_retries_one_is_not_enough(ex, tmp_path):
    path = str(tmp_path / "attempts")
    f = ex.call_async(flaky, (path, 2), retries=1)
    with pytest.raises(RuntimeError, match="attempt 2 failed on purpose"):
        f.result(timeout=T)
    assert os.path.getsize(path) == 2


def test_no_retries_by_default(ex, tmp_path):
    path = str(tmp_path / "attempts")
    with pytest.raises(RuntimeError, match="attempt 1 failed"):
        ex.call_async(flaky, (path, 1)).result(timeout=T)
    assert os.path.getsize(path) == 1


def test_map_retries(ex, tmp_path):
    paths = [str(tmp_path / ("a%d" % i)) for i in range(4)]
    fs = ex.map(flaky, [(p, i % 3) for i, p in enumerate(paths)], retries=2)
    assert ex.get_result(fs, timeout=T) == [1, 2, 3, 1]


def test_retry_after_worker_died(fresh, tmp_path):
    e = fresh()
    path = str(tmp_path / "attempts")
    assert e.call_async(flaky, (path, 1, "exit"), retries=1).result(timeout=T) == 2


def test_retry_after_timeout(fresh, tmp_path):
    e = fresh()
    path = str(tmp_path / "attempts")
    f = e.call_async(flaky, (path, 1, "sleep"), timeout=1, retries=1)
    assert f.result(timeout=T) == 2


# ------------------------------------------------------------------ dead workers

def test_worker_sigkilled_mid_call(fresh, tmp_path):
    e = fresh()
    path = str(tmp_path / "pid")
    victim = e.call_async(write_pid_then_sleep, (path, 30))
    pid = wait_pid_file(path)
    others = e.map(sleep_ret, [0.1] * 6)
    kill_our_worker(pid)
    t0 = time.monotonic()
    with pytest.raises(bettong.WorkerDied):
        victim.result(timeout=T)
    assert time.monotonic() - t0 < 10
    assert e.get_result(others, timeout=T) == [0.1] * 6
    # the worker was replaced: the pool still runs 2 calls at once
    pids = set(e.get_result(e.map(pid_of, range(8)), timeout=T))
    assert pid not in pids
    t0 = time.monotonic()
    e.get_result(e.map(sleep_ret, [0.5, 0.5]), timeout=T)
    assert time.monotonic() - t0 < 0.95, "two 0.5 s calls took %.2f s: a worker is missing" % (
        time.monotonic() - t0)


def test_os_exit_is_worker_died(ex):
    f = ex.call_async(exit_now, 7)
    others = ex.map(square, range(10))
    with pytest.raises(bettong.WorkerDied):
        f.result(timeout=T)
    assert f.errored()
    assert ex.get_result(others, timeout=T) == [x * x for x in range(10)]
    still_works(ex)


def test_segfault_is_worker_died(ex):
    f = ex.call_async(segfault, None)
    with pytest.raises(bettong.WorkerDied):
        f.result(timeout=T)
    still_works(ex)


def test_many_deaths_in_one_map(fresh):
    e = fresh()
    fs = e.map(exit_now, [1] * 5)
    for f in fs:
        with pytest.raises(bettong.WorkerDied):
            f.result(timeout=T)
    still_works(e)


# ------------------------------------------------------------------ pickling

def test_unpicklable_argument_raises_at_submit(ex):
    lock = threading.Lock()
    with pytest.raises(Exception) as info:
        ex.call_async(ident, lock)
    assert "lock" in str(info.value).lower() or "lock" in chain_text(info.value).lower()
    with pytest.raises(Exception) as info:
        ex.map(ident, [1, 2, lock, 4])
    text = str(info.value)
    assert "lock" in text.lower(), text
    assert "2" in text, "the message does not say which item: %s" % text
    still_works(ex)


def test_unpicklable_function_raises_at_submit(ex):
    lock = threading.Lock()

    def uses_lock(x):
        with lock:
            return x

    with pytest.raises(Exception) as info:
        ex.call_async(uses_lock, 1)
    assert "lock" in str(info.value).lower() and "uses_lock" in str(info.value), str(info.value)
    with pytest.raises(Exception) as info:
        ex.map(uses_lock, [1, 2])
    assert "lock" in chain_text(info.value).lower()
    still_works(ex)


@pytest.mark.parametrize("func", [return_generator, return_lock])
def test_unpicklable_result_fails_that_future(ex, func):
    fs = ex.map(func, [0]) + ex.map(square, [3])
    err = fs[0].exception(timeout=T)
    assert err is not None and fs[0].errored()
    text = (str(err) + chain_text(err)).lower()
    assert "pickle" in text, text
    assert "generator" in text or "lock" in text, text
    assert fs[1].result(timeout=T) == 9
    still_works(ex)


# ------------------------------------------------------------------ the pool itself dies

def test_local_pool_killed(fresh):
    from executor_helpers import bettong_procs, wait_all_gone
    before = set(bettong_procs(descendants(os.getpid())))
    e = fresh()
    assert e.call_async(square, 2).result(timeout=T) == 4
    mine = [r for r in bettong_procs(descendants(os.getpid())) if r not in before]
    pools = [r for r in mine if " pool " in r.cmd + " "]
    assert len(pools) == 1, mine
    pending = e.map(sleep_ret, [20, 20, 20])
    time.sleep(0.3)
    os.kill(pools[0].pid, signal.SIGKILL)
    t0 = time.monotonic()
    for f in pending:
        err = f.exception(timeout=T)
        assert err is not None, "a call of a killed pool succeeded"
        assert not isinstance(err, TimeoutError)
    assert time.monotonic() - t0 < 5, "futures of a killed pool failed only after %.1f s" % (
        time.monotonic() - t0)
    wait_all_gone(mine, 5, "workers of a killed pool")
