"""Wallaroo 0.6.1 command lines for `bettong send` (giles sender's flags) and
`bettong receive` (data_receiver's flags), observed end to end: the bytes a
plain TCP listener (port 0) gets and when, the frames `bettong receive` writes,
the notes and refusals on stderr.

The reference is giles/sender/giles-sender.pony and
utils/data_receiver/data_receiver.pony of Wallaroo 0.6.1.
"""

import json
import os
import re
import select
import socket
import statistics
import struct
import subprocess
import time
from pathlib import Path

import pytest

from conftest import BIN, LISTENING_RE, app_path, frames, lines_of, parse_frames

WAIT = 30  # seconds: the ceiling for anything that should take well under one

SEND_SUMMARY = re.compile(
    r"^bettong send: sent (\d+) records \((\d+) bytes\) in (\d+\.\d{3}) s, "
    r"(?:(\d+) records/s|(too short to measure a rate))$", re.M)
RECV_SUMMARY = re.compile(
    r"^bettong receive: (\d+) records \((\d+) bytes\) in (\d+\.\d{3}) s, "
    r"(?:(\d+) records/s|(too short to measure a rate))$", re.M)
PONY_NOTE = re.compile(r"^bettong (send|receive): note: ignoring (.*): Pony runtime flags", re.M)
TIMER_UNIT = 1 << 20  # giles' Pony timer counts in 2^20 ns


def run_send(*args, cwd=None, timeout=WAIT):
    r = subprocess.run([BIN, "send", *[str(a) for a in args]], capture_output=True,
                       timeout=timeout, cwd=cwd)
    r.err = r.stderr.decode("utf-8", "replace")
    return r


def sent_ok(*args, **kw):
    r = run_send(*args, **kw)
    assert r.returncode == 0, r.err
    return r


def summary(pattern, text):
    """(records, bytes, seconds, rate or None when too short to measure)."""
    found = pattern.findall(text)
    assert len(found) == 1, text
    n, nbytes, secs, rate, short = found[0]
    assert bool(rate) != bool(short), text
    return int(n), int(nbytes), float(secs), int(rate) if rate else None


def write(tmp_path, name, data):
    p = tmp_path / name
    p.write_bytes(data)
    return p


def bursts(reads, gap):
    """The bytes of `reads` ((time, chunk) pairs) grouped where the line went
    quiet for more than `gap` seconds, with the time each group began."""
    out = []
    for t, chunk in reads:
        if out and t - out[-1][2] <= gap:
            out[-1][1] += chunk
            out[-1][2] = t
        else:
            out.append([t, bytearray(chunk), t])
    return [(start, bytes(data)) for start, data, _ in out]


def u64_record(value, partition=b""):
    """giles' BinaryIntegerDataSource record: u32 BE (8 + partition), u64 BE, partition."""
    return struct.pack(">IQ", 8 + len(partition), value) + partition


def sent_log_lines(path):
    """giles' sent.txt: "<ns>, <payload>" lines, as (ns, payload)."""
    out = []
    for line in path.read_bytes().split(b"\n")[:-1]:
        ns, payload = line.split(b", ", 1)
        out.append((int(ns), payload))
    return out


# ------------------------------------------------------------- text files


def test_blank_lines_and_crlf_as_giles_reads_them(tcp_recorder, tmp_path):
    # Pony's FileLines: '\n' ends a line, a '\r' before it goes too; a last line
    # without '\n' is kept as it is. giles skips the empty lines.
    src = write(tmp_path, "in.txt", b"a\r\n\r\n\nb\n  \n\n\nlast\r")
    rec = tcp_recorder()
    r = sent_ok("--host", rec.addr, "--file", src)
    assert parse_frames(rec.data()) == [b"a", b"b", b"  ", b"last\r"]
    assert summary(SEND_SUMMARY, r.err)[:2] == (4, 4 * 4 + 1 + 1 + 2 + 5)


