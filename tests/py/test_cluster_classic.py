"""Wallaroo's own cluster command lines on one machine: both workers given the
same --in (Wallaroo 0.4 opened sources on the initializer only; Bettong's
workers share the port), data sent before the cluster formed is processed once
it has, the external channel (--external) stops the whole cluster cleanly with
Wallaroo's clean shutdown message or `bettong cluster shutdown`, and a joiner
gives up on a coordinator that never answers its handshake."""

import collections
import random
import re
import socket
import struct
import subprocess

import pytest

from conftest import (BIN, auth_handshake, example_path, lines_of, load_module, recv_frame,
                      wait_until)
from conftest import EXAMPLES  # noqa: F401

WORDS_TXT = EXAMPLES / "word_count" / "data" / "bettong_tales.txt"

# Wallaroo's clean shutdown (utils/cluster_shutdown): 0.6 frame, and 0.4's.
CLEAN_SHUTDOWN_06 = b"\x00\x00\x00\x02\x00\x03"
CLEAN_SHUTDOWN_04 = struct.pack(">IBHI", 7, 1, 13, 0)

ADDR_RE = r"(\d+\.\d+\.\d+\.\d+:\d+)"


def wallaroo_flags(module, ins, out_port, role, control="127.0.0.1:0", name=None,
                   external="127.0.0.1:0", metrics="127.0.0.1:0", extra=()):
    """A worker's command line as Wallaroo's docs give it (running-wallaroo.md),
    every port 0 but the shared --in and --metrics once the initializer picked
    them."""
    args = ["--application-module", module, "--application-path", str(EXAMPLES / module),
            "--in", ins, "--out", "127.0.0.1:%d" % out_port, "--metrics", metrics,
            "--control", control, "--external", external, "--ponythreads=1", "--ponynoblock",
            "--log-level", "info"]
    if role == "initializer":
        args += ["--data", "127.0.0.1:0", "--worker-count", "2", "--cluster-initializer",
                 "--name", name or "initializer"]
    else:
        args += ["--my-control", "127.0.0.1:0", "--my-data", "127.0.0.1:0",
                 "--name", name or "worker2"]
    return args + list(extra)


class WallarooPair:
    """An initializer and a joiner started with Wallaroo's flags and the same
    --in: the initializer's port 0 is read from its log and given to both."""

    def __init__(self, bt, module, out_port, start_joiner=True, extra=()):
        self.bt, self.module, self.out_port, self.extra = bt, module, out_port, list(extra)
        self.init = bt.engine(None, wait=False,
                              extra=wallaroo_flags(module, "127.0.0.1:0", out_port,
                                                   "initializer", extra=extra))
        self.in_port = int(self.init.wait_log(r"source '[^']*' listening on \S+:(\d+)").group(1))
        self.control = self.init.wait_log(r"coordinator listening on " + ADDR_RE).group(1)
        self.metrics = self.init.wait_log(r"metrics listening on " + ADDR_RE).group(1)
        self.external = self.init.wait_log(r"external channel listening on " + ADDR_RE).group(1)
        self.joiner = None
        if start_joiner:
            self.start_joiner()

    def start_joiner(self):
        self.joiner = self.bt.engine(
            None, wait=False,
            extra=wallaroo_flags(self.module, "127.0.0.1:%d" % self.in_port, self.out_port,
                                 "joiner", control=self.control, metrics=self.metrics,
                                 extra=self.extra))
        # Same --in, same port: the joiner listens on it too.
        port = int(self.joiner.wait_log(r"source '[^']*' listening on \S+:(\d+)").group(1))
        assert port == self.in_port
        # Same --metrics (Wallaroo's UI address): taken, so served elsewhere.
        assert self.joiner.wait_log(r"metrics listening on " + ADDR_RE).group(1) != self.metrics
        self.joiner_external = self.joiner.wait_log(
            r"external channel listening on " + ADDR_RE).group(1)
        self.init.wait_log(r"cluster: formed with 2 workers")
        self.joiner.wait_log(r"cluster: formed; starting the sources")

    @property
    def engines(self):
        return [self.init, self.joiner]

    def wait_all_exit(self, code=0):
        for e in self.engines:
            rc, err = e.wait_exit(30)
            assert rc == code, "exit %d, expected %d:\n%s" % (rc, code, err)
            assert "Traceback" not in err, err


def send_frames(port, payloads, fmt=">I"):
    data = b"".join(struct.pack(fmt, len(p)) + p for p in payloads)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(data)


