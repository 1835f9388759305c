"""TLS on the cluster's links (--tls-cert/--tls-key on `bettong run`, --tls on
`bettong cluster`): a 2-worker cluster in both forms computes the same results
over TLS; the bytes on a cluster link are not cleartext; a client without TLS
is refused by a TLS port with a log line, and a TLS worker by a plain cluster;
a relay that terminates TLS on both sides (a man in the middle with its own
certificate) is refused because the handshake's proofs are bound to the TLS
session (docs/security.md)."""

import os
import re
import socket
import ssl
import subprocess
import threading

import pytest

from conftest import (BIN, RecordingRelay, example_path, lines_of, make_tls_cert, wait_until)
from test_cluster import (Cluster, check_counts, expected_word_totals, raw_hello, send_frames,
                          word_lines)

SECRET = "tls-s3cret"


def tls_flags(cert):
    return ["--tls-cert", cert[0], "--tls-key", cert[1]]


def status(c, control=None, tls=True):
    args = [BIN, "cluster", "status", "--control", control or c.control] + c.secret_args
    if tls:
        args.append("--tls")
    return subprocess.run(args, capture_output=True, text=True, timeout=20)


def wait_formed_tls(c, n=2):
    wait_until(lambda: "cluster formed, %d active workers" % n in status(c).stdout, 20,
               "a formed cluster of %d workers (over TLS)" % n, interval=0.1)


@pytest.mark.parametrize("form", ["workers", "flags"])
def test_word_count_over_tls(bt, tls_cert, form):
    recv = bt.receiver()
    c = Cluster(bt, example_path("word_count"), 2, form, outs=[recv.port],
                extra=tls_flags(tls_cert), secret=SECRET if form == "flags" else None)
    wait_formed_tls(c)
    lines = [l.encode() for l in word_lines()]
    for i in range(4):
        send_frames(c.ports[i % 2][0], lines)
    totals = expected_word_totals(4)
    check_counts(lines_of(recv.wait_lines(sum(totals.values()), timeout=30)), totals)
    # Both workers took part: the words crossed the (TLS) data links.
    p = status(c)
    assert p.returncode == 0, p.stdout + p.stderr
    rows = [l.split() for l in p.stdout.splitlines()[2:] if l.strip()]
    assert len(rows) == 2 and sum(int(r[3]) for r in rows) == 4096, p.stdout
    assert all(int(r[3]) > 0 for r in rows), p.stdout
    # The same status without TLS is refused, and the coordinator says why.
    p = status(c, tls=False)
    assert p.returncode == 2, p.stdout + p.stderr
    wait_until(lambda: "does the peer connect without TLS?" in c.stderr(), 5,
               "the refusal of a client without TLS logged")
    c.stop()


def test_cluster_bytes_are_not_cleartext(bt, tls_cert):
    """A recording relay in front of the coordinator's control port carries a
    worker's join and a status: TLS records only, none of the names, the
    service or the status text that the plain protocol sends in the clear."""
    recv = bt.receiver()
    c = Cluster(bt, example_path("word_count"), 1, "flags", outs=[recv.port],
                extra=tls_flags(tls_cert), secret=SECRET)
    host, port = c.control.rsplit(":", 1)
    relay = RecordingRelay((host, int(port)))
    try:
        real = c.control
        c.control = relay.address
        c.n = 2
        c.add_worker(join=True, name="joiner-through-relay")
        c.control = real
        wait_formed_tls(c, 2)
        p = status(c, control=relay.address)
        assert p.returncode == 0 and "joiner-through-relay" in p.stdout, p.stdout + p.stderr
        send_frames(c.ports[0][0], [l.encode() for l in word_lines()])
        totals = expected_word_totals(1)
        check_counts(lines_of(recv.wait_lines(sum(totals.values()), timeout=30)), totals)
        with relay.lock:
            sent, answered = relay.client_bytes, relay.server_bytes
        assert len(sent) > 500 and len(answered) > len(p.stdout), (len(sent), len(answered))
        # Every connection starts with a TLS handshake record (0x16 0x03 ...).
        assert sent[:2] == b"\x16\x03" and answered[:2] == b"\x16\x03"
        for clear in (b"joiner-through-relay", b"cluster", b"active", b"initializer"):
            assert clear not in sent and clear not in answered, clear
        # The joiner's control link runs through the relay: stop before closing it.
        c.stop()
    finally:
        relay.close()


