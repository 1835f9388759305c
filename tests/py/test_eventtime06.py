"""Windows on event time (Bettong's extension of the 0.6 window builders:
with_event_time, with_late_data, session_windows), end to end on 1 worker
and on `--workers 2`, every output checked exactly.

Results here depend only on the input, never on timing: windows close as the
data's event time moves on. Each burst ends with a watermark-only message per
key far in the future (value 0, not counted: tests/py/apps/w06_eventtime.py),
which closes that key's windows; its own window never outputs. Out-of-order
input stays well within max_out_of_order (less than 40% of it), so that the
watermark's advance with the wall clock between two messages of a key would
need a stall of more than half a second to make one late. Every message is
sent on one connection: a key's messages reach its windows in order."""

import collections
import random
import re
import socket
import struct

import pytest

import wallaroo
import subprocess

from conftest import BIN, Cluster, app_path, engine_port0, wait_until
from test_wallaroo06 import FORMS, FORM_IDS, Run, complete_lines, send
from test_windows06 import Out

APP = app_path("w06_eventtime")
KEYS = ["k%02d" % i for i in range(12)] + ["Dr. Whiskers", "ü"]
BASE = 1_700_000_000_000          # ms since 1970: event times of today's order
FAR = BASE + 10 ** 7              # the watermark-only messages' event time


def frames(events):
    return [("%s,%d,%d" % e).encode() for e in events]


def closers(keys):
    return [(k, FAR, 0) for k in keys]


def interleave(rng, per_key):
    """One stream of the keys' sequences, each key's order kept."""
    seqs = [list(s) for s in per_key.values()]
    out = []
    while seqs:
        s = rng.choice(seqs)
        out.append(s.pop(0))
        if not s:
            seqs.remove(s)
    return out


def shuffled_within(rng, events, bound):
    """The events in an order where none comes after one more than `bound`
    ms newer than it."""
    return [e for _, e in sorted((e[1] + rng.uniform(0, bound), e) for e in events)]


