"""Wallaroo 0.6.1's pipeline API (wallaroo.source(...).to(...).key_by(...)...,
build_application): the API's own rules in-process, then applications end to
end on 1 worker and on 2 (`--workers 2`, and an initializer plus a worker
joining it), over real TCP, every output checked exactly against what Python
computes here. Wallaroo 0.6.1's own examples run unchanged when a copy of its
sources is at $WALLAROO061 (default /tmp/w061); their tests skip otherwise."""

import collections
import json
import os
import random
import re
import socket
import struct
import subprocess
from pathlib import Path

import pytest

import wallaroo
from conftest import (BIN, EXAMPLES, Cluster, app_path, engine_port0, frame, lines_of,
                      load_module, parse_frames, wait_until)

W061 = Path(os.environ.get("WALLAROO061", "/tmp/w061"))
WORDS_TXT = EXAMPLES / "word_count" / "data" / "bettong_tales.txt"
FORMS = [(1, None), (2, "workers"), (2, "flags")]
FORM_IDS = ["1", "2-workers", "2-flags"]


def example06(name):
    return EXAMPLES / name / (name + "_06.py")


def w061_example(directory, name):
    """A Wallaroo 0.6.1 example file, or skip the test."""
    path = W061 / "examples" / "python" / directory / name
    if not path.exists():
        pytest.skip("Wallaroo 0.6.1's sources are not at %s (set WALLAROO061)" % W061)
    return path


def complete_lines(data):
    """The whole lines of output so far."""
    return lines_of(data[:data.rfind(b"\n") + 1])


class Run:
    """A 0.6 application on 1 worker or on a cluster (form "workers": one
    `--workers N`; "flags": an initializer and N-1 workers joining it), its
    sources on kernel-picked ports: run.port(name)."""

    def __init__(self, bt, app, n, form, nins=1, outs=(), extra=()):
        self.n = n
        if n == 1:
            self.cluster = None
            self.engine, self.ports = engine_port0(bt, app, nins, outs=outs, extra=extra)
        else:
            self.cluster = Cluster(bt, app, n, form, nins=nins, outs=outs, extra=extra,
                                   sources="initializer")
            self.engine = self.cluster.engines[0]
            self.ports = self.cluster.source_ports

    def port(self, name=None):
        if name is None:
            (name,) = self.ports
        return self.ports[name]

    def stop(self):
        """SIGTERM: every worker exits 0 with no traceback logged."""
        if self.cluster:
            self.cluster.stop()
            return
        rc, err = self.engine.stop()
        assert rc == 0, err
        assert "Traceback" not in err, err

    def stderr(self):
        return self.cluster.stderr() if self.cluster else self.engine.stderr()


class GenRun(Run):
    """A 0.6 application whose sources are generators (no --in)."""

    def __init__(self, bt, app, n, form, outs=(), extra=()):
        self.n = n
        if n == 1:
            self.cluster = None
            self.engine = bt.engine(app, outs=outs, extra=extra)
        else:
            self.cluster = Cluster(bt, app, n, form, nins=0, outs=outs, extra=extra,
                                   sources="initializer")
            self.engine = self.cluster.engines[0]
        self.ports = {}