def test_plain_peers_and_tls_peers_do_not_mix(bt, tls_cert):
    recv = bt.receiver()
    c = Cluster(bt, example_path("word_count"), 2, "flags", outs=[recv.port],
                extra=tls_flags(tls_cert), secret=SECRET)
    wait_formed_tls(c)
    port = int(c.control.rsplit(":", 1)[1])
    # The plain handshake (with the right secret) gets nowhere on a TLS port:
    # the coordinator's, nor a worker's own control and data ports (so the data
    # links the words crossed in the other tests were TLS too).
    assert raw_hello(port, SECRET) is False
    wait_until(lambda: "TLS handshake failed" in c.engines[0].stderr(), 5, "the refusal logged")
    m = re.search(r"worker 'w2' \(control 127\.0\.0\.1:(\d+), data 127\.0\.0\.1:(\d+)\)",
                  c.engines[1].stderr())
    assert m, c.engines[1].stderr()
    for p in m.groups():
        assert raw_hello(int(p), SECRET, channel=2) is False
    wait_until(lambda: c.engines[1].stderr().count("does the peer connect without TLS?") >= 2,
               5, "worker 2's refusals logged")
    # A worker without TLS cannot join a TLS cluster.
    c.extra = ["--cluster-secret", SECRET]
    bad = c.add_worker(join=True, name="plain", wait=False)
    rc, err = bad.wait_exit(20)
    assert rc == 2 and "could not join" in err, err
    wait_until(lambda: c.engines[0].stderr().count("does the peer connect without TLS?") >= 2,
               5, "the plain worker's refusal logged")
    c.engines.remove(bad)
    c.stop()
    # A TLS worker cannot join a plain cluster: the plain port says what it saw.
    plain = Cluster(bt, example_path("word_count"), 1, "flags", outs=[recv.port],
                    secret=SECRET)
    plain.n = 2
    plain.extra = ["--cluster-secret", SECRET] + tls_flags(tls_cert)
    bad = plain.add_worker(join=True, name="tls", wait=False)
    rc, err = bad.wait_exit(20)
    assert rc == 2 and "could not join" in err, err
    assert "does the peer listen without TLS?" in err, err
    wait_until(lambda: "it looks like a TLS handshake" in plain.engines[0].stderr(), 5,
               "the plain port's log line")
    plain.engines.remove(bad)
    plain.stop()


class TlsMitm:
    """A man in the middle: accepts TLS with its own certificate, opens TLS to
    the target (verifying nothing, like Bettong's clients) and relays the
    plaintext both ways, recording what the client sends."""

    def __init__(self, target, cert):
        self.target = target
        self.server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.server_ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        self.server_ctx.load_cert_chain(cert[0], cert[1])
        self.client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self.client_ctx.check_hostname = False
        self.client_ctx.verify_mode = ssl.CERT_NONE
        self.plain_from_client = b""
        self.ls = socket.create_server(("127.0.0.1", 0))
        self.address = "127.0.0.1:%d" % self.ls.getsockname()[1]
        self.socks = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        # Each connection's handshakes in a thread of its own: one that stalls
        # (a client that connects and says nothing) must not keep the next
        # connection waiting in the backlog.
        while True:
            try:
                raw, _ = self.ls.accept()
            except OSError:
                if self.ls.fileno() < 0:
                    return
                continue
            threading.Thread(target=self._relay, args=(raw,), daemon=True).start()

    def _relay(self, raw):
        try:
            raw.settimeout(10)
            c = self.server_ctx.wrap_socket(raw, server_side=True)
            c.settimeout(None)
            s = self.client_ctx.wrap_socket(socket.create_connection(self.target, timeout=10))
        except (OSError, ssl.SSLError):
            raw.close()
            return
        self.socks += [c, s]
        threading.Thread(target=self._pump, args=(s, c, False), daemon=True).start()
        self._pump(c, s, True)

    def _pump(self, src, dst, record):
        while True:
            try:
                data = src.recv(65536)
            except (OSError, ssl.SSLError):
                data = b""
            if not data:
                for x in (src, dst):
                    try:
                        x.close()
                    except OSError:
                        pass
                return
            if record:
                self.plain_from_client += data
            try:
                dst.sendall(data)
            except (OSError, ssl.SSLError):
                return

    def close(self):
        self.ls.close()
        for s in self.socks:
            try:
                s.close()
            except OSError:
                pass


