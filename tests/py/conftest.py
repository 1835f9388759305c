"""Helpers for the integration tests: run `bettong run` / `send` / `receive` as
real processes over loopback TCP, with a timeout on every wait and every
process killed at teardown.

The binary is $BETTONG_BIN, or build/bettong in the repository.
"""

import functools
import importlib.util
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TESTS = Path(__file__).resolve().parent
APPS = TESTS / "apps"
EXAMPLES = REPO / "examples"
BIN = os.environ.get("BETTONG_BIN") or str(REPO / "build" / "bettong")

# The API module, for the tests that import applications in-process.
if str(REPO / "python") not in sys.path:
    sys.path.insert(0, str(REPO / "python"))

LISTENING_RE = re.compile(r"bettong receive: listening on (\S+):(\d+)")
# `bettong run`: one line per TCP source (per worker with --workers), in the
# order of the pipelines, once the source listens.
SOURCE_RE = re.compile(r"source '(.*)' listening on (\S+):(\d+)$", re.M)

# No single test may run longer than this (seconds), whatever it waits for.
TEST_TIME_LIMIT = int(os.environ.get("BETTONG_TEST_TIME_LIMIT", "60"))


# ------------------------------------------------------------------ plain helpers

# Every process a test starts listens on port 0 and the test reads the address
# the process prints (`bettong run`: "source 'NAME' listening on H:P", cluster
# workers "(control H:P, data H:P)", the initializer "coordinator listening on
# H:P", `--workers` "cluster control at H:P"; `bettong receive`, `pool` and
# `store`: "listening on H:P"). A port is never guessed free.
#
# Only a port a process must have before it can print one is reserved instead:
# the port a restarted process must come back on (a restart by the test, or
# a worker that restarts itself with its own command line), or the port of a
# sink that comes up later (or never). The reservation is a socket bound to
# 127.0.0.1:0 with SO_REUSEADDR that never listens, held until the test ends:
# the kernel gives its port to nobody else (neither to a bind to port 0 nor to
# an outgoing connection), connections to it are refused while none of our
# processes listens on it, and ours (which all bind with SO_REUSEADDR) can
# bind and listen on it, again and again (socket(7)).


class PortReservations:
    """Ports reserved for one test (see above); `reserve()` returns one."""

    def __init__(self):
        self.socks = []

    def reserve(self, host="127.0.0.1"):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, 0))
        self.socks.append(s)
        return s.getsockname()[1]

    def close(self):
        for s in self.socks:
            s.close()
        self.socks = []


def port_open(port, host="127.0.0.1"):
    try:
        with socket.create_connection((host, port), timeout=0.25):
            return True
    except OSError:
        return False


from proctree import children_of  # noqa: E402,F401  (re-exported for the tests)


def sanitized(pid=None):
    """Whether a process (this one by default) runs with AddressSanitizer
    (`make asan`, which preloads it into every process the tests start)."""
    with open("/proc/%s/maps" % (pid or "self")) as f:
        return "libasan" in f.read()


@functools.lru_cache(maxsize=None)
def bin_sanitized():
    """Whether the bettong binary under test is built with AddressSanitizer
    (`make asan`): the processes it runs (stream workers, pool workers,
    stores) run with it."""
    with open(BIN, "rb") as f:
        return b"libasan.so" in f.read()


