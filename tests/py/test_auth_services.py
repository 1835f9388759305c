"""The mutual challenge-response handshake (src/net/auth.h) on the task pool and
the object store, end to end: the right secret works, a wrong one is refused
with a clear message, loopback without a secret works, a recorded session does
not replay (and its store calls do not run again), a server that cannot prove
the secret is refused by `bettong worker --join` and by both Python clients
before any pickle it sends is read, and the secret never crosses the wire.

The pure-Python side of the handshake (auth_handshake, the recording relay, the
fake server) lives in conftest.py for other attack tests to reuse."""

import os
import pickle
import re
import socket
import struct
import subprocess
import sys
import time

import cloudpickle
import pytest

from conftest import (AUTH_CHALLENGE, BIN, AuthFailed, FakeServer, RecordingRelay,
                      auth_handshake, fake_challenge, frame, pool_identity, recv_frame,
                      store_identity, wait_until)
from executor_helpers import RESULT_TIMEOUT, LineReader, TcpPool, sub_env
from store_helpers import client_reset

import bettong  # noqa: E402
from bettong import _bettong, _store, objects  # noqa: E402
import store_models as m  # noqa: E402

# The workers run this module's functions without importing it.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

T = RESULT_TIMEOUT
SECRET = "bt-auth-test-" + os.urandom(6).hex()
WELCOME, REFUSED = 2, 3          # the same numbers in both protocols
MSG_FUNCDEF, MSG_TASK, MSG_RESULT = 30, 32, 20
SMSG_OK = 40
JOIN_EXIT_UNPROVEN = 3          # src/pool/join.h


def square(x):
    return x * x


def append_line(path):
    with open(path, "a") as f:
        f.write("ran\n")
    return os.getpid()


