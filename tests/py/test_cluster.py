"""Streaming on many workers: the examples give the same results on 1, 2 and 3
workers, formed with `--workers N` or with Wallaroo's flags; growing and
shrinking while data flows loses, repeats and reorders nothing; a lost worker is
reported; cluster ports refuse peers without the secret."""

import collections
import os
import random
import re
import signal
import socket
import struct
import subprocess
import time

import pytest

from conftest import (BIN, EXAMPLES, REPO, SOURCE_RE, AuthFailed, Cluster,  # noqa: F401
                      app_path, auth_handshake, children_of, example_path, lines_of,
                      load_module, wait_until)

WORDS_TXT = EXAMPLES / "word_count" / "data" / "bettong_tales.txt"
def complete_lines(recv):
    """The whole lines the receiver has written so far."""
    data = recv.data()
    return lines_of(data[:data.rfind(b"\n") + 1])


def send_frames(port, payloads, fmt=">I"):
    data = b"".join(struct.pack(fmt, len(p)) + p for p in payloads)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(data)


def word_lines():
    return WORDS_TXT.read_text("utf-8").split("\n")[:-1]


def expected_word_totals(passes):
    wc = load_module(example_path("word_count"))
    totals = collections.Counter()
    for _ in range(passes):
        for line in word_lines():
            totals.update(wc.split_words(line))
    return totals


def check_counts(lines, totals, in_order=True):
    """Every word's counts are exactly 1..n (in output order too, unless the
    word moved between workers, whose outputs reach the sink on two connections)."""
    seen = collections.defaultdict(list)
    for line in lines:
        word, sep, count = line.rpartition(" => ")
        assert sep, "malformed line %r" % line
        seen[word].append(int(count))
    for w in set(seen) | set(totals):
        got = seen.get(w, [])
        want = list(range(1, totals.get(w, 0) + 1))
        assert (got if in_order else sorted(got)) == want, \
            "word %r: counts %s, expected 1..%d" % (w, got[:10], totals.get(w, 0))


FORMS = [(n, form) for n in (1, 2, 3) for form in ("workers", "flags")]
FORM_IDS = ["%d-%s" % f for f in FORMS]


# ------------------------------------------------------------------ the examples on N workers

@pytest.mark.parametrize("n,form", FORMS, ids=FORM_IDS)
def test_word_count_on_workers(bt, n, form):
    recv = bt.receiver()
    c = Cluster(bt, example_path("word_count"), n, form, outs=[recv.port])
    lines = [l.encode() for l in word_lines()]
    # Several connections, spread over the workers' --in ports.
    for i in range(2 * n):
        send_frames(c.ports[i % n][0], lines)
    totals = expected_word_totals(2 * n)
    got = recv.wait_lines(sum(totals.values()), timeout=30)
    check_counts(lines_of(got), totals)
    if n > 1:
        st = c.workers()
        assert sum(w[1] for w in st.values()) == 4096
        assert all(w[1] > 0 for w in st.values()), st
    c.stop()


@pytest.mark.parametrize("n,form", FORMS, ids=FORM_IDS)
def test_alphabet_on_workers(bt, n, form):
    """One to_stateful state: it lives on one worker; every vote is routed there
    and the running totals come out exactly as on one worker."""
    rng = random.Random(n)
    votes = [(rng.choice("abcdefghijklmnopqrstuvwxyz"), rng.randrange(0, 1000))
             for _ in range(2000)]
    totals = collections.Counter()
    expected = []
    for letter, v in votes:
        totals[letter] += v
        expected.append("%s => %d\n" % (letter, totals[letter]))
    expected = "".join(expected).encode()
    recv = bt.receiver()
    c = Cluster(bt, example_path("alphabet"), n, form, outs=[recv.port])
    send_frames(c.ports[-1][0], [struct.pack(">cI", l.encode(), v) for l, v in votes])
    assert recv.wait_bytes(len(expected), timeout=30) == expected
    c.stop()


