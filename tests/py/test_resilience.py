"""Resilience (docs/resilience.md), end to end: `bettong run
--run-with-resilience` killed with SIGKILL and started again with the same
command line, fed by `bettong send --resumable` and read by `bettong receive
--exactly-once`; the output must be the output of a run without a crash, byte
for byte. Also: plain tools with resilience on, a clean stop and restart, a
damaged checkpoint, a directory of another application or in use, a full disk,
and the refusals.

On a cluster of two workers (`--workers 2`, and Wallaroo's flags with one
process per worker): a worker killed at random three times, the cluster formed
again from its last complete checkpoint each time, every word's running totals
exact; market spread likewise; a clean stop and restart; a worker that keeps
dying stops the cluster.

Every wait is on something observable (a log line, the receiver's file, an
exit). Sources listen on port 0, except where a restarted engine must come
back on the port a resumable sender reconnects to: that port is reserved
(conftest.py), and so is the coordinator's of workers that restart
themselves with their own command line. Kill points are drawn from a seeded random.Random whose seed is printed
(set BETTONG_TEST_SEED to replay one)."""

import collections
import os
import random
import re
import shutil
import signal
import string
import subprocess
import tempfile

import pytest

from conftest import BIN, EXAMPLES, children_of, example_path, load_module, wait_until

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
    """The records `bettong send` makes of a text file: its lines, newline removed,
    the empty ones skipped (as Wallaroo's giles sender does)."""
    return [line for line in path.read_text("utf-8").split("\n")[:-1] if line]


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


