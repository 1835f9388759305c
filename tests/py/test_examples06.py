"""Bettong's Wallaroo 0.6-style alerts examples (examples/alerts/*_06.py),
end to end on 1 worker, on `--workers 2` and on an initializer with a worker
joining it, every output checked exactly against a model written here: the
transactions, balances and windows recomputed in plain Python, not imported
from the examples.

The generators stop after --transactions N; a test waits for the engine to
log that its source is done and for the alerts to arrive. Where the order
across accounts is not guaranteed (keyed state on several workers), outputs
are compared per account, in order. With resilience, a kill in mid-stream
changes nothing in the output. (word_count_06.py's key_by is tested the
same way in test_wallaroo06.py: test_word_count_06.)"""

import collections
import re

import pytest

from conftest import EXAMPLES, wait_until
from test_wallaroo06 import FORMS, FORM_IDS, GenRun, complete_lines

ALERTS = EXAMPLES / "alerts"
USERS = ["Ada", "Bettong", "Dr. Quokka", "Numbat", "Zo\u00eb"]
DONE = r"generator source returned None: it is done"
ALERT_RE = re.compile(r"^(Deposit|Withdrawal) Alert for (.+): (-?\d+)$")


# ------------------------------------------------------------------ the model

def balance_level(tid):
    """An account's balance just after transaction `tid` (alerts_transactions.py's
    documented rule: splitmix64's finaliser of tid + 1, into [-2500, 2500])."""
    m = (1 << 64) - 1
    x = (tid + 1) * 0x9E3779B97F4A7C15 & m
    x = (x ^ x >> 30) * 0xBF58476D1CE4E5B9 & m
    x = (x ^ x >> 27) * 0x94D049BB133111EB & m
    return (x ^ x >> 31) % 5001 - 2500


def model_transactions(count, interval_ms=1000):
    """[(tid, user, amount, time in ns)]: accounts in turn, each account's
    amount taking its balance from its previous level (0 at first) to this
    transaction's."""
    last = collections.defaultdict(int)
    out = []
    for tid in range(count):
        user = USERS[tid % len(USERS)]
        new = balance_level(tid)
        out.append((tid, user, new - last[user], tid * interval_ms * 10 ** 6))
        last[user] = new
    return out


def alert_line(subject, amount, threshold):
    if amount > threshold:
        return "Deposit Alert for %s: %d" % (subject, amount)
    if amount < -threshold:
        return "Withdrawal Alert for %s: %d" % (subject, amount)
    return None


def model_stateless(txs):
    return [l for l in (alert_line("transaction %d" % t, a, 4000) for t, _, a, _ in txs) if l]


def model_stateful(txs):
    """Each account's alerts, in order: its balance after each transaction."""
    totals = collections.Counter()
    want = collections.defaultdict(list)
    for _, user, amount, _ in txs:
        totals[user] += amount
        line = alert_line(user, totals[user], 2000)
        if line:
            want[user].append(line)
    return want


def model_event_windows(txs, range_ns, slide_ns):
    """Each account's alerts, in window order: windows [k*slide, k*slide +
    range) of the transactions' time, those holding a transaction."""
    sums = collections.defaultdict(collections.Counter)
    for _, user, amount, t in txs:
        k = t // slide_ns
        while k * slide_ns > t - range_ns:
            sums[user][k * slide_ns] += amount
            k -= 1
    want = collections.defaultdict(list)
    for user, wins in sums.items():
        for start in sorted(wins):
            line = alert_line(user, wins[start], 2000)
            if line:
                want[user].append(line)
    return want


def by_user(lines):
    got = collections.defaultdict(list)
    for l in lines:
        m = ALERT_RE.match(l)
        assert m, "malformed alert %r" % l
        got[m.group(2)].append(l)
    return got


def test_the_model_gives_alerts_of_every_kind():
    """The data make the tests meaningful: every account alerts both ways,
    and the windows' totals are not the balances."""
    txs = model_transactions(2000, 10)
    assert [(t, u) for t, u, _, _ in txs[:6]] == [(i, USERS[i % 5]) for i in range(6)]
    assert all(-5000 <= a <= 5000 for _, _, a, _ in txs)
    stateless = model_stateless(txs)
    assert 50 < len(stateless) < 150
    assert {l.split()[0] for l in stateless} == {"Deposit", "Withdrawal"}
    for want in (model_stateful(txs), model_event_windows(txs, 90 * 10 ** 6, 30 * 10 ** 6)):
        assert set(want) == set(USERS)
        for user, lines in want.items():
            assert {l.split()[0] for l in lines} == {"Deposit", "Withdrawal"}, user
    assert model_stateful(txs) != model_event_windows(txs, 90 * 10 ** 6, 30 * 10 ** 6)


# ------------------------------------------------------------------ the examples

def run_to_the_end(bt, example, n, form, count, extra=()):
    """The example with --transactions `count`: its run once its generator is
    done, and the receiver."""
    recv = bt.receiver()
    run = GenRun(bt, ALERTS / example, n, form, outs=[recv.port],
                 extra=["--transactions", count] + list(extra))
    run.engine.wait_log(DONE, timeout=30)
    return run, recv


