"""A local pool's worker template forked from the caller (the default,
BETTONG_WORKER_START=fork; bettong._wproc.start_pool, src/pool/tmpl.h): the
workers start with the caller's interpreter and modules, as multiprocessing's
fork start does, and otherwise find what an exec'd worker finds: stdin from
/dev/null, prints on stderr at once, default signal handlers but SIGINT's, no
socket or pipe of the caller's held open. A caller with other threads, or with
a secret, gets an exec'd template instead.

Each scenario runs in a fresh python3 process, as a user's script would (this
test process may have threads of its own)."""

import json
import os
import select
import subprocess
import sys
import time

import pytest

from conftest import BIN, bin_sanitized
from executor_helpers import RESULT_TIMEOUT

T = RESULT_TIMEOUT
PYDIR = os.path.realpath(os.path.join(os.path.dirname(__file__), "..", "..", "python"))

no_fork_in_sanitizer_builds = pytest.mark.skipif(
    bin_sanitized(), reason="a sanitizer build's workers run in the bettong binary: no fork")

# What a worker reports of itself: its executable, its first sys.path entry,
# whether a module only the caller imported is there, SIGTERM's handler, the
# environment user code sees, and where the descriptor numbers given point.
COMMON = r'''
import json, os, signal, sys, threading
sys.path.insert(0, os.environ["PYDIR"])
import bettong

def describe(fds):
    import posix
    return {
        "pid": os.getpid(),
        "exe": os.path.realpath("/proc/self/exe"),
        "path": sys.path,
        "argv": sys.argv,
        "colorsys": "colorsys" in sys.modules,
        "sigterm_default": signal.getsignal(signal.SIGTERM) == signal.SIG_DFL,
        "sigint_python": signal.getsignal(signal.SIGINT) is signal.default_int_handler,
        "unbuffered": os.environ.get("PYTHONUNBUFFERED"),
        "secret": "BETTONG_SECRET" in os.environ or b"BETTONG_SECRET" in posix.environ,
        "fds": {str(fd): os.readlink("/proc/self/fd/%d" % fd) for fd in fds},
    }

def report(ex, got):
    got["pool"] = type(ex._client.local.proc).__name__
    got["caller_path"] = sys.path
    print(json.dumps(got), flush=True)
'''


def read_until(stream, marker, timeout=T):
    """What stream gave until it held marker (fails at EOF or after timeout)."""
    got = b""
    deadline = time.monotonic() + timeout
    while marker not in got:
        left = deadline - time.monotonic()
        assert left > 0, got
        if select.select([stream], [], [], left)[0]:
            chunk = os.read(stream.fileno(), 4096)
            assert chunk, got  # EOF: the process ended first
            got += chunk
    return got


def run_script(body, env=None, timeout=T):
    full_env = dict(os.environ, PYDIR=PYDIR, **(env or {}))
    out = subprocess.run([sys.executable, "-c", COMMON + body], capture_output=True, text=True,
                         env=full_env, timeout=timeout)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@no_fork_in_sanitizer_builds
def test_workers_are_forked_from_the_caller():
    got = run_script(r'''
import colorsys  # imported by the caller only
signal.signal(signal.SIGTERM, lambda *a: None)  # the caller's: not the workers'
with bettong.FunctionExecutor(workers=1) as ex:
    report(ex, ex.call_async(describe, []).result(timeout=60))
''')
    assert got["pool"] == "_ForkedPool"
    assert got["exe"] == os.path.realpath(sys.executable)
    assert got["colorsys"] is True
    assert got["path"] == got["caller_path"]
    assert got["argv"] == [""]
    assert got["sigterm_default"] is True and got["sigint_python"] is True
    assert got["unbuffered"] == "1" and got["secret"] is False