def word_lines(n=200):
    return [l for l in WORDS_TXT.read_text("utf-8").split("\n")[:n] if l]


def check_word_counts(data, lines, passes):
    """Every word's counts come out exactly 1..n, in order."""
    wc = load_module(example_path("word_count"))
    totals = collections.Counter()
    for _ in range(passes):
        for line in lines:
            totals.update(wc.split_words(line))
    seen = collections.defaultdict(list)
    for line in lines_of(data):
        word, sep, count = line.rpartition(" => ")
        assert sep, "malformed line %r" % line
        seen[word].append(int(count))
    assert set(seen) == set(totals)
    for w, n in totals.items():
        assert seen[w] == list(range(1, n + 1)), (w, seen[w][:10], n)
    return sum(totals.values())


def word_count_total(lines, passes):
    wc = load_module(example_path("word_count"))
    return passes * sum(len(wc.split_words(l)) for l in lines)


def alphabet_votes(seed, n=1500):
    rng = random.Random(seed)
    votes = [(rng.choice("abcdefghijklmnopqrstuvwxyz"), rng.randrange(0, 1000))
             for _ in range(n)]
    totals = collections.Counter()
    expected = []
    for letter, v in votes:
        totals[letter] += v
        expected.append("%s => %d\n" % (letter, totals[letter]))
    return [struct.pack(">cI", l.encode(), v) for l, v in votes], "".join(expected).encode()


# ------------------------------------------------------------------ the same --in on both workers

def frames_in(control):
    """{worker name: frames read from its sources} from `bettong cluster status`."""
    p = subprocess.run([BIN, "cluster", "status", "--control", control],
                       capture_output=True, text=True, timeout=20)
    assert p.returncode == 0, p.stdout + p.stderr
    return {f[0]: int(f[5]) for f in (l.split() for l in p.stdout.splitlines()[2:])}


def test_word_count_with_wallaroos_two_worker_command_lines(bt):
    """Both workers get the same --in; connections land on either (the test
    connects until both have read some), the words are routed by key: exact
    counts, and both workers exit 0 at the end."""
    recv = bt.receiver()
    pair = WallarooPair(bt, "word_count", recv.port)
    lines = [l.encode() for l in word_lines(60)]
    passes = 0
    counts = {}
    while passes < 4 or min(counts.values()) == 0:
        assert passes < 40, "the kernel never gave the joiner a connection: %s" % counts
        send_frames(pair.in_port, lines)
        passes += 1
        counts = wait_until(
            lambda: (lambda c: c if sum(c.values()) == passes * len(lines) else None)(
                frames_in(pair.control)), 20, "every frame read")
    assert set(counts) == {"initializer", "worker2"}
    want = word_count_total(word_lines(60), passes)
    data = recv.wait_lines(want, timeout=30)
    assert check_word_counts(data, word_lines(60), passes) == want
    rc, err = pair.init.stop(timeout=30)
    assert rc == 0, err
    pair.wait_all_exit(0)
    assert recv.data() == data


def test_alphabet_with_wallaroos_two_worker_command_lines(bt):
    """One to_stateful state on one worker: the running totals come out exactly
    as on one worker, whichever worker took the connection."""
    payloads, expected = alphabet_votes(7)
    recv = bt.receiver()
    pair = WallarooPair(bt, "alphabet", recv.port)
    send_frames(pair.in_port, payloads)
    assert recv.wait_bytes(len(expected), timeout=30) == expected
    pair.init.stop(timeout=30)
    pair.wait_all_exit(0)


# ------------------------------------------------------------------ data before the cluster forms

def test_data_sent_before_the_joiner_starts_is_processed_once_formed(bt):
    """Two connections, accepted by the initializer while it waits for its
    joiner and not read until the cluster has formed: every word is counted
    exactly (1..n per word; the connections' order between them is free)."""
    recv = bt.receiver()
    pair = WallarooPair(bt, "word_count", recv.port, start_joiner=False)
    lines = [l.encode() for l in word_lines(120)]
    send_frames(pair.in_port, lines)
    send_frames(pair.in_port, lines)
    pair.init.wait_log(r"is read once the cluster has formed", count=2)
    assert recv.data() == b""  # nothing can run before the cluster forms
    pair.start_joiner()
    want = word_count_total(word_lines(120), 2)
    data = recv.wait_lines(want, timeout=30)
    assert check_word_counts(data, word_lines(120), 2) == want
    pair.init.stop(timeout=30)
    pair.wait_all_exit(0)