@pytest.mark.parametrize("n,form", FORMS, ids=FORM_IDS)
def test_celsius_and_reverse_on_workers(bt, n, form):
    """Stateless pipelines run where the message is, in order per connection."""
    inputs = [float(i) - 40.0 for i in range(500)]
    expected = b"".join(struct.pack(">If", 4, c * 1.8 + 32) for c in inputs)
    recv = bt.receiver(framed=True)
    c = Cluster(bt, example_path("celsius"), n, form, outs=[recv.port])
    send_frames(c.ports[-1][0], [struct.pack(">f", x) for x in inputs])
    assert recv.wait_bytes(len(expected), timeout=30) == expected
    c.stop()

    texts = ["line %d \u2014 caf\u00e9" % i for i in range(800)]
    recv2 = bt.receiver()
    c2 = Cluster(bt, example_path("reverse"), n, form, outs=[recv2.port])
    send_frames(c2.ports[0][0], [t.encode() for t in texts])
    want = "".join(t[::-1] + "\n" for t in texts).encode()
    assert recv2.wait_bytes(len(want), timeout=30) == want
    c2.stop()


@pytest.mark.parametrize("n,form", FORMS, ids=FORM_IDS)
def test_market_spread_on_workers(bt, n, form):
    """Two pipelines share a state partitioned by symbol: the quotes sent to one
    worker reach the orders sent to another."""
    m = load_module(example_path("market_spread"))
    rng = random.Random(5)
    quotes = {}
    for s in m.SYMBOLS:
        mid = round(rng.uniform(20, 200), 2)
        quotes[s] = (round(mid - 0.5, 2), round(mid + 0.5, 2))
    orders, expected = [], []
    for i in range(400):
        s = rng.choice(m.SYMBOLS)
        bid, offer = quotes[s]
        price = round(rng.choice([bid, offer, rng.uniform(bid - 1, offer + 1)]), 2)
        oid = "O%04d" % i
        orders.append("%s,%s,buy,100,%.2f" % (oid, s, price))
        if price < bid:
            expected.append("%s,%s,REJECT,below bid" % (oid, s))
        elif price > offer:
            expected.append("%s,%s,REJECT,above offer" % (oid, s))
        else:
            expected.append("%s,%s,ACCEPT" % (oid, s))
    recv = bt.receiver()
    c = Cluster(bt, example_path("market_spread"), n, form, nins=2, outs=[recv.port])
    send_frames(c.ports[0][0], [("%s,%.2f,%.2f" % (s, b, o)).encode()
                                for s, (b, o) in quotes.items()])
    # The quotes are in once a probe order at each mid price is accepted.
    probe_port = c.ports[-1][1]
    pending = set(m.SYMBOLS)
    deadline = time.monotonic() + 20
    probes = 0
    while pending:
        assert time.monotonic() < deadline, "quotes never arrived for %s" % pending
        batch = sorted(pending)
        send_frames(probe_port, [("P%05d,%s,buy,1,%.2f" % (probes + i, s, sum(quotes[s]) / 2))
                                 .encode() for i, s in enumerate(batch)])
        probes += len(batch)
        got = wait_until(lambda: complete_lines(recv) if len(complete_lines(recv)) >= probes
                         else None, 20, "probe answers")
        pending = {s for s in m.SYMBOLS
                   if not any(l.startswith("P") and l.split(",")[1] == s and l.endswith("ACCEPT")
                              for l in got)}
    send_frames(probe_port, [o.encode() for o in orders])
    got = wait_until(lambda: complete_lines(recv) if len(complete_lines(recv)) >= probes + len(orders)
                     else None, 30, "order answers")
    answers = [l for l in got if l.startswith("O")]
    assert sorted(answers) == sorted(expected)
    for s in m.SYMBOLS:  # one connection's orders of one symbol stay in order
        assert [a for a in answers if a.split(",")[1] == s] == \
            [e for e in expected if e.split(",")[1] == s]
    c.stop()