def send(port, payloads):
    """One connection: the payloads as >I frames."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"".join(frame(p) for p in payloads))


def per_key(lines, sep=" => "):
    got = collections.defaultdict(list)
    for line in lines:
        k, s, v = line.rpartition(sep)
        assert s, "malformed line %r" % line
        got[k].append(int(v))
    return got


def running_counts(words):
    counts = collections.Counter()
    want = collections.defaultdict(list)
    for w in words:
        counts[w] += 1
        want[w].append(counts[w])
    return want


# ------------------------------------------------------------------ the API in-process

@wallaroo.decoder(header_length=4, length_fmt=">I")
def _dec(bs):
    return bs


@wallaroo.encoder
def _enc(x):
    return x


@wallaroo.computation(name="c")
def _comp(x):
    return x


@wallaroo.key_extractor
def _key(x):
    return x


class _State(object):
    pass


@wallaroo.state_computation(name="s", state=_State)
def _state_comp(x, st):
    return x


def _src(name, port=7000):
    return wallaroo.source(name, wallaroo.TCPSourceConfig("127.0.0.1", port, _dec))


SINK = wallaroo.TCPSinkConfig("127.0.0.1", 7002, _enc)


def test_build_application_gives_wallaroos_tree():
    a = _src("a").to(_comp).key_by(_key)
    b = _src("b", 7001).key_by(_key)
    app = wallaroo.build_application("app", a.merge(b).to(_state_comp).collect().to_sinks(
        [SINK, SINK]))
    name, root, vs, es = app
    assert name == "app" and root == 1
    tcp_a = ("tcp", "127.0.0.1", 7000, _dec, 10)
    tcp_b = ("tcp", "127.0.0.1", 7001, _dec, 10)
    sink = ("tcp", "127.0.0.1", 7002, _enc)
    assert vs == [[("source", "a", tcp_a), ("to", _comp), ("key_by", _key)],
                  [("to_state", _state_comp), ("collect", ""), ("to_sinks", [sink, sink])],
                  [("source", "b", tcp_b), ("key_by", _key)]]
    assert es == [[], [0, 2], []]


def test_pipeline_methods_leave_the_pipeline_as_it_was():
    p = _src("a")
    q = p.to(_comp)
    r = p.key_by(_key)
    assert p._pipeline_tree.vs == [[("source", "a", ("tcp", "127.0.0.1", 7000, _dec, 10))]]
    assert [s[0] for s in q._pipeline_tree.vs[0]] == ["source", "to"]
    assert [s[0] for s in r._pipeline_tree.vs[0]] == ["source", "key_by"]
    closed = q.to_sink(SINK)
    assert not q._is_closed() and closed._is_closed()


@pytest.mark.parametrize("build, message", [
    (lambda: _src("a").to_sink(SINK).to(_comp), "You can't add stages after to_sink/s"),
    (lambda: _src("a").to_sink(SINK).merge(_src("b")), "can't merge with a terminated"),
    (lambda: _src("a").merge(_src("b").to_sink(SINK)), "can't merge with a terminated"),
    (lambda: _src("a").key_by(_key).merge(_src("b")), "ending with key_by can only be merged"),
    (lambda: _src("a").merge(_src("b").collect()), "ending with key_by can only be merged"),
    (lambda: _src("a").to_sinks([]), "at least one sink"),
    (lambda: wallaroo.build_application("x", _src("a").to(_comp)), "must end with to_sink"),
    (lambda: _src("a").key_by(_comp), "not a key extractor"),
    (lambda: _src("a").to(_key), "not a computation"),
    (lambda: _src("a").to_sink(wallaroo), "not a source or sink config"),
    (lambda: wallaroo.source("a", 7), "not a source or sink config"),
], ids=["after-sink", "merge-closed", "merge-with-closed", "merge-key-by", "merge-collect",
        "empty-to-sinks", "unclosed", "key-by-computation", "to-key-extractor", "bad-sink",
        "bad-source"])
def test_misuse_is_refused(build, message):
    with pytest.raises(wallaroo.WallarooParameterError, match=message):
        build()


def test_the_two_state_computation_forms_are_not_mixed():
    @wallaroo.state_computation(name="classic")
    def classic(data, state):
        return data, True

    with pytest.raises(wallaroo.WallarooParameterError, match="needs its state class"):
        _src("a").key_by(_key).to(classic)
    ab = wallaroo.ApplicationBuilder("x")
    ab.new_pipeline("p", wallaroo.TCPSourceConfig("127.0.0.1", 7000, _dec))
    with pytest.raises(wallaroo.WallarooError, match="declared with state="):
        ab.to_state_partition(_state_comp, _State, "s", wallaroo.partition(lambda d: d))
    with pytest.raises(wallaroo.WallarooError, match="declared with state="):
        ab.to_stateful(_state_comp, _State, "s")
    # The classic form still builds as it did.
    ab.to_stateful(classic, _State, "s").to_sink(SINK)
    assert ab.build()["pipelines"][0]["steps"][0]["computation"] is classic


def test_decorators_as_wallaroo_06_has_them():
    # A decorated function called returns itself (Wallaroo's BaseWrapped).
    assert _comp() is _comp and _comp(1, 2) is _comp
    assert _key.extract_key(97) == "a" and _key.extract_key(b"x") == b"x"
    assert _state_comp.initial_state().__class__ is _State
    assert isinstance(_state_comp, wallaroo.StateComputation)
    # Arity is checked when a function is decorated.
    with pytest.raises(wallaroo.WallarooParameterError, match="2 positional arguments"):
        wallaroo.state_computation(name="x", state=_State)(lambda data: data)
    with pytest.raises(wallaroo.WallarooParameterError, match="1 positional argument"):
        wallaroo.key_extractor(lambda: 1)
    assert wallaroo.seconds(2) == 2 * 10 ** 9 and wallaroo.hours(1) == 3600 * 10 ** 9


@pytest.mark.parametrize("value", [0, -1, 1.5, "10", True])
def test_parallelism_must_be_a_positive_int(value):
    with pytest.raises(wallaroo.WallarooParameterError, match="parallelism"):
        wallaroo.TCPSourceConfig("127.0.0.1", 7000, _dec, parallelism=value)


# ------------------------------------------------------------------ Bettong's examples, 0.6 style

def word_count_expected(wc, lines):
    return running_counts(w for line in lines for w in wc.split_words(line))


@pytest.mark.parametrize("n,form", FORMS, ids=FORM_IDS)
def test_word_count_06(bt, n, form):
    """key_by(word) then a state per word: every word's counts are 1..n in order."""
    wc = load_module(example06("word_count"))
    lines = WORDS_TXT.read_text("utf-8").split("\n")[:-1]
    want = word_count_expected(wc, lines * 2)
    recv = bt.receiver()
    run = Run(bt, example06("word_count"), n, form, outs=[recv.port])
    send(run.port("Split and Count"), lines)
    send(run.port("Split and Count"), lines)
    total = sum(len(v) for v in want.values())
    got = lines_of(recv.wait_lines(total, timeout=30))
    assert len(got) == total
    assert per_key(got) == want
    if n > 1:
        # Each worker counted its share of the words.
        st = run.cluster.workers()
        assert all(int(w[2]) > 0 for w in st.values()), st
    run.stop()