@pytest.mark.parametrize("n,form", FORMS, ids=FORM_IDS)
def test_alerts_stateless_06(bt, n, form):
    """Nothing is keyed: the check runs where the generator does (the first
    worker), so the alerts come in the transactions' order, on any cluster."""
    want = model_stateless(model_transactions(2000))
    run, recv = run_to_the_end(bt, "alerts_stateless_06.py", n, form, 2000)
    got = complete_lines(recv.wait_lines(len(want), timeout=30, settle=0.3))
    assert got == want
    run.stop()


@pytest.mark.parametrize("n,form", FORMS, ids=FORM_IDS)
def test_alerts_stateful_06(bt, n, form):
    """A balance per account (key_by user): each account's alerts, in order."""
    want = model_stateful(model_transactions(2000))
    total = sum(map(len, want.values()))
    run, recv = run_to_the_end(bt, "alerts_stateful_06.py", n, form, 2000)
    got = complete_lines(recv.wait_lines(total, timeout=30, settle=0.3))
    assert len(got) == total
    assert by_user(got) == want
    if n > 1:
        # The accounts are spread over both workers.
        st = run.cluster.workers()
        assert all(int(w[2]) > 0 for w in st.values()), st
    run.stop()


@pytest.mark.parametrize("n,form", FORMS, ids=FORM_IDS)
def test_alerts_windowed_06_on_event_time(bt, n, form):
    """Windows of 90 ms sliding by 30 ms over the transactions' own time (one
    every 10 ms): each account's alerts are exactly those of its windows, in
    order. The last windows close on the wall clock, about range + 1 s after
    the generator is done."""
    txs = model_transactions(2000, interval_ms=10)
    want = model_event_windows(txs, 90 * 10 ** 6, 30 * 10 ** 6)
    total = sum(map(len, want.values()))
    run, recv = run_to_the_end(bt, "alerts_windowed_06.py", n, form, 2000,
                               ["--event-time", "--interval-ms", 10, "--range-ms", 90,
                                "--slide-ms", 30, "--late-ms", 1000])
    got = complete_lines(recv.wait_lines(total, timeout=30, settle=0.3))
    assert len(got) == total
    assert by_user(got) == want
    assert "late message" not in run.stderr()
    run.stop()


@pytest.mark.parametrize("n,form", FORMS, ids=FORM_IDS)
def test_alerts_windowed_06_on_ingest_time(bt, n, form):
    """As Wallaroo's alerts_windowed: an endless generator and windows on
    ingest time (here 600 ms sliding by 200 ms), so which transactions share
    a window depends on timing. What does not: every alert is for an account,
    past the threshold, and a window's total is what a run of the account's
    transactions adds up to, the difference of two balances: within 5000."""
    recv = bt.receiver()
    run = GenRun(bt, ALERTS / "alerts_windowed_06.py", n, form, outs=[recv.port],
                 extra=["--range-ms", 600, "--slide-ms", 200])
    got = complete_lines(recv.wait_lines(5, timeout=30, settle=0))
    assert len(got) >= 5, got
    for user, lines in by_user(got).items():
        assert user in USERS, user
        for l in lines:
            kind, total = ALERT_RE.match(l).group(1, 3)
            assert 2000 < abs(int(total)) <= 5000, l
            assert (kind == "Deposit") == (int(total) > 0), l
    run.stop()


@pytest.mark.parametrize("example, flags, message", [
    ("alerts_stateful_06.py", ["--transactions", "0"], "--transactions must be >= 1"),
    ("alerts_windowed_06.py", ["--late-ms", "5"], "--late-ms is for windows on event time"),
], ids=["no-transactions", "late-without-event-time"])
def test_alerts_flags_are_checked(bt, example, flags, message):
    eng = bt.engine(ALERTS / example, outs=[9], extra=flags, wait=False)
    rc, err = eng.wait_exit(20)
    assert rc == 2, err
    assert message in err, err


# ------------------------------------------------------------------ resilience

def test_alerts_stateful_06_exactly_once_across_a_kill(bt, tmp_path):
    """The generator keeps no memory of its own (the next transaction comes
    from the last one alone): with resilience, killed (SIGKILL) mid-stream and
    restarted, the source goes on from the checkpoint's last transaction and
    the balances from the checkpoint's, and the exactly-once receiver gets the
    output of a run without a crash, byte for byte (one worker: in order)."""
    import test_resilience as tr
    count = 300000
    txs = model_transactions(count)
    totals = collections.Counter()
    want = []
    for _, user, amount, _ in txs:
        totals[user] += amount
        line = alert_line(user, totals[user], 2000)
        if line:
            want.append(line + "\n")
    expected = "".join(want).encode()
    recv = tr.eo_receiver(bt)
    eng = bt.engine(ALERTS / "alerts_stateful_06.py", outs=[recv.port],
                    extra=["--transactions", count] + tr.resil_flags(tmp_path / "r", debug=True))
    wait_until(lambda: len(recv.data()) >= len(expected) // 4, 30, "a quarter of the output")
    eng.wait_log(tr.COMPLETE, count=2, timeout=15)
    assert DONE not in eng.stderr(), "the run is too short: the source was done before the kill"
    print("killed at %d of %d bytes of output" % (len(recv.data()), len(expected)))
    eng.kill()
    eng = bt.restart(eng)
    assert int(eng.wait_log(tr.RECOVERED).group(1)) >= 1
    eng.wait_log(DONE, timeout=60)
    tr.wait_output(recv, expected, timeout=60)
    tr.stop_ok(eng)
    assert recv.stop() == 0
    tr.assert_same_output(recv.data(), expected)
