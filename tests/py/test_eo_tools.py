"""The tool side of the resilience protocols (docs/resilience.md):
`bettong send --resumable` against a fake engine written here, and
`bettong receive --exactly-once` driven by a fake engine connection.

Sockets on 127.0.0.1 with kernel-picked ports; every wait has a timeout and
waits for something observable (a frame, an exit, the file's content)."""

import os
import signal
import socket
import struct
import subprocess
import time

import pytest

from conftest import BIN, wait_until

pytestmark = pytest.mark.skipif(not os.access(BIN, os.X_OK), reason="no binary at %s" % BIN)

WAIT = 10
RS_MAGIC = b"\xffBTRSM\x01\x00"
EO_MAGIC = b"\xffBTEOSK\x01"


def recv_exact(sock, n):
    out = b""
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            raise EOFError("peer closed after %d of %d bytes" % (len(out), n))
        out += chunk
    return out


def read_frame(sock):
    (n,) = struct.unpack(">I", recv_exact(sock, 4))
    return recv_exact(sock, n)


def wait_closed(sock):
    """True once the peer closed (EOF or reset); reads and discards data."""
    sock.settimeout(WAIT)
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        pass
    return True


# ------------------------------------------------------------ send --resumable


class FakeEngine:
    """The engine's side of the resumable source protocol, one step at a time."""

    def __init__(self):
        self.lsock = socket.socket()
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(4)
        self.lsock.settimeout(WAIT)
        self.port = self.lsock.getsockname()[1]
        self.conn = None

    def accept(self):
        self.conn, _ = self.lsock.accept()
        self.conn.settimeout(WAIT)
        return read_frame(self.conn)  # the hello

    def answer(self, kind, value):
        body = kind + (struct.pack(">Q", value) if isinstance(value, int) else value)
        self.conn.sendall(struct.pack(">I", len(body)) + body)

    def records(self, n):
        return [read_frame(self.conn) for _ in range(n)]

    def drop(self):
        self.conn.close()
        self.conn = None

    def close(self):
        if self.conn:
            self.conn.close()
        self.lsock.close()


@pytest.fixture
def engine():
    e = FakeEngine()
    yield e
    e.close()


@pytest.fixture
def procs():
    started = []

    def spawn(args):
        p = subprocess.Popen([str(a) for a in args], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT)
        started.append(p)
        return p

    yield spawn
    for p in started:
        if p.poll() is None:
            p.kill()
        p.communicate()


def lines_file(tmp_path, n, name="input.txt"):
    path = tmp_path / name
    path.write_bytes(b"".join(b"rec%d\n" % i for i in range(n)))
    return path


def resumable(procs, engine, path, *extra):
    return procs([BIN, "send", "--resumable", "--to", "127.0.0.1:%d" % engine.port,
                  "--file", path, *extra])


def finish(p, timeout=WAIT):
    out, _ = p.communicate(timeout=timeout)
    return p.returncode, out.decode()


def test_hello_is_exact_and_sending_starts_at_the_resume_position(tmp_path, engine, procs):
    p = resumable(procs, engine, lines_file(tmp_path, 10), "--stream", "s1")
    assert engine.accept() == RS_MAGIC + b"\x00\x02s1"
    engine.answer(b"R", 4)
    assert engine.records(6) == [b"rec%d" % i for i in range(4, 10)]
    engine.answer(b"A", 10)
    rc, out = finish(p)
    assert rc == 0, out
    assert "sent 6 records" in out and "acknowledged 10 records" in out


def test_default_stream_name_is_the_file_basename(tmp_path, engine, procs):
    p = resumable(procs, engine, lines_file(tmp_path, 1, "prices.txt"))
    assert engine.accept() == RS_MAGIC + b"\x00\x0aprices.txt"
    engine.answer(b"R", 0)
    assert engine.records(1) == [b"rec0"]
    engine.answer(b"A", 1)
    assert finish(p)[0] == 0