def wait_until(predicate, timeout, what, interval=0.02):
    """Poll `predicate` until it returns a true value (returned); fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail("timed out after %.1f s waiting for %s" % (timeout, what))
        time.sleep(interval)


def frame(payload, fmt=">I"):
    if isinstance(payload, str):
        payload = payload.encode("utf-8")
    return struct.pack(fmt, len(payload)) + payload


def frames(payloads, fmt=">I"):
    return b"".join(frame(p, fmt) for p in payloads)


def parse_frames(data, fmt=">I"):
    """Split `data` into the payloads of its length-prefixed frames; a trailing
    incomplete frame is an error."""
    size = struct.calcsize(fmt)
    out, pos = [], 0
    while pos < len(data):
        assert pos + size <= len(data), "truncated frame header at byte %d" % pos
        (n,) = struct.unpack(fmt, data[pos:pos + size])
        assert pos + size + n <= len(data), "truncated frame payload at byte %d" % pos
        out.append(data[pos + size:pos + size + n])
        pos += size + n
    return out


def write_framed(path, payloads, fmt=">I"):
    Path(path).write_bytes(frames(payloads, fmt))
    return Path(path)


# ------------------------------------------------------------------ the handshake
# The handshake in pure Python lives in authwire.py (benchmarks use it too).
from authwire import (AUTH_CHALLENGE, AUTH_HELLO, AUTH_NONCE_LEN, AUTH_PROOF,  # noqa: E402,F401
                      AUTH_VERSION, POOL_PROTO_VERSION, ROLE_CLIENT, ROLE_WORKER,
                      STORE_PROTO_VERSION, AuthFailed, auth_handshake, auth_hello, auth_proof,
                      auth_server_challenge, fake_challenge, pool_identity, recv_exact,
                      recv_frame, store_identity)


class RecordingRelay:
    """A TCP relay on 127.0.0.1 in front of `target` (host, port) that records
    what clients send (client_bytes) and what the server answers
    (server_bytes), for replay and secrecy tests. One thread per direction."""

    def __init__(self, target):
        self.target = target
        self.client_bytes = b""
        self.server_bytes = b""
        self.lock = threading.Lock()
        self.ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(8)
        self.port = self.ls.getsockname()[1]
        self.address = "127.0.0.1:%d" % self.port
        self.closed = False
        self.socks = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closed:
            try:
                c, _ = self.ls.accept()
            except OSError:
                return
            s = socket.create_connection(self.target, timeout=10)
            s.settimeout(None)
            self.socks += [c, s]
            threading.Thread(target=self._pump, args=(c, s, "client_bytes"), daemon=True).start()
            threading.Thread(target=self._pump, args=(s, c, "server_bytes"), daemon=True).start()

    def _pump(self, src, dst, attr):
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                data = b""
            if not data:
                try:
                    dst.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                return
            with self.lock:
                setattr(self, attr, getattr(self, attr) + data)
            try:
                dst.sendall(data)
            except OSError:
                return

    def close(self):
        self.closed = True
        self.ls.close()
        for s in self.socks:
            try:
                s.close()
            except OSError:
                pass


class FakeServer:
    """A server that accepts, reads the client's HELLO, and then does what
    `behave(conn, hello_body)` does (answer a CHALLENGE with a random proof,
    send FUNCDEF / TASK at once, ...). Records each HELLO and everything else
    the clients sent after it in `after_hello`."""

    def __init__(self, behave):
        self.behave = behave
        self.hellos = []
        self.after_hello = b""
        self.ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(16)
        self.port = self.ls.getsockname()[1]
        self.address = "127.0.0.1:%d" % self.port
        self.conns = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.ls.accept()
            except OSError:
                return
            self.conns.append(c)
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        c.settimeout(10)
        try:
            hello = recv_frame(c)
            if hello is None:
                return
            self.hellos.append(hello)
            self.behave(c, hello)
            while True:
                data = c.recv(65536)
                if not data:
                    return
                self.after_hello += data
        except OSError:
            return

    def close(self):
        self.ls.close()
        for c in self.conns:
            try:
                c.close()
            except OSError:
                pass


def load_module(path, name=None):
    """Import an application module from a file path (examples have no package)."""
    path = Path(path)
    name = name or "bt_app_" + path.stem
    spec = importlib.util.spec_from_file_location(name, str(path))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def example_path(name):
    return EXAMPLES / name / (name + ".py")


def app_path(name):
    return APPS / (name + ".py")


def py_send(port, data, chunk=None, delay=0.0, host="127.0.0.1", close=True):
    """Send raw bytes from a Python socket, optionally `chunk` bytes at a time
    with `delay` seconds between chunks. Returns the socket when close=False."""
    s = socket.create_connection((host, port), timeout=10)
    if chunk is None:
        s.sendall(data)
    else:
        for i in range(0, len(data), chunk):
            s.sendall(data[i:i + chunk])
            if delay:
                time.sleep(delay)
    if close:
        s.close()
        return None
    return s


def authenticated_socket(port, service, secret=b"", timeout=5):
    """A raw connection to a pool ("pool", as a client) or a store ("store") on
    loopback that has passed the handshake and been welcomed."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    identity = pool_identity(name="raw-test") if service == "pool" else store_identity("raw-test")
    answer = auth_handshake(s, service, identity, secret)
    assert answer and answer[0] == 2, "no WELCOME from the %s: %r" % (service, answer)
    return s