# ------------------------------------------------------------------ Wallaroo flags without effect

def test_ignored_flags_warned_once_by_the_workers_parent(bt):
    """With --workers, the parent names each ignored Wallaroo flag once; the
    workers it starts (with the same flags) do not repeat it. Wallaroo's
    --metrics is not one of them: each worker serves its metrics there (port
    0: each its own)."""
    recv = bt.receiver()
    c = Cluster(bt, example_path("reverse"), 2, "workers", outs=[recv.port],
                extra=["--ponythreads", "4", "--stop-pause", "5", "--metrics", "127.0.0.1:0"])
    c.wait_formed()
    send_frames(c.ports[0][0], [b"abc"])
    assert recv.wait_bytes(4) == b"cba\n"
    c.stop()
    err = c.stderr()
    for flag in ("--ponythreads", "--stop-pause"):
        assert err.count("%s is accepted for Wallaroo compatibility" % flag) == 1, err
    assert "--metrics is accepted" not in err, err
    assert len(set(re.findall(r"metrics listening on (\S+)", err))) == 2, err


# ------------------------------------------------------------------ sharing a port

def test_workers_share_the_in_port(bt):
    recv = bt.receiver()
    c = Cluster(bt, example_path("word_count"), 2, "workers", outs=[recv.port])
    c.wait_formed()  # both workers listen
    lines = [l.encode() for l in word_lines()[:50]]
    for _ in range(12):
        send_frames(c.ports[0][0], lines)
    totals = collections.Counter()
    wc = load_module(example_path("word_count"))
    for _ in range(12):
        for l in word_lines()[:50]:
            totals.update(wc.split_words(l))
    check_counts(lines_of(recv.wait_lines(sum(totals.values()))), totals)
    st = c.workers()
    # Connections spread over both workers (the kernel hashes each connection).
    assert all(int(w[3]) > 0 for w in st.values()), st
    c.stop()


# ------------------------------------------------------------------ grow and shrink

def keyed_input(n_keys, n_msgs, seed):
    rng = random.Random(seed)
    keys = ["k%03d" % i for i in range(n_keys)]
    msgs = [(rng.choice(keys), rng.randrange(1, 10 ** 6)) for _ in range(n_msgs)]
    return msgs


def expected_sums(msgs):
    totals = collections.Counter()
    per_key = collections.defaultdict(list)
    for k, v in msgs:
        totals[k] += v
        per_key[k].append(totals[k])
    return per_key


def check_sums(lines, msgs):
    """Each key's running sums, as a set, are those of its messages in the order
    sent: a message lost, repeated or run out of order changes them."""
    got = collections.defaultdict(list)
    for line in lines:
        k, _, s = line.rpartition(" => ")
        got[k].append(int(s))
    want = expected_sums(msgs)
    assert set(got) == set(want)
    for k in want:
        assert sorted(got[k]) == want[k], "key %s: sums differ" % k


