"""Nested executors: a FunctionExecutor (or lithops.FunctionExecutor) made
inside a function running on a pool submits to that same pool, through a
sub-call token of the running call (never the pool's secret), and a token from
a call that is over is refused."""

import os
import random
import re
import sys


import authwire
import cloudpickle
import pytest

from conftest import wait_until
from executor_helpers import RESULT_TIMEOUT, TcpPool, stat

import bettong  # noqa: E402

cloudpickle.register_pickle_by_value(sys.modules[__name__])
cloudpickle.register_pickle_by_value(authwire)

T = RESULT_TIMEOUT
SECRET = "bt-nested-secret-" + "%08x" % random.getrandbits(32)


def square(x):
    return x * x


def nested_sum(n):
    """A call that maps n sub-calls on its own pool and waits for them."""
    import bettong
    with bettong.FunctionExecutor() as ex:
        where = ex._get_client().address
        return sum(ex.get_result(ex.map(square, range(n)), timeout=60)), where, \
            "BETTONG_SECRET" in os.environ


def ticket(_=None):
    from bettong import _pool
    return _pool.subcall_ticket()


def test_nested_executor_uses_the_remote_pool_without_the_secret(procs, executors):
    pool = TcpPool(procs, SECRET)
    pool.add_worker(procs_n=3)
    c = executors(pool.address)
    total, where, saw_secret = c.call_async(nested_sum, 4).result(timeout=T)
    assert total == 0 + 1 + 4 + 9
    assert where == pool.address  # the same pool, not a local one
    assert saw_secret is False


def test_token_of_a_finished_call_is_refused(procs, executors):
    pool = TcpPool(procs, SECRET)
    pool.add_worker(procs_n=1)
    c = executors(pool.address)
    address, task, token = c.call_async(ticket, None).result(timeout=T)
    assert address == pool.address and task > 0 and len(token) == 32
    assert token != SECRET.encode()
    from bettong import _bettong
    with pytest.raises(Exception, match="no longer holds"):
        _bettong.Connection(address, token, "stale", parent_task=task)
    # a token is not the secret: it cannot join as a plain client either
    with pytest.raises(Exception, match="could not prove|authentication failed"):
        _bettong.Connection(address, token, "as-client")
    # nor name another task
    with pytest.raises(Exception, match="could not prove|authentication failed|no longer holds"):
        _bettong.Connection(address, token, "other", parent_task=task + 1)


def join_as_worker_with_my_token(_=None):
    """From inside a call: try the call's own token as a worker's key."""
    import socket
    from bettong import _pool
    address, task, token = _pool.subcall_ticket()
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as s:
        try:
            authwire.auth_handshake(s, "pool", authwire.pool_identity(role=2, name="w"), token)
        except authwire.AuthFailed:
            return "refused"
        return "accepted"


def test_a_token_cannot_join_as_a_worker(procs, executors):
    pool = TcpPool(procs, SECRET)
    pool.add_worker(procs_n=1)
    c = executors(pool.address)
    assert c.call_async(join_as_worker_with_my_token, None).result(timeout=T) == "refused"


def nested_where(_=None):
    import bettong
    with bettong.FunctionExecutor() as ex:
        return ex.call_async(square, 3).result(timeout=60), ex._get_client().address


def test_explicit_bettong_pool_wins(procs, executors):
    pool = TcpPool(procs, SECRET)
    pool.add_worker(procs_n=1)
    other = TcpPool(procs, None, workers=1)  # loopback, no secret
    c = executors(pool.address)
    f = c.call_async(nested_where, None, extra_env={"BETTONG_POOL": other.address})
    assert f.result(timeout=T) == (9, other.address)


def reuse_executor(n):
    """An executor kept in the worker process across calls."""
    import bettong
    ex = getattr(sys, "_bt_nested_ex", None)
    if ex is None:
        ex = sys._bt_nested_ex = bettong.FunctionExecutor()
    return ex.call_async(square, n).result(timeout=60), ex._get_client().parent_task


def test_an_executor_kept_across_calls_reconnects_per_call(procs, executors):
    pool = TcpPool(procs, SECRET)
    pool.add_worker(procs_n=1)
    c = executors(pool.address)
    out = [c.call_async(reuse_executor, n).result(timeout=T) for n in (2, 3, 4)]
    assert [r for r, _ in out] == [4, 9, 16]
    tasks = [t for _, t in out]
    assert len(set(tasks)) == 3 and all(tasks), tasks


def test_outside_a_call_there_is_no_ticket():
    assert ticket() is None