def test_alphabet_sent_before_the_joiner_starts_comes_out_exactly(bt):
    """One connection, held until the cluster forms: the running totals come
    out byte for byte."""
    payloads, expected = alphabet_votes(11, n=500)
    recv = bt.receiver()
    pair = WallarooPair(bt, "alphabet", recv.port, start_joiner=False)
    send_frames(pair.in_port, payloads)
    pair.init.wait_log(r"is read once the cluster has formed")
    assert recv.data() == b""
    pair.start_joiner()
    assert recv.wait_bytes(len(expected), timeout=30) == expected
    pair.init.stop(timeout=30)
    pair.wait_all_exit(0)


@pytest.mark.parametrize("sent", [b"a\x00\x00\x00\x01", b""], ids=["data", "nothing"])
def test_stop_before_forming_with_unread_data_is_not_a_success(bt, sent):
    """Accepted and never read: the exit status says so, with a log line; a
    connection that sent nothing loses nothing."""
    recv = bt.receiver()
    pair = WallarooPair(bt, "alphabet", recv.port, start_joiner=False)
    with socket.create_connection(("127.0.0.1", pair.in_port), timeout=10) as s:
        s.sendall(sent)
        pair.init.wait_log(r"is read once the cluster has formed")
        rc, err = pair.init.stop(timeout=30)
    lost = "stopping before the cluster formed: 1 source connection(s) were accepted and " \
           "never read"
    assert (rc, lost in err) == ((1, True) if sent else (0, False)), err


# ------------------------------------------------------------------ the external channel

def raw_shutdown(address, frame, wait=True):
    """Write Wallaroo's clean shutdown; the worker closes the connection once
    it took it (wait=False: close at once, as Wallaroo's cluster_shutdown does)."""
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(frame)
        if wait:
            s.settimeout(20)
            assert s.recv(100) == b""


@pytest.mark.parametrize("how", ["bettong-joiner", "bettong-initializer", "raw-06", "raw-04"])
def test_external_clean_shutdown_stops_the_whole_cluster(bt, how):
    recv = bt.receiver()
    pair = WallarooPair(bt, "word_count", recv.port)
    lines = [l.encode() for l in word_lines(80)]
    for _ in range(3):
        send_frames(pair.in_port, lines)
    want = word_count_total(word_lines(80), 3)
    data = recv.wait_lines(want, timeout=30)
    if how.startswith("bettong"):
        target = pair.joiner_external if how == "bettong-joiner" else pair.external
        p = subprocess.run([BIN, "cluster", "shutdown", "--external", target],
                           capture_output=True, text=True, timeout=30)
        assert p.returncode == 0, p.stderr
        assert "clean shutdown sent to %s" % target in p.stdout
    else:
        # 0.4's frame the way Wallaroo's tool sends: write, close at once.
        raw_shutdown(pair.external, CLEAN_SHUTDOWN_06 if how == "raw-06" else CLEAN_SHUTDOWN_04,
                     wait=how == "raw-06")
    pair.wait_all_exit(0)
    assert check_word_counts(recv.data(), word_lines(80), 3) == want
    assert recv.data() == data
    err = pair.init.stderr() + pair.joiner.stderr()
    assert "external clean shutdown received from 127.0.0.1:" in err
    assert "--external is accepted" not in err