def send_slowly(port, msgs, chunks, progress=None, timeout=10):
    """One connection, the messages in `chunks` parts with pauses between them;
    progress (a list) gets one entry per part sent."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    size = (len(msgs) + chunks - 1) // chunks
    for i in range(0, len(msgs), size):
        s.sendall(b"".join(struct.pack(">I", len(p)) + p
                           for p in (("%s,%d" % kv).encode() for kv in msgs[i:i + size])))
        if progress is not None:
            progress.append(i)
        time.sleep(0.05)
    s.close()


def test_grow_and_shrink_while_data_flows(bt):
    import threading
    msgs = keyed_input(300, 30000, 7)
    recv = bt.receiver()
    c = Cluster(bt, app_path("keyed_sums"), 2, "flags", outs=[recv.port])
    c.wait_formed(2)
    sender = threading.Thread(target=send_slowly, args=(c.ports[0][0], msgs, 60))
    sender.start()
    time.sleep(0.5)
    # Grow: a third worker joins the running cluster and takes a share of the slots.
    w3 = c.add_worker(join=True, name="w3")
    c.wait_formed(3)
    st = c.workers()
    assert st["w3"][1] in (1365, 1366), st
    assert sum(w[1] for w in st.values()) == 4096
    time.sleep(0.5)
    # Shrink: w2 hands its slots to the others and exits.
    p = subprocess.run([BIN, "cluster", "shrink", "--control", c.control, "--worker", "w2"],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "left the cluster" in p.stdout
    rc, err = c.engines[1].wait_exit(20)
    assert rc == 0, err
    sender.join(60)
    got = recv.wait_lines(len(msgs), timeout=30)
    check_sums(lines_of(got), msgs)
    st = c.workers()
    assert st["w2"][0] == "left" and st["w2"][1] == 0
    assert st["w1"][1] + st["w3"][1] == 4096
    moved = re.findall(r"moved (\d+) slots away", c.stderr())
    assert moved, "no slot moved"
    rc, err = c.engines[0].stop(timeout=30)
    assert rc == 0, err
    rc, err = w3.wait_exit(30)
    assert rc == 0, err


def test_shrink_refuses_the_initializer_and_unknown_workers(bt):
    recv = bt.receiver()
    c = Cluster(bt, example_path("word_count"), 2, "flags", outs=[recv.port])
    c.wait_formed()
    for name, text in (("w1", "initializer"), ("nobody", "no active worker")):
        p = subprocess.run([BIN, "cluster", "shrink", "--control", c.control, "--worker", name],
                           capture_output=True, text=True, timeout=20)
        assert p.returncode == 1 and text in p.stderr, p.stdout + p.stderr
    c.stop()


# ------------------------------------------------------------------ failures

def test_killed_worker_is_reported(bt):
    recv = bt.receiver()
    c = Cluster(bt, example_path("word_count"), 3, "flags", outs=[recv.port])
    c.wait_formed()
    c.engines[2].proc.send_signal(signal.SIGKILL)
    t0 = time.monotonic()
    for e in c.engines[:2]:
        wait_until(lambda: re.search(r"worker 'w3' .*is lost", e.stderr()), 10,
                   "the others to report w3 lost")
    assert time.monotonic() - t0 < 5
    p = c.status(check=False)
    assert p.returncode == 1, p.stdout
    assert re.search(r"^w3 +\d+ +LOST", p.stdout, re.M), p.stdout
    # Messages for the lost worker's slots are dropped and counted, nothing hangs.
    send_frames(c.ports[0][0], [l.encode() for l in word_lines()])
    time.sleep(0.5)
    rc, err = c.engines[0].stop(timeout=30)
    assert rc == 3, err
    rc, err = c.engines[1].wait_exit(30)
    assert rc == 3, err


def test_unresponsive_worker_is_reported(bt):
    """A worker that stops answering (no FIN: SIGSTOP) is reported after the timeout."""
    recv = bt.receiver()
    c = Cluster(bt, example_path("word_count"), 2, "flags", outs=[recv.port],
                extra=["--cluster-timeout", "1"])
    c.wait_formed()
    c.engines[1].proc.send_signal(signal.SIGSTOP)
    try:
        wait_until(lambda: re.search(r"worker 'w2' .*is lost: nothing heard", c.engines[0].stderr()),
                   10, "w1 to report w2 lost")
    finally:
        c.engines[1].proc.send_signal(signal.SIGCONT)
    c.engines[1].proc.kill()
    rc, err = c.engines[0].stop(timeout=30)
    assert rc == 3, err


# ------------------------------------------------------------------ security

def cl_identity(channel, index, name):
    """A cluster identity (src/cluster/cproto.h): u8 channel, u16 index, str16 name."""
    name = name.encode() if isinstance(name, str) else name
    return bytes([channel]) + struct.pack(">HH", index, len(name)) + name


def raw_hello(port, secret, channel=1, check_server=True):
    """Connect, run the handshake with `secret` as a new worker named
    'intruder' and send a PING; True if the peer welcomes us and keeps the
    connection open (it refuses and closes otherwise)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        answer = auth_handshake(s, "cluster", cl_identity(channel, 0xffff, "intruder"), secret,
                                check_server=check_server)
        if answer != bytes([4]):  # CL_WELCOME
            return False
        s.sendall(struct.pack(">I", 1) + bytes([2]))  # CL_PING
        s.settimeout(1.0)
        return s.recv(100) != b""
    except socket.timeout:
        return True
    except (ConnectionError, AuthFailed):
        return False
    finally:
        s.close()