@no_fork_in_sanitizer_builds
def test_the_callers_sockets_and_pipes_are_not_held(tmp_path):
    """The caller's socket and pipe read as /dev/null in a worker (closing them
    in the caller ends them: the peer sees EOF); a regular file stays open."""
    path = tmp_path / "kept.txt"
    got = run_script(r'''
import select, socket
a, b = socket.socketpair()
r, w = os.pipe()
f = open(os.environ["KEPT"], "w")
with bettong.FunctionExecutor(workers=1) as ex:
    got = ex.call_async(describe, [a.fileno(), w, f.fileno()]).result(timeout=60)
    got["nums"] = [a.fileno(), w, f.fileno()]
    # the workers still run: closing our ends must end the other ends now
    a.close()
    os.close(w)
    b.settimeout(30)
    got["socket_eof"] = b.recv(1) == b""
    got["pipe_eof"] = bool(select.select([r], [], [], 30)[0]) and os.read(r, 1) == b""
    report(ex, got)
''', env={"KEPT": str(path)})
    assert got["pool"] == "_ForkedPool"
    sock, wpipe, kept = (str(n) for n in got["nums"])
    assert got["fds"] == {sock: "/dev/null", wpipe: "/dev/null", kept: str(path)}
    assert got["socket_eof"] is True and got["pipe_eof"] is True


@no_fork_in_sanitizer_builds
def test_a_caller_with_threads_execs_the_template():
    """Another thread may hold a lock the fork would copy held: exec instead."""
    got = run_script(r'''
stop = threading.Event()
t = threading.Thread(target=stop.wait)
t.start()
try:
    with bettong.FunctionExecutor(workers=1) as ex:
        report(ex, ex.call_async(describe, []).result(timeout=60))
finally:
    stop.set()
''')
    assert got["pool"] == "Popen"
    assert got["path"][0] == PYDIR  # an exec'd python3 worker's library directory
    assert got["colorsys"] is False


@no_fork_in_sanitizer_builds
def test_a_caller_with_a_secret_execs_the_template():
    """No copy of the secret may be in a worker's memory: a forked one would
    have the caller's."""
    got = run_script(r'''
with bettong.FunctionExecutor(workers=1) as ex:
    report(ex, ex.call_async(describe, []).result(timeout=60))
''', env={"BETTONG_SECRET": "forked-pool-secret"})
    assert got["pool"] == "Popen" and got["secret"] is False


def test_an_unknown_start_mode_is_refused():
    out = subprocess.run(
        [sys.executable, "-c", COMMON + "bettong.FunctionExecutor(workers=1).call_async(abs, 1)"],
        capture_output=True, text=True, timeout=T,
        env=dict(os.environ, PYDIR=PYDIR, BETTONG_WORKER_START="spawn"))
    assert out.returncode != 0
    assert "BETTONG_WORKER_START is 'spawn': it takes 'fork' or 'exec'" in out.stderr


@no_fork_in_sanitizer_builds
def test_prints_of_a_forked_worker_reach_stderr_at_once():
    """Not held in a buffer until the worker ends (as under python3 -u)."""
    body = r'''
def shout(_):
    print("marker-from-the-worker")
    return 1
with bettong.FunctionExecutor(workers=1) as ex:
    assert ex.call_async(shout, 0).result(timeout=60) == 1
    print(type(ex._client.local.proc).__name__, flush=True)
    sys.stdin.read()  # the workers live until the test has read stderr
'''
    p = subprocess.Popen([sys.executable, "-c", COMMON + body], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env=dict(os.environ, PYDIR=PYDIR))
    try:
        assert p.stdout.readline().strip() == b"_ForkedPool"
        read_until(p.stderr, b"marker-from-the-worker")
    finally:
        p.stdin.close()
        p.wait(timeout=T)
        p.stdout.close()
        p.stderr.close()
    assert p.returncode == 0


def _thp_mode():
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            return f.read().split("[")[1].split("]")[0]
    except (OSError, IndexError):
        return "never"


@no_fork_in_sanitizer_builds
@pytest.mark.skipif(_thp_mode() not in ("madvise", "always"),
                    reason="no transparent huge pages on this kernel")
