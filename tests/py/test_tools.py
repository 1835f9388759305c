"""Integration tests for `bettong send` and `bettong receive`.

Real processes on loopback, port 0 everywhere (the receiver's "listening on"
line says which port it got; a port the sender needs before any receiver is up
is reserved, conftest.py), and a timeout on every wait.
The binary comes from $BETTONG_BIN (default: <repo>/build/bettong).
"""

import os
import random
import re
import select
import signal
import socket
import struct
import subprocess
import threading
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("BETTONG_BIN", os.path.join(REPO, "build", "bettong"))

WAIT = 20  # seconds: the ceiling for anything that should take well under one

# The rate, or "too short to measure a rate" under a millisecond (rate None).
SEND_SUMMARY = re.compile(
    r"^bettong send: sent (\d+) records \((\d+) bytes\) in (\d+\.\d{3}) s, "
    r"(?:(\d+) records/s|too short to measure a rate)$",
    re.M,
)
RECV_SUMMARY = re.compile(
    r"^bettong receive: (\d+) records \((\d+) bytes\) in (\d+\.\d{3}) s, "
    r"(?:(\d+) records/s|too short to measure a rate)$",
    re.M,
)
LISTENING = re.compile(r"^bettong receive: listening on (\S+):(\d+)$")

pytestmark = pytest.mark.skipif(not os.access(BIN, os.X_OK), reason=f"no binary at {BIN}")


def frame(payload):
    return struct.pack(">I", len(payload)) + payload


def unframe(data):
    """Split framed bytes into payloads; fails on a truncated tail."""
    out, pos = [], 0
    while pos < len(data):
        assert pos + 4 <= len(data), "truncated header"
        (n,) = struct.unpack_from(">I", data, pos)
        assert pos + 4 + n <= len(data), "truncated payload"
        out.append(data[pos + 4 : pos + 4 + n])
        pos += 4 + n
    return out


def _summary(pattern, stderr):
    m = pattern.search(stderr)
    assert m, stderr
    assert len(pattern.findall(stderr)) == 1, stderr
    rate = int(m.group(4)) if m.group(4) is not None else None
    return int(m.group(1)), int(m.group(2)), float(m.group(3)), rate


def send_summary(stderr):
    return _summary(SEND_SUMMARY, stderr)


def recv_summary(stderr):
    return _summary(RECV_SUMMARY, stderr)


class Receiver:
    """A `bettong receive` process; `addr` is "host:port" from its listening line."""

    def __init__(self, *args, stdout=subprocess.DEVNULL):
        self.proc = subprocess.Popen(
            [BIN, "receive", *args], stdout=stdout, stderr=subprocess.PIPE
        )
        self.head = self._read_listening_line()
        m = LISTENING.match(self.head)
        assert m, self.head
        self.host, self.port = m.group(1), int(m.group(2))
        self.addr = f"{self.host}:{self.port}"

    def _read_listening_line(self):
        deadline = time.monotonic() + WAIT
        line = b""
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self.proc.stderr], [], [], max(left, 0))
            if not ready:
                self.proc.kill()
                pytest.fail(f"receiver never said it was listening: {line!r}")
            ch = os.read(self.proc.stderr.fileno(), 1)
            if not ch:
                self.proc.wait(WAIT)
                pytest.fail(f"receiver exited before listening: {line!r}")
            line += ch
        return line.decode().rstrip("\n")

    def finish(self, timeout=WAIT):
        """Wait for exit; returns (exit code, stdout bytes or None, stderr text)."""
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
            pytest.fail(f"receiver did not exit in {timeout} s: {err.decode()}")
        return self.proc.returncode, out, err.decode()

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


@pytest.fixture
def receivers():
    """Start receivers with receivers(*args); all are killed at teardown."""
    started = []

    def start(*args, **kw):
        r = Receiver(*args, **kw)
        started.append(r)
        return r

    yield start
    for r in started:
        r.kill()