def test_peers_without_the_secret_are_refused(bt):
    recv = bt.receiver()
    c = Cluster(bt, example_path("word_count"), 2, "flags", outs=[recv.port], secret="s3cret")
    c.wait_formed()
    port = int(c.control.rsplit(":", 1)[1])
    # A client that skips checking our proof, and proves a wrong secret, is refused.
    assert raw_hello(port, "wrong", check_server=False) is False
    wait_until(lambda: "wrong cluster secret" in c.engines[0].stderr(), 5, "the refusal logged")
    # One that checks finds that we cannot prove its (wrong) secret.
    assert raw_hello(port, "wrong") is False
    assert raw_hello(port, "s3cret") is True
    # Garbage on the control port closes that connection only.
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"\xff" * 64 + b"GET / HTTP/1.0\r\n\r\n")
        s.settimeout(2)
        try:
            assert s.recv(100) == b""
        except ConnectionResetError:
            pass
    # A status without the secret is refused; with it, the cluster is intact.
    p = subprocess.run([BIN, "cluster", "status", "--control", c.control], capture_output=True,
                       text=True, timeout=20, env={k: v for k, v in os.environ.items()
                                                  if k != "BETTONG_CLUSTER_SECRET"})
    assert p.returncode == 2, p.stdout + p.stderr
    assert c.status().returncode == 0
    # A worker with the wrong secret cannot join: the coordinator cannot prove
    # its secret, so it stops before it says anything more.
    bad = c.add_worker(join=True, name="w9", wait=False, secret="not-it")
    rc, err = bad.wait_exit(15)
    assert rc == 2 and "could not join" in err and "cannot prove the cluster secret" in err, err
    wait_until(lambda: "closed during the handshake" in c.engines[0].stderr(), 5, "the close")
    # So does a second worker with a name already in the cluster.
    dup = c.add_worker(join=True, name="w2", wait=False)
    rc, err = dup.wait_exit(15)
    assert rc == 2 and "could not join" in err, err
    assert "a worker named 'w2' is already in the cluster" in err, err
    send_frames(c.ports[0][0], [l.encode() for l in word_lines()])
    totals = expected_word_totals(1)
    check_counts(lines_of(recv.wait_lines(sum(totals.values()))), totals)
    rc, err = c.engines[0].stop(timeout=30)
    assert rc == 0, err


def test_workers_share_the_ports_picked_for_port_0(bt):
    """--workers 2 --in 127.0.0.1:0,127.0.0.1:0: the parent has the kernel pick
    each port once and logs them; both workers listen on those ports (not one
    each), and the application's two sources get one each."""
    recv = bt.receiver()
    eng = bt.engine(example_path("market_spread"), ins=[0, 0], outs=[recv.port],
                    extra=["--workers", 2])
    eng.wait_log(r"cluster: formed with 2 workers")
    m = eng.wait_log(r"--in 127\.0\.0\.1:0,127\.0\.0\.1:0: the workers share "
                     r"127\.0\.0\.1:(\d+),127\.0\.0\.1:(\d+)")
    picked = [int(m.group(1)), int(m.group(2))]
    assert picked[0] != picked[1]
    eng.wait_log(r"source 'Orders' listening on", count=2)
    lines = [(name, int(port)) for name, _, port in SOURCE_RE.findall(eng.stderr())]
    assert sorted(lines) == sorted([("Market Data", picked[0]), ("Orders", picked[1])] * 2), lines
    assert eng.in_ports == picked
    rc, err = eng.stop(timeout=20)
    assert rc == 0, err