def test_resends_from_the_lower_position_after_a_drop(tmp_path, engine, procs):
    p = resumable(procs, engine, lines_file(tmp_path, 20), "--stream", "s")
    engine.accept()
    engine.answer(b"R", 0)
    assert engine.records(12) == [b"rec%d" % i for i in range(12)]
    engine.answer(b"A", 3)
    engine.drop()  # the engine crashed; it recovered a checkpoint holding 5 records
    assert engine.accept() == RS_MAGIC + b"\x00\x01s"
    engine.answer(b"R", 5)
    assert engine.records(15) == [b"rec%d" % i for i in range(5, 20)]
    engine.answer(b"A", 20)
    rc, out = finish(p)
    assert rc == 0, out
    assert "connection lost" in out and "acknowledged 20 records" in out


def test_refusal_prints_the_text_and_exits_2(tmp_path, engine, procs):
    p = resumable(procs, engine, lines_file(tmp_path, 3))
    engine.accept()
    engine.answer(b"E", b"the engine runs without resilience")
    engine.drop()
    rc, out = finish(p)
    assert rc == 2, out
    assert "the engine runs without resilience" in out


def test_missing_acknowledgements_time_out_with_exit_1(tmp_path, engine, procs):
    p = resumable(procs, engine, lines_file(tmp_path, 5), "--ack-timeout", "0.3")
    engine.accept()
    engine.answer(b"R", 0)
    engine.records(5)
    engine.answer(b"A", 3)
    rc, out = finish(p)
    assert rc == 1, out
    assert "acknowledged 3 records" in out and "timed out" in out


def test_gives_up_when_the_engine_stays_away(tmp_path, engine, procs):
    p = resumable(procs, engine, lines_file(tmp_path, 5), "--connect-timeout", "0.5")
    engine.accept()
    engine.answer(b"R", 0)
    engine.records(5)
    engine.close()  # the listener too: reconnecting fails until it gives up
    rc, out = finish(p)
    assert rc == 1, out
    assert "cannot connect" in out and "gave up" in out