@pytest.mark.parametrize("n,form", FORMS, ids=FORM_IDS)
def test_celsius_reverse_alphabet_06_as_the_classic_ones(bt, n, form):
    inputs = [float(i) - 40.0 for i in range(500)]
    want = b"".join(struct.pack(">If", 4, c * 1.8 + 32) for c in inputs)
    recv = bt.receiver(framed=True)
    run = Run(bt, example06("celsius"), n, form, outs=[recv.port])
    send(run.port(), [struct.pack(">f", x) for x in inputs])
    assert recv.wait_bytes(len(want), timeout=30) == want
    run.stop()

    texts = ["line %d \u2014 caf\u00e9" % i for i in range(800)]
    recv = bt.receiver()
    run = Run(bt, example06("reverse"), n, form, outs=[recv.port])
    send(run.port(), [t.encode() for t in texts])
    want = "".join(t[::-1] + "\n" for t in texts).encode()
    assert recv.wait_bytes(len(want), timeout=30) == want
    run.stop()

    rng = random.Random(n)
    votes = [(rng.choice("abcdefghijklmnopqrstuvwxyz"), rng.randrange(1000))
             for _ in range(2000)]
    totals = collections.Counter()
    want = collections.defaultdict(list)
    for letter, v in votes:
        totals[letter] += v
        want[letter].append(totals[letter])
    recv = bt.receiver()
    run = Run(bt, example06("alphabet"), n, form, outs=[recv.port])
    send(run.port(), [struct.pack(">cI", l.encode(), v) for l, v in votes])
    assert per_key(lines_of(recv.wait_lines(len(votes), timeout=30))) == want
    run.stop()


def wait_probe(recv, probe, parse, send_probe, what):
    """Send probe orders until one is answered as `probe` says: then everything
    sent before it on the other source has been read. Returns the answers."""
    count = [0]

    def answered():
        send_probe(count[0])
        count[0] += 1
        return probe(parse(recv.data()))

    return wait_until(answered, 20, what, interval=0.05)