def lines_of(data):
    """Text lines of bytes output (each must end in a newline)."""
    text = data.decode("utf-8")
    assert text == "" or text.endswith("\n"), "output ends with a partial line: %r" % text[-80:]
    return text.split("\n")[:-1]


# ------------------------------------------------------------------ processes

# The threads that read a process's pipe to its end, by stream (read_to_end).
_PIPE_READERS = {}
_PIPE_READERS_LOCK = threading.Lock()


def read_to_end(stream, on_line, on_end=None):
    """Read the lines of `stream` (a pipe from a process) on a thread of its own
    until the end of the pipe, calling on_line(bytes) for each and then
    on_end(); the thread then closes the stream. Returns the thread.

    The stream is the thread's alone: closed by another thread while a
    readline() is in progress or about to start, a BufferedReader fails in the
    reading thread (ValueError "PyMemoryView_FromBuffer(): info->buf must not
    be NULL", or "readline of closed file"). So Procs.cleanup does not close
    such a stream: it waits for its thread, which ends once every process
    holding the pipe (the process, and what it started) has exited."""
    def run():
        try:
            for raw in iter(stream.readline, b""):
                on_line(raw)
        finally:
            try:
                if on_end is not None:
                    on_end()
            finally:
                stream.close()
                with _PIPE_READERS_LOCK:
                    _PIPE_READERS.pop(stream, None)

    t = threading.Thread(target=run, daemon=True)
    with _PIPE_READERS_LOCK:
        _PIPE_READERS[stream] = t
    t.start()
    return t


class Procs:
    """Every process a test starts; all killed (with their process group) at teardown."""

    def __init__(self):
        self.procs = []

    def spawn(self, args, **kw):
        kw.setdefault("stdin", subprocess.DEVNULL)
        p = subprocess.Popen([str(a) for a in args], start_new_session=True, **kw)
        self.procs.append(p)
        return p

    def cleanup(self):
        for p in self.procs:
            if p.poll() is None:
                # Still running (not reaped), so its pid is still its own process
                # group's id: kill the group, i.e. it and anything it started.
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except OSError:
                    try:
                        p.kill()
                    except OSError:
                        pass
        for p in self.procs:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                pass
            for f in (p.stdout, p.stderr):
                if f is None:
                    continue
                with _PIPE_READERS_LOCK:
                    reader = _PIPE_READERS.get(f)
                if reader is not None:
                    # Read by a thread (read_to_end), which closes it at the end
                    # of the pipe: never closed under it. A process that still
                    # holds the pipe after this wait leaves the thread to finish
                    # when it exits.
                    reader.join(5)
                    continue
                try:
                    f.close()
                except OSError:
                    pass


