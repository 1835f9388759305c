"""Resilience of a worker alone (docs/resilience.md), end to end: `bettong run
--run-with-resilience` killed with SIGKILL and started again with the same
command line, fed by `bettong send --resumable` and read by `bettong receive
--exactly-once`; the output must be the output of a run without a crash, byte
for byte. Also: plain tools with resilience on, a clean stop and restart, a
damaged checkpoint, a directory of another application or in use, a full disk,
and the refusals.

Every wait is on something observable (a log line, the receiver's file, an
exit); kill points are drawn from a seeded random.Random whose seed is printed
(set BETTONG_TEST_SEED to replay one)."""

import collections
import os
import random
import re
import shutil
import string
import subprocess
import tempfile

import pytest

from conftest import (BIN, EXAMPLES, example_path, free_port, load_module, wait_until)

pytestmark = pytest.mark.skipif(not os.access(BIN, os.X_OK), reason="no binary at %s" % BIN)

TALES = EXAMPLES / "word_count" / "data" / "bettong_tales.txt"
MARKET = EXAMPLES / "market_spread" / "data" / "market.txt"
ORDERS = EXAMPLES / "market_spread" / "data" / "orders.txt"

FAST = 50_000_000               # --time-between-checkpoints: 50 ms
NEVER = 3_600_000_000_000       # one hour: only the checkpoint taken at a clean stop

HOLDS_EPOCH = r"exactly-once receiver holds epoch (\d+) \(committed (\d+)\)"
RECOVERED = r"recovered from checkpoint (\d+) in "
COMPLETE = r"checkpoint (\d+) complete \("
ACKED_RE = re.compile(r"bettong send: acknowledged (\d+) records")


@pytest.fixture(scope="module")
def wc():
    return load_module(example_path("word_count"))


@pytest.fixture(scope="module")
def ms():
    return load_module(example_path("market_spread"))


@pytest.fixture
def rng():
    seed = int(os.environ.get("BETTONG_TEST_SEED") or random.SystemRandom().randrange(1 << 30))
    print("random seed: %d (BETTONG_TEST_SEED=%d replays it)" % (seed, seed))
    return random.Random(seed)


def text_lines(path):
    """The records `bettong send` makes of a text file: its lines, newline removed."""
    return path.read_text("utf-8").split("\n")[:-1]


def word_count_output(wc, lines, start=None):
    """What word count writes for `lines` on one connection, in order: every
    word's running total, starting from the totals `start`."""
    counts = collections.Counter(start or {})
    out = []
    for line in lines:
        for w in wc.split_words(line):
            counts[w] += 1
            out.append("%s => %d\n" % (w, counts[w]))
    return "".join(out).encode("utf-8"), counts


def market_spread_output(ms, market_lines, order_lines):
    """What market spread writes for the orders once all market data is in."""
    states = collections.defaultdict(ms.SymbolData)
    for line in market_lines:
        md = ms.parse_market_data(line)
        states[md.symbol].bid, states[md.symbol].offer = md.bid, md.offer
    out = []
    for line in order_lines:
        order = ms.parse_order(line)
        reason = ms.order_rejection(order, states[order.symbol])
        if reason is None:
            out.append("%s,%s,ACCEPT\n" % (order.order_id, order.symbol))
        else:
            out.append("%s,%s,REJECT,%s\n" % (order.order_id, order.symbol, reason))
    return "".join(out).encode("utf-8")


def resil_flags(rdir, interval=FAST, debug=False):
    flags = ["--run-with-resilience", "--resilience-dir", rdir,
             "--time-between-checkpoints", interval]
    return flags + (["--log-level", "debug"] if debug else [])


def eo_receiver(bt):
    return bt.receiver(extra=["--exactly-once"])


def resumable_sender(bt, port, path, stream, repeat=1, rate=0, extra=()):
    return bt.send_async(port, path, framed=False, repeat=repeat,
                         extra=["--resumable", "--stream", stream, "--rate", rate] + list(extra))


def finish_sender(bt, proc, records, timeout=40):
    """The resumable sender exits 0 and says every record was acknowledged."""
    rc, out = bt.finish(proc, timeout=timeout)
    assert rc == 0, "bettong send --resumable exited with %d:\n%s" % (rc, out)
    last = out.strip().splitlines()[-1]
    m = ACKED_RE.search(last)
    assert m and int(m.group(1)) == records, "its last line: %r\n%s" % (last, out)
    return out