@pytest.mark.parametrize("n,form", FORMS, ids=FORM_IDS)
def test_market_spread_06_merges_two_sources(bt, n, form):
    """Market data and orders, two sources merged and keyed by symbol, reach
    one state per symbol."""
    m = load_module(example06("market_spread"))
    rng = random.Random(3)
    quotes = {}
    for s in m.SYMBOLS[:-2]:  # the last two symbols get no market data
        mid = round(rng.uniform(20, 200), 2)
        quotes[s] = (round(mid - 0.5, 2), round(mid + 0.5, 2))
    orders, want = [], []
    for i in range(400):
        s = rng.choice(m.SYMBOLS)
        bid, offer = quotes.get(s, (None, None))
        price = round(rng.uniform(20, 200), 2) if bid is None else \
            round(rng.choice([bid, offer, rng.uniform(bid - 1, offer + 1)]), 2)
        oid = "O%04d" % i
        orders.append("%s,%s,buy,100,%.2f" % (oid, s, price))
        reason = (m.order_rejection(m.Order(oid, s, "buy", 100, price), m.SymbolData())
                  if bid is None else
                  "below bid" if price < bid else "above offer" if price > offer else None)
        want.append("%s,%s,ACCEPT" % (oid, s) if reason is None else
                    "%s,%s,REJECT,%s" % (oid, s, reason))
    recv = bt.receiver()
    run = Run(bt, example06("market_spread"), n, form, nins=2, outs=[recv.port])
    send(run.port("Market Data"), ["%s,%.2f,%.2f" % (s, b, o) for s, (b, o) in quotes.items()]
         + ["PROBE,1.00,2.00"])
    # Once a probe order at 1.50 is accepted, the market data has been read.
    wait_probe(recv, lambda lines: any(l.startswith("P") and l.endswith("ACCEPT")
                                       for l in lines),
               complete_lines,
               lambda i: send(run.port("Orders"), ["P%04d,PROBE,buy,1,1.50" % i]),
               "the market data")
    send(run.port("Orders"), orders)

    def answers():
        got = [l for l in complete_lines(recv.data()) if l.startswith("O")]
        return got if len(got) >= len(orders) else None

    got = wait_until(answers, 30, "the order answers")
    for s in m.SYMBOLS:  # one symbol's answers come in the order of its orders
        assert [a for a in got if a.split(",")[1] == s] == \
            [w for w in want if w.split(",")[1] == s]
    assert sorted(got) == sorted(want)
    run.stop()


# ------------------------------------------------------------------ the constructs

def normal_key(text):
    """The key w06_keyed's extractor gives, as Wallaroo reads it."""
    if text.startswith("b:"):
        return text[2:]
    if text.startswith("i:"):
        return chr(int(text[2:]))
    return text


@pytest.mark.parametrize("n,form", FORMS, ids=FORM_IDS)
def test_keys_multi_state_and_to_sinks(bt, n, form):
    """"a", b"a" and 97 are one key; a float key is refused (the message is
    dropped, the rest go on); every output goes to both sinks, and an
    encoder's None writes nothing."""
    rng = random.Random(11)
    spellings = {}
    for k in ["k%02d" % i for i in range(40)] + ["a", "z"]:
        spellings[k] = [k, "b:" + k] + (["i:%d" % ord(k)] if len(k) == 1 else [])
    msgs = [(rng.choice(spellings[k]), rng.randrange(1, 20))
            for k in rng.choices(sorted(spellings), k=1500)]
    msgs.insert(700, ("f:1.5", 3))
    totals = collections.Counter()
    all_want, even_want = collections.defaultdict(list), collections.defaultdict(list)
    for text, v in msgs:
        if text.startswith("f:"):
            continue
        key = normal_key(text)
        totals[key] += v
        outs = [(text, totals[key])] + ([(text, -totals[key])] if totals[key] % 10 == 0 else [])
        for t, s in outs:
            all_want[key].append((t, s))
            if s % 2 == 0:
                even_want[key].append((t, s))
    n_all = sum(map(len, all_want.values()))
    n_even = sum(map(len, even_want.values()))
    r1, r2 = bt.receiver(), bt.receiver()
    run = Run(bt, app_path("w06_keyed"), n, form, outs=[r1.port, r2.port])
    send(run.port(), ["%s,%d" % m for m in msgs])

    def by_key(lines, sep):
        got = collections.defaultdict(list)
        for line in lines:
            t, _, s = line.rpartition(sep)
            got[normal_key(t)].append((t, int(s)))
        return got

    got_all = lines_of(r1.wait_lines(n_all, timeout=30))
    got_even = lines_of(r2.wait_lines(n_even, timeout=30))
    assert len(got_all) == n_all and len(got_even) == n_even
    assert by_key(got_all, " => ") == all_want
    assert by_key(got_even, " ") == even_want
    assert "key_extractor must return str, bytes or int, not float" in run.stderr()
    run.stop()