def test_tls_terminating_relay_is_refused(bt, tls_cert, tmp_path):
    recv = bt.receiver()
    c = Cluster(bt, example_path("word_count"), 2, "flags", outs=[recv.port],
                extra=tls_flags(tls_cert), secret=SECRET)
    wait_formed_tls(c)
    host, port = c.control.rsplit(":", 1)
    mitm = TlsMitm((host, int(port)), make_tls_cert(tmp_path / "mitm", "mallory"))
    try:
        p = status(c, control=mitm.address)
        assert p.returncode == 2, p.stdout + p.stderr
        assert "cannot prove the cluster secret" in p.stderr, p.stderr
        # Not vacuous: the relay did terminate TLS and saw the handshake's HELLO.
        assert b"cluster" in mitm.plain_from_client and b"bettong cluster" in mitm.plain_from_client
        # A worker joining through it is refused the same way, and says so.
        c.n = 3
        real = c.control
        c.control = mitm.address
        bad = c.add_worker(join=True, name="via-mitm", wait=False)
        c.control = real
        rc, err = bad.wait_exit(20)
        assert rc == 2 and "cannot prove the cluster secret" in err, err
        assert b"via-mitm" in mitm.plain_from_client
        # The cluster itself is intact.
        assert status(c).returncode == 0
    finally:
        mitm.close()
    c.engines.remove(bad)
    c.stop()


def test_tls_flags_are_checked(bt, tls_cert, tmp_path):
    app = str(example_path("word_count"))
    base = [BIN, "run", app, "--in", "127.0.0.1:1", "--out", "127.0.0.1:1"]
    env = dict(os.environ, BETTONG_CLUSTER_SECRET=SECRET)
    cases = [
        (["--workers", "2", "--tls"], "needs both --tls-cert FILE and --tls-key FILE"),
        (["--workers", "2", "--tls-cert", tls_cert[0]], "needs both"),
        (["--workers", "2", "--tls-cert", tls_cert[0], "--tls-key",
          str(tmp_path / "missing.key")], "missing.key"),
        (tls_flags(tls_cert), "this worker runs alone"),
    ]
    for extra, want in cases:
        p = subprocess.run(base + extra, capture_output=True, text=True, timeout=20, env=env)
        assert p.returncode == 2 and want in p.stderr, (extra, p.stderr)


def test_grow_and_shrink_over_tls(bt, tls_cert):
    """Slot state moves between workers over TLS data links while data flows:
    nothing is lost, repeated or reordered; `cluster shrink --tls` works."""
    from conftest import app_path
    from test_cluster import check_sums, keyed_input, send_slowly
    msgs = keyed_input(300, 30000, 7)
    recv = bt.receiver()
    c = Cluster(bt, app_path("keyed_sums"), 2, "flags", outs=[recv.port],
                extra=tls_flags(tls_cert), secret=SECRET)
    wait_formed_tls(c, 2)
    sender = threading.Thread(target=send_slowly, args=(c.ports[0][0], msgs, 60))
    sender.start()
    recv.wait_lines(1000, timeout=30, settle=0)  # data flows before the grow
    c.n = 3
    w3 = c.add_worker(join=True, name="w3")
    wait_formed_tls(c, 3)
    recv.wait_lines(recv.data().count(b"\n") + 1000, timeout=30, settle=0)
    p = subprocess.run([BIN, "cluster", "shrink", "--control", c.control, "--worker", "w2",
                        "--tls"] + c.secret_args, capture_output=True, text=True, timeout=30)
    assert p.returncode == 0 and "left the cluster" in p.stdout, p.stdout + p.stderr
    rc, err = c.engines[1].wait_exit(20)
    assert rc == 0, err
    sender.join(60)
    check_sums(lines_of(recv.wait_lines(len(msgs), timeout=30)), msgs)
    assert re.findall(r"moved (\d+) slots away", c.stderr()), "no slot moved"
    rc, err = c.engines[0].stop(timeout=30)
    assert rc == 0, err
    rc, err = w3.wait_exit(30)
    assert rc == 0, err