def stop_ok(engine):
    rc, err = engine.stop()
    assert rc == 0, "engine exited with %d after SIGTERM:\n%s" % (rc, err)
    assert "Traceback" not in err, err
    return err


def wait_output(recv, expected, timeout=20):
    """The receiver's file grows to the expected length; then it must be equal."""
    wait_until(lambda: len(recv.data()) >= len(expected) or recv.proc.poll() is not None,
               timeout, "%d bytes of output (have %d)" % (len(expected), len(recv.data())))
    got = recv.data()
    assert_same_output(got, expected)
    return got


def assert_same_output(got, expected):
    if got == expected:
        return
    at = next((i for i, (a, b) in enumerate(zip(got, expected)) if a != b),
              min(len(got), len(expected)))
    line = expected.count(b"\n", 0, at)
    pytest.fail("output differs from the run without a crash at byte %d (line %d): "
                "%d bytes, expected %d\n got: %r\nwant: %r"
                % (at, line + 1, len(got), len(expected), got[max(0, at - 80):at + 80],
                   expected[max(0, at - 80):at + 80]))


# ------------------------------------------------------------ crashes, exactly-once


def kill_plan(rng, kills=int(os.environ.get("BETTONG_TEST_KILLS", "3"))):
    """Where to kill: for kill i, once the receiver's file holds a fraction f_i
    of the expected output (increasing, one in each third of 5 %..75 %) and
    the engine then running has completed c_i checkpoints since it started
    (0: at once; after a restart that can be right after its recovery)."""
    lo, hi = 0.05, 0.75
    step = (hi - lo) / kills  # one kill in each stretch of the run
    fractions = [rng.uniform(lo + i * step, lo + (i + 1) * step) for i in range(kills)]
    return [(f, rng.randint(0, 3)) for f in fractions]


def run_with_kills(bt, eng, recv, sender, total_bytes, plan):
    """SIGKILL `eng` at the points of `plan` and start it again each time with
    the same command line; returns the engine that runs at the end."""
    print("kill plan (output fraction, checkpoints after start): %s"
          % [(round(f, 3), c) for f, c in plan])
    for i, (fraction, ckpts) in enumerate(plan):
        target = int(total_bytes * fraction)
        wait_until(lambda: len(recv.data()) >= target, 30,
                   "kill %d: %d bytes of output (have %d)" % (i + 1, target, len(recv.data())))
        if ckpts:
            eng.wait_log(COMPLETE, count=ckpts, timeout=15)
        size = len(recv.data())
        assert sender.poll() is None, (
            "kill %d came after the sender had finished: the run is too short" % (i + 1))
        err = eng.kill()
        print("kill %d at %d of %d bytes of output; the engine's last lines:\n  %s"
              % (i + 1, size, total_bytes, "\n  ".join(err.strip().splitlines()[-3:])))
        eng = bt.restart(eng)
        m = eng.wait_log(RECOVERED)
        assert int(m.group(1)) >= 1, eng.stderr()
        # The receiver is back in the game: its epochs are known, the run goes on.
        eng.wait_log(HOLDS_EPOCH)
    return eng


def test_word_count_exactly_once_across_kills(bt, wc, rng, tmp_path):
    repeat = 3
    lines = text_lines(TALES)
    expected, _ = word_count_output(wc, lines * repeat)
    recv = eo_receiver(bt)
    eng = bt.engine_on_free_ports(example_path("word_count"), 1, outs=[recv.port],
                                  extra=resil_flags(tmp_path / "resil", debug=True))
    port = eng.in_ports[0]
    eng.wait_log(r"no checkpoint in \S+ yet: starting with empty state")
    eng.wait_log(r"resilience: checkpoints every 0\.050 s")
    sender = resumable_sender(bt, port, TALES, "tales", repeat=repeat, rate=600)
    eng = run_with_kills(bt, eng, recv, sender, len(expected), kill_plan(rng))
    out = finish_sender(bt, sender, len(lines) * repeat)
    assert "connection lost" in out, out  # it did reconnect, without being told
    wait_output(recv, expected)
    stop_ok(eng)
    assert recv.stop() == 0
    assert_same_output(recv.data(), expected)