@pytest.mark.parametrize("n,form", FORMS, ids=FORM_IDS)
def test_collect_then_key_by(bt, n, form):
    """collect() brings every message to one state (one key: one worker, in
    order); a key_by after it keys the stream again."""
    rng = random.Random(5)
    rows = [" ".join(str(rng.randrange(1000)) for _ in range(rng.randrange(1, 6)))
            for _ in range(400)]
    want, total, count, residues = [], 0, 0, collections.Counter()
    for row in rows:
        for x in map(int, row.split()):
            total += x
            count += 1
            residues[x % 3] += 1
            want.append("%d %d %d %d" % (x, total, count, residues[x % 3]))
    recv = bt.receiver()
    run = Run(bt, app_path("w06_collect"), n, form, outs=[recv.port])
    send(run.port(), rows)
    got = lines_of(recv.wait_lines(len(want), timeout=30))
    if n == 1:
        assert got == want
    else:
        # Per residue the outputs keep their order; across residues (workers) not.
        for r in range(3):
            assert [l for l in got if int(l.split()[0]) % 3 == r] == \
                [l for l in want if int(l.split()[0]) % 3 == r]
        assert sorted(got) == sorted(want)
    run.stop()


def test_state_without_key_by_is_new_per_message(bt):
    recv = bt.receiver()
    run = Run(bt, app_path("w06_unkeyed"), 1, None, outs=[recv.port])
    texts = ["t%d" % (i % 7) for i in range(100)]
    send(run.port(), texts)
    want = "".join("%s 1\n" % t for t in texts).encode()
    assert recv.wait_bytes(len(want)) == want
    assert "computation 'count' has no key_by() or collect() before it" in run.stderr()
    run.stop()


@pytest.mark.parametrize("n,form", FORMS, ids=FORM_IDS)
def test_generator_runs_once_in_the_cluster(bt, n, form):
    """As in Wallaroo 0.6.1, one generator for the whole cluster: each value
    once, each key's sums in order."""
    count = 3000
    sums = collections.Counter()
    want = collections.defaultdict(list)
    for i in range(1, count + 1):
        sums[i % 7] += i
        want[i % 7].append("%d %d %d" % (i, i % 7, sums[i % 7]))
    recv = bt.receiver(expect=count)
    run = GenRun(bt, app_path("w06_gen"), n, form, outs=[recv.port], extra=["--count", count])
    assert recv.wait_exit(30) == 0
    got = collections.defaultdict(list)
    for line in lines_of(recv.data()):
        got[int(line.split()[1])].append(line)
    assert got == want
    run.stop()


def test_parallelism_caps_the_connections_served(bt):
    """parallelism=1: a second client waits, connected, until the first one
    closes (Wallaroo's TCPSourceListener). Without it, the classic API serves
    both at once."""
    recv = bt.receiver()
    run = Run(bt, app_path("w06_parallelism"), 1, None, outs=[recv.port],
              extra=["--parallelism", "1"])
    port = run.port()
    a = socket.create_connection(("127.0.0.1", port), timeout=10)
    a.sendall(frame("a1"))
    recv.wait_lines(1)
    b = socket.create_connection(("127.0.0.1", port), timeout=10)
    b.sendall(frame("b1"))
    a.sendall(frame("a2"))
    got = lines_of(recv.wait_lines(2, settle=0))
    assert got == ["a1", "a2"], got  # b1 was sent before a2 but waits
    a.close()
    assert lines_of(recv.wait_lines(3, settle=0)) == ["a1", "a2", "b1"]
    b.close()
    run.stop()

    recv = bt.receiver()
    run = Run(bt, app_path("w06_parallelism"), 1, None, outs=[recv.port],
              extra=["--classic"])
    a = socket.create_connection(("127.0.0.1", run.port()), timeout=10)
    a.sendall(frame("a1"))
    recv.wait_lines(1)
    b = socket.create_connection(("127.0.0.1", run.port()), timeout=10)
    b.sendall(frame("b1"))
    assert lines_of(recv.wait_lines(2, settle=0)) == ["a1", "b1"]
    a.close()
    b.close()
    run.stop()


