"""TLS on the task pool and the object store (--tls-cert/--tls-key on `bettong
pool` and `bettong store`; clients, `bettong worker --join` and the pool's own
local workers connect to "tls:HOST:PORT", the address the services print):
everything works over TLS, large results and arguments included; the bytes on
the wire are not cleartext; a plain client of a TLS port and a TLS client of a
plain port get a clear error; a relay that terminates TLS on both sides is
refused because the handshake's proofs are bound to the TLS session."""

import hashlib
import os
import re
import subprocess
import sys

import cloudpickle
import pytest

from conftest import BIN, RecordingRelay, make_tls_cert, wait_until
from executor_helpers import RESULT_TIMEOUT, TcpPool
from test_auth_services import JOIN_EXIT_UNPROVEN, join_worker, reader_text, wait_exit
from test_cluster_tls import TlsMitm

import bettong  # noqa: E402
from bettong import objects  # noqa: E402
import store_models as m  # noqa: E402

cloudpickle.register_pickle_by_value(sys.modules[__name__])

T = RESULT_TIMEOUT
SECRET = "svc-tls-" + os.urandom(6).hex()
BIG = 24 * 1024 * 1024


def tls_flags(cert):
    return ["--tls-cert", cert[0], "--tls-key", cert[1]]


def square(x):
    return x * x