def test_workers_stop_when_one_cannot_start(bt):
    """--workers N with an application that does not load: exit 2, nothing waits."""
    recv = bt.receiver()
    eng = bt.engine(app_path("setup_raises_app"), ins=[0], outs=[recv.port],
                    extra=["--workers", "2"], wait=False)
    rc, err = eng.wait_exit(20)
    assert rc == 2, err
    assert "could not start" in err or "application_setup() raised" in err


def test_cluster_address_beyond_loopback_needs_a_secret(bt):
    recv = bt.receiver()
    env = {k: v for k, v in os.environ.items() if k != "BETTONG_CLUSTER_SECRET"}
    p = subprocess.run([BIN, "run", str(example_path("word_count")), "--in",
                        "127.0.0.1:0", "--out", "127.0.0.1:%d" % recv.port,
                        "--cluster-initializer", "--worker-count", "2", "--control",
                        "0.0.0.0:0"], capture_output=True, text=True,
                       timeout=20, cwd=str(REPO), env=env)
    assert p.returncode == 2
    assert "needs a secret" in p.stderr


# ------------------------------------------------------------------ separate network namespaces

def _ip(*args, ns=None):
    cmd = (["ip", "netns", "exec", ns] if ns else []) + ["ip"] + list(args)
    subprocess.run(cmd, check=True, capture_output=True, timeout=20)


@pytest.fixture
def netns3():
    """Three network namespaces on one bridge, each with its own address
    (10.213.N.1-3); the test process (the root namespace) is 10.213.N.254."""
    import shutil
    if os.geteuid() != 0 or not shutil.which("ip"):
        pytest.skip("needs root and iproute2 to make network namespaces")
    tag = "bt%04d" % (os.getpid() % 10000)
    net = "10.213.%d" % (os.getpid() % 200 + 20)
    names = ["%sn%d" % (tag, i) for i in (1, 2, 3)]
    bridge = tag + "br"
    try:
        _ip("link", "add", bridge, "type", "bridge")
    except subprocess.CalledProcessError as e:
        pytest.skip("cannot make a bridge here: %s" % e.stderr.decode(errors="replace").strip())
    try:
        _ip("addr", "add", net + ".254/24", "dev", bridge)
        _ip("link", "set", bridge, "up")
        for i, ns in enumerate(names, 1):
            _ip("netns", "add", ns)
            _ip("link", "add", "%sv%d" % (tag, i), "type", "veth", "peer", "name",
                "%sp%d" % (tag, i))
            _ip("link", "set", "%sp%d" % (tag, i), "netns", ns)
            _ip("link", "set", "%sv%d" % (tag, i), "master", bridge)
            _ip("link", "set", "%sv%d" % (tag, i), "up")
            _ip("addr", "add", "%s.%d/24" % (net, i), "dev", "%sp%d" % (tag, i), ns=ns)
            _ip("link", "set", "%sp%d" % (tag, i), "up", ns=ns)
            _ip("link", "set", "lo", "up", ns=ns)
        yield net, names
    finally:
        for ns in names:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        subprocess.run(["ip", "link", "del", bridge], capture_output=True)


