"""Every example, and the API's other shapes, end to end: `bettong run` fed by
`bettong send` (or a Python socket) and read by `bettong receive`, over real TCP.
Outputs are checked exactly against what Python computes here."""

import collections
import json
import random
import struct
import subprocess
import sys
import time

import pytest

from conftest import (BIN, EXAMPLES, REPO, app_path, example_path, frames,
                      lines_of, load_module, py_send)

WORDS_TXT = EXAMPLES / "word_count" / "data" / "bettong_tales.txt"


def stop_ok(engine):
    """SIGTERM the engine: it must exit 0, with no Python traceback logged."""
    rc, err = engine.stop()
    assert rc == 0, "engine exited with %d after SIGTERM:\n%s" % (rc, err)
    assert "Traceback" not in err, err
    return err


@pytest.fixture(scope="module")
def wc():
    return load_module(example_path("word_count"))


def word_count_lines():
    return WORDS_TXT.read_text("utf-8").split("\n")[:-1]


def running_counts(words, start=None):
    counts = collections.Counter(start or {})
    out = []
    for w in words:
        counts[w] += 1
        out.append("%s => %d" % (w, counts[w]))
    return out


def check_word_count_output(lines, expected_totals):
    """Exact multiset of lines, and each word's counts appear as 1, 2, ..., n in order
    (to_parallel may interleave different words differently)."""
    seen = collections.defaultdict(list)
    for line in lines:
        word, sep, count = line.rpartition(" => ")
        assert sep, "malformed line %r" % line
        seen[word].append(int(count))
    wrong = [w for w in set(seen) | set(expected_totals)
             if seen.get(w) != list(range(1, expected_totals.get(w, 0) + 1))]
    assert not wrong, "wrong counts for %d words, e.g. %s" % (
        len(wrong), {w: (seen.get(w, [])[:8], expected_totals.get(w)) for w in sorted(wrong)[:3]})
    assert len(lines) == sum(expected_totals.values())


# ------------------------------------------------------------------ word count

def test_word_count(bt, wc):
    lines = word_count_lines()
    words = [w for line in lines for w in wc.split_words(line)]
    expected = running_counts(words)
    recv = bt.receiver()
    eng = bt.engine(example_path("word_count"), ins=[0], outs=[recv.port])
    port = eng.in_ports[0]
    bt.send_payloads(port, lines)
    nbytes = sum(len(e.encode("utf-8")) + 1 for e in expected)
    got = lines_of(recv.wait_bytes(nbytes))
    assert sorted(got) == sorted(expected)
    check_word_count_output(got, collections.Counter(words))
    stop_ok(eng)


def test_word_count_text_file_as_lines(bt, wc):
    """`bettong send` without --framed sends the bundled file line by line."""
    lines = word_count_lines()
    totals = collections.Counter(w for line in lines for w in wc.split_words(line))
    recv = bt.receiver(expect=sum(totals.values()))
    eng = bt.engine(example_path("word_count"), ins=[0], outs=[recv.port])
    port = eng.in_ports[0]
    bt.send(port, WORDS_TXT, framed=False)
    assert recv.wait_exit(20) == 0
    check_word_count_output(lines_of(recv.data()), totals)
    stop_ok(eng)


def test_word_count_many_connections(bt, wc):
    """8 senders at once: every word's final count exact, each word's counts 1..n in order."""
    lines = word_count_lines()
    senders, repeat = 8, 2
    per_pass = collections.Counter(w for line in lines for w in wc.split_words(line))
    totals = {w: c * senders * repeat for w, c in per_pass.items()}
    data = bt.framed_file(lines)
    recv = bt.receiver()
    eng = bt.engine(example_path("word_count"), ins=[0], outs=[recv.port])
    port = eng.in_ports[0]
    procs = [bt.send_async(port, data, framed=True, repeat=repeat) for _ in range(senders)]
    bt.wait_senders(procs, timeout=40)
    nbytes = sum(c * (len(w.encode("utf-8")) + 5) + sum(len(str(k)) for k in range(1, c + 1))
                 for w, c in totals.items())
    got = lines_of(recv.wait_bytes(nbytes, timeout=40))
    check_word_count_output(got, totals)
    stop_ok(eng)


def test_word_count_demo_script():
    """The demo (`make demo`), on a smaller volume."""
    res = subprocess.run([sys.executable, str(EXAMPLES / "word_count" / "demo.py"),
                          "--bin", BIN, "--words", "40000", "--timeout", "30"],
                         cwd=str(REPO), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         timeout=50)
    out = res.stdout.decode("utf-8", "replace")
    assert res.returncode == 0, out
    assert "top 10 words" in out and "words/s" in out
    assert out.rstrip().endswith("OK"), out