def pattern(n):
    """n bytes that are not all alike (a shifted block is noticed)."""
    block = bytes(range(251))
    return (block * (n // len(block) + 1))[:n]


def digest_of_pattern(n):
    return hashlib.sha256(pattern(n)).hexdigest()


def echo(text):
    return text + "!"


def pid_of(_):
    return os.getpid()


# ------------------------------------------------------------------ the pool

def test_pool_over_tls(procs, executors, tls_cert):
    """Local workers (no Unix socket: they connect to the TLS port), a client,
    a result and an argument much larger than a TLS record."""
    pool = TcpPool(procs, SECRET, workers=2, extra=tls_flags(tls_cert), port=0)
    assert pool.address.startswith("tls:127.0.0.1:"), pool.address
    local = re.compile(r"local worker\(s\) connecting to tls:127\.0\.0\.1:\d+")
    assert pool.out.wait_for(local, 10), pool.out.text()
    e = executors(pool.address)
    assert e.get_result(e.map(square, range(300)), timeout=T) == [x * x for x in range(300)]
    big = e.get_result(e.call_async(pattern, BIG), timeout=T)
    assert len(big) == BIG and hashlib.sha256(big).hexdigest() == digest_of_pattern(BIG)
    sizes = e.get_result(e.map(len, [pattern(5_000_000)] * 3), timeout=T)
    assert sizes == [5_000_000] * 3


def test_joined_worker_over_tls(procs, executors, tls_cert):
    pool = TcpPool(procs, SECRET, workers=0, extra=tls_flags(tls_cert), port=0)
    w = pool.add_worker(procs_n=1)
    e = executors(pool.address)
    pids = set(e.get_result(e.map(pid_of, range(20)), timeout=T))
    assert pids and pids <= pool.worker_pids(w), (pids, w.pid)
    assert e.get_result(e.call_async(pattern, BIG), timeout=T) == pattern(BIG)


def test_pool_bytes_are_not_cleartext(procs, executors, tls_cert):
    marker = "cleartext-marker-" + os.urandom(4).hex()
    pool = TcpPool(procs, SECRET, workers=1, extra=tls_flags(tls_cert), port=0)
    relay = RecordingRelay(("127.0.0.1", pool.port))
    try:
        e = executors("tls:" + relay.address)
        assert e.get_result(e.call_async(echo, marker), timeout=T) == marker + "!"
        with relay.lock:
            sent, answered = relay.client_bytes, relay.server_bytes
        assert sent[:2] == b"\x16\x03" and answered[:2] == b"\x16\x03"
        for clear in (marker.encode(), b"pool", b"echo"):
            assert clear not in sent and clear not in answered, clear
    finally:
        relay.close()
    # The same through a relay to a plain pool shows the marker: the check above
    # looks where the text would be.
    plain = TcpPool(procs, SECRET, workers=1, port=0)
    relay = RecordingRelay(("127.0.0.1", plain.port))
    try:
        e = executors(relay.address)
        assert e.get_result(e.call_async(echo, marker), timeout=T) == marker + "!"
        with relay.lock:
            assert marker.encode() in relay.client_bytes
    finally:
        relay.close()


def test_pool_plain_and_tls_do_not_mix(procs, tls_cert):
    tls_pool = TcpPool(procs, SECRET, workers=0, extra=tls_flags(tls_cert), port=0)
    plain_address = tls_pool.address[len("tls:"):]
    with pytest.raises(ConnectionError, match="closed the connection during the handshake"):
        bettong.FunctionExecutor(address=plain_address, secret=SECRET).map(square, [1])
    wait_until(lambda: "does the peer connect without TLS?" in tls_pool.out.text(), 5,
               "the TLS pool's log line")
    plain = TcpPool(procs, SECRET, workers=0, port=0)
    with pytest.raises(ConnectionError, match=r"does it listen without TLS\?"):
        bettong.FunctionExecutor(address="tls:" + plain.address, secret=SECRET).map(square, [1])
    wait_until(lambda: "looks like a TLS handshake" in plain.out.text(), 5,
               "the plain pool's log line")


def test_pool_tls_terminating_relay_is_refused(procs, tls_cert, tmp_path):
    pool = TcpPool(procs, SECRET, workers=1, extra=tls_flags(tls_cert), port=0)
    mitm = TlsMitm(("127.0.0.1", pool.port), make_tls_cert(tmp_path / "mitm", "mallory"))
    try:
        with pytest.raises(bettong.AuthenticationError, match="could not prove"):
            bettong.FunctionExecutor(address="tls:" + mitm.address, secret=SECRET).map(
                square, [1])
        # Not vacuous: the relay terminated TLS and read the handshake's HELLO.
        assert b"pool" in mitm.plain_from_client
        # A worker joining through it stops the same way, and does not retry.
        w = join_worker(procs, "tls:" + mitm.address)
        assert wait_exit(w) == JOIN_EXIT_UNPROVEN
        text = reader_text(w)
        assert "could not prove it knows the secret" in text, text
    finally:
        mitm.close()


def test_tls_flags_are_checked(tls_cert, tmp_path):
    cases = [
        (["pool", "--listen", "127.0.0.1:0", "--tls-cert", tls_cert[0]], "needs both"),
        (["pool", "--unix", str(tmp_path / "p.sock")] + tls_flags(tls_cert), "need --listen"),
        (["pool", "--listen", "127.0.0.1:0", "--tls-cert", tls_cert[0], "--tls-key",
          str(tmp_path / "missing.key")], "missing.key"),
        (["store", "--dir", str(tmp_path / "s"), "--listen", "127.0.0.1:0", "--tls-key",
          tls_cert[1]], "needs both"),
        (["store", "--dir", str(tmp_path / "s"), "--listen", "127.0.0.1:0", "--tls-cert"],
         "needs a value"),
    ]
    for args, want in cases:
        p = subprocess.run([BIN] + args, capture_output=True, text=True, timeout=20)
        assert p.returncode == 2 and want in p.stderr, (args, p.stderr)


# ------------------------------------------------------------------ the store

def test_store_over_tls(stores, tls_cert):
    st = stores(secret=SECRET, port=0, extra=tls_flags(tls_cert))
    assert st.address.startswith("tls:"), st.address
    objects.connect(st.address, SECRET)
    car = m.Car("TLS-1", 10.0)
    car.make_persistent(alias="tls-car")
    car.accelerate(5.0)
    assert m.Car.get_by_alias("tls-car").speed == 15.0
    # Many requests in flight (write-behind), then one that waits for them all.
    many = [m.Counter(i) for i in range(500)]
    for c in many:
        c.make_persistent()
    objects.flush()
    assert [c.incr(1) for c in many[:50]] == list(range(1, 51))
    # An object much larger than a TLS record, both ways.
    blob = m.Car(pattern(BIG).hex()[:BIG], 0.0)
    blob.make_persistent(alias="tls-blob")
    objects.disconnect()
    objects.connect(st.address, SECRET)
    assert m.Car.get_by_alias("tls-blob").plate == pattern(BIG).hex()[:BIG]
    # A store that restarted: the client connects again, over TLS.
    st.restart()
    assert m.Car.get_by_alias("tls-car").speed == 15.0


def test_store_bytes_are_not_cleartext(stores, tls_cert):
    marker = "plate-" + os.urandom(4).hex()
    st = stores(secret=SECRET, port=0, extra=tls_flags(tls_cert))
    relay = RecordingRelay(("127.0.0.1", st.port))
    try:
        objects.connect("tls:" + relay.address, SECRET)
        car = m.Car(marker, 1.0)
        car.make_persistent(alias=marker)
        assert m.Car.get_by_alias(marker).plate == marker
        objects.disconnect()
        with relay.lock:
            sent, answered = relay.client_bytes, relay.server_bytes
        assert sent[:2] == b"\x16\x03" and answered[:2] == b"\x16\x03"
        for clear in (marker.encode(), b"store", b"Car"):
            assert clear not in sent and clear not in answered, clear
    finally:
        relay.close()


def test_store_tls_errors(stores, tls_cert, tmp_path):
    st = stores(secret=SECRET, port=0, extra=tls_flags(tls_cert))
    with pytest.raises(ConnectionError, match="closed the connection during the handshake"):
        objects.connect(st.address[len("tls:"):], SECRET)
    wait_until(lambda: "does the peer connect without TLS?" in st.log(), 5,
               "the TLS store's log line")
    mitm = TlsMitm(("127.0.0.1", st.port), make_tls_cert(tmp_path / "mitm", "mallory"))
    try:
        with pytest.raises(bettong.AuthenticationError, match="could not prove"):
            objects.connect("tls:" + mitm.address, SECRET)
        assert b"store" in mitm.plain_from_client
    finally:
        mitm.close()
    plain = stores(secret=SECRET, port=0)
    with pytest.raises(ConnectionError, match=r"does it listen without TLS\?"):
        objects.connect("tls:" + plain.address, SECRET)


def test_executor_workers_reach_a_tls_store(stores, tls_cert):
    """connect() hands "tls:..." to the processes started after it through
    $BETTONG_STORE: the executor's workers reach the store over TLS too."""
    st = stores(secret=SECRET, port=0, extra=tls_flags(tls_cert))
    objects.connect(st.address, SECRET)
    c = m.Counter(0)
    c.make_persistent(alias="tls-counter")

    def bump(n):
        return c.incr(n)

    with bettong.FunctionExecutor(workers=2) as ex:
        got = ex.get_result(ex.map(bump, [1] * 20), timeout=T)
    assert sorted(got) == list(range(1, 21)) and c.get() == 20
    assert os.environ["BETTONG_STORE"] == st.address
