"""Helpers for the object-store tests (tests/py/test_store*.py): run `bettong store`
as a real process on loopback port 0 (the port it prints) with a directory of its own, run client
programs against it, and reset the in-process client between tests.

Every wait is bounded; every process a test starts is killed at teardown (with its
process group).
"""

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import BIN, REPO, Procs, port_open
from executor_helpers import PYTHON, run_script, sub_env

PYDIR = REPO / "python"
if str(PYDIR) not in sys.path:
    sys.path.insert(0, str(PYDIR))

START_TIMEOUT = 10   # seconds for a store to listen
STOP_TIMEOUT = 10


class Store:
    """One `bettong store --listen 127.0.0.1:PORT --dir DIR [--secret S]` process,
    its stderr in a file. port=0: the store picks it (read from its "listening
    on" line) and keeps it across restarts. With --tls-cert in extra, address
    is "tls:127.0.0.1:PORT"."""

    _n = 0

    def __init__(self, procs, tmp, dir=None, port=0, secret=None, extra=(), wait=True):
        Store._n += 1
        self.procs = procs
        self.tmp = Path(tmp)
        self.dir = Path(dir) if dir is not None else self.tmp / ("store-%d" % Store._n)
        self.port = port
        self.secret = secret
        self.extra = list(extra)
        self.err_path = self.tmp / ("store-%d.log" % Store._n)
        self.proc = None
        self.started_at = None
        self.start(wait=wait)

    @property
    def address(self):
        tls = "tls:" if "--tls-cert" in self.extra else ""
        return "%s127.0.0.1:%d" % (tls, self.port)

    def args(self):
        a = [BIN, "store", "--listen", "127.0.0.1:%d" % self.port, "--dir", str(self.dir)]
        if self.secret is not None:
            a += ["--secret", self.secret]
        return a + [str(x) for x in self.extra]

    def start(self, wait=True):
        env = dict(os.environ)
        env.pop("BETTONG_SECRET", None)
        env.pop("BETTONG_STORE_SECRET", None)
        env["PYTHONPATH"] = str(PYDIR)
        with open(self.err_path, "ab") as err:
            self.started_at = time.monotonic()
            self.proc = self.procs.spawn(self.args(), stdout=err, stderr=err, env=env,
                                         cwd=str(self.tmp))
        if wait:
            self.wait_ready()
        return self

    def log(self):
        try:
            return self.err_path.read_bytes().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def wait_ready(self, timeout=START_TIMEOUT):
        """Wait until the port accepts connections; returns the seconds it took
        from the spawn. Fails with the log if the store exits first."""
        deadline = time.monotonic() + timeout
        while not self._listening():
            if self.proc.poll() is not None:
                pytest.fail("bettong store exited with %d before listening:\n%s"
                            % (self.proc.returncode, self.log()))
            if time.monotonic() > deadline:
                pytest.fail("bettong store did not listen on %d within %.0f s:\n%s"
                            % (self.port, timeout, self.log()))
            time.sleep(0.005)
        return time.monotonic() - self.started_at

    def _listening(self):
        if self.port:
            return port_open(self.port)
        m = re.search(r"bettong store: listening on (?:tls:)?127\.0\.0\.1:(\d+)", self.log())
        if m:
            self.port = int(m.group(1))
        return m is not None

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def wait_exit(self, timeout=STOP_TIMEOUT):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail("bettong store did not exit within %.0f s:\n%s" % (timeout, self.log()))

    def kill(self, sig=signal.SIGKILL):
        """Signal the store; with SIGKILL also wait for it to be gone."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        if sig == signal.SIGKILL:
            return self.wait_exit()
        return None

    def stop(self):
        """SIGTERM and wait; returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.wait_exit()

    def restart(self):
        """SIGKILL it, then start a new store on the same directory and port."""
        self.kill()
        deadline = time.monotonic() + START_TIMEOUT
        while port_open(self.port):
            if time.monotonic() > deadline:
                pytest.fail("port %d still open after the store was killed" % self.port)
            time.sleep(0.01)
        return self.start()


# The backends' names of the `service` fixture (conftest.py).
SERVICE_NAMES = ["b1", "b2", "b3"]


def ids_by_name():
    """{name: backend id} of the service the in-process client is connected to."""
    from bettong import objects
    return {b.name: bid for bid, b in objects.backends().items()}


