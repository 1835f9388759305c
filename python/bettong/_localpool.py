"""Starting a local `bettong pool` process (LocalPool) and what it needs to know.

Kept apart from the connection (bettong._pool) so that an executor can start
its pool before it imports the rest of the package (its extension, futures,
cloudpickle...): the pool and its workers then start while those import. Only
the standard library's light modules here.
"""

import os
import select
import sys
import time

_LISTENING = b"bettong pool: listening on "
_START_TIMEOUT = float(os.environ.get("BETTONG_POOL_START_TIMEOUT", "60"))


def _pool_error(text):
    from .errors import PoolError
    return PoolError(text)


def find_binary():
    """The bettong binary: $BETTONG_BIN, the build tree next to this package, the
    installed one, or `bettong` on PATH."""
    env = os.environ.get("BETTONG_BIN")
    if env:
        return env
    here = os.path.dirname(os.path.abspath(__file__))
    if os.path.basename(os.path.dirname(here)) == "python":  # <repo>/python/bettong
        cand = os.path.normpath(os.path.join(here, "..", "..", "build", "bettong"))
        if os.path.isfile(cand) and os.access(cand, os.X_OK):
            return cand
    try:
        from ._install import BIN
        if os.path.isfile(BIN) and os.access(BIN, os.X_OK):
            return BIN
    except ImportError:
        pass
    import shutil
    found = shutil.which("bettong")
    if found:
        return found
    raise FileNotFoundError(
        "cannot find the bettong binary: set BETTONG_BIN, build it (make) or install it "
        "(make install)")


def default_workers():
    """One worker per core."""
    return os.cpu_count() or 1


def worker_path():
    """The caller's sys.path for the workers (so the script's modules import)."""
    cwd = os.getcwd()
    out = []
    for p in sys.path:
        p = cwd if p == "" else p
        if p not in out:
            out.append(p)
    return os.pathsep.join(out)


def _private_dir(parent):
    """A new directory of mode 0700 under parent (tempfile.mkdtemp, without
    importing tempfile and shutil: the start of a pool is on the path of the
    first call)."""
    for _ in range(100):
        path = os.path.join(parent, "bettong-" + os.urandom(6).hex())
        try:
            os.mkdir(path, 0o700)
            return path
        except FileExistsError:
            continue
    raise FileExistsError(f"no free name for a directory in {parent}")


def _remove_dir(path):
    import shutil
    shutil.rmtree(path, ignore_errors=True)


def _secret_bytes(secret):
    """The secret to use: as given, else $BETTONG_SECRET; bytes."""
    if secret is None:
        secret = os.environ.get("BETTONG_SECRET", "")
    return secret.encode() if isinstance(secret, str) else secret


def _forks_template(secret):
    """Whether this process forks the pool's worker template itself (see
    _ForkedPool): BETTONG_WORKER_START=fork (the default) or exec."""
    how = os.environ.get("BETTONG_WORKER_START") or "fork"
    if how not in ("fork", "exec"):
        raise _pool_error(f"BETTONG_WORKER_START is {how!r}: it takes 'fork' or 'exec'")
    if how == "exec" or secret or os.environ.get("BETTONG_WORKER_HOST") == "embedded":
        return False
    try:
        from . import _wproc
    except ImportError:  # another interpreter than the build's: exec'd workers
        return False
    return hasattr(_wproc, "start_pool")


def _tune_memory():
    """This process's Python memory as in the pool's workers
    (bettong._wproc.tune_memory): small-object arenas populated when made, and
    large blocks (32 MiB and more) in transparent huge pages unless
    GLIBC_TUNABLES says how this process's malloc is to behave. On a VM every
    page fault is also the hypervisor's: they are most of the time of making
    20,000 futures, or of filling and first reading a 100 MB bytes (a local
    pool's large arguments and results travel through shared memory)."""
    try:
        from . import _wproc
    except ImportError:  # another interpreter than the build's
        return
    if hasattr(_wproc, "tune_memory"):
        _wproc.tune_memory(not os.environ.get("GLIBC_TUNABLES"))


