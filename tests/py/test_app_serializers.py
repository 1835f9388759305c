"""An application's own serialize/deserialize (a module-level pair, as in
Wallaroo) is for its messages between workers only: keys and state travel, move
and are checkpointed in Bettong's own encoding. The application here
(apps/own_serializers.py) knows its message class only, as Wallaroo's
performance-suite market spread: on two workers, while the cluster grows and
shrinks, and across a checkpoint and restart, every key's running sums stay
exact; Wallaroo 0.6.1's market spread itself (when its sources are at
$WALLAROO061) gives exactly its results through a shrink. Errors of
serialize/deserialize are reported with the place they come from (exact log
lines), and so is an error no Python line points at."""

import random
import re
import struct
import subprocess

import pytest

from conftest import BIN, Cluster, app_path, lines_of, parse_frames, wait_until
from test_cluster import check_sums, keyed_input, send_frames
from test_resilience import FORMED, LOADS, NEVER, resil_flags, stop_ok
from test_wallaroo06 import W061, Run, send

APP = app_path("own_serializers")


def frames_of(msgs):
    return [("%s,%d" % kv).encode() for kv in msgs]


def test_own_serializers_on_two_workers(bt):
    msgs = keyed_input(200, 4000, 11)
    recv = bt.receiver()
    c = Cluster(bt, APP, 2, "workers", outs=[recv.port])
    c.wait_formed(2)
    send_frames(c.ports[0][0], frames_of(msgs))
    got = recv.wait_lines(len(msgs), timeout=30)
    check_sums(lines_of(got), msgs)
    st = c.workers()
    assert all(w[1] > 0 for w in st.values()), st
    c.stop()
    err = c.stderr()
    assert "user code raised" not in err, err
    assert "lost" not in err, err