# ------------------------------------------------------------------ celsius

def celsius_inputs():
    rng = random.Random(5)
    values = [-273.15, -40.0, -0.0, 0.0, 1e-30, 36.6, 100.0, 1e30, -1e30, 3.0e37]
    values += [rng.uniform(-500, 500) for _ in range(2000)]
    return [struct.unpack(">f", struct.pack(">f", v))[0] for v in values]


def test_celsius_exact_floats_in_order(bt):
    inputs = celsius_inputs()
    expected = b"".join(struct.pack(">If", 4, c * 1.8 + 32) for c in inputs)
    recv = bt.receiver(framed=True)  # binary output: the receiver must not wait for lines
    eng = bt.engine(example_path("celsius"), ins=[0], outs=[recv.port])
    port = eng.in_ports[0]
    bt.send_payloads(port, [struct.pack(">f", c) for c in inputs])
    got = recv.wait_bytes(len(expected))
    assert len(got) == len(expected)
    assert got == expected
    stop_ok(eng)


def test_celsius_framed_receiver_counts_frames(bt):
    inputs = celsius_inputs()[:300]
    expected = b"".join(struct.pack(">If", 4, c * 1.8 + 32) for c in inputs)
    recv = bt.receiver(framed=True, expect=len(inputs))
    eng = bt.engine(example_path("celsius"), ins=[0], outs=[recv.port])
    port = eng.in_ports[0]
    bt.send_payloads(port, [struct.pack(">f", c) for c in inputs])
    assert recv.wait_exit(20) == 0
    assert recv.data() == expected
    stop_ok(eng)


# ------------------------------------------------------------------ alphabet

def test_alphabet_running_totals(bt):
    rng = random.Random(9)
    votes = [(rng.choice("abcdefghijklmnopqrstuvwxyz"), rng.randrange(0, 1000))
             for _ in range(3000)]
    totals = collections.Counter()
    expected = []
    for letter, v in votes:
        totals[letter] += v
        expected.append("%s => %d\n" % (letter, totals[letter]))
    expected = "".join(expected).encode()
    recv = bt.receiver()
    eng = bt.engine(example_path("alphabet"), ins=[0], outs=[recv.port])
    port = eng.in_ports[0]
    bt.send_payloads(port, [struct.pack(">cI", l.encode(), v) for l, v in votes])
    assert recv.wait_bytes(len(expected)) == expected
    stop_ok(eng)


# ------------------------------------------------------------------ reverse

REVERSE_TEXTS = ["hello world", "", "na\u00efve caf\u00e9 \u2014 d\u00e9j\u00e0 vu",
                 "\U0001F998 bettong \U0001F998", "x" * 5000, "a,b;c", "  spaces  "]


def reverse_expected(texts):
    return "".join(t[::-1] + "\n" for t in texts).encode("utf-8")


def test_reverse_in_order(bt):
    texts = REVERSE_TEXTS + ["line %d" % i for i in range(2000)]
    recv = bt.receiver()
    eng = bt.engine(example_path("reverse"), ins=[0], outs=[recv.port])
    port = eng.in_ports[0]
    bt.send_payloads(port, texts)
    expected = reverse_expected(texts)
    assert recv.wait_bytes(len(expected)) == expected
    stop_ok(eng)


def test_reverse_bundled_text_file(bt):
    path = EXAMPLES / "reverse" / "data" / "lines.txt"
    texts = path.read_text("utf-8").split("\n")[:-1]
    recv = bt.receiver()
    eng = bt.engine(example_path("reverse"), ins=[0], outs=[recv.port])
    port = eng.in_ports[0]
    bt.send(port, path, framed=False)
    expected = reverse_expected(texts)
    assert recv.wait_bytes(len(expected)) == expected
    stop_ok(eng)


def test_reverse_by_module_name(bt):
    """--application-module NAME with --application-path DIR instead of a file path."""
    recv = bt.receiver()
    eng = bt.engine(None, ins=[0], outs=[recv.port],
                    extra=["--application-module", "reverse",
                           "--application-path", str(EXAMPLES / "reverse")])
    port = eng.in_ports[0]
    bt.send_payloads(port, ["abc", "stressed"])
    assert recv.wait_bytes(13) == b"cba\ndesserts\n"
    stop_ok(eng)


def test_frames_split_across_reads(bt):
    """Frames trickled byte by byte, headers split too: each still arrives whole."""
    texts = ["first", "second frame", "", "caf\u00e9 \u00e0 la carte", "last"]
    recv = bt.receiver()
    eng = bt.engine(example_path("reverse"), ins=[0], outs=[recv.port])
    port = eng.in_ports[0]
    py_send(port, frames(texts), chunk=1, delay=0.002)
    expected = reverse_expected(texts)
    assert recv.wait_bytes(len(expected)) == expected
    stop_ok(eng)