def test_wallaroo_word_count_command_line(tcp_recorder, tmp_path):
    # examples/python/word_count/README.md, with a smaller --messages: batches
    # of 5 lines every 100 ms, blank lines skipped, the file gone through again.
    src = write(tmp_path, "count_this.txt", b"one two\n\nthree\nfour five six\n\n")
    rec = tcp_recorder()
    t0 = time.monotonic()
    r = sent_ok("--host", rec.addr, "--file", src, "--batch-size", "5",
                "--interval", "100_000_000", "--messages", "12", "--ponythreads=1",
                "--ponynoblock", "--repeat", "--no-write")
    elapsed = time.monotonic() - t0
    lines = [b"one two", b"three", b"four five six"]
    reads = rec.wait_closed()[0]
    got = [parse_frames(b) for _, b in bursts(reads, 0.05)]
    assert got == [[lines[i % 3] for i in range(k, k + n)] for k, n in ((0, 5), (5, 5), (10, 2))]
    starts = [t for t, _ in bursts(reads, 0.05)]
    interval = (100_000_000 // TIMER_UNIT) * TIMER_UNIT / 1e9  # 0.0996 s on giles' timer
    assert all(b - a >= interval - 0.01 for a, b in zip(starts, starts[1:])), starts
    assert elapsed >= 2 * interval
    m = PONY_NOTE.search(r.err)
    assert m and m.group(2) == "--ponythreads, --ponynoblock", r.err
    assert summary(SEND_SUMMARY, r.err)[0] == 12


def test_messages_counts_records_and_zero_sends_none(tcp_recorder, tmp_path):
    src = write(tmp_path, "in.txt", b"x\ny\n")
    rec = tcp_recorder()
    sent_ok("-h", rec.addr, "-f", src, "-m", "5", "-r")
    assert parse_frames(rec.data()) == [b"x", b"y", b"x", b"y", b"x"]
    rec = tcp_recorder()
    r = sent_ok("--host", rec.addr, "--file", src, "--messages", "0", "--repeat")
    assert rec.data() == b""  # giles stops at once: connected, nothing sent
    assert summary(SEND_SUMMARY, r.err)[:2] == (0, 0)


@pytest.mark.parametrize("count", ["1_0", "0xa", "0b1010", "10"])
def test_giles_number_syntax(tcp_recorder, tmp_path, count):
    # giles reads numbers with Pony's String.i64: '_' ignored, 0x and 0b prefixes.
    src = write(tmp_path, "in.txt", b"r\n")
    rec = tcp_recorder()
    sent_ok("--host", rec.addr, "--file", src, "--repeat", "--messages", count)
    assert parse_frames(rec.data()) == [b"r"] * 10


def test_several_files_in_order_and_repeated(tcp_recorder, tmp_path):
    a = write(tmp_path, "a.txt", b"a1\na2")  # no newline at the end: still a line
    b = write(tmp_path, "b.txt", b"\nb1\n")
    rec = tcp_recorder()
    sent_ok("--host", rec.addr, "--file", f"{a},{b}")
    assert parse_frames(rec.data()) == [b"a1", b"a2", b"b1"]
    rec = tcp_recorder()
    sent_ok("--host", rec.addr, "--file", f"{a},{b},{a}", "--repeat", "--messages", "11")
    cycle = [b"a1", b"a2", b"b1", b"a1", b"a2"]
    assert parse_frames(rec.data()) == [cycle[i % 5] for i in range(11)]


# ------------------------------------------------------------- binary files


def test_wallaroo_alphabet_binary_msg_size(tcp_recorder, tmp_path):
    # examples/python/alphabet/README.md: votes.msg is framed 9-byte records
    # (4-byte length, letter, 4-byte count), sent 9 bytes at a time as they are.
    votes = [b"a" + struct.pack(">I", 1), b"b" + struct.pack(">I", 2), b"c" + struct.pack(">I", 3)]
    src = write(tmp_path, "votes.msg", frames(votes))
    rec = tcp_recorder()
    r = sent_ok("--host", rec.addr, "--file", src, "--batch-size", "50", "--interval",
                "10_000_000", "--messages", "7", "--binary", "--msg-size", "9", "--repeat",
                "--ponythreads=1", "--ponynoblock", "--no-write")
    assert parse_frames(rec.data()) == [votes[i % 3] for i in range(7)]
    assert summary(SEND_SUMMARY, r.err)[:2] == (7, 63)
    assert "note: ignoring --ponythreads, --ponynoblock" in r.err


def test_msg_size_cuts_the_file_blindly_and_says_so(tcp_recorder, tmp_path):
    # giles reads --msg-size bytes at a time whatever they hold; the last piece
    # may be shorter. bettong sends the same and notes what looks wrong.
    data = frames([b"12345", b"abcde"]) + b"xyz"
    src = write(tmp_path, "in.bin", data)
    rec = tcp_recorder()
    r = sent_ok("--host", rec.addr, "--file", src, "--binary", "--msg-size", "9")
    assert rec.data() == data
    assert summary(SEND_SUMMARY, r.err)[:2] == (3, 21)
    assert "is no multiple of --msg-size 9: its last record is 3 bytes" in r.err
    rec = tcp_recorder()
    r = sent_ok("--host", rec.addr, "--file", src, "--binary", "--msg-size", "7",
                "--messages", "2")
    assert rec.data() == data[:14]
    assert "record 1 of" in r.err and "4-byte length 3" in r.err


def test_variable_size_skips_empty_frames(tcp_recorder, tmp_path):
    # examples/pony/alphabet: --binary --variable-size reads each frame and sends
    # it framed again; an empty one is an empty message, which giles skips.
    payloads = [b"first", b"", b"\n\n", b"", b"last"]
    src = write(tmp_path, "in.bin", frames(payloads))
    rec = tcp_recorder()
    r = sent_ok("--host", rec.addr, "--file", src, "--batch-size", "1000", "--interval",
                "100_000", "--messages", "7", "--binary", "--variable-size", "--repeat",
                "--ponythreads=1", "--ponynoblock", "--no-write")
    kept = [b"first", b"\n\n", b"last"]
    assert parse_frames(rec.data()) == [kept[i % 3] for i in range(7)]
    assert summary(SEND_SUMMARY, r.err)[0] == 7


def test_binary_alone_sends_a_framed_file_as_it_is(tcp_recorder, tmp_path):
    # giles refuses --binary alone; bettong reads it as --framed (empty frames kept).
    data = frames([b"a", b"", b"bc"])
    rec = tcp_recorder()
    sent_ok("--host", rec.addr, "--binary", "--file", write(tmp_path, "in.bin", data))
    assert rec.data() == data


# ------------------------------------------------------------- sequences


def test_u64_sequence_binary_msg_size_12(tcp_recorder):
    # testing/correctness/apps/sequence_window_python/README.md, giles' command.
    rec = tcp_recorder()
    r = sent_ok("--host", rec.addr, "--batch-size", "10", "--interval", "100_000_000",
                "--ponythreads=1", "--binary", "--msg-size", "12", "--no-write", "--u64",
                "--messages", "25")
    reads = rec.wait_closed()[0]
    groups = bursts(reads, 0.05)
    assert [b for _, b in groups] == [b"".join(u64_record(v) for v in range(k, k + n))
                                      for k, n in ((1, 10), (11, 10), (21, 5))]
    assert summary(SEND_SUMMARY, r.err)[:2] == (25, 300)
    assert "note: giles' --u64" not in r.err  # the records alone: nothing to note


def test_u64_start_from_and_partition(tcp_recorder):
    rec = tcp_recorder()
    sent_ok("--host", rec.addr, "-u", "-v", "100", "-p", "key7", "-y", "-g", "16", "-m", "3")
    assert rec.data() == b"".join(u64_record(v, b"key7") for v in (101, 102, 103))


def test_u64_without_binary_is_framed_twice_as_giles_does(tcp_recorder):
    # giles' text mode frames whatever its source gives, and the u64 records
    # already carry a length: 16-byte frames holding 12-byte records.
    rec = tcp_recorder()
    r = sent_ok("--host", rec.addr, "--messages", "3", "--u64", "--ponythreads=1",
                "--ponynoblock")
    assert parse_frames(rec.data()) == [u64_record(v) for v in (1, 2, 3)]
    assert "get another one without --binary" in r.err
    rec = tcp_recorder()
    r = sent_ok("--host", rec.addr, "--messages", "2", "--u64", "--binary", "--variable-size",
                "--partition", "p")
    assert parse_frames(rec.data()) == [u64_record(v, b"p") for v in (1, 2)]
    assert "--binary --msg-size 13 sends the records alone" in r.err


def test_decimal_sequence_without_file(tcp_recorder):
    rec = tcp_recorder()
    sent_ok("--host", rec.addr, "--messages", "12", "--ponythreads=1", "--ponynoblock")
    assert parse_frames(rec.data()) == [str(v).encode() for v in range(1, 13)]
    rec = tcp_recorder()
    sent_ok("--host", rec.addr, "--messages", "3", "--start-from", "99_999")
    assert parse_frames(rec.data()) == [b"100000", b"100001", b"100002"]


def test_long_u64_sequence_unpaced(tcp_recorder):
    # Without batch flags the sequence goes as fast as the receiver reads, made
    # a window at a time: check the whole of it.
    n = 200_000
    rec = tcp_recorder()
    r = sent_ok("--host", rec.addr, "-m", n, "-u", "-y", "-g", "12")
    data = rec.data()
    assert len(data) == 12 * n
    values = struct.unpack(">" + "IQ" * n, data)
    assert values[0::2] == (8,) * n
    assert values[1::2] == tuple(range(1, n + 1))
    assert summary(SEND_SUMMARY, r.err)[:2] == (n, 12 * n)


# ------------------------------------------------------------- pacing


def test_batch_size_alone_uses_giles_default_interval(tcp_recorder, tmp_path):
    # --batch-size without --interval: giles' 5_000_000 ns, i.e. 4 timer units.
    src = write(tmp_path, "in.txt", b"".join(b"line %d\n" % i for i in range(60)))
    rec = tcp_recorder()
    log = tmp_path / "sent.txt"
    sent_ok("--host", rec.addr, "--file", src, "--batch-size", "3", "--messages", "60",
            "--sent-log", log)
    assert len(parse_frames(rec.data())) == 60
    times = sorted({ns for ns, _ in sent_log_lines(log)})
    sizes = [sum(1 for ns, _ in sent_log_lines(log) if ns == t) for t in times]
    assert sizes == [3] * 20
    gap = statistics.median(b - a for a, b in zip(times, times[1:]))
    assert 3.9e6 <= gap <= 4.9e6, gap  # 4 * 1048576 ns, not 5 ms


def test_interval_alone_uses_giles_default_batch(tcp_recorder, tmp_path):
    src = write(tmp_path, "in.txt", b"".join(b"%04d\n" % i for i in range(1200)))
    rec = tcp_recorder()
    sent_ok("--host", rec.addr, "--file", src, "--interval", "200_000_000")
    groups = bursts(rec.wait_closed()[0], 0.1)
    assert [len(parse_frames(b)) for _, b in groups] == [500, 500, 200]
    assert groups[1][0] - groups[0][0] >= 0.19 and groups[2][0] - groups[1][0] >= 0.19


def test_interval_rounds_to_giles_timer(tcp_recorder, tmp_path):
    # 1_500_000 ns is one unit of giles' timer: 1_048_576 ns between batches.
    src = write(tmp_path, "in.txt", b"x\n")
    rec = tcp_recorder()
    log = tmp_path / "sent.txt"
    sent_ok("--host", rec.addr, "--file", src, "--repeat", "--messages", "150",
            "--batch-size", "1", "--interval", "1_500_000", "--sent-log", log)
    assert len(parse_frames(rec.data())) == 150
    times = [ns for ns, _ in sent_log_lines(log)]
    gap = statistics.median(b - a for a, b in zip(times, times[1:]))
    assert 0.9e6 <= gap <= 1.3e6, gap


def test_vary_by_follows_giles_drunk_walk(tcp_recorder, tmp_path):
    # Batches 1..1000 have --batch-size records; from batch 1001 on, every 1001
    # batches, the size grows by a random 0..vary_by-1 (constant in between).
    src = write(tmp_path, "in.txt", b"v\n")
    rec = tcp_recorder()
    log = tmp_path / "sent.txt"
    total = 1000 + 2500
    sent_ok("--host", rec.addr, "--file", src, "--repeat", "--messages", total,
            "--batch-size", "1", "--interval", "1", "--vary-by", "1000", "--sent-log", log,
            timeout=60)
    assert len(parse_frames(rec.data(timeout=60))) == total
    entries = sent_log_lines(log)
    sizes = []
    for i, (ns, _) in enumerate(entries):
        if i and ns == entries[i - 1][0]:
            sizes[-1] += 1
        else:
            sizes.append(1)
    assert sizes[:1000] == [1] * 1000
    last = sizes.pop()  # cut short by --messages
    for start in range(1000, len(sizes), 1001):
        walk = sizes[start:start + 1001]
        assert len(set(walk)) == 1 and 1 <= walk[0] <= 1000, walk
    assert 1 <= last <= 1000


def test_sent_log_is_giles_sent_txt(tcp_recorder, tmp_path):
    src = write(tmp_path, "in.txt", b"alpha\n\nbeta gamma\n")
    rec = tcp_recorder()
    log = tmp_path / "sent.txt"
    before = time.time_ns()
    sent_ok("--host", rec.addr, "--file", src, "--sent-log", log)
    after = time.time_ns()
    entries = sent_log_lines(log)
    assert [p for _, p in entries] == [b"alpha", b"beta gamma"]
    assert all(before <= ns <= after for ns, _ in entries)  # wall-clock nanoseconds
    # --binary --msg-size: giles logs the whole record, its own header included.
    rec = tcp_recorder()
    sent_ok("--host", rec.addr, "--u64", "--binary", "--msg-size", "12", "--messages", "2",
            "--sent-log", log)
    raw = log.read_bytes()
    m = re.fullmatch(rb"(\d+), (.{12})\n(\d+), (.{12})\n", raw, re.S)
    assert m and (m.group(2), m.group(4)) == (u64_record(1), u64_record(2)), raw


def test_no_write_writes_no_sent_txt(tcp_recorder, tmp_path):
    src = write(tmp_path, "in.txt", b"a\n")
    rec = tcp_recorder()
    sent_ok("--host", rec.addr, "--file", src, "--no-write", cwd=tmp_path)
    assert parse_frames(rec.data()) == [b"a"]
    rec = tcp_recorder()
    sent_ok("--host", rec.addr, "--file", src, "-w", cwd=tmp_path)
    assert parse_frames(rec.data()) == [b"a"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt"]


def test_pony_flags_with_values_are_skipped(tcp_recorder, tmp_path):
    src = write(tmp_path, "in.txt", b"a\nb\n")
    rec = tcp_recorder()
    r = sent_ok("--ponythreads", "4", "--host", rec.addr, "--ponypinasio", "--file", src,
                "--ponygcfactor=2.0", "--ponynoblock", "--ponythreads=1")
    assert parse_frames(rec.data()) == [b"a", b"b"]
    notes = PONY_NOTE.findall(r.err)
    assert notes == [("send", "--ponythreads, --ponygcfactor, --ponynoblock, --ponypinasio")]


# ------------------------------------------------------------- refusals


@pytest.mark.parametrize("args, message", [
    (["--binary", "--msg-size", "9", "--variable-size", "FILE"], "can't be used together"),
    (["--msg-size", "9", "FILE"], "add --binary"),
    (["--variable-size", "FILE"], "add --binary"),
    (["--u64", "--file", "FILE"], "--u64 makes giles' sequence"),
    (["--start-from", "5", "FILE"], "--start-from starts giles' counter"),
    (["--partition", "k", "FILE"], "--partition is appended to --u64 records only"),
    (["--partition", "k", "--messages", "3"], "--partition is appended to --u64 records only"),
    (["--messages", "5", "--binary"], "--binary requires either --msg-size or --variable-size"),
    (["--messages", "5", "--binary", "--msg-size", "8"], "decimal counter values"),
    (["--messages", "5", "--u64", "--binary", "--msg-size", "8"], "give --msg-size 12"),
    (["--messages", "5", "--u64", "-p", "ab", "-y", "-g", "12"], "give --msg-size 14"),
    (["--u64"], "missing input file"),
    (["--messages", "5", "--repeat"], "--repeat goes through a file again"),
    (["--batch-size", "0", "FILE"], "--batch-size 0 sends nothing"),
    (["--interval", "0", "FILE"], "--interval 0 does not repeat"),
    (["--rate", "100", "--batch-size", "5", "FILE"], "--rate and giles'"),
    (["--no-write", "--sent-log", "x.txt", "FILE"], "contradict"),
    (["--msg-size", "0", "--binary", "FILE"], "--msg-size 0"),
    (["--messages", "1x", "FILE"], "bad --messages '1x'"),
    (["--messages=-1", "FILE"], "bad --messages '-1'"),
    (["--interval", "0x", "FILE"], "bad --interval"),
    (["--resumable", "--batch-size", "5", "FILE"], "--resumable paces with --rate only"),
    (["--resumable", "--messages", "5"], "--resumable needs an input file"),
    (["--file", "FILE,,FILE"], "an empty file name"),
    (["--file", "FILE,-"], "'-' (stdin) cannot be one of several files"),
    (["--ponyversion", "FILE"], "there is no Pony runtime here"),
    (["--ponythreads"], "option '--ponythreads' needs a value"),
    (["--ponynoblock=1", "FILE"], "option '--ponynoblock=1' takes no value"),
])
def test_refused_combinations(tcp_recorder, tmp_path, args, message):
    src = write(tmp_path, "in.txt", b"a\n")
    rec = tcp_recorder()
    args = [str(src) if a == "FILE" else a.replace("FILE", str(src)) for a in args]
    r = run_send("--host", rec.addr, *args)
    assert r.returncode == 2, r.err
    assert message in r.err, r.err
    assert "usage: bettong send" in r.err
    assert rec.connections() == 0


# ------------------------------------------------------------- an application


def test_giles_u64_sequence_into_an_application(bt):
    """A Wallaroo application fed by giles' sequence command line (port 0 for
    the engine's source, read from its log)."""
    recv = bt.receiver()
    eng = bt.engine(app_path("u64_app"), ins=(), outs=[recv.port], wait=False,
                    extra=["--in", "127.0.0.1:0"])
    port = int(eng.wait_log(r"source '[^']*' listening on 127\.0\.0\.1:(\d+)").group(1))
    n = 300
    sent_ok("--host", "127.0.0.1:%d" % port, "--batch-size", "100", "--interval", "10_000_000",
            "--ponythreads=1", "--binary", "--msg-size", "12", "--no-write", "--u64",
            "--messages", n)
    keys = [0, 1, 2 ** 32, 2 ** 40 + 3, 2 ** 63, 2 ** 64 - 1]
    sums, expected = {}, []
    for v in range(1, n + 1):
        k = keys[v % len(keys)]
        sums[k] = sums.get(k, 0) + v
        expected.append("key=%d value=%d sum=%d" % (k, v, sums[k]))
    got = lines_of(recv.wait_bytes(sum(len(e) + 1 for e in expected)))
    assert sorted(got) == sorted(expected)
    eng.stop()


WALLAROO061 = Path(os.environ.get("WALLAROO061", "/tmp/w061"))


def test_wallaroo_word_count_with_its_readme_command_line(bt):
    """Wallaroo 0.6.1's examples/python/word_count fed by its README's sender
    command line (without --repeat): count_this.txt's empty lines are skipped
    as giles skips them, so the output is the 482 counts of _expected.json
    (empty frames would add 10 counts of the empty word). Needs Wallaroo's
    sources (WALLAROO061) and the 0.6 API."""
    import wallaroo
    example = WALLAROO061 / "examples" / "python" / "word_count"
    if not (example / "count_this.txt").exists():
        pytest.skip("Wallaroo 0.6.1's sources are not at %s (set WALLAROO061)" % WALLAROO061)
    if not hasattr(wallaroo, "source"):
        pytest.skip("this build has no Wallaroo 0.6 API (wallaroo.source)")
    recv = bt.receiver()
    eng = bt.engine(example / "word_count.py", outs=[recv.port], wait=False,
                    extra=["--in", "127.0.0.1:0"])
    port = int(eng.wait_log(r"source '[^']*' listening on 127\.0\.0\.1:(\d+)").group(1))
    r = sent_ok("--host", "127.0.0.1:%d" % port, "--file", example / "count_this.txt",
                "--batch-size", "5", "--interval", "100_000_000", "--messages", "10000000",
                "--ponythreads=1", "--ponynoblock", "--no-write")
    lines = [l for l in (example / "count_this.txt").read_text().split("\n") if l]
    assert summary(SEND_SUMMARY, r.err)[0] == len(lines)
    got = lines_of(recv.wait_lines(482, timeout=30))
    assert len(got) == 482
    last = {}
    for line in got:
        word, _, count = line.rpartition(" => ")
        last[word] = int(count)
    assert last == json.loads((example / "_expected.json").read_text())
    eng.stop()


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


def test_send_rate_of_a_tiny_send_is_too_short_to_measure(tcp_recorder, tmp_path):
    rec = tcp_recorder()
    r = sent_ok("--to", rec.addr, write(tmp_path, "in.txt", b"a\nb\n"))
    assert summary(SEND_SUMMARY, r.err)[3] is None
    assert "too short to measure a rate" in r.err
    assert parse_frames(rec.data()) == [b"a", b"b"]