def test_market_spread_exactly_once_across_kills(bt, ms, rng, tmp_path):
    repeat = 25
    market, orders = text_lines(MARKET), text_lines(ORDERS)
    expected = market_spread_output(ms, market, orders * repeat)
    recv = eo_receiver(bt)
    eng = bt.engine_on_free_ports(example_path("market_spread"), 2, outs=[recv.port],
                                  extra=resil_flags(tmp_path / "resil", debug=True))
    market_port, orders_port = eng.in_ports
    eng.wait_log(HOLDS_EPOCH)
    # All market data first: acknowledged means in a complete checkpoint.
    finish_sender(bt, resumable_sender(bt, market_port, MARKET, "market"), len(market))
    sender = resumable_sender(bt, orders_port, ORDERS, "orders", repeat=repeat, rate=500)
    eng = run_with_kills(bt, eng, recv, sender, len(expected), kill_plan(rng))
    out = finish_sender(bt, sender, len(orders) * repeat)
    assert "connection lost" in out, out
    wait_output(recv, expected)
    stop_ok(eng)
    assert recv.stop() == 0
    assert_same_output(recv.data(), expected)


# ------------------------------------------------------------ plain tools, clean stops


def test_plain_sender_and_receiver_with_resilience(bt, wc, tmp_path):
    lines = text_lines(TALES)
    expected, _ = word_count_output(wc, lines)
    recv = bt.receiver()
    eng = bt.engine_on_free_ports(example_path("word_count"), 1, outs=[recv.port],
                                  extra=resil_flags(tmp_path / "resil"))
    port = eng.in_ports[0]
    bt.send(port, TALES, framed=False)
    wait_output(recv, expected)
    eng.wait_log(r"sink 127\.0\.0\.1:%d: plain receiver \(no exactly-once greeting\)" % recv.port)
    stop_ok(eng)
    assert recv.data() == expected