def test_many_frames_per_read(bt):
    """20000 small frames in one sendall: the engine splits one read into many frames."""
    texts = ["%d" % i for i in range(20000)]
    recv = bt.receiver()
    eng = bt.engine(example_path("reverse"), ins=[0], outs=[recv.port])
    port = eng.in_ports[0]
    py_send(port, frames(texts))
    expected = reverse_expected(texts)
    assert recv.wait_bytes(len(expected)) == expected
    stop_ok(eng)


def test_order_kept_per_connection(bt):
    """Four connections at once: each connection's outputs come in its own order."""
    recv = bt.receiver()
    eng = bt.engine(example_path("reverse"), ins=[0], outs=[recv.port])
    port = eng.in_ports[0]
    conns = {c: ["%s%04d" % (c, i) for i in range(1500)] for c in "ABCD"}
    files = [bt.framed_file(texts) for texts in conns.values()]
    bt.wait_senders([bt.send_async(port, f) for f in files])
    total = sum(len(reverse_expected(t)) for t in conns.values())
    got = [line[::-1] for line in lines_of(recv.wait_bytes(total))]
    for c, texts in conns.items():
        assert [t for t in got if t.startswith(c)] == texts
    assert len(got) == sum(len(t) for t in conns.values())
    stop_ok(eng)


# ------------------------------------------------------------------ market spread

def test_market_spread_two_sources(bt):
    m = load_module(example_path("market_spread"))
    rng = random.Random(3)
    symbols = m.SYMBOLS
    recv = bt.receiver()
    eng = bt.engine(example_path("market_spread"), ins=[0, 0],
                    outs=[recv.port])
    market_port, orders_port = eng.in_ports
    received = []

    def wait_lines(n):
        want = len(received) + n
        deadline = time.monotonic() + 20
        while True:
            data = recv.data()
            text = data[:data.rfind(b"\n") + 1].decode("utf-8")
            lines = text.split("\n")[:-1]
            if len(lines) >= want or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        assert len(lines) == want, "expected %d result lines, have %d" % (want, len(lines))
        new = lines[len(received):]
        received.extend(new)
        return new

    def check_sorted(got, expected):
        assert sorted(got) == sorted(expected)
        for s in symbols:  # per symbol, the order of one connection is kept
            assert ([g for g in got if g.split(",")[1] == s]
                    == [e for e in expected if e.split(",")[1] == s])

    # 1. Orders before any market data: all rejected.
    early = ["E%03d,%s,buy,100,10.00" % (i, symbols[i % len(symbols)]) for i in range(40)]
    bt.send_payloads(orders_port, early)
    check_sorted(wait_lines(len(early)),
                 ["%s,%s,REJECT,no market data" % tuple(o.split(",")[:2]) for o in early])

    # 2. Market data, one quote per symbol, on the other source. Its pipeline
    #    sends nothing, so probe with orders at the mid price until every symbol's
    #    quote has reached the shared state.
    quotes = {}
    for s in symbols:
        mid = round(rng.uniform(20, 200), 2)
        quotes[s] = (round(mid - 0.5, 2), round(mid + 0.5, 2))
    bt.send_payloads(market_port, ["%s,%.2f,%.2f" % (s, b, o) for s, (b, o) in quotes.items()])
    pending = list(symbols)
    deadline = time.monotonic() + 15
    probe = 0
    while pending:
        assert time.monotonic() < deadline, "market data never reached %s" % pending
        batch = []
        for s in pending:
            probe += 1
            batch.append("P%04d,%s,buy,1,%.2f" % (probe, s, sum(quotes[s]) / 2))
        bt.send_payloads(orders_port, batch)
        results = wait_lines(len(batch))
        accepted = {r.split(",")[1] for r in results if r.endswith(",ACCEPT")}
        for r in results:
            assert r.endswith(",ACCEPT") or r.endswith(",REJECT,no market data"), r
        pending = [s for s in pending if s not in accepted]
        if pending:
            time.sleep(0.05)

    # 3. Orders against the quotes: exact accept / reject.
    orders, expected = [], []
    for i in range(600):
        s = rng.choice(symbols)
        bid, offer = quotes[s]
        price = round(rng.choice([bid, offer, rng.uniform(bid - 1, offer + 1)]), 2)
        oid = "O%04d" % i
        orders.append("%s,%s,%s,%d,%.2f" % (oid, s, rng.choice(["buy", "sell"]),
                                            rng.randrange(1, 100) * 100, price))
        if price < bid:
            expected.append("%s,%s,REJECT,below bid" % (oid, s))
        elif price > offer:
            expected.append("%s,%s,REJECT,above offer" % (oid, s))
        else:
            expected.append("%s,%s,ACCEPT" % (oid, s))
    assert any(e.endswith("ACCEPT") for e in expected)
    assert any(e.endswith("below bid") for e in expected)
    assert any(e.endswith("above offer") for e in expected)
    bt.send_payloads(orders_port, orders)
    check_sorted(wait_lines(len(orders)), expected)
    time.sleep(0.2)
    assert len(lines_of(recv.data())) == len(received), "unexpected extra output"
    stop_ok(eng)