def test_state_moves_with_slots_when_a_worker_joins_and_leaves(bt):
    """Grow and shrink a 0.6 application's cluster between two rounds of
    input: the words' states move with their slots, and the counts go on."""
    wc = load_module(example06("word_count"))
    lines = WORDS_TXT.read_text("utf-8").split("\n")[:-1]
    recv = bt.receiver()
    c = Cluster(bt, example06("word_count"), 2, "flags", outs=[recv.port],
                sources="initializer")
    port = c.source_ports["Split and Count"]
    c.wait_formed(2)
    one = sum(len(v) for v in word_count_expected(wc, lines).values())
    send(port, lines)
    recv.wait_lines(one, timeout=30, settle=0)
    c.add_worker(join=True, name="w3")
    c.wait_formed(3)
    assert c.workers()["w3"][1] in (1365, 1366)
    send(port, lines)
    recv.wait_lines(2 * one, timeout=30, settle=0)
    p = subprocess.run([BIN, "cluster", "shrink", "--control", c.control, "--worker", "w2"]
                       + c.secret_args, capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stdout + p.stderr
    rc, err = c.engines[1].wait_exit(20)
    assert rc == 0, err
    send(port, lines)
    got = lines_of(recv.wait_lines(3 * one, timeout=30))
    assert per_key(got) == word_count_expected(wc, lines * 3)
    assert re.search(r"moved (\d+) slots away", c.stderr())
    rc, err = c.engines[0].stop(timeout=30)
    assert rc == 0, err
    rc, err = c.engines[2].wait_exit(30)
    assert rc == 0, err


def test_kafka_is_refused_at_load(bt, tmp_path):
    app = tmp_path / "kafka06.py"
    app.write_text(
        "import wallaroo\n"
        "def application_setup(args):\n"
        "    p = wallaroo.source('k', wallaroo.DefaultKafkaSourceCLIParser(dec))\n"
        "    return wallaroo.build_application('k', p.to_sink(\n"
        "        wallaroo.TCPSinkConfig('127.0.0.1', 9, enc)))\n"
        "@wallaroo.decoder(header_length=4, length_fmt='>I')\n"
        "def dec(b):\n"
        "    return b\n"
        "@wallaroo.encoder\n"
        "def enc(x):\n"
        "    return x\n")
    eng = bt.engine(app, wait=False)
    rc, err = eng.wait_exit(20)
    assert rc == 2
    assert "source 'k': Kafka is not supported by Bettong" in err


# ------------------------------------------------------------------ Wallaroo 0.6.1's examples

@pytest.mark.parametrize("n,form", FORMS, ids=FORM_IDS)
def test_wallaroo_word_count(bt, n, form):
    """examples/python/word_count with its count_this.txt (non-empty lines, as
    Wallaroo's senders send them): 482 outputs, the last count of each word as
    in its _expected.json, each word's counts 1..n in order."""
    app = w061_example("word_count", "word_count.py")
    text = (app.parent / "count_this.txt").read_text()
    lines = [l for l in text.split("\n") if l]
    expected = json.loads((app.parent / "_expected.json").read_text())
    split = load_module(app, "w061_word_count").split._bettong_fn
    want = running_counts(w for line in lines for w in split(line))
    recv = bt.receiver()
    run = Run(bt, app, n, form, outs=[recv.port])
    send(run.port("Split and Count"), lines)
    got = lines_of(recv.wait_lines(482, timeout=30))
    assert len(got) == 482
    assert per_key(got) == want
    assert {w: c[-1] for w, c in per_key(got).items()} == expected
    run.stop()


@pytest.mark.parametrize("n,form", FORMS, ids=FORM_IDS)
def test_wallaroo_alphabet(bt, n, form):
    app = w061_example("alphabet", "alphabet.py")
    rng = random.Random(7)
    votes = [(rng.choice("abcdefghijklmnopqrstuvwxyz"), rng.randrange(1, 100))
             for _ in range(1000)]
    totals = collections.Counter()
    want = collections.defaultdict(list)
    for letter, v in votes:
        totals[letter] += v
        want[letter].append(totals[letter])
    recv = bt.receiver()
    run = Run(bt, app, n, form, outs=[recv.port])
    send(run.port("alphabet"), [struct.pack(">sI", l.encode(), v) for l, v in votes])
    assert per_key(lines_of(recv.wait_lines(len(votes), timeout=30))) == want
    run.stop()


ORDER = struct.Struct(">BBI6s4sdd21s")
MARKET = struct.Struct(">B4s21sdd")
RESULT = struct.Struct(">BI6s4sddddQ")


@pytest.mark.parametrize("n,form", FORMS, ids=FORM_IDS)
def test_wallaroo_market_spread(bt, n, form):
    """Orders and market data (Wallaroo's binary FIX-ish frames) merged and
    keyed by symbol (bytes keys): an order comes out, with the symbol's last
    bid and offer, while the symbol's spread says to reject trades (and before
    any market data). Compared without the timestamp, as its validator does."""
    app = w061_example("market_spread", "market_spread.py")
    rng = random.Random(2)
    symbols = [b"S%03d" % i for i in range(30)]
    state = {s: (0.0, 0.0, True) for s in symbols}
    market, orders, want = [], [], []
    for s in symbols[:25]:
        for _ in range(3):
            bid = round(rng.uniform(10, 100), 2)
            offer = round(bid + rng.choice([0.01, 0.02, 0.5, 3.0]), 2)
            market.append(MARKET.pack(2, s, b"t" * 21, bid, offer))
            reject = (offer - bid >= 0.05) or ((offer - bid) / ((bid + offer) / 2.0) >= 0.05)
            state[s] = (bid, offer, reject)
    for i in range(1000):
        s = rng.choice(symbols)
        side, account, oid = rng.choice([1, 2]), rng.randrange(10 ** 6), b"%06d" % i
        qty, price = float(rng.randrange(1, 500)), round(rng.uniform(10, 100), 2)
        orders.append(ORDER.pack(1, side, account, oid, s, qty, price, b"t" * 21))
        bid, offer, reject = state[s]
        if reject:
            want.append(RESULT.pack(side, account, oid, s, qty, price, bid, offer, 0)[:-8])
    recv = bt.receiver(framed=True)
    run = Run(bt, app, n, form, nins=2, outs=[recv.port])
    send(run.port("Market Data"), market + [MARKET.pack(2, b"PRB1", b"t" * 21, 1.0, 2.0)])

    def results(data):
        return [p[:-8] for p in parse_frames(data[:complete_frames(data)])]

    wait_probe(recv, lambda rs: any(r[11:15] == b"PRB1" and RESULT.unpack(r + bytes(8))[6] == 1.0
                                    for r in rs),
               results,
               lambda i: send(run.port("Orders"),
                              [ORDER.pack(1, 1, 0, b"P%05d" % i, b"PRB1", 1.0, 1.0, b"t" * 21)]),
               "the market data")
    send(run.port("Orders"), orders)
    got = wait_until(lambda: (lambda rs: rs if len(rs) >= len(want) else None)(
        [r for r in results(recv.data()) if r[11:15] != b"PRB1"]), 30, "the order results")
    assert sorted(got) == sorted(want)
    run.stop()


def complete_frames(data):
    """How many bytes of `data` hold whole >I frames."""
    pos = 0
    while pos + 4 <= len(data):
        (n,) = struct.unpack(">I", data[pos:pos + 4])
        if pos + 4 + n > len(data):
            break
        pos += 4 + n
    return pos


def alerts_expected(app, module_name, count):
    """The first outputs of an alerts example: its generator and computation
    run here, in-process (each import has its own generator state)."""
    mod = load_module(app, module_name)
    gen = mod.TransactionsGenerator()
    comp = getattr(mod, "check_transaction", None) or mod.check_transaction_total
    states = collections.defaultdict(comp.initial_state) \
        if isinstance(comp, wallaroo.StateComputation) else None
    out, value = [], gen.initial_value()
    while len(out) < count:
        if states is None:
            r = comp.compute(value)
        else:
            r = comp.compute(value, states[value.user])
        if r is not None:
            out.append(mod.encode_alert.encode(r).decode().rstrip("\n"))
        value = gen.apply(value)
    return out


@pytest.mark.parametrize("n,form", FORMS, ids=FORM_IDS)
@pytest.mark.parametrize("example", ["alerts_stateless", "alerts_stateful"])
def test_wallaroo_alerts(bt, example, n, form):
    """The generator examples run forever: their first 300 alerts are those
    Python computes. The stateless one's order is exact (its one generator
    and its computation run on the initializer); the stateful one is keyed by
    user, and each user's alerts come in order."""
    app = w061_example(example, "alerts.py")
    want = alerts_expected(app, "w061_" + example, 2000)
    recv = bt.receiver()
    run = GenRun(bt, app, n, form, outs=[recv.port])
    got = complete_lines(recv.wait_lines(300, timeout=30, settle=0))[:300]
    assert len(got) == 300
    if example == "alerts_stateless":
        assert got == want[:300]
    else:
        def user(line):
            return line.split(" for ")[1].rsplit(":", 1)[0]
        for u in set(map(user, want)):
            mine = [l for l in got if user(l) == u]
            assert mine == [l for l in want if user(l) == u][:len(mine)], u
    run.stop()


# Windows are in test_windows06.py, connectors in test_connectors06.py.
@pytest.mark.parametrize("example, message", [
    ("celsius-kafka/celsius.py", "Kafka is not supported by Bettong"),
], ids=["kafka"])
def test_wallaroo_examples_not_supported_yet_say_so(bt, example, message):
    app = w061_example(*example.split("/"))
    eng = bt.engine(app, extra=["--out", "127.0.0.1:9"], wait=False)
    rc, err = eng.wait_exit(20)
    assert rc == 2, err
    assert message in err, err


# ------------------------------------------------------------------ resilience

@pytest.fixture
def rng():
    seed = int(os.environ.get("BETTONG_TEST_SEED") or random.SystemRandom().randrange(1 << 30))
    print("random seed: %d (BETTONG_TEST_SEED=%d replays it)" % (seed, seed))
    return random.Random(seed)


def test_word_count_06_exactly_once_across_kills(bt, rng, tmp_path):
    """A 0.6 application's state (a store per state stage, keyed by word) is
    checkpointed and recovered like the classic API's: killed three times,
    the output is that of a run without a crash, byte for byte."""
    import test_resilience as tr
    wc = load_module(example06("word_count"))
    repeat = 3
    lines = tr.text_lines(tr.TALES)
    expected, _ = tr.word_count_output(wc, lines * repeat)
    recv = tr.eo_receiver(bt)
    eng = bt.engine(example06("word_count"), ins=[bt.reserve_port()], outs=[recv.port],
                    extra=tr.resil_flags(tmp_path / "resil", debug=True))
    eng.wait_log(r"no checkpoint in \S+ yet: starting with empty state")
    sender = tr.resumable_sender(bt, eng.in_ports[0], tr.TALES, "tales", repeat=repeat,
                                 rate=600)
    eng = tr.run_with_kills(bt, eng, recv, sender, len(expected), tr.kill_plan(rng))
    tr.finish_sender(bt, sender, len(lines) * repeat)
    tr.wait_output(recv, expected)
    tr.stop_ok(eng)
    assert recv.stop() == 0
    tr.assert_same_output(recv.data(), expected)


def test_word_count_06_exactly_once_across_kills_on_workers(bt, rng, tmp_path):
    """The same on `--workers 2`, either worker killed (the initializer runs
    the source, the other holds its share of the words)."""
    import test_resilience as tr
    wc = load_module(example06("word_count"))
    repeat = 6
    lines = tr.text_lines(tr.TALES)
    expected, totals = tr.word_count_output(wc, lines * repeat)
    recv = tr.eo_receiver(bt)
    eng = bt.engine(example06("word_count"), ins=[bt.reserve_port()], outs=[recv.port],
                    extra=["--workers", 2] + tr.resil_flags(tmp_path / "resil", debug=True))
    eng.wait_log(tr.FORMED)
    sender = tr.resumable_sender(bt, eng.in_ports[0], tr.TALES, "tales06", repeat=repeat,
                                 rate=450)
    plan = tr.cluster_kill_plan(rng, ["worker1", "worker2"])
    tr.kills_on_a_cluster(recv, [sender], len(expected), plan, lambda: eng.count_log(tr.FORMED),
                          lambda name: tr.kill_a_worker_of(eng, name),
                          lambda: tr.complete_checkpoints(eng.stderr()))
    tr.finish_sender(bt, sender, len(lines) * repeat)
    tr.wait_word_counts(recv, expected, totals)
    tr.stop_ok(eng)
    assert recv.stop() == 0
    tr.assert_word_counts(recv.data(), expected, totals)