def test_cluster_across_network_namespaces(bt, netns3):
    """Three workers, each in its own network namespace with its own address,
    talking over a bridge with a cluster secret: the word count is exact."""
    net, names = netns3
    recv = bt.receiver(host=net + ".254")
    out, rport = recv.out, recv.port
    env = dict(os.environ, BETTONG_CLUSTER_SECRET="netns-secret")
    control = "%s.1:12500" % net
    procs, logs = [], []
    for i, ns in enumerate(names, 1):
        host = "%s.%d" % (net, i)
        flags = ["--name", "w%d" % i, "--my-control", host + ":12500", "--my-data",
                 host + ":12501"]
        if i == 1:
            flags = ["--name", "w1", "--cluster-initializer", "--worker-count", "3",
                     "--control", control, "--data", host + ":12501"]
        else:
            flags += ["--control", control]
        log = bt.path("w%d.log" % i)
        logs.append(log)
        with open(log, "wb") as f:
            procs.append(bt.procs.spawn(
                ["ip", "netns", "exec", ns, BIN, "run", str(example_path("word_count")), "--in",
                 host + ":7010", "--out", "%s.254:%d" % (net, rport)] + flags,
                cwd=str(REPO), env=env, stdout=f, stderr=f))
    status = [BIN, "cluster", "status", "--control", control]
    wait_until(lambda: "cluster formed, 3 active" in subprocess.run(
        status, capture_output=True, text=True, env=env, timeout=20).stdout, 30,
        "the cluster to form across namespaces", interval=0.2)
    lines = [l.encode() for l in word_lines()]
    for i in (1, 2, 3):
        send_frames_to("%s.%d" % (net, i), 7010, lines)
    totals = expected_word_totals(3)

    def enough():
        data = out.read_bytes() if out.exists() else b""
        return data.count(b"\n") >= sum(totals.values())
    wait_until(enough, 30, "all counts at the receiver")
    time.sleep(0.2)
    check_counts(lines_of(out.read_bytes()), totals)
    st = subprocess.run(status, capture_output=True, text=True, env=env, timeout=20).stdout
    assert all(re.search(r"^w%d +\d+ +active +13[67]\d " % i, st, re.M) for i in (1, 2, 3)), st
    procs[0].send_signal(signal.SIGTERM)
    for p, log in zip(procs, logs):
        assert p.wait(30) == 0, log.read_text()
    recv.kill()


def send_frames_to(host, port, payloads):
    data = b"".join(struct.pack(">I", len(p)) + p for p in payloads)
    with socket.create_connection((host, port), timeout=10) as s:
        s.sendall(data)


def rss_mb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


def test_stalled_peer_bounds_memory_and_loses_nothing(bt):
    """A worker stops reading (SIGSTOP) while data for its slots keeps coming:
    the sender's links fill to the backpressure mark, its source stops reading
    (memory stays bounded), and once the worker runs again every count is exact."""
    import threading
    recv = bt.receiver()
    c = Cluster(bt, app_path("keyed_sums"), 2, "flags", outs=[recv.port],
                extra=["--cluster-timeout", "60"])
    c.wait_formed()
    msgs = keyed_input(500, 1000000, 11)
    c.engines[1].proc.send_signal(signal.SIGSTOP)
    progress = []
    sender = threading.Thread(target=send_slowly, args=(c.ports[0][0], msgs, 10, progress, 120))
    sender.start()
    w1 = c.engines[0].proc.pid
    peak = 0
    for _ in range(25):
        time.sleep(0.2)
        peak = max(peak, rss_mb(w1))
    # Unimpeded, the ten parts take about a second; held back, the sender is
    # still blocked in TCP because w1 stopped reading its source.
    assert len(progress) < 10, "the sender finished: nothing held it back"
    assert peak < 150, "w1 grew to %.0f MB while its peer was stopped" % peak
    c.engines[1].proc.send_signal(signal.SIGCONT)
    sender.join(120)
    got = recv.wait_lines(len(msgs), timeout=60)
    check_sums(lines_of(got), msgs)
    c.stop()