class SinkServer:
    """A plain Python TCP server that records every connection's bytes."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.addr = "127.0.0.1:%d" % self.sock.getsockname()[1]
        self.conns = []
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        self.sock.settimeout(WAIT)
        try:
            conn, _ = self.sock.accept()
        except OSError:
            return
        data = bytearray()
        with self.lock:
            self.conns.append(data)
        with conn:
            conn.settimeout(WAIT)
            while True:
                chunk = conn.recv(1 << 16)
                if not chunk:
                    break
                with self.lock:
                    data += chunk

    def received(self):
        self.thread.join(WAIT)
        assert not self.thread.is_alive(), "sender never closed its connection"
        self.sock.close()
        assert len(self.conns) == 1
        return bytes(self.conns[0])


def run_send(*args, input=None, timeout=WAIT):
    return subprocess.run(
        [BIN, "send", *args], input=input, capture_output=True, timeout=timeout
    )


def write(tmp_path, name, data):
    p = tmp_path / name
    p.write_bytes(data)
    return str(p)


def wait_for(pred, timeout=WAIT, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.02)
    pytest.fail(f"timed out waiting for {what}")


# ---------------------------------------------------------------- send


def test_text_lines_are_framed_exactly(tmp_path):
    # The empty line is skipped, as Wallaroo's giles sender skips it.
    src = write(tmp_path, "in.txt", b"a\nbb\n\nccc with spaces\nlast line without newline")
    srv = SinkServer()
    r = run_send("--to", srv.addr, "--file", src)
    assert r.returncode == 0, r.stderr
    lines = [b"a", b"bb", b"ccc with spaces", b"last line without newline"]
    expected = b"".join(frame(x) for x in lines)
    assert srv.received() == expected
    n, nbytes, _, _ = send_summary(r.stderr.decode())
    assert (n, nbytes) == (4, len(expected))


def test_positional_file_and_aliases(tmp_path):
    src = write(tmp_path, "in.txt", b"x\ny\n")
    srv = SinkServer()
    r = run_send("-h", srv.addr, src)
    assert r.returncode == 0, r.stderr
    assert srv.received() == frame(b"x") + frame(b"y")


def test_stdin_input():
    srv = SinkServer()
    r = run_send("--host", srv.addr, "--file", "-", input=b"one\ntwo\n")
    assert r.returncode == 0, r.stderr
    assert srv.received() == frame(b"one") + frame(b"two")


def test_framed_input_round_trip(tmp_path, receivers):
    rng = random.Random(7)
    payloads = [bytes(rng.randrange(256) for _ in range(rng.randrange(0, 300))) for _ in range(500)]
    payloads += [b"", b"\n\n", b"\x00" * 70000]
    data = b"".join(frame(p) for p in payloads)
    src = write(tmp_path, "in.bin", data)
    out = tmp_path / "out.bin"
    rx = receivers("--framed", "--out", str(out), "--expect", str(len(payloads)))
    r = run_send("--to", rx.addr, "--framed", src)
    assert r.returncode == 0, r.stderr
    rc, _, err = rx.finish()
    assert rc == 0, err
    assert out.read_bytes() == data
    assert recv_summary(err)[:2] == (len(payloads), len(data))
    assert send_summary(r.stderr.decode())[:2] == (len(payloads), len(data))


def test_framed_input_aliases(tmp_path):
    data = frame(b"abc") + frame(b"")
    for flag in ("--binary", "-y"):
        srv = SinkServer()
        r = run_send("--to", srv.addr, flag, write(tmp_path, "in.bin", data))
        assert r.returncode == 0, r.stderr
        assert srv.received() == data


@pytest.mark.parametrize("data", [frame(b"hello") + b"\x00\x00\x00\x09abc", b"\x00\x00"])
def test_framed_input_truncated_is_an_error(tmp_path, data):
    srv = SinkServer()
    r = run_send("--to", srv.addr, "-y", write(tmp_path, "bad.bin", data))
    assert r.returncode == 1
    assert b"truncated" in r.stderr


@pytest.mark.parametrize(
    "args, expected_count",
    [
        (["--repeat", "3"], 12),
        (["--repeat=2"], 8),
        (["--repeat", "0", "--count", "10"], 10),
        (["--repeat", "--count", "7"], 7),  # bare --repeat: forever
        (["--count", "6", "--repeat"], 6),
        (["--repeat", "2", "--messages", "5"], 5),
        (["--repeat", "2", "-m", "100"], 8),
        (["--count", "3"], 3),
    ],
)
def test_repeat_and_count(tmp_path, args, expected_count):
    lines = [b"r0", b"r1", b"r2", b"r3"]
    src = write(tmp_path, "in.txt", b"\n".join(lines) + b"\n")
    srv = SinkServer()
    r = run_send("--to", srv.addr, "--file", src, *args)
    assert r.returncode == 0, r.stderr
    got = unframe(srv.received())
    assert got == [lines[i % 4] for i in range(expected_count)]
    assert send_summary(r.stderr.decode())[0] == expected_count


def test_many_repeats_of_a_small_file(tmp_path, receivers):
    # One short line, repeated: the sender batches it into big writes.
    src = write(tmp_path, "in.txt", b"xyz\n")
    out = tmp_path / "out.bin"
    rx = receivers("-y", "-o", str(out), "--expect", "250001")
    r = run_send("--to", rx.addr, src, "--repeat", "250001")
    assert r.returncode == 0, r.stderr
    rc, _, err = rx.finish()
    assert rc == 0, err
    assert out.read_bytes() == frame(b"xyz") * 250001


def test_rate_is_respected(tmp_path, receivers):
    src = write(tmp_path, "in.txt", b"".join(b"line %d\n" % i for i in range(100)))
    rx = receivers("-y", "--expect", "2000")
    t0 = time.monotonic()
    r = run_send("--to", rx.addr, src, "--repeat", "--count", "2000", "--rate", "10000")
    elapsed = time.monotonic() - t0
    assert r.returncode == 0, r.stderr
    n, _, secs, rate = send_summary(r.stderr.decode())
    assert n == 2000
    assert elapsed >= 0.15 and secs >= 0.15
    assert secs < 2.0
    assert 7000 <= rate <= 10500  # low side lenient: a loaded machine oversleeps
    assert rx.finish()[0] == 0


def test_unpaced_throughput(tmp_path, receivers):
    src = write(tmp_path, "in.txt", b"".join(b"%08d\n" % i for i in range(1000)))
    rx = receivers("-y", "--expect", "3000000")
    r = run_send("--to", rx.addr, src, "--repeat", "3000")
    assert r.returncode == 0, r.stderr
    n, nbytes, _, rate = send_summary(r.stderr.decode())
    assert (n, nbytes) == (3000000, 3000000 * 12)
    assert rate > 1_000_000
    rc, _, err = rx.finish()
    assert rc == 0, err
    rn, rbytes, _, rrate = recv_summary(err)
    assert (rn, rbytes) == (3000000, 3000000 * 12)
    assert rrate > 1_000_000


def test_send_retries_until_receiver_is_up(tmp_path, receivers, reserve_port):
    src = write(tmp_path, "in.txt", b"a\nb\nc\n")
    port = reserve_port()  # refused until the receiver listens on it (conftest.py)
    sender = subprocess.Popen(
        [BIN, "send", "--to", f"127.0.0.1:{port}", src, "--connect-timeout", "15"],
        stderr=subprocess.PIPE,
    )
    try:
        time.sleep(0.4)
        assert sender.poll() is None, "sender gave up instead of retrying"
        rx = receivers("--listen", f"127.0.0.1:{port}", "-y", "--expect", "3")
        _, err = sender.communicate(timeout=WAIT)
    finally:
        if sender.poll() is None:
            sender.kill()
            sender.communicate()
    assert sender.returncode == 0, err
    assert send_summary(err.decode())[0] == 3
    assert rx.finish()[0] == 0


def test_send_connect_timeout(tmp_path, reserve_port):
    src = write(tmp_path, "in.txt", b"a\n")
    port = reserve_port()  # nothing listens on it: refused (conftest.py)
    t0 = time.monotonic()
    r = run_send("--to", f"127.0.0.1:{port}", src, "--connect-timeout", "0.3")
    assert r.returncode == 1
    assert 0.25 <= time.monotonic() - t0 < 5
    assert b"cannot connect" in r.stderr


def test_send_peer_closes_mid_send(tmp_path):
    src = write(tmp_path, "in.txt", b"some record\n")
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    srv.settimeout(WAIT)
    sender = subprocess.Popen(
        [BIN, "send", "--to", "127.0.0.1:%d" % srv.getsockname()[1], src, "--repeat"],
        stderr=subprocess.PIPE,
    )
    try:
        conn, _ = srv.accept()
        conn.recv(1000)
        # Reset rather than FIN, so the sender's next write fails at once.
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()
        _, err = sender.communicate(timeout=WAIT)
    finally:
        srv.close()
        if sender.poll() is None:
            sender.kill()
            sender.communicate()
    err = err.decode()
    assert sender.returncode == 1, err
    assert "connection lost" in err
    n, nbytes, _, _ = send_summary(err)
    assert n > 0 and nbytes >= n * 15


@pytest.mark.parametrize(
    "args",
    [
        ["--bogus"],
        ["in.txt"],  # no --to
        ["--to", "127.0.0.1:1"],  # no file
        ["--to", "nonsense", "in.txt"],
        ["--to", "127.0.0.1:1", "--count", "x", "in.txt"],
        ["--to", "127.0.0.1:1", "--rate", "-5", "in.txt"],
        ["--to", "127.0.0.1:1", "a.txt", "b.txt"],
        ["--to"],
    ],
)
def test_send_bad_options(args):
    r = run_send(*args)
    assert r.returncode == 2
    assert b"usage:" in r.stderr


def test_help():
    for cmd in ("send", "receive"):
        r = subprocess.run([BIN, cmd, "--help"], capture_output=True, timeout=WAIT)
        assert r.returncode == 0
        assert b"usage: bettong " + cmd.encode() in r.stdout


def test_send_missing_file_fails():
    r = run_send("--to", "127.0.0.1:1", "/nonexistent/file")
    assert r.returncode == 1
    assert b"cannot open" in r.stderr


# ---------------------------------------------------------------- receive


def test_receive_lines_to_stdout(receivers):
    rx = receivers("--expect", "3", stdout=subprocess.PIPE)
    with socket.create_connection((rx.host, rx.port), timeout=WAIT) as s:
        s.sendall(b"one\ntwo\nthree\n")
    rc, out, err = rx.finish()
    assert rc == 0, err
    assert out == b"one\ntwo\nthree\n"
    assert recv_summary(err)[:2] == (3, 14)


def test_receive_expect_sequential_connections(tmp_path, receivers):
    out = tmp_path / "out.txt"
    rx = receivers("--out", str(out), "--expect", "30")
    for c in range(3):
        with socket.create_connection((rx.host, rx.port), timeout=WAIT) as s:
            s.sendall(b"".join(b"conn%d line%d\n" % (c, i) for i in range(10)))
        time.sleep(0.05)
        if c < 2:
            assert rx.proc.poll() is None, "receiver quit before the expected count"
    rc, _, err = rx.finish()
    assert rc == 0, err
    expected = b"".join(b"conn%d line%d\n" % (c, i) for c in range(3) for i in range(10))
    assert out.read_bytes() == expected
    assert recv_summary(err)[0] == 30


def test_receive_from_sender_reconnecting(tmp_path, receivers):
    src = write(tmp_path, "in.txt", b"p\nq\n")
    out = tmp_path / "out.bin"
    rx = receivers("-y", "-o", str(out), "--expect", "6")
    for _ in range(3):
        assert run_send("--to", rx.addr, src).returncode == 0
    rc, _, err = rx.finish()
    assert rc == 0, err
    assert unframe(out.read_bytes()) == [b"p", b"q"] * 3


def test_receive_concurrent_connections_keep_frames_whole(tmp_path, receivers):
    out = tmp_path / "out.bin"
    nconn, per_conn = 6, 300
    rx = receivers("--framed", "--out", str(out), "--expect", str(nconn * per_conn))
    streams = []
    for c in range(nconn):
        payloads = [b"c%d-%d-" % (c, i) + b"x" * (i % 37) for i in range(per_conn)]
        streams.append(b"".join(frame(p) for p in payloads))
    socks = [socket.create_connection((rx.host, rx.port), timeout=WAIT) for _ in range(nconn)]
    for s in socks:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    # Interleave odd-sized pieces so frames straddle writes on every connection.
    pos = [0] * nconn
    rng = random.Random(3)
    while any(p < len(st) for p, st in zip(pos, streams)):
        for c in range(nconn):
            n = rng.randrange(1, 400)
            if pos[c] < len(streams[c]):
                socks[c].sendall(streams[c][pos[c] : pos[c] + n])
                pos[c] += n
    for s in socks:
        s.close()
    rc, _, err = rx.finish()
    assert rc == 0, err
    got = unframe(out.read_bytes())
    assert len(got) == nconn * per_conn
    for c in range(nconn):
        mine = [p for p in got if p.startswith(b"c%d-" % c)]
        assert mine == unframe(streams[c])


def test_receive_frames_split_byte_by_byte(tmp_path, receivers):
    out = tmp_path / "out.bin"
    payloads = [b"hello", b"", b"w" * 300, b"\x00\x01\x02"]
    data = b"".join(frame(p) for p in payloads)
    rx = receivers("-y", "-o", str(out), "--expect", str(len(payloads)))
    with socket.create_connection((rx.host, rx.port), timeout=WAIT) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(len(data)):
            s.sendall(data[i : i + 1])
            if i < 40:
                time.sleep(0.002)
        rc, _, err = rx.finish()
    assert rc == 0, err
    assert out.read_bytes() == data
    assert recv_summary(err)[:2] == (len(payloads), len(data))


def test_receive_lines_split_byte_by_byte(tmp_path, receivers):
    out = tmp_path / "out.txt"
    data = b"alpha\nbeta\n\ngamma\n"
    rx = receivers("-o", str(out), "--expect", "4")
    with socket.create_connection((rx.host, rx.port), timeout=WAIT) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(len(data)):
            s.sendall(data[i : i + 1])
            time.sleep(0.002)
        rc, _, err = rx.finish()
    assert rc == 0, err
    assert out.read_bytes() == data


def test_receive_timeout_fails(receivers):
    rx = receivers("--expect", "5", "--timeout", "0.5")
    t0 = time.monotonic()
    with socket.create_connection((rx.host, rx.port), timeout=WAIT) as s:
        s.sendall(b"1\n2\n")
        rc, _, err = rx.finish()
    assert rc == 1
    assert 0.4 <= time.monotonic() - t0 < 10
    assert re.search(r"timed out.*\b2 of 5\b", err), err
    assert recv_summary(err)[:2] == (2, 4)


def test_receive_timeout_without_expect_just_stops(receivers):
    rx = receivers("--timeout", "0.3")
    rc, _, err = rx.finish()
    assert rc == 0, err
    assert recv_summary(err)[:2] == (0, 0)


def test_oversized_frame_closes_only_that_connection(tmp_path, receivers):
    out = tmp_path / "out.bin"
    rx = receivers("-y", "-o", str(out), "--expect", "3")
    good = socket.create_connection((rx.host, rx.port), timeout=WAIT)
    bad = socket.create_connection((rx.host, rx.port), timeout=WAIT)
    try:
        good.sendall(frame(b"first"))
        bad.sendall(frame(b"ok before") + struct.pack(">I", 64 * 1024 * 1024 + 1) + b"junk")
        # The receiver hangs up on the bad connection ...
        bad.settimeout(WAIT)
        try:
            assert bad.recv(100) == b""
        except ConnectionResetError:
            pass
        # ... and keeps serving the good one.
        assert rx.proc.poll() is None
        good.sendall(frame(b"second"))
        rc, _, err = rx.finish()
    finally:
        good.close()
        bad.close()
    assert rc == 0, err
    assert "exceeds" in err
    assert sorted(unframe(out.read_bytes())) == [b"first", b"ok before", b"second"]


def test_sigterm_flushes_and_summarises(tmp_path, receivers):
    out = tmp_path / "out.txt"
    rx = receivers("-o", str(out))
    with socket.create_connection((rx.host, rx.port), timeout=WAIT) as s:
        s.sendall(b"a\nb\nc\nd\ne\n")
        wait_for(lambda: out.stat().st_size == 10, what="records in the output file")
        rx.proc.send_signal(signal.SIGTERM)
        rc, _, err = rx.finish()
    assert rc == 0, err
    assert out.read_bytes() == b"a\nb\nc\nd\ne\n"
    assert recv_summary(err)[:2] == (5, 10)


def test_output_is_flushed_while_running(tmp_path, receivers):
    out = tmp_path / "out.bin"
    rx = receivers("-y", "-o", str(out))
    with socket.create_connection((rx.host, rx.port), timeout=WAIT) as s:
        s.sendall(frame(b"early"))
        # Well before exit the record must be visible in the file.
        wait_for(lambda: out.read_bytes() == frame(b"early"), timeout=2, what="a flush")
        assert rx.proc.poll() is None
    rx.proc.send_signal(signal.SIGINT)
    rc, _, err = rx.finish()
    assert rc == 0, err


def test_receive_binds_the_given_host(receivers):
    rx = receivers("--listen", "127.0.0.1:0")
    assert rx.host == "127.0.0.1" and rx.port > 0
    rx.proc.send_signal(signal.SIGINT)
    assert rx.finish()[0] == 0


@pytest.mark.parametrize(
    "args", [["--bogus"], ["--expect", "x"], ["--timeout", "-1"], ["extra"], ["--listen", "nope"]]
)
def test_receive_bad_options(args):
    r = subprocess.run([BIN, "receive", *args], capture_output=True, timeout=WAIT)
    assert r.returncode == 2
    assert b"usage:" in r.stderr
