"""Helpers for the executor tests (tests/py/test_executor*.py): run user programs
as real processes, find the processes a program (and its pool) started, and run a
`bettong pool` with `bettong worker`s over loopback TCP.

Processes are identified without touching anyone else's: a script under test gets
a unique BETTONG_TEST_MARKER in its environment, which the pool and workers it
starts inherit; and a process's parent chain is followed from a pid we started.
Nothing here kills a process it did not start (or that a program we started did
not start).
"""

import os
import pickle
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from conftest import BIN, REPO, read_to_end

PYDIR = REPO / "python"
TESTS = Path(__file__).resolve().parent
EXEC_APPS = TESTS / "exec_apps"
PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable

# The package under test, for the in-process tests, and the binary it must use.
if str(PYDIR) not in sys.path:
    sys.path.insert(0, str(PYDIR))
os.environ.setdefault("BETTONG_BIN", str(BIN))

MARKER_VAR = "BETTONG_TEST_MARKER"

# Every wait in these tests is bounded by one of these (seconds).
RESULT_TIMEOUT = 30
SCRIPT_TIMEOUT = 45


# ------------------------------------------------------------------ environment

def new_marker():
    return "bt-exec-" + uuid.uuid4().hex


def sub_env(marker=None, extra=None):
    """The environment of a user program under test: the package on PYTHONPATH,
    the binary under test in BETTONG_BIN, no inherited secret, unbuffered output."""
    env = dict(os.environ)
    env.pop("BETTONG_SECRET", None)
    env["PYTHONPATH"] = str(PYDIR) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["BETTONG_BIN"] = str(BIN)
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("PYTHONHASHSEED", None)
    if marker:
        env[MARKER_VAR] = marker
    if extra:
        env.update({k: str(v) for k, v in extra.items()})
    return env


def run_script(script, args=(), timeout=SCRIPT_TIMEOUT, marker=None, env=None, cwd=None,
               stdin=subprocess.DEVNULL):
    """Run a Python program (a path, or source text) to completion as a separate
    process; returns CompletedProcess with text stdout/stderr. Fails the test,
    after killing its process group, if it runs past `timeout`."""
    if isinstance(script, Path) or (isinstance(script, str) and "\n" not in script
                                    and script.endswith(".py")):
        argv = [PYTHON, str(script)]
    else:
        argv = [PYTHON, "-c", script]
    argv += [str(a) for a in args]
    p = subprocess.Popen(argv, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env=env or sub_env(marker), cwd=str(cwd or REPO), start_new_session=True)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(p)
        out, err = p.communicate()
        pytest.fail("%s did not finish within %.0f s\n--- stdout:\n%s\n--- stderr:\n%s"
                    % (" ".join(argv[:3]), timeout, out.decode("utf-8", "replace")[-3000:],
                       err.decode("utf-8", "replace")[-3000:]))
    return subprocess.CompletedProcess(argv, p.returncode, out.decode("utf-8", "replace"),
                                       err.decode("utf-8", "replace"))


def kill_group(p):
    """SIGKILL a process we started in its own session, and its group."""
    if p.poll() is None:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except OSError:
            try:
                p.kill()
            except OSError:
                pass


# ------------------------------------------------------------------ /proc

def _stat(pid):
    """(ppid, state, starttime) of a process, or None when it is gone."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            data = f.read().decode("utf-8", "replace")
    except OSError:
        return None
    rest = data[data.rfind(")") + 2:].split()
    return int(rest[1]), rest[0], int(rest[19])


def cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()
    except OSError:
        return ""


def _environ_has(pid, needle):
    try:
        with open("/proc/%d/environ" % pid, "rb") as f:
            return needle in f.read().split(b"\0")
    except OSError:
        return False


def all_pids():
    return [int(d) for d in os.listdir("/proc") if d.isdigit()]


class ProcRef:
    """A process seen at one moment: pid + start time, so that a reused pid is
    never mistaken for it."""

    def __init__(self, pid, start, cmd):
        self.pid, self.start, self.cmd = pid, start, cmd

    def alive(self):
        st = _stat(self.pid)
        return st is not None and st[2] == self.start and st[1] not in ("Z", "X")

    def __repr__(self):
        return "<pid %d: %s>" % (self.pid, self.cmd[:120])

    def __eq__(self, other):
        return (self.pid, self.start) == (other.pid, other.start)

    def __hash__(self):
        return hash((self.pid, self.start))


def _ref(pid):
    st = _stat(pid)
    if st is None or st[1] in ("Z", "X"):
        return None
    return ProcRef(pid, st[2], cmdline(pid))


def descendants(root):
    """Live descendants of pid `root` (not root itself), by the parent chain."""
    children = {}
    for pid in all_pids():
        st = _stat(pid)
        if st is not None:
            children.setdefault(st[0], []).append(pid)
    out, todo = [], [root]
    while todo:
        for c in children.get(todo.pop(), []):
            r = _ref(c)
            if r is not None:
                out.append(r)
            todo.append(c)
    return out


def marked(marker):
    """Live processes whose environment holds BETTONG_TEST_MARKER=marker."""
    needle = ("%s=%s" % (MARKER_VAR, marker)).encode()
    out = []
    for pid in all_pids():
        if pid == os.getpid():
            continue
        if _environ_has(pid, needle):
            r = _ref(pid)
            if r is not None:
                out.append(r)
    return out


def bettong_procs(refs):
    """Those of `refs` that are a `bettong` binary (pool, worker, ...) or a worker
    hosted by python3 (bettong._wproc)."""
    return [r for r in refs if "bettong" in r.cmd.split(" ")[0] or " pool" in r.cmd
            or " worker" in r.cmd or "bettong._wproc" in r.cmd]


def wait_all_gone(refs, timeout, what):
    deadline = time.monotonic() + timeout
    while True:
        left = [r for r in refs if r.alive()]
        if not left:
            return
        if time.monotonic() > deadline:
            pytest.fail("%s: still running %.1f s later: %s" % (what, timeout, left))
        time.sleep(0.05)


def kill_refs(refs):
    """Last-resort cleanup of processes our own programs started."""
    for r in refs:
        if r.alive():
            try:
                os.kill(r.pid, signal.SIGKILL)
            except OSError:
                pass


def vm_kb(field, pid="self"):
    with open("/proc/%s/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


# ------------------------------------------------------------------ futures

def stat(fut, name):
    """One of f.stats' fields (a dict or an object)."""
    s = fut.stats
    if isinstance(s, dict):
        return s[name]
    return getattr(s, name)