def _in_template():
    """Run in the worker template forked from this process, before it serves:
    what an exec'd worker would have. Signals handled by Python code go back to
    their default (the pool stops workers with SIGTERM); stdin reads /dev/null;
    stdout (which is stderr there, as for every worker) and stderr are
    unbuffered, as under python3 -u."""
    import io
    import _signal  # (signal's C part: the module around it imports enum, on the way of
    # the first worker)
    for sig in _signal.valid_signals():
        try:
            handler = _signal.getsignal(sig)
        except (OSError, ValueError):
            continue
        if callable(handler) and handler is not _signal.default_int_handler:
            _signal.signal(sig, _signal.SIG_DFL)
    streams = []
    for fd, old in ((1, sys.stdout), (2, sys.stderr)):
        encoding = getattr(old, "encoding", None) or "utf-8"
        errors = getattr(old, "errors", None) or ("backslashreplace" if fd == 2 else "strict")
        streams.append(io.TextIOWrapper(io.FileIO(fd, "wb", closefd=False), encoding=encoding,
                                        errors=errors, write_through=True))
    sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__ = streams
    sys.stdin = sys.__stdin__ = open(os.devnull, encoding="utf-8")


class _ForkedPool:
    """A `bettong pool` whose worker template is forked from this process
    (bettong._wproc.start_pool): the workers start as multiprocessing's fork
    start does, with this interpreter's modules imported already, instead of
    each exec'ing python3 and importing. The template is forked by the pool's
    process before it execs, so it and the workers are the pool's children
    (src/pool/tmpl.h). The part of subprocess.Popen that LocalPool uses."""

    def __init__(self, pid, out_fd):
        self.pid = pid
        self.stdout = os.fdopen(out_fd, "rb")
        self.returncode = None

    @classmethod
    def start(cls, cmd, env, connect, log_level):
        """The pool started, or None when this process cannot fork one (it has
        more threads than one: exec then)."""
        from . import _wproc
        for stream in (sys.stdout, sys.stderr):  # nothing written twice
            try:
                stream.flush()
            except (AttributeError, OSError, ValueError):
                pass
        started = _wproc.start_pool([os.fsencode(c) for c in cmd],
                                    [os.fsencode(k) + b"=" + os.fsencode(v) for k, v in env.items()],
                                    connect, log_level, _in_template)
        return None if started is None else cls(*started)

    def poll(self):
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                self.returncode = 0  # reaped elsewhere
                return self.returncode
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout=None):
        if self.poll() is not None:
            return self.returncode
        if timeout is None:
            _, status = os.waitpid(self.pid, 0)
            self.returncode = os.waitstatus_to_exitcode(status)
            return self.returncode
        fd = os.pidfd_open(self.pid)
        try:
            select.select([fd], [], [], timeout)
        finally:
            os.close(fd)
        if self.poll() is None:
            import subprocess
            raise subprocess.TimeoutExpired(self.pid, timeout)
        return self.returncode

    def send_signal(self, sig):
        if self.poll() is None:
            os.kill(self.pid, sig)

    def terminate(self):
        self.send_signal(15)

    def kill(self):
        self.send_signal(9)