def lithops_nested(n):
    import lithops
    fexec = lithops.FunctionExecutor()
    fexec.map(square, list(range(n)))
    out = fexec.get_result()
    return sorted(out), fexec._bx._get_client().address


def test_lithops_nested_spelling_uses_the_same_pool(procs, executors):
    pool = TcpPool(procs, SECRET)
    pool.add_worker(procs_n=3)
    c = executors(pool.address)
    out, where = c.call_async(lithops_nested, 3).result(timeout=T)
    assert out == [0, 1, 4]
    assert where == pool.address


def test_three_levels_on_a_remote_pool(procs, executors):
    pool = TcpPool(procs, SECRET)
    pool.add_worker(procs_n=4)
    c = executors(pool.address)
    # level 1 runs nested_twice (level 2: nested_sum), which maps squares (level 3)
    assert c.call_async(nested_twice, 2).result(timeout=T) == [1, 5]


def nested_twice(n):
    import bettong
    with bettong.FunctionExecutor() as ex:
        return [r[0] for r in ex.get_result(ex.map(nested_sum, [n, n + 1]), timeout=60)]


# ------------------------------------------------------------------ no deadlock

def test_nested_map_on_a_local_pool_of_two_workers():
    # Both workers run a call that maps 4 sub-calls and waits: without lent
    # slots no worker would be left for the sub-calls.
    with bettong.FunctionExecutor(workers=2) as ex:
        out = ex.get_result(ex.map(nested_sum, [4, 5]), timeout=T)
        assert [r[0] for r in out] == [14, 30]
        assert all(r[1] == ex._get_client().address for r in out)
        assert ex.status()["workers"] >= 2


def test_nested_map_on_a_fixed_remote_pool_of_two_workers(procs, executors):
    pool = TcpPool(procs, SECRET)
    pool.add_worker(procs_n=2)
    c = executors(pool.address)
    out = c.get_result(c.map(nested_sum, [4, 4, 4, 4]), timeout=T)
    assert [r[0] for r in out] == [14] * 4


def test_temporary_workers_are_let_go_afterwards(procs, executors):
    pool = TcpPool(procs, SECRET, workers=2)
    c = executors(pool.address)
    out = c.get_result(c.map(nested_sum, [4, 4]), timeout=T)
    assert [r[0] for r in out] == [14, 14]
    # The nested executors closed: their lent slots end, the extra workers go.
    wait_until(lambda: c.status()["workers"] == 2, 15, "the temporary workers to go")
    assert pool.out.wait_for(re.compile(r"started temporary worker lent-1"), 5)


def test_max_lent_bounds_the_temporary_workers(procs, executors):
    # Two waiting calls, one temporary worker allowed: it runs both calls'
    # sub-calls (leaves: nothing waits behind them), and the pool says the
    # bound was reached.
    pool = TcpPool(procs, SECRET, workers=2, extra=["--max-lent", "1"])
    c = executors(pool.address)
    out = c.get_result(c.map(nested_sum, [4, 5]), timeout=T)
    assert [r[0] for r in out] == [14, 30]
    assert pool.out.wait_for(re.compile(r"2 calls wait on their own sub-calls, more than "
                                        r"--max-lent 1"), 5)
    assert len(re.findall(r"started temporary worker", pool.out.text())) == 1


def step(kind):
    """One function for quick calls and for a call that nests (so that the
    pool, knowing it is quick, sends several to one worker ahead)."""
    if kind == "quick":
        return 0
    import bettong
    with bettong.FunctionExecutor() as ex:
        return sum(ex.get_result(ex.map(step, ["quick"] * 3), timeout=60)) + 1


def test_calls_sent_ahead_to_a_lending_worker_are_taken_back(procs, executors):
    pool = TcpPool(procs, SECRET, workers=1)
    c = executors(pool.address)
    warm = c.map(step, ["quick"] * 4)  # its run time is known: send-ahead applies
    assert c.get_result(warm, timeout=T) == [0] * 4
    w = stat(warm[0], "worker")
    fs = c.map(step, ["nest", "quick", "quick"])
    assert c.get_result(fs, timeout=T) == [1, 0, 0]
    assert stat(fs[0], "worker") == w
    # The quick calls were sent ahead to w behind the nesting call; once it
    # lent its slot they were taken back and ran on the temporary worker.
    assert {stat(f, "worker") for f in fs[1:]} != {w}, [stat(f, "worker") for f in fs]


def test_three_levels_on_a_local_pool_of_two_workers():
    with bettong.FunctionExecutor(workers=2) as ex:
        assert ex.get_result(ex.map(nested_twice, [2, 3]), timeout=T) == [[1, 5], [5, 14]]