def test_a_forked_workers_large_blocks_get_huge_pages():
    """What glibc's malloc.hugetlb tunable gives an exec'd worker (src/py/hugealloc.h):
    a 64 MB object is backed by transparent huge pages -- when the worker's
    connection carries no descriptors (BETTONG_NO_SHM=1 here). When it does, the
    object is made in a memfd of its own instead (src/py/shmblock.h)."""
    script = r'''
def fill(n):
    b = bytearray(n)
    b[::4096] = b"\1" * len(range(0, n, 4096))
    addr = ctypes.addressof((ctypes.c_char * n).from_buffer(b))
    with open("/proc/self/maps") as f:
        where = next(l for l in f if int(l.split("-")[0], 16) <= addr < int(l.split()[0].split("-")[1], 16))
    with open("/proc/self/smaps_rollup") as f:
        huge = next(int(l.split()[1]) for l in f if l.startswith("AnonHugePages:"))
    return huge, "memfd:bettong-block" in where
import ctypes
with bettong.FunctionExecutor(workers=1) as ex:
    huge_kb, in_memfd = ex.call_async(fill, 64 << 20).result(timeout=60)
    report(ex, {"huge_kb": huge_kb, "in_memfd": in_memfd})
'''
    got = run_script(script, env={"GLIBC_TUNABLES": "", "BETTONG_NO_SHM": "1"})
    assert got["pool"] == "_ForkedPool"
    assert got["huge_kb"] >= 2048 and not got["in_memfd"], got
    got = run_script(script, env={"GLIBC_TUNABLES": ""})
    assert got["pool"] == "_ForkedPool"
    assert got["in_memfd"], got


CALLER_HUGE = r'''
import ctypes
class ArenaAllocator(ctypes.Structure):
    _fields_ = [("ctx", ctypes.c_void_p), ("alloc", ctypes.c_void_p), ("free", ctypes.c_void_p)]
def arena_alloc():
    a = ArenaAllocator()
    ctypes.pythonapi.PyObject_GetArenaAllocator(ctypes.byref(a))
    return a.alloc
plain_arenas = arena_alloc()
def huge_kb_of(n):
    def total():
        with open("/proc/self/smaps_rollup") as f:
            return next(int(l.split()[1]) for l in f if l.startswith("AnonHugePages:"))
    before = total()
    b = bytearray(n)
    b[::4096] = b"\1" * len(range(0, n, 4096))
    return total() - before
with bettong.FunctionExecutor(workers=1) as ex:
    ex.call_async(len, b"").result(timeout=60)
    report(ex, {"huge_kb": huge_kb_of(64 << 20), "arenas_wrapped": arena_alloc() != plain_arenas})
'''


@pytest.mark.skipif(_thp_mode() != "madvise", reason="needs transparent huge pages on madvise")
@pytest.mark.parametrize("start", ["fork", "exec"])
def test_the_callers_memory_is_tuned_once_it_has_a_local_pool(start):
    """The caller's own large blocks too (a 100 MB argument made, a result read
    into a fresh bytes): huge pages from its first local pool on, however its
    workers start, unless GLIBC_TUNABLES tells its malloc what to do; and its
    small-object arenas populated when made."""
    got = run_script(CALLER_HUGE, env={"GLIBC_TUNABLES": "", "BETTONG_WORKER_START": start})
    assert got["huge_kb"] >= 32 << 10, got
    assert got["arenas_wrapped"] is True  # (src/py/arenas.h: whatever GLIBC_TUNABLES says)
    got = run_script(CALLER_HUGE, env={"GLIBC_TUNABLES": "glibc.malloc.check=0",
                                       "BETTONG_WORKER_START": start})
    assert got["huge_kb"] == 0, got
    assert got["arenas_wrapped"] is True


def test_a_pool_given_no_template_execs_its_workers(tmp_path):
    """--template-pid names a process that is not its child, fd 3 is no
    socket: the pool says so and execs its workers."""
    p = subprocess.Popen([BIN, "pool", "--unix", str(tmp_path / "s"), "--workers", "1",
                          "--template-pid", "1", "--log-level", "debug"],
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    err = b""
    try:
        assert b"listening on" in p.stdout.readline()
        err = read_until(p.stderr, b"started local worker local-1 (pid")
    finally:
        p.terminate()
        p.wait(timeout=T)
        p.stdout.close()
        p.stderr.close()
    text = err.decode()
    assert "the worker template given (pid 1, fd 3) is not one: workers are started by exec" in text
    assert "forked)" not in text