class Receiver:
    """`bettong receive --listen HOST:PORT [--framed] --out FILE [--expect N]`;
    port 0: the port it prints."""

    def __init__(self, procs, out, port=0, framed=False, expect=None, extra=(),
                 host="127.0.0.1"):
        self.out = Path(out)
        self.host = host
        args = [BIN, "receive", "--listen", "%s:%d" % (host, port), "--out", self.out]
        if framed:
            args.append("--framed")
        if expect is not None:
            args += ["--expect", str(expect)]
        args += list(extra)
        self.proc = procs.spawn(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.err_lines = []
        self.port = None
        self._listening = threading.Event()
        self._thread = read_to_end(self.proc.stderr, self._stderr_line, self._listening.set)
        if not self._listening.wait(10) or self.port is None:
            self.kill()
            pytest.fail("bettong receive did not report 'listening on' within 10 s "
                        "(exit %r):\n%s" % (self.proc.poll(), "\n".join(self.err_lines)))
        if port:
            assert self.port == port, "receive listens on %d, asked for %d" % (self.port, port)

    def _stderr_line(self, raw):
        line = raw.decode("utf-8", "replace").rstrip("\n")
        self.err_lines.append(line)
        m = LISTENING_RE.search(line)
        if m and self.port is None:
            self.port = int(m.group(2))
            self._listening.set()

    @property
    def addr(self):
        return "%s:%d" % (self.host, self.port)

    def data(self):
        try:
            return self.out.read_bytes()
        except FileNotFoundError:
            return b""

    def wait_bytes(self, nbytes, timeout=20, settle=0.15):
        """Wait until the output holds at least `nbytes` bytes (or the receiver
        exited, or `timeout`), then a little longer to catch anything extra.
        Returns the output; the caller compares it with what it expects."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.data()) >= nbytes or self.proc.poll() is not None:
                break
            time.sleep(0.02)
        time.sleep(settle)
        return self.data()

    def wait_lines(self, n, timeout=20, settle=0.15):
        """As wait_bytes, until the output holds at least `n` newline characters."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.data().count(b"\n") >= n or self.proc.poll() is not None:
                break
            time.sleep(0.02)
        time.sleep(settle)
        return self.data()

    def wait_exit(self, timeout=20):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail("bettong receive did not exit within %.0f s; output has %d bytes"
                        % (timeout, len(self.data())))

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                pass

    def stop(self, sig=signal.SIGTERM, timeout=15):
        """Signal the receiver and wait for it; returns its exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            pytest.fail("bettong receive did not exit within %.0f s of signal %d" % (timeout, sig))
        self._thread.join(5)  # its last stderr lines (the summary) are read
        return rc


class Engine:
    """`bettong run APP --in ... --out ... EXTRA`, cwd = the repository, stderr to a file.

    `ins` are the ports of the --in addresses on 127.0.0.1: 0 (the kernel picks
    one; in_ports then holds the ports the engine printed, in the order of its
    pipelines, once ready) or a reserved port (Harness.reserve_port). `outs` are
    the ports of the sinks, which the engine connects to."""

    _n = 0

    def __init__(self, procs, tmp, app, ins=(), outs=(), extra=(), wait=True,
                 ready_timeout=15):
        Engine._n += 1
        self.spec = (app, tuple(ins), tuple(outs), tuple(extra))  # for Harness.restart
        self.in_ports = list(ins)
        self.out_ports = list(outs)
        self.sources = {}  # pipeline name: port, once ready
        self.err_path = Path(tmp) / ("engine-%d.stderr" % Engine._n)
        args = [BIN, "run"]
        if app is not None:
            args.append(str(app))
        if self.in_ports:
            args += ["--in", ",".join("127.0.0.1:%d" % p for p in self.in_ports)]
        if self.out_ports:
            args += ["--out", ",".join("127.0.0.1:%d" % p for p in self.out_ports)]
        args += [str(a) for a in extra]
        self.args = args
        with open(self.err_path, "wb") as err:
            self.proc = procs.spawn(args, cwd=str(REPO), stdout=err, stderr=err)
        if wait:
            self.wait_ready(ready_timeout)

    def stderr(self):
        try:
            return self.err_path.read_bytes().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def listening(self):
        """{pipeline name: port} of the sources that have logged that they listen
        (with --workers, the first worker's line for each)."""
        found = {}
        for m in SOURCE_RE.finditer(self.stderr()):
            found.setdefault(m.group(1), int(m.group(3)))
        return found

    def wait_ready(self, timeout=15):
        """Wait until every --in source has logged that it listens, and set
        in_ports (in the order of the pipelines, which is the order of the --in
        addresses in the applications here) and sources; fail with the engine's
        stderr if it exits first."""
        deadline = time.monotonic() + timeout
        want = len(self.spec[1])
        while True:
            exited = self.proc.poll() is not None  # before reading: nothing comes after
            found = self.listening()
            if len(found) >= want:
                break
            if exited:
                pytest.fail("bettong run exited with %d before its %d sources listened:\n%s"
                            % (self.proc.returncode, want, self.stderr()))
            if time.monotonic() > deadline:
                pytest.fail("bettong run did not have its %d sources listening within %.0f s:\n%s"
                            % (want, timeout, self.stderr()))
            time.sleep(0.02)
        ports = list(found.values())
        for asked, got in zip(self.spec[1], ports):
            assert asked in (0, got), "a source listens on %d, asked for %d" % (got, asked)
        self.sources = found
        self.in_ports = ports
        return ports

    def alive(self):
        return self.proc.poll() is None

    def wait_log(self, pattern, timeout=15, count=1):
        """Wait until the engine's stderr holds `count` matches of the regular
        expression `pattern`; returns the last of them. Fails, with the stderr,
        after `timeout` or when the engine exits without having logged it."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            exited = self.proc.poll() is not None  # before reading: nothing comes after
            text = self.stderr()
            found = list(rx.finditer(text))
            if len(found) >= count:
                return found[count - 1]
            if exited:
                pytest.fail("bettong run exited with %d without logging %r (%d of %d):\n%s"
                            % (self.proc.returncode, pattern, len(found), count, text))
            if time.monotonic() > deadline:
                pytest.fail("bettong run did not log %r within %.0f s (%d of %d):\n%s"
                            % (pattern, timeout, len(found), count, text))
            time.sleep(0.02)

    def count_log(self, pattern):
        """How many times the engine's stderr matches `pattern` so far."""
        return len(re.findall(pattern, self.stderr()))

    def kill(self):
        """SIGKILL the engine (and anything it started) and reap it; returns its stderr."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except OSError:
                self.proc.kill()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pytest.fail("bettong run did not die within 10 s of SIGKILL")
        return self.stderr()

    def wait_exit(self, timeout=15):
        """Wait for the engine to exit by itself; returns (exit code, stderr)."""
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail("bettong run did not exit within %.0f s:\n%s" % (timeout, self.stderr()))
        return rc, self.stderr()

    def stop(self, sig=signal.SIGTERM, timeout=15):
        """Signal the engine and wait for it; returns (exit code, stderr)."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            pytest.fail("bettong run did not exit within %.0f s of signal %d:\n%s"
                        % (timeout, sig, self.stderr()))
        return rc, self.stderr()


class Harness:
    """What a test gets from the `bt` fixture."""

    def __init__(self, tmp):
        self.tmp = Path(tmp)
        self.procs = Procs()
        self.ports = PortReservations()
        self._files = 0

    def path(self, name):
        self._files += 1
        return self.tmp / ("%d-%s" % (self._files, name))

    def receiver(self, port=0, framed=False, expect=None, out=None, extra=(), host="127.0.0.1"):
        return Receiver(self.procs, out or self.path("received.out"), port=port,
                        framed=framed, expect=expect, extra=extra, host=host)

    def engine(self, app, ins=(), outs=(), extra=(), wait=True, ready_timeout=15):
        return Engine(self.procs, self.tmp, app, ins=ins, outs=outs, extra=extra,
                      wait=wait, ready_timeout=ready_timeout)

    def reserve_port(self):
        """A port for a process that must have it before it can print one (a
        restart on the same port, a sink that comes up later): see
        PortReservations. Held until the test ends."""
        return self.ports.reserve()

    def restart(self, engine, wait=True, ready_timeout=15):
        """A new engine with the command line of `engine` (which must have exited):
        on the same ports where they were reserved, on new ones where they were 0."""
        assert engine.proc.poll() is not None, "restart of an engine that still runs"
        app, ins, outs, extra = engine.spec
        return self.engine(app, ins=ins, outs=outs, extra=extra, wait=wait,
                           ready_timeout=ready_timeout)

    def framed_file(self, payloads, name="input.bin", fmt=">I"):
        return write_framed(self.path(name), payloads, fmt)

    def _send_args(self, port, path, framed, repeat, extra):
        args = [BIN, "send", "--to", "127.0.0.1:%d" % port, "--file", str(path)]
        if framed:
            args.append("--framed")
        if repeat is not None:
            args += ["--repeat", str(repeat)]
        return args + [str(a) for a in extra]

    def send(self, port, path, framed=True, repeat=None, extra=(), timeout=30):
        """Run `bettong send` to completion; fail on a non-zero exit."""
        p = self.procs.spawn(self._send_args(port, path, framed, repeat, extra),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            out, _ = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            pytest.fail("bettong send to %d did not finish within %.0f s" % (port, timeout))
        if p.returncode != 0:
            pytest.fail("bettong send exited with %d:\n%s"
                        % (p.returncode, out.decode("utf-8", "replace")))

    def send_payloads(self, port, payloads, fmt=">I", **kw):
        """Frame `payloads`, write them to a file and send it with `bettong send --framed`."""
        self.send(port, self.framed_file(payloads, fmt=fmt), framed=True, **kw)

    def send_async(self, port, path, framed=True, repeat=None, extra=()):
        return self.procs.spawn(self._send_args(port, path, framed, repeat, extra),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    def wait_senders(self, senders, timeout=30):
        deadline = time.monotonic() + timeout
        for p in senders:
            try:
                out, _ = p.communicate(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pytest.fail("bettong send did not finish within %.0f s" % timeout)
            if p.returncode != 0:
                pytest.fail("bettong send exited with %d:\n%s"
                            % (p.returncode, out.decode("utf-8", "replace")))

    def finish(self, proc, timeout=30, what="bettong send"):
        """Wait for a tool started by send_async (stdout and stderr piped together);
        returns (exit code, its output as text)."""
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
            pytest.fail("%s did not finish within %.0f s:\n%s"
                        % (what, timeout, out.decode("utf-8", "replace")))
        return proc.returncode, out.decode("utf-8", "replace")

    def cleanup(self):
        self.procs.cleanup()
        self.ports.close()


# ------------------------------------------------------------------ clusters

CONTROL_RE = re.compile(r"cluster control at (127\.0\.0\.1:\d+)")
SECRET_FILE_RE = re.compile(r"cluster secret \(made for this run\) in (\S+)")


def wait_sources(eng, n, timeout=15):
    """{source name: port} once the engine has logged that its n sources listen
    (started with --in 127.0.0.1:0,...: the kernel picks the ports)."""
    if n:
        eng.wait_log(r"source '[^']*' listening on \S+:\d+", timeout=timeout, count=n)
    return {m.group(1): int(m.group(3)) for m in SOURCE_RE.finditer(eng.stderr())}


def engine_port0(bt, app, n_ins=1, outs=(), extra=()):
    """`bettong run APP --in 127.0.0.1:0[,...]`: the engine and {source name: port}."""
    eng = bt.engine(app, outs=outs, wait=False,
                    extra=["--in", ",".join(["127.0.0.1:0"] * n_ins)] + list(extra))
    return eng, wait_sources(eng, n_ins)


class Cluster:
    """N workers running `app`, formed either by `--workers N` (one parent, the
    workers share each --in port) or by Wallaroo's flags (one process per worker,
    each with its own --in ports; worker 1 is the initializer). Every port is
    picked by the kernel (port 0) and read from the logs: ports[i] are worker
    i's --in ports once it listens.

    sources="initializer" for Wallaroo 0.6 applications, whose sources run on
    the initializer only: every worker gets --in 127.0.0.1:0 (as Wallaroo's
    workers all get --in), the initializer's kernel-picked ports are read from
    its log into c.source_ports ({source name: port})."""

    def __init__(self, bt, app, n, form, nins=1, outs=(), extra=(), secret=None,
                 sources="every"):
        self.bt, self.app, self.n, self.form = bt, app, n, form
        self.sources = sources
        self.nins = nins
        self.outs = list(outs)
        self.extra = [str(a) for a in extra]
        self.env_extra = []
        if secret:
            self.extra += ["--cluster-secret", secret]
        self.engines = []
        self.secret_args = ["--cluster-secret", secret] if secret else []
        if form == "workers" and sources == "initializer":
            eng = bt.engine(app, outs=self.outs, wait=False,
                            extra=self._in_args() + ["--workers", n, "--log-level",
                                                     "info"] + self.extra)
            self.engines.append(eng)
            self.control = wait_until(lambda: self._control_from(eng), 15,
                                      "the cluster's control address")
            if not secret:
                m = wait_until(lambda: SECRET_FILE_RE.search(eng.stderr()), 15,
                               "the secret file")
                self.secret_args = ["--cluster-secret-file", m.group(1)]
        elif form == "workers":
            # Port 0 in --in: the parent has the kernel pick each port once, and
            # the workers share it.
            eng = bt.engine(app, ins=[0] * nins, outs=self.outs,
                            extra=["--workers", n, "--log-level", "info"] + self.extra)
            self.engines.append(eng)
            self.control = wait_until(lambda: self._control_from(eng), 15,
                                      "the cluster's control address")
            if not secret:
                m = wait_until(lambda: SECRET_FILE_RE.search(eng.stderr()), 15,
                               "the secret file")
                self.secret_args = ["--cluster-secret-file", m.group(1)]
        else:
            # The initializer listens on ports the kernel picks and logs them;
            # the others join the control address it logged.
            self.control = "127.0.0.1:0"
            first = self.add_worker(nins, initializer=True, wait=False)
            self.control = wait_until(lambda: self._coordinator_of(first), 15,
                                      "the coordinator's address")
            for i in range(1, n):
                self.add_worker(nins, wait=False)
            for e in self.engines:
                self._wait_ready(e)
        if sources == "initializer":
            # {source name: port} of the initializer, the one that listens.
            self.source_ports = wait_sources(self.engines[0], nins)

    @property
    def ports(self):
        """ports[i]: worker i's --in ports, once it listens (none where the
        sources run on the initializer only)."""
        if self.sources != "every":
            return [[] for _ in self.engines]
        if self.form == "workers":
            return [self.engines[0].in_ports] * self.n
        return [e.in_ports for e in self.engines]

    def _in_args(self):
        return ["--in", ",".join(["127.0.0.1:0"] * self.nins)] if self.nins else []

    def _wait_ready(self, eng):
        if self.sources == "every":
            eng.wait_ready()
        else:
            eng.wait_log(r"ready: application")

    @staticmethod
    def _coordinator_of(eng):
        m = re.search(r"coordinator listening on (127\.0\.0\.1:\d+)", eng.stderr())
        return m.group(1) if m else None

    @staticmethod
    def _control_from(eng):
        m = CONTROL_RE.search(eng.stderr())
        return m.group(1) if m else None

    def add_worker(self, nins=1, initializer=False, wait=True, join=False, name=None,
                   secret=None):
        ports = [0] * nins if self.sources == "every" else []
        i = len(self.engines) + 1
        flags = ["--name", name or "w%d" % i, "--log-level", "info"]
        if initializer:
            flags += ["--cluster-initializer", "--worker-count", self.n, "--control",
                      self.control, "--data", "127.0.0.1:0"]
        elif join:
            flags += ["--join", self.control]
        else:
            flags += ["--control", self.control]
        extra = list(self.extra)
        if self.sources != "every":
            extra += self._in_args()
        if secret is not None:
            i = extra.index("--cluster-secret")
            extra[i + 1] = secret
        eng = self.bt.engine(self.app, ins=ports, outs=self.outs, extra=flags + extra,
                             wait=False)
        self.engines.append(eng)
        if wait:
            self._wait_ready(eng)
        return eng

    def status(self, secret=None, check=True):
        args = [BIN, "cluster", "status", "--control", self.control]
        args += ["--cluster-secret", secret] if secret else self.secret_args
        p = subprocess.run(args, capture_output=True, text=True, timeout=20)
        if check:
            assert p.returncode == 0, "cluster status failed (%d): %s%s" % (
                p.returncode, p.stdout, p.stderr)
        return p

    def workers(self):
        """{name: (state, slots, keys, in)} from `bettong cluster status`."""
        out = {}
        for line in self.status().stdout.splitlines()[2:]:
            f = line.split()
            out[f[0]] = (f[2], int(f[3]), f[4], f[5])
        return out

    def wait_formed(self, n=None):
        n = n or self.n
        wait_until(lambda: "cluster formed, %d active workers" % n in self.status(check=False).stdout,
                   20, "a formed cluster of %d workers" % n, interval=0.1)

    def stop(self):
        """SIGTERM the parent / the initializer: every worker must exit 0."""
        first = self.engines[0]
        rc, err = first.stop(timeout=30)
        results = [(rc, err)]
        for e in self.engines[1:]:
            results.append(e.wait_exit(30))
        for i, (rc, err) in enumerate(results):
            assert rc == 0, "worker %d exited with %d:\n%s" % (i + 1, rc, err)
            assert "Traceback" not in err, err
        return results

    def stderr(self):
        return "\n".join(e.stderr() for e in self.engines)



@pytest.fixture
def procs():
    """Processes a test starts (Procs), all killed at the end."""
    p = Procs()
    try:
        yield p
    finally:
        p.cleanup()


@pytest.fixture
def reserve_port():
    """A function returning a reserved port (PortReservations) for tests without
    `bt`; the reservations end with the test."""
    r = PortReservations()
    try:
        yield r.reserve
    finally:
        r.close()


@pytest.fixture
def executors(request):
    """A factory of bettong.FunctionExecutor(address=..., secret=...) clients, all
    closed at the end; the secret defaults to the test module's SECRET."""
    import bettong
    default = getattr(request.module, "SECRET", None)
    made = []

    def make(address, secret=default, **kw):
        e = bettong.FunctionExecutor(address=address, secret=secret, **kw)
        made.append(e)
        return e

    try:
        yield make
    finally:
        for e in made:
            try:
                e.close()
            except Exception:
                pass


@pytest.fixture
def service(stores):
    """A store service of three backends (store_helpers.SERVICE_NAMES) on a
    redis-server of the test's own, the in-process client connected to the
    first: (Redis, [Store, ...])."""
    from store_helpers import SERVICE_NAMES
    from bettong import objects
    redis = stores.redis()
    backends = stores.service(redis, SERVICE_NAMES)
    objects.connect(backends[0].address)
    return redis, backends


@pytest.fixture
def stores(tmp_path):
    """A factory of `bettong store` processes (store_helpers.Store), all stopped at
    the end; the in-process client is disconnected before and after."""
    from store_helpers import Stores, client_reset
    client_reset()
    s = Stores(tmp_path)
    try:
        yield s
    finally:
        client_reset()
        s.cleanup()


@pytest.fixture
def bt(tmp_path):
    h = Harness(tmp_path)
    try:
        yield h
    finally:
        h.cleanup()


# ------------------------------------------------------------------ time limit

class TimeLimitExceeded(Exception):
    pass


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    """Nothing may hang the suite: every test body gets TEST_TIME_LIMIT seconds."""
    if not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expired(signum, frame_):
        raise TimeLimitExceeded("test exceeded %d s" % TEST_TIME_LIMIT)

    old = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, TEST_TIME_LIMIT)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


# ------------------------------------------------------------------ TLS

def make_tls_cert(directory, name="bettong-test"):
    """A throwaway self-signed certificate and key (PEM) made with the openssl
    command in `directory`; returns (cert_path, key_path) as strings."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / (name + ".crt"), directory / (name + ".key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=" + name], check=True, capture_output=True,
                   timeout=30)
    return str(cert), str(key)


@pytest.fixture
def tls_cert(tmp_path):
    """(cert, key) paths of a self-signed pair made for this test."""
    return make_tls_cert(tmp_path / "tls")


class TcpRecorder:
    """A plain TCP listener on 127.0.0.1, port 0, recording what every
    connection sends with the monotonic time of each read: what a sender put
    on the wire, and when (the pacing tests of `bettong send`)."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.addr = "127.0.0.1:%d" % self.sock.getsockname()[1]
        self.reads = []      # per connection: [(monotonic time, bytes), ...]
        self._ended = []     # per connection: set at its EOF
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            reads, ended = [], threading.Event()
            with self._lock:
                self.reads.append(reads)
                self._ended.append(ended)
            threading.Thread(target=self._serve, args=(conn, reads, ended), daemon=True).start()

    def _serve(self, conn, reads, ended):
        with conn:
            conn.settimeout(60)
            try:
                while True:
                    chunk = conn.recv(1 << 16)
                    if not chunk:
                        break
                    reads.append((time.monotonic(), chunk))
            except OSError:
                pass
        ended.set()

    def wait_closed(self, conns=1, timeout=20):
        """Wait until `conns` connections came and ended; returns their reads."""
        wait_until(lambda: len(self._ended) >= conns, timeout, "%d connection(s)" % conns)
        for ended in self._ended[:conns]:
            if not ended.wait(timeout):
                pytest.fail("a connection to the recorder did not end within %.0f s" % timeout)
        return self.reads[:conns]

    def data(self, conn=0, timeout=20):
        """Everything connection `conn` sent, once it ended."""
        return b"".join(chunk for _, chunk in self.wait_closed(conn + 1, timeout)[conn])

    def connections(self):
        with self._lock:
            return len(self.reads)

    def close(self):
        self.sock.close()


@pytest.fixture
def tcp_recorder():
    """Start TcpRecorder listeners with tcp_recorder(); all closed at the end."""
    made = []

    def make():
        r = TcpRecorder()
        made.append(r)
        return r

    try:
        yield make
    finally:
        for r in made:
            r.close()


def closed_by_peer(s, timeout=10.0):
    """Whether the peer closed (or reset) the connection within timeout,
    reading and dropping what it sent before."""
    s.settimeout(timeout)
    try:
        while True:
            if not s.recv(65536):
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False
