"""Wallaroo 0.6.1 command lines for `bettong receive` (data_receiver's flags),
observed end to end: what `bettong receive` writes, the notes and refusals on
stderr, and the rate in its summary.

The reference is utils/data_receiver/data_receiver.pony of Wallaroo 0.6.1.
"""

import os
import re
import select
import socket
import subprocess
import time

import pytest

from conftest import BIN, LISTENING_RE, frames

WAIT = 30  # seconds: the ceiling for anything that should take well under one

RECV_SUMMARY = re.compile(
    r"^bettong receive: (\d+) records \((\d+) bytes\) in (\d+\.\d{3}) s, "
    r"(?:(\d+) records/s|(too short to measure a rate))$", re.M)
PONY_NOTE = re.compile(r"^bettong (send|receive): note: ignoring (.*): Pony runtime flags", re.M)


def summary(pattern, text):
    """(records, bytes, seconds, rate or None when too short to measure)."""
    found = pattern.findall(text)
    assert len(found) == 1, text
    n, nbytes, secs, rate, short = found[0]
    assert bool(rate) != bool(short), text
    return int(n), int(nbytes), float(secs), int(rate) if rate else None


# ------------------------------------------------------------- bettong receive


class DataReceiver:
    """`bettong receive ARGS` with stdout and stderr piped; `port` from its
    listening line (stderr's first)."""

    def __init__(self, procs, *args):
        self.proc = procs.spawn([BIN, "receive", *[str(a) for a in args]],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        line = b""
        deadline = time.monotonic() + WAIT
        while not line.endswith(b"\n"):
            ready, _, _ = select.select([self.proc.stderr], [], [],
                                        max(0.0, deadline - time.monotonic()))
            ch = os.read(self.proc.stderr.fileno(), 1) if ready else b""
            if not ch:
                pytest.fail("bettong receive did not say where it listens: %r" % line)
            line += ch
        self.first_line = line.decode().rstrip("\n")
        m = LISTENING_RE.match(self.first_line)
        assert m, self.first_line
        self.port = int(m.group(2))

    def send_lines(self, data):
        with socket.create_connection(("127.0.0.1", self.port), timeout=WAIT) as s:
            s.sendall(data)

    def finish(self):
        """Wait for the exit: (code, stdout bytes, the rest of stderr)."""
        try:
            out, err = self.proc.communicate(timeout=WAIT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
            pytest.fail("bettong receive did not exit: %r" % err)
        return self.proc.returncode, out, err.decode()


def test_data_receiver_command_line_streams_to_stdout(procs):
    # examples/python/word_count/README.md: data_receiver --ponythreads=1
    # --ponynoblock --listen ADDR; raw bytes to stdout.
    rx = DataReceiver(procs, "--ponythreads=1", "--ponynoblock", "--listen", "127.0.0.1:0",
                      "--expect", "3")
    rx.send_lines(b"one => 1\ntwo => 2\nthree => 3\n")
    rc, out, err = rx.finish()
    assert rc == 0, err
    assert out == b"one => 1\ntwo => 2\nthree => 3\n"
    assert PONY_NOTE.findall(err) == [("receive", "--ponythreads, --ponynoblock")]


@pytest.mark.parametrize("flag", ["--framed", "-f"])
def test_data_receiver_framed_prints_payload_lines(procs, flag):
    # demos/python_word_count: data_receiver --framed prints every payload and a
    # newline; that is what a data_receiver command line (no --out) gets.
    rx = DataReceiver(procs, flag, "--ponythreads=1", "-l", "127.0.0.1:0", "--expect", "3")
    rx.send_lines(frames([b"alpha", b"", b"gamma delta"]))
    rc, out, err = rx.finish()
    assert rc == 0, err
    assert out == b"alpha\n\ngamma delta\n"
    assert summary(RECV_SUMMARY, err)[:2] == (3, 4 * 3 + 16)


def test_framed_with_out_keeps_the_frames(procs, tmp_path):
    out_path = tmp_path / "out.bin"
    data = frames([b"alpha", b"beta"])
    rx = DataReceiver(procs, "--framed", "--out", out_path, "--expect", "2")
    rx.send_lines(data)
    rc, out, err = rx.finish()
    assert rc == 0, err
    assert out_path.read_bytes() == data and out == b""


@pytest.mark.parametrize("flag", ["--no-write", "-n"])
def test_no_write_counts_and_writes_nothing(procs, flag):
    rx = DataReceiver(procs, flag, "--framed", "--expect", "4")
    rx.send_lines(frames([b"a", b"bb", b"ccc", b"dddd"]))
    rc, out, err = rx.finish()
    assert rc == 0, err
    assert out == b""
    assert summary(RECV_SUMMARY, err)[:2] == (4, 16 + 10)


@pytest.mark.parametrize("args, message", [
    (["--no-write", "--out", "x"], "--no-write writes nothing"),
    (["--no-write", "--exactly-once", "--out", "x"], "--no-write writes nothing"),
    (["--ponyversion"], "there is no Pony runtime here"),
])
def test_receive_refusals(args, message):
    r = subprocess.run([BIN, "receive", *args], capture_output=True, timeout=WAIT)
    assert r.returncode == 2
    assert message in r.stderr.decode()


def test_receive_rate_of_a_burst_is_too_short_to_measure(procs):
    rx = DataReceiver(procs, "--expect", "3")
    rx.send_lines(b"1\n2\n3\n")
    rc, _, err = rx.finish()
    assert rc == 0, err
    assert summary(RECV_SUMMARY, err) == (3, 6, 0.0, None)


def test_receive_rate_runs_from_first_to_last_byte(procs, tmp_path):
    out_path = tmp_path / "out.txt"
    rx = DataReceiver(procs, "--out", out_path, "--expect", "5")
    with socket.create_connection(("127.0.0.1", rx.port), timeout=WAIT) as s:
        s.sendall(b"a\nb\nc\n")
        t0 = time.monotonic()
        # The second part goes once the first is in the file (flushed on a timer).
        deadline = time.monotonic() + WAIT
        while out_path.read_bytes() != b"a\nb\nc\n":
            assert time.monotonic() < deadline, "the first records never reached the file"
            time.sleep(0.01)
        s.sendall(b"d\ne\n")
        between = time.monotonic() - t0
    rc, _, err = rx.finish()
    assert rc == 0, err
    n, _, secs, rate = summary(RECV_SUMMARY, err)
    assert n == 5
    assert 0.001 <= secs <= between + 1.0
    assert rate is not None and abs(rate - 5 / secs) <= 0.05 * (5 / secs) + 1