class Marker:
    """Unpickling this creates the file at `path`: a would-be pickle from a fake
    server that shows whether anyone loaded it."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def marker_pickle(path):
    return pickle.dumps(Marker(str(path)), protocol=5)


@pytest.fixture
def servers():
    made = []

    def make(cls, *args):
        s = cls(*args)
        made.append(s)
        return s

    try:
        yield make
    finally:
        for s in made:
            s.close()


def read_all_frames(sock, timeout=5.0):
    """Every frame body the peer sends until it closes (or the timeout)."""
    sock.settimeout(timeout)
    out = []
    try:
        while True:
            body = recv_frame(sock)
            if body is None:
                return out
            out.append(body)
    except socket.timeout:
        return out


def refusal_text(body):
    assert body and body[0] == REFUSED, body
    (n,) = struct.unpack(">H", body[1:3])
    return body[3:3 + n].decode()


def wait_exit(p, timeout=15):
    try:
        return p.wait(timeout)
    except subprocess.TimeoutExpired:
        pytest.fail("process %d still running after %d s" % (p.pid, timeout))


def join_worker(procs, address, secret=SECRET, give_up=30):
    env = sub_env()
    if secret:
        env["BETTONG_SECRET"] = secret
    p = procs.spawn([BIN, "worker", "--join", address, "--procs", "1", "--give-up",
                     str(give_up)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    p.reader = LineReader(p.stdout)
    return p


def reader_text(p):
    deadline = time.monotonic() + 2
    while not p.reader.closed and time.monotonic() < deadline:
        time.sleep(0.02)
    return p.reader.text()


# ------------------------------------------------------------------ (a) the right secret, a wrong one

def test_pool_with_the_right_secret_works(procs, executors):
    pool = TcpPool(procs, SECRET)
    pool.add_worker()
    e = executors(pool.address)
    assert e.get_result(e.map(square, range(20)), timeout=T) == [x * x for x in range(20)]


def test_pool_client_with_a_wrong_secret_gets_a_clear_error(procs):
    pool = TcpPool(procs, SECRET)
    t0 = time.monotonic()
    with pytest.raises(bettong.AuthenticationError) as info:
        _bettong.Connection(pool.address, b"not-the-secret", "wrong")
    text = str(info.value)
    assert "could not prove" in text and "secret" in text and pool.address in text, text
    assert isinstance(info.value, bettong.RefusedError)
    # The executor raises it too, at once, without retrying.
    e = bettong.FunctionExecutor(address=pool.address, secret="not-the-secret")
    try:
        with pytest.raises(bettong.AuthenticationError):
            e.call_async(square, 2).result(timeout=T)
        with pytest.raises(bettong.AuthenticationError):
            e.call_async(square, 3).result(timeout=T)
    finally:
        e.close()
    assert time.monotonic() - t0 < 10
    assert pool.alive()


def test_pool_refuses_a_client_whose_proof_is_wrong(procs):
    """A client that skips checking the pool's proof and proves a wrong secret gets
    REFUSED "authentication failed" at PROOF, then the pool closes."""
    pool = TcpPool(procs, SECRET)
    s = socket.create_connection(("127.0.0.1", pool.port), timeout=5)
    try:
        answer = auth_handshake(s, "pool", pool_identity(), b"wrong", check_server=False)
        assert "authentication failed" in refusal_text(answer)
        assert read_all_frames(s) == []
    finally:
        s.close()
    # With the secret the same handshake is welcome, under the name it proved.
    s = socket.create_connection(("127.0.0.1", pool.port), timeout=5)
    try:
        answer = auth_handshake(s, "pool", pool_identity(name="proved-name"), SECRET)
        assert answer[0] == WELCOME, answer
        joined = re.compile(r"client \d+ 'proved-name' \(pid %d\).* joined" % os.getpid())
        assert pool.out.wait_for(joined, 5), pool.out.text()
    finally:
        s.close()


def test_worker_with_a_wrong_secret_stops_with_a_clear_error(procs):
    pool = TcpPool(procs, SECRET)
    w = join_worker(procs, pool.address, secret="wrong-worker-secret")
    assert wait_exit(w) == JOIN_EXIT_UNPROVEN
    text = reader_text(w)
    assert "could not prove it knows the secret" in text, text
    assert "wrong-worker-secret" not in text and SECRET not in text
    assert pool.alive()


def test_store_with_the_right_secret_works(stores):
    st = stores(secret=SECRET)
    objects.connect(st.address, secret=SECRET)
    c = m.Counter(1)
    c.make_persistent(alias="auth-right")
    assert c.incr() == 2
    assert m.Counter.get_by_alias("auth-right").get() == 2


def test_store_client_with_a_wrong_secret_gets_a_clear_error(stores):
    st = stores(secret=SECRET)
    with pytest.raises(bettong.AuthenticationError) as info:
        _store.Connection(st.address, b"wrong", "test")
    text = str(info.value)
    assert "could not prove" in text and "secret" in text and st.address in text, text
    t0 = time.monotonic()
    with pytest.raises(bettong.AuthenticationError):
        objects.connect(st.address, secret="nope")
    assert time.monotonic() - t0 < 5
    # A proof from a client that does not know the secret is refused at PROOF.
    s = socket.create_connection(("127.0.0.1", st.port), timeout=5)
    try:
        answer = auth_handshake(s, "store", store_identity(), b"wrong", check_server=False)
        assert "authentication failed" in refusal_text(answer)
    finally:
        s.close()
    # The right one is welcome, under the name it proved.
    s = socket.create_connection(("127.0.0.1", st.port), timeout=5)
    try:
        answer = auth_handshake(s, "store", store_identity("proved-name"), SECRET)
        assert answer[0] == WELCOME, answer
        wait_until(lambda: "client 'proved-name'" in st.log(), 5, "the store's log line")
    finally:
        s.close()
    assert st.alive()


# ------------------------------------------------------------------ (b) loopback without a secret

def test_loopback_services_without_a_secret_work(procs, executors, stores, monkeypatch):
    monkeypatch.delenv("BETTONG_SECRET", raising=False)
    pool = TcpPool(procs, None)
    pool.add_worker()
    e = executors(pool.address, secret=None)
    assert e.get_result(e.map(square, range(5)), timeout=T) == [0, 1, 4, 9, 16]
    st = stores()
    objects.connect(st.address, secret="")
    c = m.Counter(5)
    c.make_persistent(alias="no-secret")
    assert c.incr() == 6


# ------------------------------------------------------------------ (c) replay, (e) secrecy

def test_a_replayed_store_session_is_refused_and_its_calls_do_not_run(stores, servers):
    st = stores(secret=SECRET)
    objects.connect(st.address, secret=SECRET)
    m.Counter(0).make_persistent(alias="replay-counter")
    objects.flush()
    # A real session, recorded on its way to the store: a lookup, an increment.
    relay = servers(RecordingRelay, ("127.0.0.1", st.port))
    conn = _store.Connection(relay.address, SECRET.encode(), "recorded")
    ref = conn.request(_store.LOOKUP_ALIAS, "replay-counter")
    assert ref[0] == _store.REF, ref
    ok = conn.request(_store.CALL, ref[2], "incr", b"")
    assert ok[0] == _store.OK and pickle.loads(ok[2]) == 1, ok
    conn.close()
    recorded = relay.client_bytes
    assert m.Counter.get_by_alias("replay-counter").get() == 1
    # (e) the secret never crossed the wire, either way.
    assert SECRET.encode() not in recorded and SECRET.encode() not in relay.server_bytes
    # Replayed raw on a fresh connection: a fresh server nonce, so the recorded
    # PROOF fails, and nothing after it is read.
    for _ in range(2):
        s = socket.create_connection(("127.0.0.1", st.port), timeout=5)
        try:
            s.sendall(recorded)
            got = read_all_frames(s)
        finally:
            s.close()
        assert got and got[0][0] == AUTH_CHALLENGE, got
        assert len(got) == 2 and "authentication failed" in refusal_text(got[1]), got
    assert st.alive()
    assert m.Counter.get_by_alias("replay-counter").get() == 1


def test_a_replayed_pool_session_is_refused_and_its_calls_do_not_run(procs, servers,
                                                                      tmp_path):
    pool = TcpPool(procs, SECRET)
    pool.add_worker()
    relay = servers(RecordingRelay, ("127.0.0.1", pool.port))
    path = str(tmp_path / "ran.txt")
    e = bettong.FunctionExecutor(address=relay.address, secret=SECRET)
    try:
        e.call_async(append_line, path).result(timeout=T)
    finally:
        e.close()
    recorded = relay.client_bytes
    assert open(path).read() == "ran\n"
    assert SECRET.encode() not in recorded and SECRET.encode() not in relay.server_bytes
    s = socket.create_connection(("127.0.0.1", pool.port), timeout=5)
    try:
        s.sendall(recorded)
        got = read_all_frames(s)
    finally:
        s.close()
    assert got and got[0][0] == AUTH_CHALLENGE, got
    assert len(got) == 2 and "authentication failed" in refusal_text(got[1]), got
    # The one worker runs calls in order: once a later legitimate call has run,
    # anything the replay had queued would have run before it. Nothing did.
    e = bettong.FunctionExecutor(address=pool.address, secret=SECRET)
    try:
        assert e.call_async(square, 3).result(timeout=T) == 9
    finally:
        e.close()
    assert open(path).read() == "ran\n"
    assert pool.alive()


def test_a_worker_never_sends_the_secret(procs, servers, executors):
    pool = TcpPool(procs, SECRET)
    relay = servers(RecordingRelay, ("127.0.0.1", pool.port))
    join_worker(procs, relay.address)
    e = executors(pool.address)
    assert e.call_async(square, 7).result(timeout=T) == 49
    wait_until(lambda: len(relay.client_bytes) > 0, 5, "the worker's traffic")
    assert SECRET.encode() not in relay.client_bytes
    assert SECRET.encode() not in relay.server_bytes


# ------------------------------------------------------------------ (d) a fake server

def answer_with_random_proof(conn, hello):
    conn.sendall(fake_challenge())


def pool_work_at_once(path):
    """A fake pool that sends a FUNCDEF and a TASK instead of its CHALLENGE."""
    p = marker_pickle(path)

    def behave(conn, hello):
        conn.sendall(frame(struct.pack(">BQ", MSG_FUNCDEF, 1) + p)
                     + frame(struct.pack(">BQQ", MSG_TASK, 1, 1) + p))
    return behave


def welcome_then_work(path):
    """A fake pool that says WELCOME (no CHALLENGE at all), then sends work."""
    p = marker_pickle(path)

    def behave(conn, hello):
        conn.sendall(frame(struct.pack(">BII", WELCOME, 1, 1))
                     + frame(struct.pack(">BQ", MSG_FUNCDEF, 1) + p)
                     + frame(struct.pack(">BQQ", MSG_TASK, 1, 1) + p))
    return behave


@pytest.mark.parametrize("kind", ["random-proof", "work-at-once", "welcome-at-once"])
def test_join_refuses_a_pool_that_cannot_prove_the_secret(procs, servers, tmp_path, kind):
    path = tmp_path / "unpickled"
    behave = {"random-proof": answer_with_random_proof,
              "work-at-once": pool_work_at_once(path),
              "welcome-at-once": welcome_then_work(path)}[kind]
    fake = servers(FakeServer, behave)
    w = join_worker(procs, fake.address)
    assert wait_exit(w) == JOIN_EXIT_UNPROVEN
    text = reader_text(w)
    assert "could not prove it knows the secret" in text and fake.address in text, text
    assert len(fake.hellos) == 1, "the worker retried a pool that cannot prove the secret"
    assert fake.hellos[0][0] == 0xF0
    assert SECRET.encode() not in fake.hellos[0] + fake.after_hello
    assert not path.exists(), "the worker unpickled what a fake pool sent"


@pytest.mark.parametrize("kind", ["random-proof", "result-at-once", "welcome-at-once"])
def test_pool_client_refuses_a_fake_pool(servers, tmp_path, kind):
    path = tmp_path / "unpickled"
    p = marker_pickle(path)

    def result_at_once(conn, hello):
        conn.sendall(frame(struct.pack(">BQBIIQQQH", MSG_RESULT, 1, 0, 1, 1, 0, 0, 0, 0) + p))

    def welcome_at_once(conn, hello):
        conn.sendall(frame(struct.pack(">BII", WELCOME, 1, 1))
                     + frame(struct.pack(">BQBIIQQQH", MSG_RESULT, 1, 0, 1, 1, 0, 0, 0, 0) + p))

    behave = {"random-proof": answer_with_random_proof, "result-at-once": result_at_once,
              "welcome-at-once": welcome_at_once}[kind]
    fake = servers(FakeServer, behave)
    t0 = time.monotonic()
    e = bettong.FunctionExecutor(address=fake.address, secret=SECRET)
    try:
        with pytest.raises(bettong.AuthenticationError) as info:
            e.call_async(square, 2).result(timeout=T)
    finally:
        e.close()
    assert "could not prove it knows the secret" in str(info.value)
    assert time.monotonic() - t0 < 10
    assert len(fake.hellos) == 1
    assert SECRET.encode() not in fake.hellos[0] + fake.after_hello
    assert not path.exists()


@pytest.mark.parametrize("kind", ["random-proof", "ok-at-once", "welcome-at-once"])
def test_store_client_refuses_a_fake_store(servers, tmp_path, kind):
    client_reset()
    path = tmp_path / "unpickled"
    p = marker_pickle(path)

    def ok_at_once(conn, hello):
        conn.sendall(frame(struct.pack(">BQ", SMSG_OK, 1) + p))

    def welcome_at_once(conn, hello):
        conn.sendall(frame(struct.pack(">BH", WELCOME, 4) + b"fake")
                     + frame(struct.pack(">BQ", SMSG_OK, 1) + p))

    behave = {"random-proof": answer_with_random_proof, "ok-at-once": ok_at_once,
              "welcome-at-once": welcome_at_once}[kind]
    fake = servers(FakeServer, behave)
    try:
        with pytest.raises(bettong.AuthenticationError) as info:
            objects.connect(fake.address, secret=SECRET)
        assert "could not prove it knows the secret" in str(info.value)
        with pytest.raises(bettong.AuthenticationError):
            m.Counter.get_by_alias("anything")
    finally:
        client_reset()
    assert len(fake.hellos) == 2   # one per attempt: no retry loop
    assert SECRET.encode() not in b"".join(fake.hellos) + fake.after_hello
    assert not path.exists()


def test_the_python_handshake_checks_the_server(servers):
    """conftest's auth_handshake is what attack tests build on: it must catch a
    server that cannot prove the secret, as the C clients do."""
    fake = servers(FakeServer, answer_with_random_proof)
    s = socket.create_connection(("127.0.0.1", fake.port), timeout=5)
    try:
        with pytest.raises(AuthFailed):
            auth_handshake(s, "pool", pool_identity(), SECRET)
    finally:
        s.close()