def test_cluster_shutdown_through_the_coordinator(bt):
    payloads, expected = alphabet_votes(3, n=300)
    recv = bt.receiver()
    pair = WallarooPair(bt, "alphabet", recv.port)
    send_frames(pair.in_port, payloads)
    assert recv.wait_bytes(len(expected), timeout=30) == expected
    p = subprocess.run([BIN, "cluster", "shutdown", "--control", pair.control],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    assert p.stdout == "the cluster is stopping\n"
    pair.wait_all_exit(0)


def test_external_channel_with_workers_and_alone(bt):
    """--workers N: the initializer has the channel (Wallaroo's positional
    `cluster_shutdown H:P` spelling); one worker alone stops itself."""
    payloads, expected = alphabet_votes(5, n=200)
    recv = bt.receiver()
    eng = bt.engine(example_path("alphabet"), ins=[0], outs=[recv.port],
                    extra=["--workers", "2", "--external=127.0.0.1:0"])
    ext = eng.wait_log(r"external channel listening on " + ADDR_RE).group(1)
    eng.wait_log(r"cluster: formed with 2 workers")
    assert eng.count_log(r"external channel listening") == 1
    send_frames(eng.in_ports[0], payloads)
    assert recv.wait_bytes(len(expected), timeout=30) == expected
    p = subprocess.run([BIN, "cluster", "shutdown", ext], capture_output=True, text=True,
                       timeout=30)
    assert p.returncode == 0, p.stderr
    rc, err = eng.wait_exit(30)
    assert rc == 0, err

    recv2 = bt.receiver()
    alone = bt.engine(example_path("alphabet"), ins=[0], outs=[recv2.port],
                      extra=["--external", "0"])  # a bare port: loopback
    ext = alone.wait_log(r"external channel listening on (127\.0\.0\.1:\d+)").group(1)
    send_frames(alone.in_ports[0], payloads)
    assert recv2.wait_bytes(len(expected), timeout=30) == expected
    raw_shutdown(ext, CLEAN_SHUTDOWN_06)
    rc, err = alone.wait_exit(30)
    assert rc == 0, err


def test_external_channel_refuses_what_it_does_not_do(bt):
    """An unsupported Wallaroo message (cluster status query, 9) or garbage is
    logged and its connection closed; the worker goes on. A Print is logged."""
    recv = bt.receiver()
    eng = bt.engine(example_path("alphabet"), ins=[0], outs=[recv.port],
                    extra=["--external", "127.0.0.1:0"])
    host, port = eng.wait_log(r"external channel listening on " + ADDR_RE).group(1).split(":")
    for frame in (b"\x00\x00\x00\x02\x00\x09", b"\x00\x00\x00\x03zzz"):
        with socket.create_connection((host, int(port)), timeout=10) as s:
            s.sendall(frame)
            s.settimeout(20)
            assert s.recv(100) == b""
    eng.wait_log(r"Wallaroo external message 9 \(version 0\.6\) .* is not supported here")
    eng.wait_log(r"is not a Wallaroo external message; closing")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(struct.pack(">IH", 7, 1) + b"hello")
    eng.wait_log(r"external print: hello")
    send_frames(eng.in_ports[0], [b"q\x00\x00\x00\x05"])
    assert recv.wait_bytes(7) == b"q => 5\n"
    rc, err = eng.stop()
    assert rc == 0, err


def test_external_beyond_loopback_needs_the_secret(bt):
    out = subprocess.run([BIN, "run", str(example_path("alphabet")), "--in", "127.0.0.1:0",
                          "--out", "127.0.0.1:1", "--external", "0.0.0.0:0"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 2, out.stderr
    assert "--external 0.0.0.0:0 is not a loopback address" in out.stderr


def local_address():
    """A non-loopback address of this machine (None if it has none)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.connect(("192.0.2.1", 9))  # no packet is sent
        addr = s.getsockname()[0]
    except OSError:
        return None
    finally:
        s.close()
    return None if addr.startswith("127.") else addr


def test_external_peer_beyond_loopback_proves_the_secret(bt):
    ip = local_address()
    if not ip:
        pytest.skip("no non-loopback address on this machine")
    secret = "classic-external-secret"
    recv = bt.receiver()
    pair = WallarooPair(bt, "alphabet", recv.port,
                        extra=["--cluster-secret", secret, "--external", "0.0.0.0:0"])
    port = int(pair.external.rsplit(":", 1)[1])
    # Wallaroo's frame from a peer beyond loopback: refused, nothing stops.
    with socket.create_connection((ip, port), timeout=10) as s:
        s.sendall(CLEAN_SHUTDOWN_06)
        s.settimeout(20)
        body = recv_frame(s)
        assert body[0] == 5 and b"must prove the cluster secret" in body, body
    pair.init.wait_log(r"refusing connection from %s" % re.escape(ip))
    # A wrong secret: bettong cluster shutdown says so and sends nothing.
    p = subprocess.run([BIN, "cluster", "shutdown", "--external", "%s:%d" % (ip, port),
                        "--cluster-secret", "wrong"], capture_output=True, text=True, timeout=30)
    assert p.returncode == 2 and "cannot prove the cluster secret" in p.stderr, p.stderr
    assert all(e.alive() for e in pair.engines)
    payloads, expected = alphabet_votes(9, n=100)
    send_frames(pair.in_port, payloads)
    assert recv.wait_bytes(len(expected), timeout=30) == expected
    # The secret proven (the test's own client), then the clean shutdown.
    with socket.create_connection((ip, port), timeout=10) as s:
        assert auth_handshake(s, "external", b"test", secret.encode()) == b"\x04"
        s.sendall(CLEAN_SHUTDOWN_06)
        s.settimeout(20)
        assert s.recv(100) == b""
    pair.wait_all_exit(0)


def test_bettong_cluster_shutdown_with_the_secret_beyond_loopback(bt):
    ip = local_address()
    if not ip:
        pytest.skip("no non-loopback address on this machine")
    recv = bt.receiver()
    pair = WallarooPair(bt, "alphabet", recv.port,
                        extra=["--cluster-secret", "s3cret", "--external", "0.0.0.0:0"])
    port = int(pair.joiner_external.rsplit(":", 1)[1])
    p = subprocess.run([BIN, "cluster", "shutdown", "--external", "%s:%d" % (ip, port),
                        "--cluster-secret", "s3cret"], capture_output=True, text=True,
                       timeout=30)
    assert p.returncode == 0, p.stderr
    pair.wait_all_exit(0)


# ------------------------------------------------------------------ a coordinator that says nothing

@pytest.mark.parametrize("flag", ["--control", "--join"])
def test_joiner_gives_up_on_a_silent_coordinator(bt, flag):
    """It accepts TCP and never answers the handshake: the joiner logs why and
    exits 3 after the handshake deadline."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(4)
    try:
        addr = "127.0.0.1:%d" % silent.getsockname()[1]
        recv = bt.receiver()
        eng = bt.engine(example_path("alphabet"), ins=[0], outs=[recv.port],
                        extra=[flag, addr, "--name", "w2", "--cluster-handshake-timeout", "1"])
        rc, err = eng.wait_exit(20)
        conn, _ = silent.accept()  # it did connect
        conn.close()
    finally:
        silent.close()
    assert rc == 3, err
    assert ("cluster: no coordinator answers at %s: the peer accepted the connection but did "
            "not finish the cluster handshake within 1.0 s" % addr) in err


def test_external_alone_beyond_loopback(bt, monkeypatch):
    """A worker alone takes the secret from the cluster-secret flags for its
    channel; a peer beyond loopback that proves nothing in time is closed."""
    ip = local_address()
    if not ip:
        pytest.skip("no non-loopback address on this machine")
    monkeypatch.setenv("BETTONG_AUTH_TIMEOUT_MS", "300")
    monkeypatch.setenv("BETTONG_CLUSTER_SECRET", "alone-secret")
    recv = bt.receiver()
    eng = bt.engine(example_path("alphabet"), ins=[0], outs=[recv.port],
                    extra=["--external", "0.0.0.0:0"])
    port = int(eng.wait_log(r"external channel listening on " + ADDR_RE).group(1)
               .rsplit(":", 1)[1])
    with socket.create_connection((ip, port), timeout=10) as s:
        s.settimeout(20)
        assert s.recv(100) == b""  # silent: closed at the deadline
    assert eng.alive()
    monkeypatch.delenv("BETTONG_CLUSTER_SECRET")
    p = subprocess.run([BIN, "cluster", "shutdown", "%s:%d" % (ip, port),
                        "--cluster-secret", "alone-secret"], capture_output=True, text=True,
                       timeout=30)
    assert p.returncode == 0, p.stderr
    rc, err = eng.wait_exit(30)
    assert rc == 0, err


def test_coordinator_gives_up_on_a_member_that_never_answers(bt):
    """The other way round: a 'worker' joins (the test, speaking the protocol)
    with a control address that accepts and says nothing; the coordinator's
    link to it fails at the handshake deadline and the member is lost."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(4)
    try:
        recv = bt.receiver()
        init = bt.engine(None, wait=False, extra=wallaroo_flags(
            "alphabet", "127.0.0.1:0", recv.port, "initializer",
            extra=["--cluster-handshake-timeout", "1"]))
        control = init.wait_log(r"coordinator listening on " + ADDR_RE).group(1)
        host, port = control.split(":")
        name = b"fake"
        identity = bytes([1]) + struct.pack(">HH", 0xffff, len(name)) + name
        addr = ("127.0.0.1:%d" % silent.getsockname()[1]).encode()

        def str16(b):
            return struct.pack(">H", len(b)) + b
        with socket.create_connection((host, int(port)), timeout=10) as s:
            assert auth_handshake(s, "cluster", identity, b"") == b"\x04"
            join = bytes([20]) + str16(name) + str16(addr) + str16(addr) + str16(b"ab" * 16)
            s.sendall(struct.pack(">I", len(join)) + join)
            init.wait_log(r"cluster: worker 'fake' \(data %s\) is lost: the peer accepted the "
                          r"connection but did not finish the cluster handshake within 1\.0 s"
                          % re.escape(addr.decode()))
        init.stop(timeout=30)
    finally:
        silent.close()