class Redis:
    """A redis-server of its own for a test, on a Unix socket in the test's
    directory (no TCP port, so none to guess), keeping nothing on disk: the
    metadata service of a store service of several backends (--metadata
    unix:PATH)."""

    def __init__(self, procs, tmp):
        self.procs = procs
        self.tmp = Path(tmp)
        self.sock = self.tmp / "redis.sock"
        self.log_path = self.tmp / "redis.log"
        self.proc = None
        self.start()

    @property
    def url(self):
        return "unix:%s" % self.sock

    def start(self):
        if self.sock.exists():
            self.sock.unlink()
        self.log_path.write_bytes(b"")
        self.proc = self.procs.spawn(
            ["redis-server", "--port", "0", "--unixsocket", str(self.sock), "--unixsocketperm",
             "700", "--save", "", "--appendonly", "no", "--logfile", str(self.log_path),
             "--dir", str(self.tmp), "--dbfilename", "redis-dump.rdb"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT
        while "ready to accept connections" not in self.log().lower():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail("redis-server did not start:\n%s" % self.log())
            time.sleep(0.01)
        return self

    def log(self):
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def kill(self):
        """SIGKILL and wait: its data (kept in memory only) is gone."""
        self.proc.kill()
        self.proc.wait(STOP_TIMEOUT)
        dump = self.tmp / "redis-dump.rdb"
        if dump.exists():
            dump.unlink()

    def shutdown_saving(self):
        """Stop it with its data saved (SHUTDOWN SAVE): start() loads it again."""
        import socket
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(self.sock))
            s.sendall(b"*2\r\n$8\r\nSHUTDOWN\r\n$4\r\nSAVE\r\n")
            s.recv(100)   # the connection closes as it exits
        self.proc.wait(STOP_TIMEOUT)


class Stores:
    """What the `stores` fixture gives: a factory of stores, all stopped at the end."""

    def __init__(self, tmp):
        self.tmp = Path(tmp)
        self.procs = Procs()

    def __call__(self, **kw):
        return Store(self.procs, self.tmp, **kw)

    def redis(self):
        """A redis-server for this test (Redis), stopped at the end."""
        return Redis(self.procs, self.tmp)

    def service(self, redis, names, **kw):
        """Stores that are the backends `names` of one service whose directory
        is in `redis`; each picks its port (kept across restarts)."""
        extra = list(kw.pop("extra", ()))
        return [self(port=0, extra=["--name", n, "--metadata", redis.url] + extra, **kw)
                for n in names]

    def cleanup(self):
        self.procs.cleanup()


def client_reset():
    """Forget the in-process client's store (between tests)."""
    from bettong import objects
    try:
        objects.disconnect()
    except Exception:
        pass
    os.environ.pop("BETTONG_STORE", None)
    os.environ.pop("BETTONG_STORE_SECRET", None)


def client_env(store, extra=None):
    """The environment of a client program: the package, the store's address."""
    env = sub_env()
    env.pop("BETTONG_STORE_SECRET", None)
    env["BETTONG_STORE"] = store.address
    if extra:
        env.update({k: str(v) for k, v in extra.items()})
    return env


def run_client(store, script, args=(), timeout=45, extra_env=None, cwd=None):
    """Run a Python client program (a path or source text) against the store."""
    return run_script(script, args=args, timeout=timeout, env=client_env(store, extra_env),
                      cwd=cwd)


def spawn_client(procs, store, script_path, args=(), extra_env=None, cwd=None):
    """Start a client program without waiting (output piped)."""
    argv = [PYTHON, str(script_path)] + [str(a) for a in args]
    return procs.spawn(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       env=client_env(store, extra_env), cwd=str(cwd or REPO))


def wait_clients(clients, timeout=45):
    """Wait for every client started by spawn_client; returns [(rc, out, err)]."""
    deadline = time.monotonic() + timeout
    out = []
    for p in clients:
        try:
            o, e = p.communicate(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pytest.fail("a client program did not finish within %.0f s" % timeout)
        out.append((p.returncode, o.decode("utf-8", "replace"), e.decode("utf-8", "replace")))
    return out


class Timer(threading.Thread):
    """Runs fn after `delay` seconds unless cancelled (used to bound raw socket waits)."""

    def __init__(self, delay, fn):
        super().__init__(daemon=True)
        self.delay, self.fn, self.ev = delay, fn, threading.Event()

    def run(self):
        if not self.ev.wait(self.delay):
            self.fn()

    def cancel(self):
        self.ev.set()


def lmdb_edit(path, puts=None, drops=()):
    """Change a stopped store's LMDB as an older or interrupted store would have
    left it: puts {database name: {key bytes: value bytes}}, drops [database
    names] emptied (through liblmdb with ctypes; skipped without it)."""
    import ctypes
    import ctypes.util
    name = ctypes.util.find_library("lmdb")
    if not name:
        pytest.skip("liblmdb not found")
    lib = ctypes.CDLL(name)
    env, txn = ctypes.c_void_p(), ctypes.c_void_p()

    class Val(ctypes.Structure):
        _fields_ = [("size", ctypes.c_size_t), ("data", ctypes.c_void_p)]

    def ok(rc):
        assert rc == 0, "lmdb error %d" % rc

    def dbi(db):
        d = ctypes.c_uint()
        ok(lib.mdb_dbi_open(txn, db.encode(), 0, ctypes.byref(d)))
        return d

    ok(lib.mdb_env_create(ctypes.byref(env)))
    ok(lib.mdb_env_set_maxdbs(env, 16))
    ok(lib.mdb_env_set_mapsize(env, ctypes.c_size_t(1 << 30)))
    ok(lib.mdb_env_open(env, str(path).encode(), 0, 0o600))
    ok(lib.mdb_txn_begin(env, None, 0, ctypes.byref(txn)))
    for db in drops:
        ok(lib.mdb_drop(txn, dbi(db), 0))
    for db, items in (puts or {}).items():
        d = dbi(db)
        for key, val in items.items():
            k = ctypes.create_string_buffer(key, len(key))
            v = ctypes.create_string_buffer(val, len(val))
            ok(lib.mdb_put(txn, d, ctypes.byref(Val(len(key), ctypes.cast(k, ctypes.c_void_p))),
                           ctypes.byref(Val(len(val), ctypes.cast(v, ctypes.c_void_p))), 0))
    ok(lib.mdb_txn_commit(txn))
    lib.mdb_env_close(env)


@contextlib.contextmanager
def dataclay_client(store):
    """A started dataclay.Client of store, stopped at the end."""
    from dataclay import Client
    host, port = store.address.rsplit(":", 1)
    client = Client(host=host, port=int(port))
    client.start()
    try:
        yield client
    finally:
        client.stop()