def test_rate_still_paces(tmp_path, engine, procs):
    p = resumable(procs, engine, lines_file(tmp_path, 10), "--rate", "50")
    engine.accept()
    start = time.monotonic()
    engine.answer(b"R", 0)
    engine.records(10)
    elapsed = time.monotonic() - start
    engine.answer(b"A", 10)
    assert finish(p)[0] == 0
    assert elapsed >= 0.15, elapsed  # record 9 is due at 9/50 s


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def test_forever_with_a_count_keeps_memory_bounded(tmp_path, engine, procs):
    count = 3_000_000
    path = tmp_path / "one.txt"
    path.write_bytes(b"x\n")  # each record: a 5-byte frame
    p = resumable(procs, engine, path, "--repeat", "0", "--count", str(count))
    engine.accept()
    engine.answer(b"R", 0)
    total, samples = count * 5, []
    got = 0
    while got < total:
        chunk = engine.conn.recv(1 << 20)
        assert chunk, "sender closed early"
        before = got
        got += len(chunk)
        engine.answer(b"A", got // 5)
        if before * 10 // total != got * 10 // total:
            samples.append(rss_kib(p.pid))
    rc, out = finish(p)
    assert rc == 0, out
    assert "acknowledged %d records" % count in out
    assert len(samples) >= 5
    assert max(samples) - samples[0] < 4096, samples  # KiB: nothing grows per record


# ------------------------------------------------------------ receive --exactly-once


class EoEngine:
    """One engine connection to an exactly-once receiver."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
        self.greeting = read_frame(self.sock)

    def send(self, kind, *fields):
        body = kind + b"".join(fields)
        self.sock.sendall(struct.pack(">I", len(body)) + body)

    def writer(self, name):
        self.send(b"W", struct.pack(">H", len(name)), name.encode())
        body = read_frame(self.sock)
        assert body[:1] == b"S" and len(body) == 17, body
        return struct.unpack(">QQ", body[1:])

    def data(self, epoch, payload):
        self.send(b"D", struct.pack(">Q", epoch), payload)

    def end(self, epoch):
        self.send(b"E", struct.pack(">Q", epoch))
        body = read_frame(self.sock)
        assert body == b"P" + struct.pack(">Q", epoch), body

    def epoch(self, epoch, *chunks):
        for c in chunks:
            self.data(epoch, c)
        self.end(epoch)

    def commit(self, epoch):
        self.send(b"C", struct.pack(">Q", epoch))

    def abort(self, epoch):
        self.send(b"X", struct.pack(">Q", epoch))

    def close(self):
        self.sock.close()


def eo_receiver(bt, out=None, **kw):
    return bt.receiver(out=out, extra=["--exactly-once"], **kw)


def wait_file(rx, expected):
    wait_until(lambda: rx.data() == expected, WAIT, "the output to become %r" % expected)


def settled(rx):
    """Wait until the receiver handled what it was sent before: it serves one
    frame at a time on one thread, so an answer on a new connection comes after
    a commit it had started (seen in the file) is complete, state file too."""
    EoEngine(rx.port).writer("probe")


def test_greeting_at_once_and_state_of_a_new_writer(bt):
    rx = eo_receiver(bt)
    e = EoEngine(rx.port)
    assert e.greeting == b"G" + EO_MAGIC
    assert e.writer("w1") == (0, 0)


def test_output_only_on_commit_and_in_epoch_order(bt):
    rx = eo_receiver(bt)
    e = EoEngine(rx.port)
    e.writer("w1")
    e.epoch(1, b"a\n", b"b\n")
    e.epoch(2, b"c\n")
    assert rx.data() == b""  # both prepared, nothing committed
    e.commit(2)
    wait_file(rx, b"a\nb\nc\n")
    e.epoch(3, b"d\n")
    e.commit(3)
    wait_file(rx, b"a\nb\nc\nd\n")
    e.close()
    assert EoEngine(rx.port).writer("w1") == (3, 3)


def test_abort_drops_the_uncommitted_epochs(bt):
    rx = eo_receiver(bt)
    e = EoEngine(rx.port)
    e.writer("w1")
    e.epoch(1, b"one\n")
    e.commit(1)
    e.epoch(2, b"lost\n")
    e.data(3, b"lost too\n")
    e.abort(1)  # rolled back to checkpoint 1: epochs start again after it
    e.epoch(2, b"two\n")
    e.commit(2)
    wait_file(rx, b"one\ntwo\n")


def test_writers_interleave_in_commit_order(bt):
    rx = eo_receiver(bt)
    a, b = EoEngine(rx.port), EoEngine(rx.port)
    a.writer("a")
    b.writer("b")
    a.epoch(1, b"a1\n")
    b.epoch(1, b"b1\n")
    b.commit(1)
    wait_file(rx, b"b1\n")
    a.commit(1)
    wait_file(rx, b"b1\na1\n")


def test_kill_between_prepare_and_commit_keeps_the_prepared_epoch(bt):
    out = bt.path("eo.out")
    rx = eo_receiver(bt, out=out)
    e = EoEngine(rx.port)
    e.writer("w1")
    e.epoch(1, b"first\n")
    e.commit(1)
    wait_file(rx, b"first\n")
    e.epoch(2, b"second\n")
    rx.proc.send_signal(signal.SIGKILL)
    rx.wait_exit()
    rx = eo_receiver(bt, out=out)
    e = EoEngine(rx.port)
    assert e.writer("w1") == (1, 2)
    e.commit(2)
    wait_file(rx, b"first\nsecond\n")
    e.commit(2)  # a repeat after a reconnect changes nothing
    e.epoch(3, b"third\n")
    e.commit(3)
    wait_file(rx, b"first\nsecond\nthird\n")


def test_kill_after_commit_no_duplicate_and_an_unrecorded_tail_is_cut(bt):
    out = bt.path("eo.out")
    rx = eo_receiver(bt, out=out)
    e = EoEngine(rx.port)
    e.writer("w1")
    e.epoch(1, b"one\n")
    e.commit(1)
    wait_file(rx, b"one\n")
    settled(rx)
    rx.proc.send_signal(signal.SIGKILL)
    rx.wait_exit()
    with open(out, "ab") as f:  # as if killed between the append and the state write
        f.write(b"half-committed\n")
    rx = eo_receiver(bt, out=out)
    assert rx.data() == b"one\n"
    e = EoEngine(rx.port)
    assert e.writer("w1") == (1, 1)
    e.commit(1)
    e.epoch(2, b"two\n")
    e.commit(2)
    wait_file(rx, b"one\ntwo\n")


def test_corrupt_spool_tail_is_dropped(bt):
    out = bt.path("eo.out")
    rx = eo_receiver(bt, out=out)
    e = EoEngine(rx.port)
    e.writer("w/1")
    e.epoch(1, b"kept\n")
    e.epoch(2, b"torn\n")
    rx.proc.send_signal(signal.SIGKILL)
    rx.wait_exit()
    spool = out.parent / (out.name + ".eospool.w%2F1")
    raw = bytearray(spool.read_bytes())
    raw[-2] ^= 0xFF  # a byte of epoch 2's data
    spool.write_bytes(bytes(raw))
    rx = eo_receiver(bt, out=out)
    e = EoEngine(rx.port)
    assert e.writer("w/1") == (0, 1)
    e.epoch(2, b"again\n")
    e.commit(2)
    wait_file(rx, b"kept\nagain\n")
    wait_until(lambda: any("corrupt tail" in line for line in rx.err_lines), WAIT,
               "the receiver to log the dropped spool tail")


def test_expect_counts_committed_records(bt):
    rx = eo_receiver(bt, framed=True, expect=3)
    e = EoEngine(rx.port)
    e.writer("w1")
    frame = lambda s: struct.pack(">I", len(s)) + s
    e.epoch(1, frame(b"r1") + frame(b"r2"), frame(b"r3"))
    assert rx.proc.poll() is None  # prepared is not committed
    e.commit(1)
    assert rx.wait_exit() == 0
    assert rx.data() == frame(b"r1") + frame(b"r2") + frame(b"r3")
    wait_until(lambda: any(" 3 records" in line for line in rx.err_lines), WAIT,
               "the receiver's summary")


def test_protocol_error_closes_only_that_connection(bt):
    rx = eo_receiver(bt)
    bad, good = EoEngine(rx.port), EoEngine(rx.port)
    bad.writer("bad")
    good.writer("good")
    bad.epoch(1, b"x\n")
    bad.commit(5)
    assert wait_closed(bad.sock)
    wait_until(lambda: any("does not hold prepared" in line for line in rx.err_lines), WAIT,
               "the receiver to log the bad commit")
    good.epoch(1, b"fine\n")
    good.commit(1)
    wait_file(rx, b"fine\n")
    assert rx.proc.poll() is None


def test_a_second_connection_of_a_writer_replaces_the_first(bt):
    rx = eo_receiver(bt)
    old, new = EoEngine(rx.port), EoEngine(rx.port)
    old.writer("w1")
    old.data(1, b"unended\n")
    assert new.writer("w1") == (0, 0)
    assert wait_closed(old.sock)
    new.epoch(1, b"new\n")
    new.commit(1)
    wait_file(rx, b"new\n")


def test_exactly_once_needs_an_output_file():
    r = subprocess.run([BIN, "receive", "--exactly-once"], capture_output=True, timeout=WAIT)
    assert r.returncode == 2
    assert b"--exactly-once needs --out FILE" in r.stderr