class LocalPool:
    """A `bettong pool` process on a Unix socket in a private directory. It exits
    (with its workers) when our connection closes, even if we are killed.

    Made, it is starting: the process runs while the caller goes on (an executor
    starts its pool when it is made, so the pool and its workers start while the
    first call is prepared); address() waits for it to listen."""

    def __init__(self, workers, secret=b""):
        self.workers = workers
        self.pid = os.getpid()
        self._address = None
        parent = os.environ.get("TMPDIR") or "/tmp"
        if not os.path.isdir(parent):
            parent = "/tmp"
        self.dir = _private_dir(parent)
        sock = os.path.join(self.dir, "pool.sock")
        if len(sock.encode()) > 100:  # sun_path is short
            _remove_dir(self.dir)
            self.dir = _private_dir("/tmp")
            sock = os.path.join(self.dir, "pool.sock")
        binary = find_binary()
        env = dict(os.environ)
        env["BETTONG_WORKER_PATH"] = worker_path()
        # The socket is private (0700 directory); a secret, when there is one, is
        # the one this client sends (given by environment, not on the command line).
        if secret:
            env["BETTONG_SECRET"] = secret.decode("utf-8", "surrogateescape")
        else:
            env.pop("BETTONG_SECRET", None)
        _tune_memory()
        log_level = os.environ.get("BETTONG_POOL_LOG_LEVEL", "warn")
        cmd = [binary, "pool", "--unix", sock, "--workers", str(workers), "--exit-with-client",
               "--log-level", log_level]
        try:
            self.proc = None
            if workers and _forks_template(secret):
                self.proc = _ForkedPool.start(cmd, env, "unix:" + sock, log_level)
            if self.proc is None:
                import subprocess
                self.proc = subprocess.Popen(
                    cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, env=env,
                    close_fds=True, start_new_session=True)  # Ctrl-C reaches us, not it
        except OSError as e:
            _remove_dir(self.dir)
            raise _pool_error(f"cannot start {binary}: {e}") from e

    def address(self):
        """The address once the pool listens (waits for its line)."""
        if self._address is None:
            try:
                self._address = self._read_address()
            except BaseException:
                self.stop()
                raise
        return self._address

    def _read_address(self):
        out = self.proc.stdout
        fd = out.fileno()
        data = b""
        deadline = time.monotonic() + _START_TIMEOUT
        while b"\n" not in data:
            left = deadline - time.monotonic()
            if left <= 0:
                raise _pool_error(
                    f"bettong pool did not start listening within {_START_TIMEOUT:.0f} s")
            r, _, _ = select.select([fd], [], [], min(left, 0.5))
            if r:
                chunk = os.read(fd, 4096)
                if not chunk:
                    break
                data += chunk
        line = data.split(b"\n", 1)[0]
        at = line.find(_LISTENING)
        address = line[at + len(_LISTENING):].split()[:1] if at >= 0 else None
        if not address:
            import subprocess
            line = line.decode("utf-8", "replace")
            try:
                rc = self.proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                rc = None
            what = f"exited with status {rc}" if rc is not None else f"printed {line!r}"
            raise _pool_error(f"bettong pool {what} instead of listening "
                                   "(its messages are above)")
        out.close()  # the pool prints nothing more
        return address[0].decode("utf-8", "surrogateescape")

    def stop(self, timeout=5.0):
        """After our connection closed the pool exits by itself; wait for it, then
        make sure, and remove the socket's directory."""
        proc = self.proc if hasattr(self, "proc") else None
        if proc is not None:
            import subprocess
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, 9)  # its own session: the pool and its workers
                except OSError:
                    proc.kill()
                try:
                    proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    pass
            if proc.stdout and not proc.stdout.closed:
                proc.stdout.close()
        _remove_dir(self.dir)

    def abandon(self):
        """Stop a pool nobody connected to (its executor closed unused)."""
        if self.pid != os.getpid():
            return  # a forked child's copy: the parent's pool is not ours
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, 15)  # its session: it stops its workers
            except OSError:
                pass
        self.stop()


def subcall_ticket():
    """(pool address, task id, token) when this code runs inside a call on a
    pool: the way back into that pool for a nested executor (a token that holds
    only while the call runs, never the pool's secret); None elsewhere."""
    mod = sys.modules.get("_bettong_worker")  # made by the worker process itself
    return mod.subcall() if mod is not None else None


def start_local(workers=None, secret=None):
    """A local pool starting for a Client(local=...) to come, or None where a
    Client would not start one (inside a call on a pool, a nested executor goes
    back into that pool)."""
    if subcall_ticket() is not None:
        return None
    return LocalPool(workers or default_workers(), _secret_bytes(secret))