def kill_plan(rng, kills=int(os.environ.get("BETTONG_TEST_KILLS", "3")), hi=0.75):
    """Where to kill: for kill i, once the receiver's file holds a fraction f_i
    of the expected output (increasing, one in each of `kills` equal stretches
    of 5 %..`hi`) and
    the engine then running has completed c_i checkpoints since it started
    (0: at once; after a restart that can be right after its recovery)."""
    lo = 0.05
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
    # The sender reconnects to the port of the engine restarted: reserved.
    eng = bt.engine(example_path("word_count"), ins=[bt.reserve_port()], outs=[recv.port],
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
    # The senders reconnect to the ports of the engine restarted: reserved.
    eng = bt.engine(example_path("market_spread"), ins=[bt.reserve_port(), bt.reserve_port()],
                    outs=[recv.port], extra=resil_flags(tmp_path / "resil", debug=True))
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
    eng = bt.engine(example_path("word_count"), ins=[0], outs=[recv.port],
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
    eng = bt.engine(example_path("word_count"), ins=[0], outs=[recv.port],
                    extra=resil_flags(tmp_path / "resil"))
    port = eng.in_ports[0]
    bt.send_payloads(port, part_a)
    wait_output(recv, out_a)
    stop_ok(eng)
    eng = bt.restart(eng)
    assert int(eng.wait_log(RECOVERED).group(1)) >= 1
    port = eng.in_ports[0]  # port 0 again: the kernel picked another
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
    eng = bt.engine(example_path("word_count"), ins=[0], outs=[recv.port],
                    extra=resil_flags(tmp_path / "resil"))
    port = eng.in_ports[0]
    finish_sender(bt, resumable_sender(bt, port, file_a, "tales"), len(part_a))
    wait_output(recv, out_a)
    stop_ok(eng)
    eng = bt.restart(eng)
    assert int(eng.wait_log(RECOVERED).group(1)) >= 1
    port = eng.in_ports[0]  # port 0 again: the kernel picked another
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
    eng = bt.engine(example_path("word_count"), ins=[0], outs=[recv.port],
                    extra=resil_flags(rdir, interval=NEVER))
    bt.send_payloads(eng.in_ports[0], part_a)
    wait_output(recv, out_a)
    stop_ok(eng)
    assert snap_path(rdir, 1).exists() and not snap_path(rdir, 2).exists()

    eng = bt.restart(eng)
    assert eng.wait_log(RECOVERED).group(1) == "1"
    bt.send_payloads(eng.in_ports[0], part_b)
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
    bt.send_payloads(eng.in_ports[0], part_c)
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
    bt.send_payloads(eng.in_ports[0], part_c)
    wait_output(recv, out_a + out_b + out_c + out_c2)
    stop_ok(eng)


# ------------------------------------------------------------ the directory


def test_directory_of_another_application_is_refused(bt, tmp_path):
    rdir = tmp_path / "resil"
    recv = bt.receiver()
    eng = bt.engine(example_path("word_count"), ins=[0], outs=[recv.port],
                    extra=resil_flags(rdir))
    eng.wait_log(r"ready: application")
    stop_ok(eng)
    other = bt.engine(example_path("celsius"), ins=[0], outs=[recv.port],
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
    eng = bt.engine(example_path("word_count"), ins=[0], outs=[recv.port],
                    extra=resil_flags(rdir))
    second = bt.engine(example_path("word_count"), ins=[0], outs=[recv.port],
                       extra=resil_flags(rdir), wait=False)
    rc, err = second.wait_exit()
    assert rc == 2, err
    assert "in use by another worker" in err, err
    assert eng.alive()
    # Another worker name has its own subdirectory of the same DIR.
    named = bt.engine(example_path("word_count"), ins=[0], outs=[recv.port],
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
    eng = bt.engine(example_path("word_count"), ins=[0], outs=[recv.port],
                    extra=resil_flags(small_tmpfs))
    port = eng.in_ports[0]
    bt.send_payloads(port, first)
    m = eng.wait_log(r"checkpoint (\d+) failed: ([^\n]*)", timeout=20)
    assert "no space left on device" in m.group(2), m.group(0)
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


# ------------------------------------------------------------ on a cluster
#
# Every worker of a cluster runs with the same resilience flags; when any one
# of them is killed, all restart and the cluster forms again from its last
# complete checkpoint (docs/resilience.md, "On a cluster"). Two workers write
# to the receiver on two connections, so the order of the output across keys
# is not deterministic: the checks are per key (every word's running totals
# are 1, 2, ... n in the file's order: a loss or a duplicate shows) and on the
# multiset of lines.

FORMED = r"cluster: formed with 2 workers"
LOADS = r"cluster: every worker loads checkpoint (\d+)"
WORKER_RESTARTED = r"worker %s restarted \(pid (\d+), restart (\d+)\)"
RESTARTING = r"restarting in \d+ ms \(restart (\d+)\)"


def per_key_counts(data):
    """{word: [its running totals in the file's order]} of word count's output."""
    seen = collections.defaultdict(list)
    for line in data.decode("utf-8").split("\n")[:-1]:
        word, sep, count = line.rpartition(" => ")
        assert sep, "malformed line %r" % line
        seen[word].append(int(count))
    return seen


def assert_word_counts(got, expected_out, totals, ordered=True):
    """Word count's output of a cluster: every word's running totals are
    exactly 1..n (in order, unless `ordered` is false), and the lines are
    those of the expected output."""
    assert got.endswith(b"\n") or not got, "output ends with a partial line: %r" % got[-80:]
    seen = per_key_counts(got)
    if not ordered:
        seen = {w: sorted(v) for w, v in seen.items()}
    bad = []
    for w in sorted(set(seen) | set(totals)):
        want = list(range(1, totals.get(w, 0) + 1))
        if seen.get(w, []) != want:
            s = seen.get(w, [])
            i = next((i for i, (a, b) in enumerate(zip(s, want)) if a != b), min(len(s), len(want)))
            bad.append("%r: %d totals, expected %d; from index %d: %s, expected %s"
                       % (w, len(s), len(want), i, s[i:i + 6], want[i:i + 6]))
    assert not bad, "%d words with wrong running totals (of %d), e.g.:\n  %s" % (
        len(bad), len(totals), "\n  ".join(bad[:8]))
    assert collections.Counter(got.split(b"\n")) == collections.Counter(expected_out.split(b"\n"))


def wait_word_counts(recv, expected_out, totals, timeout=20, ordered=True):
    wait_until(lambda: len(recv.data()) >= len(expected_out) or recv.proc.poll() is not None,
               timeout, "%d bytes of output (have %d)" % (len(expected_out), len(recv.data())))
    got = recv.data()
    assert_word_counts(got, expected_out, totals, ordered)
    return got


def worker_pid(parent, name):
    """The pid of the `--workers` child of `parent` named `name` (None if none runs)."""
    for pid, args in children_of(parent).items():
        if any(a == b"--name" and b == name.encode() for a, b in zip(args, args[1:])):
            return pid
    return None


def cluster_kill_plan(rng, victims, kills=int(os.environ.get("BETTONG_TEST_KILLS", "3"))):
    """As kill_plan (in 5 %..60 % of the output), and which worker each kill
    hits. A recovery of a cluster can take over 2 s (a worker that lost the
    coordinator waits up to 2 s for its links to drain before it restarts):
    the senders run for about 9 s, so that the last kill still comes while
    they send."""
    return [(f, c, rng.choice(victims)) for f, c in kill_plan(rng, kills, hi=0.6)]


def kills_on_a_cluster(recv, senders, total_bytes, plan, formed_count, kill, checkpoints):
    """Kill a worker (`kill(name)`, which restarts what the test must restart)
    at the points of `plan`; after each kill, wait until the cluster has formed
    again (`formed_count()` grows) and the receiver's file grew."""
    print("kill plan (output fraction, checkpoints, worker): %s"
          % [(round(f, 3), c, w) for f, c, w in plan])
    for i, (fraction, ckpts, victim) in enumerate(plan):
        target = int(total_bytes * fraction)
        wait_until(lambda: len(recv.data()) >= target, 30,
                   "kill %d: %d bytes of output (have %d)" % (i + 1, target, len(recv.data())))
        if ckpts:
            before = checkpoints()
            wait_until(lambda: checkpoints() >= before + ckpts, 15,
                       "kill %d: %d more complete checkpoints" % (i + 1, ckpts))
        assert all(s.poll() is None for s in senders), (
            "kill %d came after a sender had finished: the run is too short" % (i + 1))
        formed = formed_count()
        size = len(recv.data())
        kill(victim)
        print("kill %d: %s at %d of %d bytes of output" % (i + 1, victim, size, total_bytes))
        wait_until(lambda: formed_count() > formed, 15, "kill %d: the cluster formed again" % (i + 1))
        wait_until(lambda: len(recv.data()) > size, 15,
                   "kill %d: more output after the cluster formed again (have %d)" % (i + 1, size))


def complete_checkpoints(err):
    return len(re.findall(r"DEBUG: checkpoint \d+ complete \(", err))


def kill_a_worker_of(eng, name):
    """SIGKILL the child `name` of a `--workers` parent; the parent reports it."""
    pid = wait_until(lambda: worker_pid(eng.proc.pid, name), 10, "the pid of %s" % name)
    os.kill(pid, signal.SIGKILL)
    eng.wait_log(r"worker %s \(pid %d\) was killed by signal 9; restarting it" % (name, pid))
    return pid


def test_word_count_exactly_once_across_kills_on_workers(bt, wc, rng, tmp_path):
    repeat = 6  # 4080 records at 450/s: 9 s
    lines = text_lines(TALES)
    expected, totals = word_count_output(wc, lines * repeat)
    recv = eo_receiver(bt)
    eng = bt.engine(example_path("word_count"), ins=[0], outs=[recv.port],
                    extra=["--workers", 2] + resil_flags(tmp_path / "resil",
                                                         debug=True))
    port = eng.in_ports[0]
    eng.wait_log(FORMED)
    assert eng.wait_log(LOADS).group(1) == "0"
    assert eng.count_log(r"the cluster starts without a checkpoint: empty state") == 2
    sender = resumable_sender(bt, port, TALES, "tales-workers", repeat=repeat, rate=450)
    plan = cluster_kill_plan(rng, ["worker1", "worker2"])
    kills_on_a_cluster(recv, [sender], len(expected), plan, lambda: eng.count_log(FORMED),
                       lambda name: kill_a_worker_of(eng, name),
                       lambda: complete_checkpoints(eng.stderr()))
    out = finish_sender(bt, sender, len(lines) * repeat)
    wait_word_counts(recv, expected, totals)
    err = stop_ok(eng)
    assert recv.stop() == 0
    assert_word_counts(recv.data(), expected, totals)
    # Every re-formation loaded a complete checkpoint on both workers and
    # brought the stream back.
    loads = [int(n) for n in re.findall(LOADS, err)]
    assert len(loads) == len(plan) + 1 and all(n >= 1 for n in loads[1:]), loads
    assert err.count("cluster: 1 resumable streams go on where the checkpoint left "
                     "them") == len(plan), err
    assert "connection lost" in out, out


class WallarooPair:
    """Two workers started with Wallaroo's flags (w1 the initializer, w2
    joining it), each with its own --in ports. kill(name) SIGKILLs one, starts
    it again with its command line, and checks that the other restarts itself
    (the same process, with its own command line). So the --in ports (the
    senders reconnect to them) and the coordinator's port (w2 joins it again)
    are reserved, not 0: each worker comes back on them. The data ports are 0:
    a worker tells the coordinator its own each time it joins."""

    def __init__(self, bt, app, n_ins, recv_port, rdir):
        self.bt = bt
        control = bt.reserve_port()
        common = resil_flags(rdir, debug=True)
        flags = {
            "w1": ["--name", "w1", "--cluster-initializer", "--worker-count", 2,
                   "--control", "127.0.0.1:%d" % control, "--data", "127.0.0.1:0"],
            "w2": ["--name", "w2", "--control", "127.0.0.1:%d" % control],
        }
        self.runs = {}  # every engine each worker ran as, the current one last
        for name in ("w1", "w2"):
            self.runs[name] = [bt.engine(app, ins=[bt.reserve_port() for _ in range(n_ins)],
                                         outs=[recv_port], extra=flags[name] + common,
                                         wait=False)]
        for name in ("w1", "w2"):
            self.runs[name][-1].wait_ready()
        wait_until(self.formed_count, 15, "the cluster to form")

    def ports(self, name):
        return self.runs[name][0].in_ports

    def log(self, name):
        return "".join(e.stderr() for e in self.runs[name])

    def formed_count(self):
        return len(re.findall(FORMED, self.log("w1")))

    def checkpoints(self):
        return complete_checkpoints(self.log("w1") + self.log("w2"))

    def kill(self, name):
        eng = self.runs[name][-1]
        other = self.runs["w2" if name == "w1" else "w1"][-1]
        restarts = other.count_log(RESTARTING)
        eng.kill()
        self.runs[name].append(self.bt.restart(eng, wait=False))
        m = other.wait_log(RESTARTING, count=restarts + 1)
        assert int(m.group(1)) == restarts + 1, m.group(0)

    def stop(self):
        rc, err = self.runs["w1"][-1].stop(timeout=20)
        assert rc == 0, err
        rc, err = self.runs["w2"][-1].wait_exit(20)
        assert rc == 0, err


def test_word_count_exactly_once_across_kills_with_wallaroo_flags(bt, wc, rng, tmp_path):
    repeat = 3  # 2040 records per sender at 230/s: 9 s
    lines = text_lines(TALES)
    # Two senders, each the whole file `repeat` times: one running total per
    # word across both inputs.
    expected, totals = word_count_output(wc, lines * repeat * 2)
    recv = eo_receiver(bt)
    rdir = tmp_path / "resil"
    pair = WallarooPair(bt, example_path("word_count"), 1, recv.port, rdir)
    senders = [resumable_sender(bt, pair.ports(name)[0], TALES, "tales-" + name,
                                repeat=repeat, rate=230) for name in ("w1", "w2")]
    plan = cluster_kill_plan(rng, ["w1", "w2"])
    kills_on_a_cluster(recv, senders, len(expected), plan, pair.formed_count, pair.kill,
                       pair.checkpoints)
    for s in senders:
        finish_sender(bt, s, len(lines) * repeat)
    wait_word_counts(recv, expected, totals)
    pair.stop()
    assert recv.stop() == 0
    assert_word_counts(recv.data(), expected, totals)
    loads = [int(n) for n in re.findall(LOADS, pair.log("w1"))]
    assert len(loads) == len(plan) + 1 and all(n >= 1 for n in loads[1:]), loads
    streams = re.findall(r"cluster: (\d+) resumable streams go on where the checkpoint left",
                         pair.log("w1"))
    assert len(streams) == len(plan) and streams[-1] == "2", streams
    assert sorted(os.listdir(rdir)) == ["coordinator", "w1", "w2"]


def test_a_stream_moves_to_another_worker_without_a_crash(bt, wc, tmp_path):
    """A resumable client killed while it sends, and a new one for the same
    stream connecting to the other worker: that worker resumes where the first
    one was (the coordinator has the first let the stream go), and the output
    stays exact."""
    repeat = 5
    lines = text_lines(TALES)
    expected, totals = word_count_output(wc, lines * repeat)
    recv = eo_receiver(bt)
    pair = WallarooPair(bt, example_path("word_count"), 1, recv.port, tmp_path / "resil")
    first = resumable_sender(bt, pair.ports("w1")[0], TALES, "moving", repeat=repeat, rate=1500)
    wait_until(lambda: len(recv.data()) >= len(expected) // 5, 20, "a fifth of the output")
    assert first.poll() is None, "the first sender finished: the run is too short"
    first.kill()
    first.wait()
    second = resumable_sender(bt, pair.ports("w2")[0], TALES, "moving", repeat=repeat, rate=3000)
    out = finish_sender(bt, second, len(lines) * repeat)
    m = re.search(r"resumes at record (\d+)", pair.log("w2"))
    assert m and int(m.group(1)) > 0, pair.log("w2")
    assert "stream 'moving' moves from worker 'w1' to 'w2'" in pair.log("w1")
    wait_word_counts(recv, expected, totals)
    pair.stop()
    assert recv.stop() == 0
    assert_word_counts(recv.data(), expected, totals)
    assert "acknowledged %d records" % (len(lines) * repeat) in out, out


def test_market_spread_exactly_once_across_kills_with_wallaroo_flags(bt, ms, rng, tmp_path):
    """Market spread on two workers started with Wallaroo's flags: all market
    data to w1 first, then the orders to both workers' order ports, with kills
    of either worker; every order is answered exactly once (each order file
    goes to both workers, so each answer is expected twice)."""
    repeat = 25  # 1500 orders per sender at 170/s: 9 s
    market, orders = text_lines(MARKET), text_lines(ORDERS)
    expected = market_spread_output(ms, market, orders * repeat) * 2
    recv = eo_receiver(bt)
    pair = WallarooPair(bt, example_path("market_spread"), 2, recv.port, tmp_path / "resil")
    finish_sender(bt, resumable_sender(bt, pair.ports("w1")[0], MARKET, "market"), len(market))
    senders = [resumable_sender(bt, pair.ports(name)[1], ORDERS, "orders-" + name,
                                repeat=repeat, rate=170) for name in ("w1", "w2")]
    plan = cluster_kill_plan(rng, ["w1", "w2"], kills=rng.choice([2, 3]))
    kills_on_a_cluster(recv, senders, len(expected), plan, pair.formed_count, pair.kill,
                       pair.checkpoints)
    for s in senders:
        finish_sender(bt, s, len(orders) * repeat)
    wait_until(lambda: len(recv.data()) >= len(expected), 20,
               "%d bytes of output (have %d)" % (len(expected), len(recv.data())))
    pair.stop()
    assert recv.stop() == 0
    got = recv.data()
    assert sorted(got.split(b"\n")) == sorted(expected.split(b"\n")), (
        "%d lines, expected %d" % (got.count(b"\n"), expected.count(b"\n")))


def test_market_spread_exactly_once_across_kills_on_workers(bt, ms, rng, tmp_path):
    repeat = 50  # 3000 orders at 350/s: 9 s
    market, orders = text_lines(MARKET), text_lines(ORDERS)
    expected = market_spread_output(ms, market, orders * repeat)
    recv = eo_receiver(bt)
    eng = bt.engine(example_path("market_spread"), ins=[0, 0], outs=[recv.port],
                    extra=["--workers", 2] + resil_flags(tmp_path / "resil",
                                                         debug=True))
    market_port, orders_port = eng.in_ports
    eng.wait_log(FORMED)
    # All market data first: acknowledged means in a complete checkpoint.
    finish_sender(bt, resumable_sender(bt, market_port, MARKET, "market"), len(market))
    sender = resumable_sender(bt, orders_port, ORDERS, "orders", repeat=repeat, rate=350)
    plan = cluster_kill_plan(rng, ["worker1", "worker2"], kills=rng.choice([2, 3]))
    kills_on_a_cluster(recv, [sender], len(expected), plan, lambda: eng.count_log(FORMED),
                       lambda name: kill_a_worker_of(eng, name),
                       lambda: complete_checkpoints(eng.stderr()))
    finish_sender(bt, sender, len(orders) * repeat)
    wait_until(lambda: len(recv.data()) >= len(expected), 20,
               "%d bytes of output (have %d)" % (len(expected), len(recv.data())))
    stop_ok(eng)
    assert recv.stop() == 0
    got = recv.data()
    assert sorted(got.split(b"\n")) == sorted(expected.split(b"\n")), (
        "%d lines, expected %d" % (got.count(b"\n"), expected.count(b"\n")))


def test_clean_stop_and_restart_of_workers_keeps_the_counts(bt, wc, tmp_path):
    lines = text_lines(TALES)
    part_a, part_b = lines[:len(lines) // 2], lines[len(lines) // 2:]
    out_a, totals_a = word_count_output(wc, part_a)
    out_b, totals = word_count_output(wc, part_b, start=totals_a)
    assert any(totals[w] > totals_a[w] for w in totals_a)
    rdir = tmp_path / "resil"
    recv = bt.receiver()
    eng = bt.engine(example_path("word_count"), ins=[0], outs=[recv.port],
                    extra=["--workers", 2] + resil_flags(rdir, interval=NEVER))
    port = eng.in_ports[0]
    eng.wait_log(FORMED)
    bt.send_payloads(port, part_a)
    wait_word_counts(recv, out_a, totals_a)
    stop_ok(eng)  # the coordinator takes a last checkpoint
    eng = bt.restart(eng)
    n = int(eng.wait_log(LOADS).group(1))
    assert n >= 1, eng.stderr()
    for name in ("worker1", "worker2"):
        eng.wait_log(r"recovered from checkpoint %d in %s: \d+ keys of state"
                     % (n, re.escape(str(rdir / name))))
    eng.wait_log(FORMED)
    bt.send_payloads(eng.in_ports[0], part_b)  # the port the new parent picked
    wait_word_counts(recv, out_a + out_b, totals)
    stop_ok(eng)


def test_workers_that_keep_failing_stop_the_cluster(bt, tmp_path):
    """worker2 killed again each time it is restarted: after 5 crashes within
    60 s the parent stops the cluster and exits 3."""
    recv = bt.receiver()
    eng = bt.engine(example_path("word_count"), ins=[0], outs=[recv.port],
                    extra=["--workers", 2] + resil_flags(tmp_path / "resil"))
    eng.wait_log(FORMED)
    kill_a_worker_of(eng, "worker2")
    kills = 1
    while True:
        restarted = WORKER_RESTARTED % "worker2"
        # The restart pause doubles (0.1 s, 0.2, 0.4...): the wait grows with it.
        m = eng.wait_log(restarted + "|keeps failing", count=kills, timeout=15)
        if "keeps failing" in m.group(0):
            break
        assert int(m.group(2)) == kills, m.group(0)
        os.kill(int(m.group(1)), signal.SIGKILL)
        kills += 1
        assert kills <= 10, "still restarting worker2 after %d kills:\n%s" % (kills, eng.stderr())
    rc, err = eng.wait_exit(15)
    assert rc == 3, err
    m = re.search(r"worker worker2 keeps failing \([^)]*\)[^\n]*", err)
    assert m, err
    print(m.group(0))
    assert kills > 5, err



def test_crashes_spread_over_the_workers_do_not_stop_the_cluster(bt, tmp_path):
    """worker1 and worker2 killed in turn, 3 times each, the cluster formed
    again in between: no worker crashed 5 times, the cluster goes on."""
    recv = bt.receiver()
    eng = bt.engine(example_path("word_count"), ins=[0], outs=[recv.port],
                    extra=["--workers", 2] + resil_flags(tmp_path / "resil"))
    eng.wait_log(FORMED)
    for i, victim in enumerate(["worker1", "worker2"] * 3):
        formed = eng.count_log(FORMED)
        kill_a_worker_of(eng, victim)
        wait_until(lambda: eng.count_log(FORMED) > formed or not eng.alive(), 15,
                   "kill %d: the cluster formed again" % (i + 1))
        assert eng.alive(), "kill %d (%s; no worker crashed more than %d times): %s" % (
            i + 1, victim, (i + 2) // 2,
            re.findall(r"worker \w+ keeps failing[^\n]*", eng.stderr()))
    stop_ok(eng)


def test_grow_then_kill_the_joiner_keeps_exactly_once(bt, wc, tmp_path):
    """A worker joins a running cluster with resilience (it takes a share of
    the slots, whose state moves to it) and is killed: the cluster starts
    again from its last complete checkpoint, with the joiner when it was in
    that checkpoint, and the output stays exact per key."""
    repeat = 4  # 2720 records at 300/s: 9 s
    lines = text_lines(TALES)
    expected, totals = word_count_output(wc, lines * repeat)
    recv = eo_receiver(bt)
    # w1 and w2 restart themselves with their command lines when w3 is lost:
    # the coordinator's port (the others join it again) and w1's --in port (the
    # sender reconnects to it) are reserved; the rest is 0.
    control = bt.reserve_port()
    common = resil_flags(tmp_path / "resil", debug=True)
    app = example_path("word_count")
    w1 = bt.engine(app, ins=[bt.reserve_port()], outs=[recv.port], wait=False,
                   extra=["--name", "w1", "--cluster-initializer", "--worker-count", 2,
                          "--control", "127.0.0.1:%d" % control,
                          "--data", "127.0.0.1:0"] + common)
    w2 = bt.engine(app, ins=[0], outs=[recv.port], wait=False,
                   extra=["--name", "w2", "--control", "127.0.0.1:%d" % control] + common)
    w1.wait_ready()
    w2.wait_ready()
    w1.wait_log(FORMED)
    sender = resumable_sender(bt, w1.in_ports[0], TALES, "grow", repeat=repeat, rate=300)
    wait_until(lambda: len(recv.data()) >= len(expected) // 5, 20, "a fifth of the output")
    w3 = bt.engine(app, ins=[0], outs=[recv.port], wait=False,
                   extra=["--name", "w3", "--join", "127.0.0.1:%d" % control] + common)
    w1.wait_log(r"cluster: worker 'w3' joined with \d+ slots")
    # Two complete checkpoints after the grow: the joiner is in the record.
    done = complete_checkpoints(w1.stderr())
    wait_until(lambda: complete_checkpoints(w1.stderr()) >= done + 2, 15,
               "checkpoints after the grow")
    assert sender.poll() is None, "the sender finished before the kill: the run is too short"
    size = len(recv.data())
    w3.kill()
    w3 = bt.restart(w3, wait=False)
    w1.wait_log(r"cluster: formed with 3 workers")
    assert w3.wait_log(r"recovered from checkpoint (\d+) in ").group(1) != "0"
    wait_until(lambda: len(recv.data()) > size, 15, "output after the cluster formed again")
    finish_sender(bt, sender, len(lines) * repeat)
    # A slot that moves to the joiner has its last totals before the move
    # written by the old owner and the next ones by the joiner: two writers,
    # whose lines may interleave out of order at the receiver (with or
    # without resilience). Every total must be there exactly once.
    wait_word_counts(recv, expected, totals, ordered=False)
    rc, err = w1.stop(timeout=20)
    assert rc == 0, err
    for w in (w2, w3):
        rc, err = w.wait_exit(20)
        assert rc == 0, err
    assert recv.stop() == 0
    assert_word_counts(recv.data(), expected, totals, ordered=False)


# ------------------------------------------------------------ refusals


def test_resilience_on_a_joiner_without_a_name_is_refused(bt, tmp_path):
    """With Wallaroo's flags a worker finds its checkpoints again by its --name."""
    rdir = tmp_path / "resil"
    # Refused before it connects anywhere: the reserved ports refuse anyway.
    eng = bt.engine(example_path("word_count"), ins=[0], outs=[bt.reserve_port()],
                    extra=resil_flags(rdir) + ["--control", "127.0.0.1:%d" % bt.reserve_port()],
                    wait=False)
    rc, err = eng.wait_exit()
    assert rc == 2, err
    assert "needs --name" in err, err
    assert not rdir.exists()


def test_resumable_sender_refused_without_resilience(bt, wc):
    lines = text_lines(TALES)[:40]
    expected, _ = word_count_output(wc, lines)
    recv = bt.receiver()
    eng = bt.engine(example_path("word_count"), ins=[0], outs=[recv.port])
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
