"""`bettong store` as a server: start-up time, its directory (refused when foreign,
corrupt or locked), the shared secret, garbage on the port, and durability across
SIGKILL and restart."""

import os
import socket
import struct
import subprocess
import time

import pytest

from conftest import BIN, auth_handshake, store_identity
from store_helpers import PYTHON, client_env, spawn_client

from bettong import objects
from bettong import _store
import store_models as m


def run_store(args, timeout=10):
    """Run `bettong store ARGS` to completion (it is expected to refuse)."""
    env = dict(os.environ)
    env.pop("BETTONG_SECRET", None)
    p = subprocess.run([BIN, "store"] + [str(a) for a in args], stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                       timeout=timeout)
    return p.returncode, p.stdout.decode("utf-8", "replace")


# ------------------------------------------------------------------ start-up

def test_help():
    p = subprocess.run([BIN, "store", "--help"], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=10)
    assert p.returncode == 0
    text = p.stdout.decode()
    assert "--dir" in text and "--listen" in text and "--secret" in text


def test_startup_is_fast(stores):
    st = stores()                  # a new directory
    first = st.wait_ready()
    st.stop()
    st.start(wait=False)           # an existing one
    again = st.wait_ready()
    assert first < 0.5 and again < 0.5, (first, again)   # well under a second
    assert (st.dir / "BETTONG_STORE").exists()


def test_stop_on_sigterm(stores):
    st = stores()
    objects.connect(st.address)
    m.Counter(1).make_persistent(alias="c")
    objects.disconnect()
    assert st.stop() == 0


# ------------------------------------------------------------------ its directory

def test_foreign_directory_refused(tmp_path):
    d = tmp_path / "foreign"
    d.mkdir()
    (d / "notes.txt").write_text("somebody else's files\n")
    rc, out = run_store(["--listen", "127.0.0.1:0", "--dir", d])
    assert rc != 0
    assert out.strip(), "no message"
    assert str(d) in out or "refus" in out.lower() or "not a" in out.lower(), out
    assert (d / "notes.txt").read_text() == "somebody else's files\n"
    assert sorted(p.name for p in d.iterdir()) == ["notes.txt"]   # nothing written


def test_corrupt_directory_refused(stores, tmp_path):
    st = stores()
    st.stop()
    # the marker says something else
    (st.dir / "BETTONG_STORE").write_text("something else\n")
    rc, out = run_store(["--listen", "127.0.0.1:0", "--dir", st.dir])
    assert rc != 0 and out.strip()
    # a marked directory whose data is garbage
    d = tmp_path / "garbage"
    d.mkdir()
    for p in st.dir.iterdir():
        if p.is_file():
            (d / p.name).write_bytes(b"\xde\xad\xbe\xef" * 1024)
    rc, out = run_store(["--listen", "127.0.0.1:0", "--dir", d])
    assert rc != 0 and out.strip()
    # a file where the directory should be
    f = tmp_path / "a-file"
    f.write_text("x")
    rc, out = run_store(["--listen", "127.0.0.1:0", "--dir", f])
    assert rc != 0 and out.strip()


def test_locked_directory_refused(stores):
    a = stores()
    objects.connect(a.address)
    m.Counter(5).make_persistent(alias="still-here")
    t0 = time.monotonic()
    rc, out = run_store(["--listen", "127.0.0.1:0", "--dir", a.dir])
    assert rc != 0 and out.strip()
    assert time.monotonic() - t0 < 5
    assert a.alive()
    assert m.Counter.get_by_alias("still-here").get() == 5


# ------------------------------------------------------------------ the secret

def test_wrong_secret_refused(stores):
    st = stores(secret="s3cret")
    with pytest.raises(PermissionError) as ei:
        _store.Connection(st.address, b"wrong", "test")
    assert isinstance(ei.value, objects.RefusedError)
    with pytest.raises(PermissionError):
        _store.Connection(st.address, b"", "test")
    with pytest.raises(PermissionError):
        objects.connect(st.address, secret="nope")
    s = objects.connect(st.address, secret="s3cret")
    assert s.name
    c = m.Counter(1)
    c.make_persistent(alias="guarded")
    assert c.incr() == 2
    # a client program with the secret in its environment, and one without
    ok = "from store_models import Counter\nprint(Counter.get_by_alias('guarded').get())\n"
    env = client_env(st, {"BETTONG_STORE_SECRET": "s3cret", "PYTHONPATH": _pythonpath()})
    p = subprocess.run([PYTHON, "-c", ok], env=env, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=30)
    assert p.returncode == 0 and p.stdout.decode().strip() == "2", p.stderr.decode()
    env = client_env(st, {"PYTHONPATH": _pythonpath()})
    p = subprocess.run([PYTHON, "-c", ok], env=env, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=30)
    assert p.returncode != 0 and "refused" in p.stderr.decode()