def test_market_spread_bundled_data(bt):
    """The bundled files through both sources: every order gets exactly one result."""
    data = EXAMPLES / "market_spread" / "data"
    orders = (data / "orders.txt").read_text().split("\n")[:-1]
    recv = bt.receiver(expect=len(orders))
    eng = bt.engine(example_path("market_spread"), ins=[0, 0],
                    outs=[recv.port])
    market_port, orders_port = eng.in_ports
    bt.send(market_port, data / "market.txt", framed=False)
    bt.send(orders_port, data / "orders.txt", framed=False)
    assert recv.wait_exit(20) == 0
    got = lines_of(recv.data())
    assert sorted(g.split(",")[0] for g in got) == sorted(o.split(",")[0] for o in orders)
    for g in got:
        assert g.split(",")[2] in ("ACCEPT", "REJECT"), g
    stop_ok(eng)


# ------------------------------------------------------------------ API shapes

def test_duck_typed_classes(bt):
    """Hand-written decoder (2-byte header), computation, multi computation, state
    computation returning (None, True), and an encoder returning bytes."""
    m = load_module(app_path("duck_app"))
    rng = random.Random(4)
    kinds = ["word", "drop this", "twice", "quiet", "none", "caf\u00e9"]
    texts = ["%s %d" % (rng.choice(kinds), i) for i in range(1500)] + ["y" * 300]
    expected = m.expected_output(texts).encode("utf-8")
    recv = bt.receiver()
    eng = bt.engine(app_path("duck_app"), ins=[0], outs=[recv.port])
    port = eng.in_ports[0]
    py_send(port, frames(texts, fmt=">H"))
    assert recv.wait_bytes(len(expected)) == expected
    stop_ok(eng)


def test_state_partition_u64(bt):
    m = load_module(app_path("u64_app"))
    rng = random.Random(8)
    values = [rng.randrange(0, 2 ** 64) for _ in range(1500)] + [0, 2 ** 64 - 1, 7, 6]
    sums = collections.Counter()
    expected = []
    for v in values:
        k = m.key_of(v)
        sums[k] += v
        expected.append("key=%d value=%d sum=%d" % (k, v, sums[k]))
    assert len(sums) == len(m.KEYS)  # keys outside the initial list are used too
    recv = bt.receiver()
    eng = bt.engine(app_path("u64_app"), ins=[0], outs=[recv.port])
    port = eng.in_ports[0]
    bt.send_payloads(port, [struct.pack(">Q", v) for v in values])
    got = lines_of(recv.wait_bytes(sum(len(e) + 1 for e in expected)))
    assert sorted(got) == sorted(expected)
    for k in m.KEYS:  # per key, arrival order
        prefix = "key=%d " % k
        assert [g for g in got if g.startswith(prefix)] == [e for e in expected
                                                            if e.startswith(prefix)]
    stop_ok(eng)


def test_gen_source(bt):
    n = 2000
    expected = "".join("%d %d\n" % (i, i * i) for i in range(1, n + 1)).encode()
    recv = bt.receiver()
    eng = bt.engine(app_path("gen_app"), outs=[recv.port], extra=["--count", n])
    assert recv.wait_bytes(len(expected)) == expected
    stop_ok(eng)


def test_args_reach_application_setup(bt):
    """Every argument goes to application_setup; unknown flags are tolerated."""
    recv = bt.receiver()
    eng = bt.engine(app_path("args_app"), outs=[recv.port],
                    extra=["--my-own-flag", "42", "--name", "w1", "--log-level", "info"])
    got = lines_of(recv.wait_lines(1, timeout=10))
    assert len(got) == 1, got
    args = json.loads(got[0])
    assert all(isinstance(a, str) for a in args)
    i = args.index("--my-own-flag")
    assert args[i + 1] == "42"
    assert "--out" in args and "127.0.0.1:%d" % recv.port in args
    stop_ok(eng)