def test_state_moves_in_bettongs_encoding_when_the_cluster_grows_and_shrinks(bt):
    """Each key's state moves with its slots (first to the joiner, then away
    from the worker that leaves); serialize, which knows messages only, is
    never given a state: the sums go on exactly."""
    msgs = keyed_input(300, 6000, 12)
    parts = [msgs[:2000], msgs[2000:4000], msgs[4000:]]
    recv = bt.receiver()
    c = Cluster(bt, APP, 2, "flags", outs=[recv.port])
    c.wait_formed(2)
    send_frames(c.ports[0][0], frames_of(parts[0]))
    recv.wait_lines(2000, timeout=30)
    w3 = c.add_worker(join=True, name="w3")
    c.wait_formed(3)
    send_frames(c.ports[1][0], frames_of(parts[1]))
    recv.wait_lines(4000, timeout=30)
    p = subprocess.run([BIN, "cluster", "shrink", "--control", c.control, "--worker", "w2"],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stdout + p.stderr
    rc, err = c.engines[1].wait_exit(20)
    assert rc == 0, err
    send_frames(c.ports[2][0], frames_of(parts[2]))
    got = recv.wait_lines(len(msgs), timeout=30)
    check_sums(lines_of(got), msgs)
    st = c.workers()
    assert st["w2"][0] == "left" and st["w1"][1] + st["w3"][1] == 4096, st
    err = c.stderr()
    assert re.search(r"moved \d+ slots away", err), err
    assert "user code raised" not in err, err
    assert "lost" not in err, err
    rc, err = c.engines[0].stop(timeout=30)
    assert rc == 0, err
    rc, err = w3.wait_exit(30)
    assert rc == 0, err


def test_state_checkpointed_in_bettongs_encoding(bt, tmp_path):
    """With resilience on two workers: the state checkpointed at a clean stop
    (pickle, not serialize) is the state the restarted workers go on from."""
    msgs = keyed_input(200, 3000, 13)
    rdir = tmp_path / "resil"
    recv = bt.receiver()
    eng = bt.engine(APP, ins=[0], outs=[recv.port],
                    extra=["--workers", 2] + resil_flags(rdir, interval=NEVER))
    eng.wait_log(FORMED)
    send_frames(eng.in_ports[0], frames_of(msgs[:1500]))
    recv.wait_lines(1500, timeout=30)
    stop_ok(eng)
    eng = bt.restart(eng)
    n = int(eng.wait_log(LOADS).group(1))
    keys = 0
    for name in ("worker1", "worker2"):
        m = eng.wait_log(r"recovered from checkpoint %d in %s: (\d+) keys of state"
                         % (n, re.escape(str(rdir / name))))
        keys += int(m.group(1))
    assert keys == len({k for k, _ in msgs[:1500]}), eng.stderr()
    eng.wait_log(FORMED)
    send_frames(eng.in_ports[0], frames_of(msgs[1500:]))
    got = recv.wait_lines(len(msgs), timeout=30)
    check_sums(lines_of(got), msgs)
    err = stop_ok(eng)
    assert "user code raised" not in err, err


def line_of(text):
    """The line of APP that starts with `text`."""
    for i, line in enumerate(APP.read_text().splitlines(), 1):
        if line.startswith(text):
            return i
    raise AssertionError("no line %r in %s" % (text, APP))


LOG_PREFIX = re.compile(r"^\d\d:\d\d:\d\d\.\d+ bettong\[worker\d\] (?:ERROR|WARN|INFO): ", re.M)
STOPPED = re.compile(r"stopped after [\d.]+ s: (\d+) messages in, (\d+) out, (\d+) forwarded "
                     r"to other workers, (\d+) failed")


def run_failing_serializer(bt, flag):
    """500 messages on two workers whose serialize fails; the log without
    timestamps and the totals of the workers' last lines."""
    msgs = keyed_input(50, 500, 14)
    recv = bt.receiver()
    c = Cluster(bt, APP, 2, "workers", outs=[recv.port], extra=flag)
    c.wait_formed(2)
    send_frames(c.ports[0][0], frames_of(msgs))
    wait_until(lambda: sum(int(w[3]) for w in c.workers().values()) == 500 or None, 20,
               "500 messages in", interval=0.1)
    rc, err = c.engines[0].stop(timeout=30)
    assert rc == 0, err
    stops = [tuple(map(int, m)) for m in STOPPED.findall(err)]
    assert len(stops) == 2, err
    ins, outs, fwd, failed = (sum(s[i] for s in stops) for i in range(4))
    assert (ins, outs + failed, fwd, failed) == (500, 500, failed, failed), stops
    assert 0 < failed < 500
    return LOG_PREFIX.sub("", err), failed


def test_serialize_returning_no_bytes_is_reported_with_its_place(bt):
    log, failed = run_failing_serializer(bt, ["--serialize-returns", "int"])
    where = "serialize() of module 'own_serializers' (a message for another worker)"
    what = ("TypeError: serialize() of module 'own_serializers' (%s:%d) returned int, "
            "expected bytes (message type Reading)" % (APP, line_of("def serialize(")))
    assert ("user code raised in %s (first of its kind; repeats are counted):\n%s\n"
            % (where, what)) in log, log
    last = re.findall(r"^%s: (\d+) more time\(s\), (\d+) in all$"
                      % re.escape("%s: %s" % (where, what)), log, re.M)
    assert last and int(last[-1][1]) == failed, log
    assert " at ?" not in log, log


def test_serialize_raising_is_reported_at_the_users_line(bt):
    log, failed = run_failing_serializer(bt, ["--serialize-raises"])
    where = "serialize() of module 'own_serializers' (a message for another worker)"
    line = line_of('        raise ValueError("cannot serialize')
    assert ("user code raised in %s (first of its kind; repeats are counted):\n"
            "Traceback (most recent call last):\n"
            '  File "%s", line %d, in serialize\n'
            '    raise ValueError("cannot serialize %%s" %% type(o).__name__)\n'
            "ValueError: cannot serialize Reading\n" % (where, APP, line)) in log, log
    last = re.findall(r"^%s: ValueError at %s:%d: (\d+) more time\(s\), (\d+) in all$"
                      % (re.escape(where), re.escape(str(APP)), line), log, re.M)
    assert last and int(last[-1][1]) == failed, log
    assert " at ?" not in log, log


def test_deserialize_raising_is_reported_at_the_users_line(bt):
    log, failed = run_failing_serializer(bt, ["--deserialize-raises"])
    where = "deserialize() of module 'own_serializers' (a message from another worker)"
    line = line_of('        raise ValueError("cannot deserialize')
    first = re.findall(r"^user code raised in %s \(first of its kind; repeats are counted\):\n"
                       r"Traceback \(most recent call last\):\n"
                       r'  File "%s", line %d, in deserialize\n'
                       r".*\n"
                       r"ValueError: cannot deserialize \d+ bytes$"
                       % (re.escape(where), re.escape(str(APP)), line), log, re.M)
    assert len(first) == 1, log
    last = re.findall(r"^%s: ValueError at %s:%d: (\d+) more time\(s\), (\d+) in all$"
                      % (re.escape(where), re.escape(str(APP)), line), log, re.M)
    assert last and int(last[-1][1]) == failed, log
    assert " at ?" not in log, log


def test_errors_without_a_python_line_are_labelled_by_their_text(bt):
    """A key extractor's int key out of range: Bettong refuses it after the
    function returned, so no Python line points there; the report gives the
    text, and keys that differ only in the number are one kind (one log entry
    with the first text, the rest counted)."""
    r1, r2 = bt.receiver(), bt.receiver()
    eng = bt.engine(app_path("w06_keyed"), ins=[0], outs=[r1.port, r2.port])
    bad = [("i:-%d,1" % i).encode() for i in range(1, 51)]
    send_frames(eng.in_ports[0], bad + [b"a,1"])
    assert r1.wait_bytes(len(b"a => 1\n")) == b"a => 1\n"
    rc, err = eng.stop()
    assert rc == 0, err
    log = re.sub(r"^\S+ bettong run (?:ERROR|WARN|INFO): ", "", err, flags=re.M)
    text = ("ValueError: key_extractor returned -1: an int key n stands for chr(n), which "
            "needs 0 <= n <= 0x10ffff")
    first = re.findall(r"^user code raised in (.*) \(first of its kind; repeats are "
                       r"counted\):\n(.*)$", log, re.M)
    assert len(first) == 1 and first[0][1] == text, log
    last = re.findall(r"^%s: %s: (\d+) more time\(s\), (\d+) in all$"
                      % (re.escape(first[0][0]), re.escape(text)), log, re.M)
    assert last and last[-1][1] == "50" and sum(int(m) for m, _ in last) == 49, log
    assert first[0][0] == "key extractor 'extract_key'", log
    assert " at ?" not in log, log


# ------------------------------------------------------------------ Wallaroo's own app

def market_data(symbol, bid, offer):
    return struct.pack(">B4s21sdd", 2, symbol, b"20180101-00:00:00.000", bid, offer)


def order(side, account, order_id, symbol, qty, price):
    return struct.pack(">BBI6s4sdd21s", 1, side, account, order_id, symbol, qty, price,
                       b"20180101-00:00:00.000")


def test_wallaroo_performance_market_spread_on_two_workers_through_a_shrink(bt):
    """Wallaroo 0.6.1's performance-suite market spread, unchanged: its
    serialize knows its messages, its state class and its functions, and
    returns None for anything else. On two workers, quotes sent first set each
    symbol's state; orders, half before and half after w2 leaves (its slots'
    state moving to w1), each give a result exactly when that state says to
    reject trades, with that state's bid and offer."""
    app = W061 / "testing" / "performance" / "apps" / "python" / "market_spread" / \
        "market_spread.py"
    if not app.exists():
        pytest.skip("Wallaroo 0.6.1's sources are not at %s (set WALLAROO061)" % W061)
    rng = random.Random(15)
    symbols = [b"S%03d" % i for i in range(120)]
    quotes = {}
    for s in symbols[:100]:  # the last 20 get no quote: the initial state rejects
        mid = round(rng.uniform(20, 200), 2)
        spread = rng.choice([0.01, 0.02, 0.5, 3.0])
        quotes[s] = (round(mid - spread / 2, 3), round(mid + spread / 2, 3))
    orders = [(rng.choice([1, 2]), rng.randrange(1, 10 ** 6), b"o%05d" % i, rng.choice(symbols),
               float(rng.randrange(1, 500)), round(rng.uniform(20, 200), 2))
              for i in range(600)]

    def expected(o):
        bid, offer = quotes.get(o[3], (0.0, 0.0))
        if o[3] in quotes and offer - bid < 0.05 and (offer - bid) / ((bid + offer) / 2) < 0.05:
            return None  # a tight spread: the trade is not rejected
        return o + (bid, offer)

    want = sorted(e for e in map(expected, orders) if e)
    assert 100 < len(want) < 600
    recv = bt.receiver(framed=True)
    run = Run(bt, app, 2, "flags", nins=2, outs=[recv.port])
    c = run.cluster
    c.wait_formed(2)
    send(run.port("Market Data"), [market_data(s, *q) for s, q in quotes.items()])
    wait_until(lambda: sum(int(w[3]) for w in c.workers().values()) == len(quotes) or None,
               20, "every quote in", interval=0.1)
    send(run.port("Orders"), [order(*o) for o in orders[:300]])
    p = subprocess.run([BIN, "cluster", "shrink", "--control", c.control, "--worker", "w2"],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stdout + p.stderr
    rc, err = c.engines[1].wait_exit(20)
    assert rc == 0, err
    send(run.port("Orders"), [order(*o) for o in orders[300:]])
    data = recv.wait_bytes(60 * len(want), timeout=30)
    got = sorted(struct.unpack(">HI6s4sddddQ", f)[:8] for f in parse_frames(data))
    assert got == want
    err = c.stderr()
    assert re.search(r"moved \d+ slots away", err), err
    for bad in ("user code raised", "Don't know how", "lost"):
        assert bad not in err, err
    rc, err = c.engines[0].stop(timeout=30)
    assert rc == 0, err