def _pythonpath():
    from store_helpers import PYDIR
    here = os.path.dirname(os.path.abspath(__file__))
    return os.pathsep.join([str(PYDIR), here])


# ------------------------------------------------------------------ garbage

def _raw(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.settimeout(5)
    return s


def _closed_by_peer(s, timeout=5):
    """True once the store closed the connection (EOF or reset) within timeout."""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            data = s.recv(65536)
            if not data:
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False
    return False


def _send_quietly(s, data):
    try:
        s.sendall(data)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the store closed it already


def test_garbage_closes_only_that_connection(stores):
    st = stores()
    objects.connect(st.address)
    c = m.Counter(0)
    c.make_persistent(alias="garbage-test")
    assert c.incr() == 1
    # not the protocol at all
    s = _raw(st.port)
    _send_quietly(s, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + os.urandom(256))
    assert _closed_by_peer(s)
    s.close()
    # a frame length far too large before the handshake
    s = _raw(st.port)
    _send_quietly(s, b"\xff\xff\xff\xff\x01")
    assert _closed_by_peer(s)
    s.close()
    # a request before the handshake
    s = _raw(st.port)
    _send_quietly(s, struct.pack(">IBQ", 9, 13, 1))
    got = b""
    try:
        while True:
            d = s.recv(4096)
            if not d:
                break
            got += d
    except (socket.timeout, ConnectionResetError):
        pass
    assert b"garbage-test" not in got
    s.close()
    # garbage after a good handshake
    for junk in ((99, os.urandom(64)),            # an unknown message type
                 (14, b"\x00\x01")):              # a truncated CALL
        conn = _store.Connection(st.address, b"", "garbage")
        with pytest.raises(ConnectionError):       # the store closes it
            conn.send_raw(*junk)
            for _ in range(50):
                conn.recv(timeout=0.1)
        conn.close()
    s = _raw(st.port)
    welcome = auth_handshake(s, "store", store_identity("x"))     # no secret
    assert welcome and welcome[0] == 2, welcome                   # WELCOME
    try:
        s.sendall(b"\x00\x00\x00\x00")           # a zero-length frame
        s.sendall(os.urandom(1024))
    except (BrokenPipeError, ConnectionResetError):
        pass                                       # closed already
    assert _closed_by_peer(s)
    s.close()
    # the store and the other connection are fine
    assert st.alive()
    assert c.incr() == 2
    assert m.Counter.get_by_alias("garbage-test").get() == 2


# ------------------------------------------------------------------ durability

def test_acknowledged_changes_survive_sigkill(stores):
    st = stores()
    objects.connect(st.address)
    c = m.Counter(0)
    c.make_persistent(alias="durable")
    for _ in range(50):
        c.incr()
    car = m.Car("D-1", 1.0)
    car.make_persistent()
    car.speed = 77.0                          # SET_FIELD
    car.add_alias("durable-car")
    g = m.Garage("dg", [m.Car("in-garage", 3.0)])
    g.make_persistent(alias="durable-garage")
    gone = m.Counter(9)
    gone.make_persistent(alias="gone")
    gone.delete()
    bulk = [m.Counter(i) for i in range(300)]
    for b in bulk:
        b.make_persistent()                   # write-behind ...
    objects.flush()                           # ... acknowledged here
    bulk_ids = [b.id for b in bulk]

    st.restart()                              # SIGKILL, then the same directory
    assert c.get() == 50                      # the old connection is replaced
    assert m.Car.get_by_alias("durable-car").speed == 77.0
    assert m.Garage.get_by_alias("durable-garage").plates() == ["in-garage"]
    with pytest.raises(objects.NotFound):
        m.Counter.get_by_alias("gone")
    assert [m.Counter.get_by_id(i).get() for i in bulk_ids[::50]] == list(range(0, 300, 50))


def test_sigkill_during_calls_loses_nothing_acknowledged(stores, tmp_path):
    st = stores()
    objects.connect(st.address)
    m.Counter(0).make_persistent(alias="racing")
    objects.disconnect()
    script = tmp_path / "incr.py"
    script.write_text(
        "import sys\n"
        "from bettong.objects import connect\n"
        "from store_models import Counter\n"
        "connect()\n"
        "c = Counter.get_by_alias('racing')\n"
        "while True:\n"
        "    v = c.incr()\n"
        "    sys.stdout.write('%d\\n' % v)\n"
        "    sys.stdout.flush()\n")
    p = spawn_client(st.procs, st, script, extra_env={"PYTHONPATH": _pythonpath()})
    # let it acknowledge some increments, then kill the store mid-stream
    deadline = time.monotonic() + 20
    seen = b""
    os.set_blocking(p.stdout.fileno(), False)
    while seen.count(b"\n") < 200 and time.monotonic() < deadline:
        try:
            chunk = p.stdout.read()
        except BlockingIOError:
            chunk = None
        if chunk:
            seen += chunk
        time.sleep(0.005)
        assert p.poll() is None, p.stderr.read().decode()
    st.kill()
    try:
        p.wait(15)
    except subprocess.TimeoutExpired:
        pytest.fail("the client did not notice the store was gone")
    os.set_blocking(p.stdout.fileno(), True)
    rest = p.stdout.read()
    seen += rest or b""
    acked = [int(x) for x in seen.split()]
    assert len(acked) >= 200 and acked == list(range(1, len(acked) + 1))
    st.start()
    objects.connect(st.address)
    final = m.Counter.get_by_alias("racing").get()
    # every acknowledged increment survived; at most the one in flight more
    assert acked[-1] <= final <= acked[-1] + 1, (acked[-1], final)


# ------------------------------------------------------------------ inline runs

def _nap_while(slow, fast, s):
    """Call slow.nap(s) on a thread; while it sleeps, time fast.nap(0) here."""
    import threading
    out = {}
    t = threading.Thread(target=lambda: out.setdefault("slow", slow.nap(s)))
    t.start()
    time.sleep(min(0.2, s / 4))
    t0 = time.monotonic()
    fast.nap(0)
    waited = time.monotonic() - t0
    t.join(s + 20)
    assert not t.is_alive() and "slow" in out
    return waited


def test_short_requests_run_inline_long_ones_go_back_to_threads(stores):
    st = stores()
    objects.connect(st.address)
    a, b = m.Napper(), m.Napper()
    a.make_persistent()
    b.make_persistent()
    # Napper.nap qualifies for the network thread after a few short runs on the
    # Python threads; a run there that sleeps sends it back to the Python
    # threads, and after 3 such runs it never runs on the network thread again.
    naps = 0
    for cycle in range(10):
        for _ in range(10):
            b.nap(0)
        naps += 1
        assert a.nap(0.05) == naps
        if "from now on" in st.log():
            break
    assert "Napper.nap took" in st.log() and "from now on" in st.log()
    assert naps >= 3
    for _ in range(10):
        b.nap(0)
    # now a long nap on a Python thread does not hold up calls on other objects
    assert _nap_while(a, b, 1.0) < 0.5
    assert a.nap(0) == naps + 2 and b.nap(0) == 10 * naps + 10 + 2
    # per-object order and rollback still hold on inline runs
    for _ in range(10):
        assert b.nap(0) > 0
    n = b.naps
    for _ in range(10):                  # later ones on the network thread
        with pytest.raises(ValueError, match="boom"):
            b.boom()
        assert b.naps == n


def test_inline_us_zero_runs_everything_on_threads(stores):
    st = stores(extra=["--inline-us", "0", "--spin-us", "0"])
    objects.connect(st.address)
    a, b = m.Napper(), m.Napper()
    a.make_persistent()
    b.make_persistent()
    for _ in range(20):
        b.nap(0)
    assert _nap_while(a, b, 1.0) < 0.5
    assert "took" not in st.log()


def test_deep_pipeline_on_one_object(stores):
    """More requests queued on one object than a connection may have in flight
    (it is paused), then run at once on the network thread (the connection is
    resumed meanwhile, which hands the object more requests from within its own
    queue run): every answer comes, in order."""
    import pickle
    # a generous --inline-us, so that count() runs on the network thread even in
    # a slow (sanitizer) build
    st = stores(extra=["--inline-us", "20000"])
    objects.connect(st.address)
    a = m.Napper()
    a.make_persistent()
    for _ in range(20):
        a.count()                          # short: runs on the network thread now
    c = _store.Connection(st.address, b"", "deep-pipeline")
    n = 25000
    first = c.send(_store.CALL, a.id, "doze", pickle.dumps(((0.5,), {}), 5))
    ids = [c.send(_store.CALL, a.id, "count", b"") for _ in range(n)]
    got = []
    deadline = time.monotonic() + 60
    while len(got) < n + 1 and time.monotonic() < deadline:
        got.extend(c.recv(timeout=5))
    assert [x[1] for x in got] == [first] + ids
    assert all(x[0] == _store.OK and pickle.loads(x[2]) == 0 for x in got[1:])
    assert c.ask(_store.CALL, a.id, "nap", pickle.dumps(((0,), {}), 5)) == (True, 1)
    c.close()


def _cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_spinning_is_bounded(stores):
    """The store polls for more requests for --spin-us after the last one, and the
    client for its answer for spin_us: once idle, neither burns CPU."""
    code, out = run_store(["--dir", "/nonexistent-dir-never-made", "--spin-us", "-1"])
    assert code == 2 and "--spin-us" in out
    st = stores(extra=["--spin-us", "2000"])
    objects.connect(st.address)
    c = m.Counter(0)
    c.make_persistent(alias="spin")
    for _ in range(200):
        c.incr()
    time.sleep(0.2)
    before = _cpu_seconds(st.proc.pid)
    time.sleep(1.0)
    assert _cpu_seconds(st.proc.pid) - before < 0.1     # asleep, not polling
    assert c.get() == 200