def test_clean_stop_and_restart_keeps_the_counts(bt, wc, tmp_path):
    lines = text_lines(TALES)
    part_a, part_b = lines[:len(lines) // 2], lines[len(lines) // 2:]
    out_a, totals_a = word_count_output(wc, part_a)
    out_b, totals = word_count_output(wc, part_b, start=totals_a)
    both = [w for w in totals_a if totals[w] > totals_a[w]]
    assert both
    recv = bt.receiver()
    eng = bt.engine_on_free_ports(example_path("word_count"), 1, outs=[recv.port],
                                  extra=resil_flags(tmp_path / "resil"))
    port = eng.in_ports[0]
    bt.send_payloads(port, part_a)
    wait_output(recv, out_a)
    stop_ok(eng)
    eng = bt.restart(eng)
    assert int(eng.wait_log(RECOVERED).group(1)) >= 1
    bt.send_payloads(port, part_b)
    got = wait_output(recv, out_a + out_b)
    stop_ok(eng)
    w = max(both, key=lambda w: totals[w])
    assert ("%s => %d\n" % (w, totals[w])).encode() in got[len(out_a):]


def test_clean_stop_and_restart_resumes_a_stream_exactly_once(bt, wc, tmp_path):
    """The resumable protocol across a clean stop: the second sender, with the
    same stream name and the whole file, is told to start after part A."""
    lines = text_lines(TALES)
    part_a = lines[:len(lines) // 3]
    file_a = bt.path("part-a.txt")
    file_a.write_text("".join(line + "\n" for line in part_a), "utf-8")
    out_a, _ = word_count_output(wc, part_a)
    expected, _ = word_count_output(wc, lines)
    recv = eo_receiver(bt)
    eng = bt.engine_on_free_ports(example_path("word_count"), 1, outs=[recv.port],
                                  extra=resil_flags(tmp_path / "resil"))
    port = eng.in_ports[0]
    finish_sender(bt, resumable_sender(bt, port, file_a, "tales"), len(part_a))
    wait_output(recv, out_a)
    stop_ok(eng)
    eng = bt.restart(eng)
    assert int(eng.wait_log(RECOVERED).group(1)) >= 1
    sender = resumable_sender(bt, port, TALES, "tales")
    out = finish_sender(bt, sender, len(lines))
    assert "sent %d records" % (len(lines) - len(part_a)) in out, out
    eng.wait_log(r"stream 'tales' \(connection \d+ from [^)]*\) resumes at record %d\b"
                 % len(part_a))
    wait_output(recv, expected)
    stop_ok(eng)
    assert recv.stop() == 0
    assert recv.data() == expected


def snap_path(rdir, n, worker="initializer"):
    return rdir / worker / ("ckpt-%020d.snap" % n)


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_damaged_checkpoint_falls_back_to_the_one_before(bt, wc, tmp_path, damage):
    lines = text_lines(TALES)
    part_a, part_b = lines[:len(lines) // 2], lines[len(lines) // 2:]
    out_a, totals_a = word_count_output(wc, part_a)
    out_b, totals_ab = word_count_output(wc, part_b, start=totals_a)
    both = [w for w in totals_a if totals_ab[w] > totals_a[w]]
    rdir = tmp_path / "resil"
    recv = bt.receiver()
    eng = bt.engine_on_free_ports(example_path("word_count"), 1, outs=[recv.port],
                                  extra=resil_flags(rdir, interval=NEVER))
    port = eng.in_ports[0]
    bt.send_payloads(port, part_a)
    wait_output(recv, out_a)
    stop_ok(eng)
    assert snap_path(rdir, 1).exists() and not snap_path(rdir, 2).exists()

    eng = bt.restart(eng)
    assert eng.wait_log(RECOVERED).group(1) == "1"
    bt.send_payloads(port, part_b)
    wait_output(recv, out_a + out_b)
    stop_ok(eng)
    snap2 = snap_path(rdir, 2)
    assert snap2.exists()

    raw = bytearray(snap2.read_bytes())
    if damage == "flip":
        raw[len(raw) // 2] ^= 0x5A
        why = "checksum"
    else:
        del raw[len(raw) // 2:]
        why = "truncated"
    snap2.write_bytes(bytes(raw))

    eng = bt.restart(eng)
    m = eng.wait_log(r"cannot recover from checkpoint 2: ([^\n]*)")
    assert why in m.group(1), m.group(0)
    assert "trying the one before" in m.group(1), m.group(0)
    assert eng.wait_log(RECOVERED).group(1) == "1"
    # The state is A's alone: B's first half counts as it did after A.
    part_c = part_b[:len(part_b) // 2]
    out_c, totals_ac = word_count_output(wc, part_c, start=totals_a)
    bt.send_payloads(port, part_c)
    got = wait_output(recv, out_a + out_b + out_c)
    stop_ok(eng)
    w = max(both, key=lambda w: totals_ab[w])
    assert totals_ac[w] < totals_ab[w]
    assert ("%s => %d\n" % (w, totals_ac[w])).encode() in got[len(out_a) + len(out_b):]

    # That stop's checkpoint (numbered 2 again, after the 1 recovered) replaces
    # the damaged one: a fourth run has the state of A and C.
    eng = bt.restart(eng)
    assert eng.wait_log(RECOVERED).group(1) == "2"
    assert "cannot recover" not in eng.stderr()
    out_c2, _ = word_count_output(wc, part_c, start=totals_ac)
    bt.send_payloads(port, part_c)
    wait_output(recv, out_a + out_b + out_c + out_c2)
    stop_ok(eng)


# ------------------------------------------------------------ the directory


def test_directory_of_another_application_is_refused(bt, tmp_path):
    rdir = tmp_path / "resil"
    recv = bt.receiver()
    eng = bt.engine_on_free_ports(example_path("word_count"), 1, outs=[recv.port],
                                  extra=resil_flags(rdir))
    eng.wait_log(r"ready: application")
    stop_ok(eng)
    other = bt.engine(example_path("celsius"), ins=[free_port()], outs=[recv.port],
                      extra=resil_flags(rdir), wait=False)
    rc, err = other.wait_exit()
    assert rc == 2, err
    assert "belongs to another application" in err, err
    # The refusal changed nothing: word count still recovers from its directory.
    eng = bt.restart(eng)
    eng.wait_log(RECOVERED)
    stop_ok(eng)


def test_directory_in_use_is_refused(bt, tmp_path):
    rdir = tmp_path / "resil"
    recv = bt.receiver()
    eng = bt.engine_on_free_ports(example_path("word_count"), 1, outs=[recv.port],
                                  extra=resil_flags(rdir))
    second = bt.engine(example_path("word_count"), ins=[free_port()], outs=[recv.port],
                       extra=resil_flags(rdir), wait=False)
    rc, err = second.wait_exit()
    assert rc == 2, err
    assert "in use by another worker" in err, err
    assert eng.alive()
    # Another worker name has its own subdirectory of the same DIR.
    named = bt.engine_on_free_ports(example_path("word_count"), 1, outs=[recv.port],
                                    extra=resil_flags(rdir) + ["--name", "second"])
    named.wait_log(r"no checkpoint in \S+/second yet")
    stop_ok(named)
    stop_ok(eng)


# ------------------------------------------------------------ a full disk


def random_word_lines(rng, nlines, words_per_line=12):
    letters = string.ascii_lowercase
    return [" ".join("".join(rng.choice(letters) for _ in range(rng.randint(6, 12)))
                     for _ in range(words_per_line)) for _ in range(nlines)]


@pytest.fixture
def small_tmpfs(bt):
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    where = tempfile.mkdtemp(prefix="bettong-tmpfs-")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", where],
                       capture_output=True, timeout=10)
    if r.returncode != 0:
        os.rmdir(where)
        pytest.skip("mount -t tmpfs is not permitted: %s" % r.stderr.decode().strip())
    try:
        yield where
    finally:
        bt.cleanup()  # nothing of the test may hold the mount any more
        r = subprocess.run(["umount", where], capture_output=True, timeout=10)
        if r.returncode != 0:  # something still holds it: detach it anyway
            subprocess.run(["umount", "-l", where], capture_output=True, timeout=10)
        shutil.rmtree(where, ignore_errors=True)


def test_disk_full_fails_checkpoints_but_processing_goes_on(bt, wc, rng, small_tmpfs):
    # About 40 bytes of state per distinct word: 12000 of them need twice the space.
    first = random_word_lines(rng, 1000)
    second = random_word_lines(rng, 300)
    out_1, totals = word_count_output(wc, first)
    out_2, _ = word_count_output(wc, second, start=totals)
    recv = bt.receiver()
    eng = bt.engine_on_free_ports(example_path("word_count"), 1, outs=[recv.port],
                                  extra=resil_flags(small_tmpfs))
    port = eng.in_ports[0]
    bt.send_payloads(port, first)
    m = eng.wait_log(r"checkpoint (\d+) failed: ([^\n]*)", timeout=20)
    assert "No space left on device" in m.group(2), m.group(0)
    assert "processing goes on" in m.group(0)
    wait_output(recv, out_1)
    bt.send_payloads(port, second)  # after the failure: still counted, still written
    wait_output(recv, out_1 + out_2)
    assert eng.alive()
    stop_ok(eng)
    # The failures left the last complete checkpoint as it was: a restart
    # recovers from the one the failure messages named.
    fails = re.findall(r"checkpoint (\d+) failed: .*; checkpoint (\d+) stays the one",
                       eng.stderr())
    assert fails
    stays = fails[-1][1]
    eng = bt.restart(eng)
    assert eng.wait_log(RECOVERED).group(1) == stays
    stop_ok(eng)


# ------------------------------------------------------------ refusals


@pytest.mark.parametrize("flags", [
    ["--workers", "2"],
    ["--cluster-initializer", "--worker-count", "2"],
    ["--join", "127.0.0.1:9"],
    ["--control", "127.0.0.1:9"],
], ids=["workers", "initializer", "join", "control"])
def test_resilience_in_a_cluster_is_refused(bt, tmp_path, flags):
    rdir = tmp_path / "resil"
    eng = bt.engine(example_path("word_count"), ins=[free_port()], outs=[free_port()],
                    extra=resil_flags(rdir) + flags, wait=False)
    rc, err = eng.wait_exit()
    assert rc == 2, err
    assert "--run-with-resilience runs on a worker alone" in err, err
    assert not rdir.exists()


def test_resumable_sender_refused_without_resilience(bt, wc):
    lines = text_lines(TALES)[:40]
    expected, _ = word_count_output(wc, lines)
    recv = bt.receiver()
    eng = bt.engine_on_free_ports(example_path("word_count"), 1, outs=[recv.port])
    port = eng.in_ports[0]
    rc, out = bt.finish(resumable_sender(bt, port, TALES, "tales"), timeout=20)
    assert rc == 2, out
    assert "without resilience" in out, out
    eng.wait_log(r"resumable client, but the engine runs without resilience")
    assert eng.alive()
    bt.send_payloads(port, lines)  # the engine goes on serving plain clients
    wait_output(recv, expected)
    stop_ok(eng)
    assert recv.data() == expected
