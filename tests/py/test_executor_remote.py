"""A pool over TCP: `bettong pool --listen 127.0.0.1:PORT --secret S` with
`bettong worker --join` processes and `FunctionExecutor(address=...)` clients.
Work spreads over workers, a late worker gets work, secrets are checked, a pool
on a non-loopback address will not start without one, and garbage on the port
closes that connection only. All traffic is on loopback."""

import os
import random
import re
import socket
import struct
import subprocess
import sys
import time

import cloudpickle
import pytest

from conftest import BIN, auth_hello, closed_by_peer, pool_identity
from executor_helpers import RESULT_TIMEOUT, TcpPool, stat, sub_env

import bettong  # noqa: E402

cloudpickle.register_pickle_by_value(sys.modules[__name__])

T = RESULT_TIMEOUT
SECRET = "bt-test-secret-" + "%08x" % random.getrandbits(32)


def sleep_pid(seconds):
    time.sleep(seconds)
    return os.getpid()


def square(x):
    return x * x


def worker_of_pid(pool, pid):
    for i, w in enumerate(pool.workers):
        if pid in pool.worker_pids(w):
            return i
    return None


def wait_workers_joined(client, n, timeout=15):
    """Run short calls until `n` distinct workers have answered (a joining worker
    needs a moment to start its interpreter)."""
    deadline = time.monotonic() + timeout
    seen = set()
    while time.monotonic() < deadline:
        fs = client.map(sleep_pid, [0.05] * (2 * n))
        seen |= {stat(f, "worker") for f in fs if f.result(timeout=T) is not None}
        if len(seen) >= n:
            return seen
    pytest.fail("only %d of %d workers answered within %.0f s" % (len(seen), n, timeout))


# ------------------------------------------------------------------ spreading work

def test_remote_pool_spreads_work_over_two_workers(procs, executors):
    pool = TcpPool(procs, SECRET)
    pool.add_worker()
    pool.add_worker()
    c = executors(pool.address)
    wait_workers_joined(c, 2)
    fs = c.map(sleep_pid, [0.2] * 8)
    pids = c.get_result(fs, timeout=T)
    workers = {stat(f, "worker") for f in fs}
    assert len(workers) >= 2, "every call ran on one worker: %s" % workers
    owners = {worker_of_pid(pool, p) for p in pids}
    assert owners == {0, 1}, "calls ran in %s, not in both worker processes' trees" % owners
    assert pool.alive()


def test_remote_pool_map_reduce_and_errors(procs, executors):
    pool = TcpPool(procs, SECRET)
    pool.add_worker(procs_n=2)
    c = executors(pool.address)
    assert c.map_reduce(square, range(10), sum).result(timeout=T) == 285

    def boom(x):
        raise ValueError("remote boom %d" % x)

    with pytest.raises(ValueError, match="remote boom 3"):
        c.call_async(boom, 3).result(timeout=T)


def test_worker_joining_late_gets_work(procs, executors):
    pool = TcpPool(procs, SECRET)
    pool.add_worker()
    c = executors(pool.address)
    wait_workers_joined(c, 1)
    backlog = c.map(sleep_pid, [0.15] * 16)
    late = pool.add_worker()
    time.sleep(0.5)
    more = c.map(sleep_pid, [0.15] * 8)
    pids = c.get_result(backlog + more, timeout=T)
    late_pids = pool.worker_pids(late)
    n_late = sum(1 for p in pids if p in late_pids)
    assert n_late >= 1, "the late worker ran none of 24 calls"


def test_two_clients_share_a_remote_pool(procs, executors):
    pool = TcpPool(procs, SECRET)
    pool.add_worker(procs_n=2)
    a, b = executors(pool.address), executors(pool.address)
    fa, fb = a.map(square, range(50)), b.map(square, range(50, 100))
    assert a.get_result(fa, timeout=T) == [x * x for x in range(50)]
    assert b.get_result(fb, timeout=T) == [x * x for x in range(50, 100)]


def test_client_close_leaves_remote_pool_running(procs, executors):
    pool = TcpPool(procs, SECRET)
    w = pool.add_worker()
    c = executors(pool.address)
    assert c.call_async(square, 5).result(timeout=T) == 25
    c.close()
    time.sleep(0.3)
    assert pool.alive(), "closing a client stopped a pool it did not start"
    assert w.poll() is None, "closing a client stopped a worker"
    c2 = executors(pool.address)
    assert c2.call_async(square, 6).result(timeout=T) == 36


def test_secret_from_environment(procs, executors, monkeypatch):
    pool = TcpPool(procs, SECRET)
    pool.add_worker()
    monkeypatch.setenv("BETTONG_SECRET", SECRET)
    c = executors(pool.address, secret=None)
    assert c.call_async(square, 4).result(timeout=T) == 16


# ------------------------------------------------------------------ secrets

def refused_message(exc):
    text = (type(exc).__name__ + ": " + str(exc)).lower()
    return "secret" in text or "refused" in text or "auth" in text


def test_client_with_wrong_secret_is_refused(procs, monkeypatch):
    monkeypatch.delenv("BETTONG_SECRET", raising=False)
    pool = TcpPool(procs, SECRET)
    pool.add_worker()
    t0 = time.monotonic()
    with pytest.raises(Exception) as info:
        e = bettong.FunctionExecutor(address=pool.address, secret="not-the-secret")
        try:
            e.call_async(square, 2).result(timeout=T)
        finally:
            e.close()
    assert time.monotonic() - t0 < 10
    assert refused_message(info.value), "unclear error: %r" % info.value
    assert "not-the-secret" not in str(info.value) and SECRET not in str(info.value)
    assert pool.alive()