def test_garbage_on_the_data_port_closes_that_connection_only(bt):
    recv = bt.receiver()
    c = Cluster(bt, example_path("word_count"), 2, "flags", outs=[recv.port])
    c.wait_formed()
    data_addr = [l.split()[-1] for l in c.status().stdout.splitlines()[2:]][1]
    host, port = data_addr.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(struct.pack(">I", 3) + b"\x0a\x00\x01" + b"\xff" * 100)
        s.settimeout(2)
        try:
            assert s.recv(10) == b""
        except ConnectionResetError:
            pass
    assert re.search(r"refusing connection from .*(HELLO|malformed)", c.stderr()), c.stderr()
    send_frames(c.ports[0][0], [l.encode() for l in word_lines()])
    totals = expected_word_totals(1)
    check_counts(lines_of(recv.wait_lines(sum(totals.values()))), totals)
    c.stop()


def test_load_balancing_moves_busy_slots_and_loses_nothing(bt):
    """A skewed load (a few keys take most messages): the coordinator measures
    what runs on each slot and moves busy slots to the idler worker while data
    flows; every key's sums stay exact."""
    import threading
    rng = random.Random(5)
    hot = ["h%02d" % i for i in range(6)]
    cold = ["c%03d" % i for i in range(200)]
    msgs = [(rng.choice(hot) if rng.random() < 0.7 else rng.choice(cold), rng.randrange(1, 10 ** 6))
            for _ in range(60000)]
    recv = bt.receiver()
    c = Cluster(bt, app_path("keyed_sums"), 2, "flags", outs=[recv.port],
                extra=["--rebalance", "0.3"])
    c.wait_formed()
    sender = threading.Thread(target=send_slowly, args=(c.ports[0][0], msgs, 60))
    sender.start()
    sender.join(60)
    got = recv.wait_lines(len(msgs), timeout=30)
    check_sums(lines_of(got), msgs)
    err = c.engines[0].stderr()
    assert re.search(r"load balanced: \d+ slots moved", err), err[-3000:]
    c.stop()


def test_stream_computations_use_persistent_objects(bt, tmp_path, monkeypatch):
    """Computations on two workers call an active method of one persistent object
    in a running store: every message's add() runs on the master copy once."""
    import sys
    from store_helpers import Stores, client_reset
    sys.path.insert(0, str(REPO / "tests" / "py" / "apps"))
    import store_stream_app as app
    from bettong import objects
    stores = Stores(tmp_path)
    try:
        store = stores()
        client_reset()
        objects.connect(store.address)
        app.Tally().make_persistent(alias="stream-tally")
        monkeypatch.setenv("BETTONG_STORE", store.address)
        msgs = keyed_input(50, 3000, 17)
        recv = bt.receiver()
        c = Cluster(bt, app_path("store_stream_app"), 2, "workers", outs=[recv.port],
                    extra=["--tally", "stream-tally"])
        c.wait_formed()
        for i in range(3):
            send_frames(c.ports[0][0], [("%s,%d" % kv).encode() for kv in msgs[i::3]])
        sent = msgs[0::3] + msgs[1::3] + msgs[2::3]
        got = recv.wait_lines(len(msgs), timeout=60)
        lines = lines_of(got)
        assert len(lines) == len(msgs)
        t = app.Tally.get_by_alias("stream-tally")
        assert t.count == len(msgs)
        assert t.total == sum(n for _, n in sent)
        c.stop()
    finally:
        client_reset()
        stores.cleanup()


def test_workers_get_the_secret_through_their_environment(bt):
    """`--workers` with --cluster-secret: the cluster forms with it, the parent
    warns that the command line shows it, and no worker's argument vector
    (readable by every user in /proc) holds it."""
    secret = "s3cret-%d" % os.getpid()
    # The sink's port is reserved and nobody listens on it: output waits, refused.
    eng = bt.engine(example_path("word_count"), ins=[0], outs=[bt.reserve_port()],
                    extra=["--workers", 2, "--cluster-secret", secret])
    eng.wait_log(r"cluster: formed with 2 workers")
    children = list(children_of(eng.proc.pid).values())
    assert len(children) == 2, children
    assert all(secret.encode() not in c for c in children), children
    assert eng.count_log(r"--cluster-secret on the command line can be read") == 1
    rc, err = eng.stop(timeout=20)
    assert rc == 0, err