# ------------------------------------------------------------------ a TCP pool

POOL_LISTEN_RE = re.compile(r"bettong pool: listening on (\S+)")


class LineReader:
    """Collects a process's output lines on a thread, which owns the stream
    (conftest.read_to_end): `closed` once the pipe has ended."""

    def __init__(self, stream):
        self.lines = []
        self.cond = threading.Condition()
        self.closed = False
        self.t = read_to_end(stream, self._line, self._end)

    def _line(self, raw):
        with self.cond:
            self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))
            self.cond.notify_all()

    def _end(self):
        with self.cond:
            self.closed = True
            self.cond.notify_all()

    def wait_for(self, regex, timeout):
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for line in self.lines:
                    m = regex.search(line)
                    if m:
                        return m
                left = deadline - time.monotonic()
                if self.closed or left <= 0:
                    return None
                self.cond.wait(left)

    def text(self):
        with self.cond:
            return "\n".join(self.lines)


class TcpPool:
    """`bettong pool --listen 127.0.0.1:PORT --secret S [--workers N]` and its
    `bettong worker --join` processes, all killed at teardown. port 0 (the
    default): the kernel picks it, and address is the one the pool prints."""

    def __init__(self, procs, secret, workers=0, extra=(), port=0):
        self.procs = procs
        self.secret = secret
        self.port = port
        args = [BIN, "pool", "--listen", "127.0.0.1:%d" % self.port]
        if workers is not None:
            args += ["--workers", str(workers)]
        if secret is not None:
            args += ["--secret", secret]
        args += list(extra)
        self.proc = procs.spawn(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                env=sub_env())
        self.out = LineReader(self.proc.stdout)
        m = self.out.wait_for(POOL_LISTEN_RE, 15)
        if m is None:
            kill_group(self.proc)
            pytest.fail("bettong pool did not print 'listening on' within 15 s (exit %r):\n%s"
                        % (self.proc.poll(), self.out.text()))
        self.listen = m.group(1)
        if self.port == 0:
            # port 0: the printed address, "tls:" first under TLS
            self.address = self.listen
            self.port = int(self.listen.rsplit(":", 1)[1])
        else:
            self.address = "127.0.0.1:%d" % self.port
        self.workers = []

    def add_worker(self, procs_n=1, secret=None, extra=(), env=None):
        """`bettong worker --join` this pool with `extra` arguments; env: more
        environment variables for it."""
        args = [BIN, "worker", "--join", self.address, "--procs", str(procs_n)]
        env = sub_env(extra=env)
        secret = self.secret if secret is None else secret
        if secret:
            env["BETTONG_SECRET"] = secret
        args += list(extra)
        p = self.procs.spawn(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
        p.reader = LineReader(p.stdout)
        self.workers.append(p)
        return p

    def worker_pids(self, worker_proc):
        """pids of a `bettong worker` process and of everything it started."""
        return {worker_proc.pid} | {r.pid for r in descendants(worker_proc.pid)}

    def alive(self):
        return self.proc.poll() is None


class Chunky:
    """A value pickled as a numpy array is (protocol 5): its data as a
    PickleBuffer, which a pickler may send out of band. Importable by name on
    both sides (this module is not sent by value)."""

    def __init__(self, data):
        self.data = data

    def __reduce_ex__(self, protocol):
        return (Chunky, (pickle.PickleBuffer(self.data),))