def test_client_without_secret_is_refused(procs, monkeypatch):
    monkeypatch.delenv("BETTONG_SECRET", raising=False)
    pool = TcpPool(procs, SECRET)
    with pytest.raises(Exception) as info:
        e = bettong.FunctionExecutor(address=pool.address)
        try:
            e.call_async(square, 2).result(timeout=T)
        finally:
            e.close()
    assert refused_message(info.value), "unclear error: %r" % info.value
    assert pool.alive()


def test_worker_with_wrong_secret_is_refused(procs, executors):
    pool = TcpPool(procs, SECRET)
    bad = pool.add_worker(secret="wrong-worker-secret")
    try:
        rc = bad.wait(10)
    except subprocess.TimeoutExpired:
        pytest.fail("a worker with a wrong secret kept running:\n" + bad.reader.text())
    assert rc != 0
    deadline = time.monotonic() + 2
    while not bad.reader.closed and time.monotonic() < deadline:
        time.sleep(0.02)
    assert re.search(r"secret|refused|auth", bad.reader.text(), re.I), bad.reader.text()
    assert pool.alive()


def test_non_loopback_pool_without_secret_refuses_to_start(monkeypatch):
    """--listen 0.0.0.0 is used only to see the pool refuse: nothing is sent to it."""
    env = sub_env()
    env.pop("BETTONG_SECRET", None)
    p = subprocess.Popen([BIN, "pool", "--listen", "0.0.0.0:0", "--workers", "0"],
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        out, _ = p.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, 9)
        p.communicate()
        pytest.fail("bettong pool started on 0.0.0.0 without a secret")
    text = out.decode("utf-8", "replace")
    assert p.returncode != 0, text
    assert "listening on" not in text, text
    assert "secret" in text.lower(), text


def test_loopback_pool_without_secret_starts(procs, executors, monkeypatch):
    monkeypatch.delenv("BETTONG_SECRET", raising=False)
    pool = TcpPool(procs, None)
    pool.add_worker()
    c = executors(pool.address, secret=None)
    assert c.call_async(square, 3).result(timeout=T) == 9


# ------------------------------------------------------------------ garbage on the port

def hello_frame(version):
    """A handshake HELLO of another handshake version."""
    return auth_hello("pool", pool_identity(name="intruder"), version=version)[0]


GARBAGE = {
    "http": b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
    "huge-length": struct.pack(">I", 0xFFFFFFF0) + b"x" * 64,
    "empty-frame": struct.pack(">I", 0),
    "unknown-type": struct.pack(">IB", 1, 250),
    "calls-before-hello": struct.pack(">IBQ", 9, 11, 1) + b"\x80\x05N.",
    "bad-version-hello": hello_frame(200),
    "random": random.Random(42).randbytes(8192),
}


def test_garbage_on_the_port_closes_that_connection_only(procs, executors):
    pool = TcpPool(procs, SECRET)
    pool.add_worker(procs_n=2)
    c = executors(pool.address)
    assert c.call_async(square, 1).result(timeout=T) == 1
    running = c.map(sleep_pid, [0.3] * 4)
    for name, data in GARBAGE.items():
        s = socket.create_connection(("127.0.0.1", pool.port), timeout=5)
        try:
            try:
                s.sendall(data)
            except (ConnectionResetError, BrokenPipeError):
                pass
            assert closed_by_peer(s), "the pool kept a connection open after %r" % name
        finally:
            s.close()
        assert pool.alive(), "the pool died on %r:\n%s" % (name, pool.out.text())
    assert len(c.get_result(running, timeout=T)) == 4
    assert c.get_result(c.map(square, range(10)), timeout=T) == [x * x for x in range(10)]
    c2 = executors(pool.address)
    assert c2.call_async(square, 12).result(timeout=T) == 144


# ------------------------------------------------------------------ processes dying

def write_pid_then_sleep(path, seconds):
    with open(path + ".tmp", "w") as f:
        f.write(str(os.getpid()))
    os.rename(path + ".tmp", path)
    time.sleep(seconds)
    return os.getpid()


def test_join_restarts_a_killed_worker_process(procs, executors, tmp_path):
    pool = TcpPool(procs, SECRET)
    w = pool.add_worker(procs_n=1)
    c = executors(pool.address)
    wait_workers_joined(c, 1)
    path = str(tmp_path / "pid")
    f = c.call_async(write_pid_then_sleep, (path, 30))
    deadline = time.monotonic() + 15
    while not os.path.exists(path):
        assert time.monotonic() < deadline, "the call never started"
        time.sleep(0.01)
    victim = int(open(path).read())
    assert victim in pool.worker_pids(w), "the call did not run under the worker process"
    os.kill(victim, 9)
    with pytest.raises(bettong.WorkerDied):
        f.result(timeout=T)
    # `bettong worker --join` starts a new process; the pool gives it work
    pids = set(c.get_result(c.map(sleep_pid, [0.01] * 4), timeout=T))
    assert victim not in pids and pids <= pool.worker_pids(w)
    assert w.poll() is None


def test_remote_pool_killed_fails_pending_calls(procs, executors):
    pool = TcpPool(procs, SECRET)
    w = pool.add_worker(procs_n=2)
    c = executors(pool.address)
    wait_workers_joined(c, 2)
    pending = c.map(sleep_pid, [20] * 3)
    time.sleep(0.3)
    pool.proc.kill()
    t0 = time.monotonic()
    for f in pending:
        err = f.exception(timeout=T)
        assert err is not None and not isinstance(err, TimeoutError), err
    assert time.monotonic() - t0 < 5
    assert "127.0.0.1:%d" % pool.port in str(pending[0].exception()), pending[0].exception()
    # the workers lose their pool: they stop trying after --give-up (default 30 s);
    # here they are killed at teardown
    del w
