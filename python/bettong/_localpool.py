"""Starting a local `bettong pool` process (LocalPool) and what it needs to know.

Kept apart from the connection (bettong._pool) so that an executor can start
its pool before it imports the rest of the package (its extension, futures,
cloudpickle...): the pool and its workers then start while those import. Only
the standard library's light modules here.
"""

import os
import re
import select
import subprocess
import sys
import time

_LISTENING = re.compile(r"bettong pool: listening on (\S+)")
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
        cmd = [binary, "pool", "--unix", sock, "--workers", str(workers), "--exit-with-client",
               "--log-level", os.environ.get("BETTONG_POOL_LOG_LEVEL", "warn")]
        try:
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
        line = data.split(b"\n", 1)[0].decode("utf-8", "replace")
        m = _LISTENING.search(line)
        if not m:
            try:
                rc = self.proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                rc = None
            what = f"exited with status {rc}" if rc is not None else f"printed {line!r}"
            raise _pool_error(f"bettong pool {what} instead of listening "
                                   "(its messages are above)")
        out.close()  # the pool prints nothing more
        return m.group(1)

    def stop(self, timeout=5.0):
        """After our connection closed the pool exits by itself; wait for it, then
        make sure, and remove the socket's directory."""
        proc = self.proc if hasattr(self, "proc") else None
        if proc is not None:
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