def data(rng, keys, n, span, ooo, sessions=False):
    """Per key: n events over `span` ms (for sessions, in bursts of events
    100 ms apart, 2 s between bursts), each as sent sorted ("s-" keys) and
    shuffled within 40% of the bound ("u-" keys), with unique values (the
    same for both)."""
    values = iter(rng.sample(range(1, 10 ** 6), n * len(keys)))
    sent, events = {}, []
    for k in keys:
        if sessions:
            times = sorted(BASE + (i // 4) * 2000 + (i % 4) * 100 + rng.randrange(50)
                           for i in range(n))
        else:
            times = sorted(BASE + rng.randrange(span) for _ in range(n))
        tv = [(t, next(values)) for t in times]
        for prefix, order in (("s-", lambda es: es),
                              ("u-", lambda es: shuffled_within(rng, es, 0.4 * ooo))):
            es = [(prefix + k, t, v) for t, v in tv]
            events += es
            sent[prefix + k] = order(es)
    return sent, events


def out_line(key, start, end, values):
    return "%s [%d,%d) %s" % (key, start, end, ",".join(str(v) for v in sorted(values)))


def expect_range(events, r, s):
    wins = collections.defaultdict(list)
    for k, t, v in events:
        for start in range(((t - r) // s + 1) * s, t + 1, s):
            wins[(k, start)].append(v)
    return sorted(out_line(k, start, start + r, vs) for (k, start), vs in wins.items())


def expect_sessions(events, gap):
    per = collections.defaultdict(list)
    for k, t, v in events:
        per[k].append((t, v))
    lines = []
    for k, tv in per.items():
        tv.sort()
        cur = [tv[0]]
        for t, v in tv[1:]:
            if t - cur[-1][0] > gap:
                lines.append(out_line(k, cur[0][0], cur[-1][0], [v for _, v in cur]))
                cur = []
            cur.append((t, v))
        lines.append(out_line(k, cur[0][0], cur[-1][0], [v for _, v in cur]))
    return sorted(lines)


# ------------------------------------------------------------------ the API in-process

class _Agg(wallaroo.Aggregation):
    def initial_accumulator(self):
        return 0

    def update(self, data, acc):
        pass

    def combine(self, a1, a2):
        return a1 + a2

    def output(self, key, acc):
        return acc


class _Bounds(_Agg):
    def output(self, key, acc, window):
        return acc


def _ev(msg):
    return msg


def test_event_time_builders_give_their_stages():
    from test_wallaroo06 import _src, _key, SINK
    sec = wallaroo.seconds
    r = (wallaroo.range_windows(sec(10)).with_slide(sec(5))
         .with_event_time(_ev, max_out_of_order=sec(2)).with_late_data("update"))
    stage = _src("a").key_by(_key).to(r.over(_Agg)).to_sink(SINK)._pipeline_tree.vs[0][2]
    assert stage[:4] == ("to_range_windows", sec(10), sec(5), 0)
    assert stage[5] == ("event_time", _ev, sec(2), "update", sec(10), None, False)
    s = (wallaroo.session_windows(sec(3)).with_event_time(_ev)
         .with_late_data(wallaroo.late_to(SINK)))
    stage = _src("a").key_by(_key).to(s.over(_Bounds)).to_sink(SINK)._pipeline_tree.vs[0][2]
    assert stage[:2] == ("to_session_windows", sec(3)) and isinstance(stage[2], _Bounds)
    assert stage[3] == ("event_time", _ev, 0, "side", sec(3), SINK.to_tuple(), True)
    # Ingest-time sessions; and classic range windows keep Wallaroo's stage.
    s = wallaroo.session_windows(7).with_late_data("update", keep=3).over(_Agg)
    assert s.event_time == ("event_time", None, 0, "update", 3, None, False)
    # A bare sink config is a side output too; durations may be timedeltas.
    import datetime
    s = (wallaroo.session_windows(7)
         .with_event_time(_ev, max_out_of_order=datetime.timedelta(seconds=2, microseconds=5))
         .with_late_data(SINK).over(_Agg))
    assert s.event_time == ("event_time", _ev, 2000005000, "side", 7, SINK.to_tuple(), False)
    p = _src("a").key_by(_key).to(wallaroo.range_windows(10).over(_Agg)).to_sink(SINK)
    assert len(p._pipeline_tree.vs[0][2]) == 5


@pytest.mark.parametrize("build, message", [
    (lambda: wallaroo.range_windows(10).with_delay(5).with_event_time(_ev).over(_Agg),
     "with_delay.. is for ingest time"),
    (lambda: wallaroo.range_windows(10).with_late_data("update").over(_Agg),
     "needs with_event_time"),
    (lambda: wallaroo.range_windows(10).with_event_time(_ev).with_event_time(_ev),
     "with_event_time"),
    (lambda: wallaroo.range_windows(10).with_event_time(3), "must be callable"),
    (lambda: wallaroo.range_windows(10).with_event_time(_ev, max_out_of_order=-1),
     "max_out_of_order must be"),
    (lambda: wallaroo.session_windows(5).with_late_data("later"), "the policy is"),
    (lambda: wallaroo.session_windows(5).with_late_data("drop", keep=5), "keep= is for"),
    (lambda: wallaroo.session_windows(0), "gap must be"),
], ids=["delay", "late-without-event-time", "twice", "not-callable", "negative-bound",
        "bad-policy", "keep-with-drop", "zero-gap"])
def test_event_time_misuse_is_refused(build, message):
    with pytest.raises(wallaroo.WallarooParameterError, match=message):
        build()


# ------------------------------------------------------------------ windows

@pytest.mark.parametrize("n,form", FORMS[:2], ids=FORM_IDS[:2])
@pytest.mark.parametrize("window", ["tumbling", "sliding", "session", "datetime"])
def test_out_of_order_input_gives_the_sorted_inputs_windows(bt, window, n, form):
    """The same events sent sorted and shuffled within the bound give the
    same windows, exactly those the events fall in."""
    rng = random.Random(hash(window) % 1000 + n)
    ooo = 1000
    sent, events = data(rng, KEYS, 16, 4000, ooo, sessions=window == "session")
    if window == "session":
        want = expect_sessions(events, 300)
    else:
        want = expect_range(events, 1000, 500 if window == "sliding" else 1000)
    extra = ["--window", "tumbling" if window == "datetime" else window,
             "--ooo-ms", str(ooo)] + (["--datetime"] if window == "datetime" else [])
    recv = bt.receiver()
    out = Out(recv)
    run = Run(bt, APP, n, form, outs=[recv.port], extra=extra)
    assert sum(sent[k] != sorted(sent[k], key=lambda e: e[1]) for k in sent) >= len(KEYS) // 2
    send(run.port(), frames(interleave(rng, sent) + closers(sent)))
    got = out.next(len(want))
    assert got == want
    su = {l[2:] for l in got if l.startswith("s-")}
    assert su == {l[2:] for l in got if l.startswith("u-")}
    run.stop()


def connector_frames(events):
    """Connector frames (<I length, <q event time in ms, payload) whose
    payload's own ms is 0: only the frame's event time can place them."""
    payloads = [(("%s,0,%d" % (k, v)).encode(), ms) for k, ms, v in events]
    return b"".join(struct.pack("<Iq", 8 + len(p), ms) + p for p, ms in payloads)


@pytest.mark.parametrize("n,form", FORMS, ids=FORM_IDS)
def test_windows_on_the_event_time_of_connector_frames(bt, n, form):
    """with_event_time() without an extractor: each message's time is its
    connector frame's (ms), carried with the message to the worker that owns
    its key. Out-of-order input gives the sorted input's windows."""
    rng = random.Random(7 + n)
    ooo = 1000
    sent, events = data(rng, KEYS, 16, 4000, ooo)
    want = expect_range(events, 1000, 1000)
    recv = bt.receiver()
    out = Out(recv)
    run = Run(bt, APP, n, form, outs=[recv.port],
              extra=["--window", "tumbling", "--ooo-ms", str(ooo), "--source-time"])
    with socket.create_connection(("127.0.0.1", run.port()), timeout=10) as s:
        s.sendall(connector_frames(interleave(rng, sent) + closers(sent)))
    assert out.next(len(want)) == want
    run.stop()


def test_a_message_without_a_source_event_time_is_a_user_error(bt):
    """A connector frame with event time 0 (none given) cannot be windowed on
    its source's time: logged as a user error; the others are windowed."""
    recv = bt.receiver()
    out = Out(recv)
    run = Run(bt, APP, 1, None, outs=[recv.port],
              extra=["--window", "tumbling", "--ooo-ms", "100", "--source-time"])
    events = [("a", BASE, 1), ("a", 0, 2), ("a", BASE + 10, 3)] + closers(["a"])
    with socket.create_connection(("127.0.0.1", run.port()), timeout=10) as s:
        s.sendall(connector_frames(events))
    assert out.next(1) == ["a [%d,%d) 1,3" % (BASE - BASE % 1000, BASE - BASE % 1000 + 1000)]
    run.engine.wait_log(r"the message has no event time from its source")
    run.stop()


@pytest.mark.parametrize("n,form", FORMS[:2], ids=FORM_IDS[:2])
def test_example_word_count_eventtime_06(bt, n, form):
    """examples/word_count/word_count_eventtime_06.py: the tales' lines, each
    with an ISO time (40 lines a second), sent out of order by up to 0.8 s;
    then one line 3 s behind with two words seen before (they go to the late
    sink: a word never seen before would not be late, its clock starting
    there) and a last line an hour on with every word (it closes every
    window)."""
    import datetime
    from test_wallaroo06 import EXAMPLES, WORDS_TXT, load_module
    app = EXAMPLES / "word_count" / "word_count_eventtime_06.py"
    wc = load_module(EXAMPLES / "word_count" / "word_count_06.py")
    lines = [l for l in WORDS_TXT.read_text("utf-8").split("\n") if wc.split_words(l)][:200]
    t0 = datetime.datetime(2026, 12, 6, 12, 0, 0)
    timed = [(t0 + datetime.timedelta(milliseconds=25 * i), l) for i, l in enumerate(lines)]
    rng = random.Random(n)
    order = [tl for _, tl in sorted((tl[0].timestamp() + rng.uniform(0, 0.8), tl)
                                    for tl in timed)]
    counts = collections.Counter()
    for when, l in timed:
        start = when.replace(microsecond=0)
        for w in wc.split_words(l):
            counts[(start.isoformat(), w)] += 1
    vocab = sorted({w for _, w in counts})
    late_line = (timed[-1][0] - datetime.timedelta(seconds=3), " ".join(vocab[:2]))
    closer = (t0 + datetime.timedelta(hours=1), " ".join(vocab))
    recv = bt.receiver()
    late = bt.receiver(out=bt.path("late.out"))
    out = Out(recv)
    run = Run(bt, app, n, form, outs=[recv.port, late.port])
    send(run.port("Timed lines"), [("%s %s" % (t.isoformat(), l)).encode()
                                   for t, l in order + [late_line, closer]])
    want = sorted("%s %s => %d" % (s, w, c) for (s, w), c in counts.items())
    assert out.next(len(want)) == want
    got = complete_lines(late.wait_lines(2, timeout=20, settle=0.3))
    assert sorted(got) == ["LATE %s %s" % (late_line[0].isoformat(), w)
                           for w in vocab[:2]]
    run.stop()


# ------------------------------------------------------------------ late data

LATE_KEYS = ["a", "b", "Dr. Whiskers"]


def late_stream(seq):
    """Each key's sequence, its values made unique per key, interleaved."""
    per = {k: [(k, t, v and v * 10 + i) for t, v in seq] for i, k in enumerate(LATE_KEYS)}
    return interleave(random.Random(1), per) + closers(LATE_KEYS)


def per_key_lines(template):
    return sorted(out_line(k, s, e, [v * 10 + i for v in vs])
                  for i, k in enumerate(LATE_KEYS) for s, e, vs in template)


@pytest.mark.parametrize("n,form", FORMS[:2], ids=FORM_IDS[:2])
def test_late_data_dropped(bt, n, form):
    recv = bt.receiver()
    out = Out(recv)
    run = Run(bt, APP, n, form, outs=[recv.port], extra=["--ooo-ms", "0"])
    seq = [(1000, 1), (1500, 2), (2100, 3), (1800, 4), (3000, 5)]
    send(run.port(), frames(late_stream([(BASE + t, v) for t, v in seq])))
    want = per_key_lines([(BASE + 1000, BASE + 2000, [1, 2]), (BASE + 2000, BASE + 3000, [3]),
                          (BASE + 3000, BASE + 4000, [5])])
    assert out.next(len(want)) == want
    engines = run.cluster.engines if run.cluster else [run.engine]
    wait_until(lambda: "a late message" in "".join(e.stderr() for e in engines), 10,
               "the late message's log line")
    run.stop()
    # Counted at exit, by each worker for its keys.
    counts = re.findall(r"(\d+) late messages \(event time before their key's watermark\) "
                        r"were dropped", "".join(e.stderr() for e in engines))
    assert sum(map(int, counts)) == len(LATE_KEYS), counts


@pytest.mark.parametrize("n,form", FORMS[:2], ids=FORM_IDS[:2])
def test_late_data_updates_kept_windows(bt, n, form):
    """keep 2.5 s: a late message re-outputs its closed window while the
    watermark is less than 2.5 s past the window's end; later it is dropped."""
    recv = bt.receiver()
    out = Out(recv)
    run = Run(bt, APP, n, form, outs=[recv.port],
              extra=["--ooo-ms", "0", "--late", "update", "--keep-ms", "2500"])
    seq = [(1000, 1), (2100, 2), (1500, 3), (5000, 4), (1600, 5), (2500, 6)]
    send(run.port(), frames(late_stream([(BASE + t, v) for t, v in seq])))
    b = BASE
    want = per_key_lines([(b + 1000, b + 2000, [1]), (b + 1000, b + 2000, [1, 3]),
                          (b + 2000, b + 3000, [2]), (b + 2000, b + 3000, [2, 6]),
                          (b + 5000, b + 6000, [4])])
    assert out.next(len(want)) == want
    run.stop()


@pytest.mark.parametrize("n,form", FORMS[:2], ids=FORM_IDS[:2])
def test_late_data_to_a_side_sink(bt, n, form):
    recv = bt.receiver()
    late = bt.receiver(out=bt.path("late.out"))
    out = Out(recv)
    run = Run(bt, APP, n, form, outs=[recv.port, late.port],
              extra=["--ooo-ms", "0", "--late", "side"])
    seq = [(1000, 1), (2100, 2), (1500, 3), (900, 4), (2200, 5)]
    stream = late_stream([(BASE + t, v) for t, v in seq])
    send(run.port(), frames(stream))
    want = per_key_lines([(BASE + 1000, BASE + 2000, [1]), (BASE + 2000, BASE + 3000, [2, 5])])
    assert out.next(len(want)) == want
    lates = sorted("LATE %s,%d,%d" % e for e in stream if e[1] in (BASE + 1500, BASE + 900))
    got = complete_lines(late.wait_lines(len(lates), timeout=20, settle=0.3))
    assert sorted(got) == lates
    run.stop()


def test_a_bad_event_time_is_a_user_error(bt):
    """An event time out of range (here 10**16 ms) is the user's error:
    logged with its reason, that message skipped, the rest windowed."""
    recv = bt.receiver()
    out = Out(recv)
    run = Run(bt, APP, 1, None, outs=[recv.port], extra=["--ooo-ms", "0"])
    send(run.port(), frames([("a", BASE + 100, 1), ("a", 10 ** 16, 2), ("a", BASE + 200, 3)]
                            + closers(["a"])))
    assert out.next(1) == [out_line("a", BASE, BASE + 1000, [1, 3])]
    assert "event time 10000000000000000000000 ns is out of range" in run.engine.stderr()
    run.stop()


# ------------------------------------------------------------------ windows are state

def test_event_time_windows_move_with_slots_when_a_worker_joins_and_leaves(bt):
    """A burst opens windows on both workers (max out of order 30 s: none
    closes on its own meanwhile); a third worker joins and the second
    leaves. Then, per key, a message late before the move goes to the late
    sink (its key's watermark moved with its windows), and the closers output
    each key's windows whole, wherever its slot went."""
    keys = ["w%02d" % i for i in range(40)]
    rng = random.Random(8)
    recv = bt.receiver()
    late = bt.receiver(out=bt.path("late.out"))
    out = Out(recv)
    c = Cluster(bt, APP, 2, "flags", outs=[recv.port, late.port], sources="initializer",
                extra=["--ooo-ms", "30000", "--late", "side"])
    port = c.source_ports["events"]
    c.wait_formed(2)
    sent, events = data(rng, keys, 5, 3000, 30000)
    # Each key's newest event, 40 s on: the burst's windows are 10 s behind
    # the watermark, the tail's open.
    tail = [(k, BASE + 40000, 7) for k in sent]
    send(port, frames(interleave(rng, sent) + tail))
    want = expect_range(events, 1000, 1000)
    assert out.next(len(want)) == want
    c.add_worker(join=True, name="w3")
    c.wait_formed(3)
    assert int(c.workers()["w3"][2]) > 0, "no window moved to the joining worker"
    p = subprocess.run([BIN, "cluster", "shrink", "--control", c.control, "--worker", "w2"]
                       + c.secret_args, capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stdout + p.stderr
    rc, err = c.engines[1].wait_exit(20)
    assert rc == 0, err
    lates = [(k, BASE + 5000, 9) for k in sent]
    send(port, frames(lates + [(k, BASE + 40500, 8) for k in sent] + closers(sent)))
    assert out.next(len(sent)) == sorted(out_line(k, BASE + 40000, BASE + 41000, [7, 8])
                                         for k in sent)
    got = complete_lines(late.wait_lines(len(lates), timeout=20, settle=0.3))
    assert sorted(got) == sorted("LATE %s,%d,%d" % e for e in lates)
    rc, err = c.engines[0].stop(timeout=30)
    assert rc == 0, err
    rc, err = c.engines[2].wait_exit(30)
    assert rc == 0, err


def test_event_time_windows_are_in_checkpoints(bt, tmp_path):
    """With resilience, open windows and their keys' watermarks are in the
    checkpoint: killed (SIGKILL) while windows are open, the restarted worker
    outputs them whole, and a message late before the kill is late after."""
    import test_resilience as tr
    rng = random.Random(9)
    recv = bt.receiver()
    out = Out(recv)
    flags = ["--ooo-ms", "5000"] + tr.resil_flags(tmp_path / "resil", debug=True)
    eng, ports = engine_port0(bt, APP, 1, outs=[recv.port], extra=flags)
    sent, events = data(rng, KEYS, 8, 3000, 5000)
    # The newest event of each key, 10 s past the rest: every window but the
    # last closes before the kill; the last ones are open in the checkpoint.
    tail = [(k, BASE + 13000, 7) for k in sent]
    send(ports["events"], frames(interleave(rng, sent) + tail))
    want = expect_range(events, 1000, 1000)
    assert out.next(len(want)) == want
    base = tr.complete_checkpoints(eng.stderr())
    wait_until(lambda: tr.complete_checkpoints(eng.stderr()) >= base + 5, 10,
               "checkpoints after the burst")
    eng.kill()
    eng2 = bt.restart(eng, wait=False)
    eng2.wait_log(tr.RECOVERED)
    ports2 = eng2.wait_ready()
    # Late (before the key's watermark, BASE + 8000), then the closers.
    send(ports2[0], frames([(k, BASE + 5000, 9) for k in sent] + closers(sent)))
    assert out.next(len(sent)) == sorted(out_line(k, BASE + 13000, BASE + 14000, [7])
                                         for k in sent)
    tr.stop_ok(eng2)
