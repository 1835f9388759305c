"""The cluster's handshake (src/cluster/cproto.h): the secret never crosses the
wire and a recorded handshake does not replay; a connection is bound to the
member it proves to be, and one that merely closes does not make a healthy
worker lost; a worker stops at a coordinator that cannot prove the secret; a
silent connection is closed at the handshake deadline; `bettong cluster status`
says so when a worker is really lost."""

import os
import re
import signal
import socket
import struct
import threading

from conftest import (auth_handshake, auth_hello, auth_server_challenge,
                      children_of, example_path, frame, lines_of, recv_frame,
                      wait_until)
from test_cluster import (Cluster, check_counts, cl_identity, expected_word_totals, send_frames,
                          word_lines)

SECRET = "auth-test-secret"
CL_WELCOME, CL_REFUSED = 4, 5
CH_CONTROL, CH_DATA, CH_ADMIN = 1, 2, 3
NO_INDEX = 0xFFFF


def data_addresses(c):
    """{name: (host, port)} of the workers' data listeners, from the status."""
    out = {}
    for line in c.status().stdout.splitlines()[2:]:
        f = line.split()
        host, port = f[-1].rsplit(":", 1)
        out[f[0]] = (host, int(port))
    return out


def port_of(addr):
    return int(addr.rsplit(":", 1)[1])


def refusal(body):
    assert body[0] == CL_REFUSED, body
    (n,) = struct.unpack(">H", body[1:3])
    return body[3:3 + n].decode()


class Relay:
    """A TCP relay to `target` for one connection, recording what the client sends."""

    def __init__(self, target):
        self.target = target
        self.sent = b""
        self.lsock = socket.socket()
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(1)
        self.addr = "127.0.0.1:%d" % self.lsock.getsockname()[1]
        threading.Thread(target=self._run, daemon=True).start()

    def _pump(self, src, dst, record):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if record:
                    self.sent += data
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def _run(self):
        client, _ = self.lsock.accept()
        server = socket.create_connection(self.target)
        threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()
        self._pump(client, server, True)


class Recorder:
    """A socket that keeps what is sent through it."""

    def __init__(self, sock):
        self.sock, self.sent = sock, []

    def sendall(self, data):
        self.sent.append(data)
        self.sock.sendall(data)

    def recv(self, n):
        return self.sock.recv(n)


def first_frames(data, n):
    """The first n whole frames (with their length prefixes) of a byte string."""
    out, pos = [], 0
    for _ in range(n):
        (size,) = struct.unpack(">I", data[pos:pos + 4])
        out.append(data[pos:pos + 4 + size])
        pos += 4 + size
    return out


def test_recorded_handshakes_do_not_replay(bt):
    """A worker joins through a relay that records what it sends: the secret is
    not in it, and replaying its HELLO and PROOF is refused (the coordinator's
    nonce is fresh). A data handshake proven once does not pass again either."""
    recv = bt.receiver()
    c = Cluster(bt, example_path("word_count"), 1, "flags", outs=[recv.port], secret=SECRET)
    c.wait_formed(1)
    host, port = c.control.rsplit(":", 1)
    relay = Relay((host, int(port)))
    control = c.control
    c.control = relay.addr
    c.add_worker(join=True, name="w2")
    c.control = control
    c.engines[0].wait_log(r"worker 'w2' joined with \d+ slots")
    recorded = relay.sent
    assert SECRET.encode() not in recorded
    hello, proof = first_frames(recorded, 2)
    assert hello[4] == 0xF0 and proof[4] == 0xF2
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(hello)
        assert recv_frame(s)[0] == 0xF1  # a fresh challenge
        s.sendall(proof)
        assert "wrong cluster secret" in refusal(recv_frame(s))
    c.engines[0].wait_log(r"refusing connection from .*wrong cluster secret")
    # A data handshake as w1 with a fixed nonce passes once; its PROOF replayed
    # on a new connection with the same HELLO does not.
    dhost, dport = data_addresses(c)["w2"]
    ident = cl_identity(CH_DATA, 0, "w1")
    nonce = os.urandom(32)
    with socket.create_connection((dhost, dport), timeout=5) as s:
        rec = Recorder(s)
        assert auth_handshake(rec, "cluster", ident, SECRET, nonce=nonce) == bytes([CL_WELCOME])
        s.sendall(frame(bytes([3])))  # BYE: a goodbye, nothing to check
    with socket.create_connection((dhost, dport), timeout=5) as s:
        s.sendall(auth_hello("cluster", ident, nonce)[0])
        assert recv_frame(s)[0] == 0xF1
        s.sendall(rec.sent[1])
        assert "wrong cluster secret" in refusal(recv_frame(s))
    c.engines[1].wait_log(r"refusing connection from .*wrong cluster secret")
    assert c.status().returncode == 0
    c.stop()


def test_a_spoofed_data_link_does_not_make_a_member_lost(bt):
    recv = bt.receiver()
    c = Cluster(bt, example_path("word_count"), 2, "flags", outs=[recv.port], secret=SECRET)
    c.wait_formed()
    dhost, dport = data_addresses(c)["w2"]
    # Worker 0 is w1: a claim to be worker 0 under another name is refused.
    with socket.create_connection((dhost, dport), timeout=5) as s:
        answer = auth_handshake(s, "cluster", cl_identity(CH_DATA, 0, "mallory"), SECRET)
        assert "worker 0 is 'w1'" in refusal(answer)
    # So is a claim to be w2 itself.
    with socket.create_connection((dhost, dport), timeout=5) as s:
        answer = auth_handshake(s, "cluster", cl_identity(CH_DATA, 1, "w2"), SECRET)
        assert "not another worker's" in refusal(answer)
    # One that knows the secret can prove to be w1, and close without a goodbye:
    # w2 asks the coordinator, which finds w1 alive; nobody is lost.
    with socket.create_connection((dhost, dport), timeout=5) as s:
        answer = auth_handshake(s, "cluster", cl_identity(CH_DATA, 0, "w1"), SECRET)
        assert answer == bytes([CL_WELCOME])
    c.engines[1].wait_log(r"data link from worker 'w1' .*closed without a goodbye")
    c.engines[0].wait_log(r"worker 'w1' answers the coordinator: it stays a member")
    assert "is lost" not in c.stderr()
    st = c.workers()
    assert st["w1"][0] == "active" and st["w2"][0] == "active", st
    # Messages keep flowing both ways: every word's count is complete.
    lines = [l.encode() for l in word_lines()]
    send_frames(c.ports[0][0], lines)
    send_frames(c.ports[1][0], lines)
    totals = expected_word_totals(2)
    check_counts(lines_of(recv.wait_lines(sum(totals.values()))), totals)
    assert c.status().returncode == 0
    c.stop()


def test_a_worker_stops_at_a_coordinator_that_cannot_prove_the_secret(bt):
    """A fake coordinator answers the HELLO with a challenge proven with
    another secret: the worker sends nothing more and exits 2, once."""
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(4)
    lsock.settimeout(20)
    fake = "127.0.0.1:%d" % lsock.getsockname()[1]
    recv = bt.receiver()
    eng = bt.engine(example_path("word_count"), ins=[0], outs=[recv.port], wait=False,
                    extra=["--name", "w2", "--control", fake, "--cluster-secret", SECRET])
    conn, _ = lsock.accept()
    conn.settimeout(10)
    hello = recv_frame(conn)
    challenge, ident, _, _ = auth_server_challenge("not-the-secret", "cluster", hello)
    assert ident[0] == CH_CONTROL and ident.endswith(b"w2")
    conn.sendall(challenge)
    assert conn.recv(100) == b""  # no PROOF, no JOIN: it closed
    conn.close()
    rc, err = eng.wait_exit(15)
    assert rc == 2, err
    assert "cannot prove the cluster secret" in err and "could not join" in err, err
    lsock.settimeout(0.2)
    try:
        lsock.accept()
        raise AssertionError("the worker connected again")
    except socket.timeout:
        pass
    lsock.close()


def test_silent_connections_are_closed_at_the_handshake_deadline(bt):
    recv = bt.receiver()
    c = Cluster(bt, example_path("word_count"), 2, "flags", outs=[recv.port], secret=SECRET,
                extra=["--cluster-handshake-timeout", "1"])
    c.wait_formed()
    dhost, dport = data_addresses(c)["w2"]
    silent = socket.create_connection(("127.0.0.1", port_of(c.control)), timeout=10)
    halfway = socket.create_connection((dhost, dport), timeout=10)
    # A HELLO, then nothing: as silent as no HELLO at all.
    halfway.sendall(auth_hello("cluster", cl_identity(CH_DATA, 0, "w1"))[0])
    assert recv_frame(halfway)[0] == 0xF1
    for s in (silent, halfway):
        try:
            assert s.recv(100) == b""
        except ConnectionResetError:
            pass
        s.close()
    c.engines[0].wait_log(r"cluster coordinator: closing connection .*no handshake within")
    c.engines[1].wait_log(r"cluster data: closing connection .*no handshake within")
    # The members' own connections are not affected.
    assert c.status().returncode == 0
    c.stop()


def test_status_reports_a_lost_worker(bt):
    recv = bt.receiver()
    c = Cluster(bt, example_path("word_count"), 3, "workers", outs=[recv.port])
    c.wait_formed()
    p = c.status(check=False)
    assert p.returncode == 0 and "PROBLEM" not in p.stdout, p.stdout
    kids = children_of(c.engines[0].proc.pid)
    w3 = [pid for pid, args in kids.items() if b"--name" in args and
          args[args.index(b"--name") + 1].endswith(b"3")]
    assert len(w3) == 1, kids
    os.kill(w3[0], signal.SIGKILL)

    def lost():
        p = c.status(check=False)
        return p if re.search(r"^\S+3 +\d+ +LOST", p.stdout, re.M) else None

    p = wait_until(lost, 15, "the status to show the worker lost", interval=0.2)
    assert p.returncode == 1, p.stdout
    assert re.search(r"PROBLEM: \d+ slots have no live worker", p.stdout), p.stdout
    assert "PROBLEM: worker" in p.stdout and "is lost" in p.stdout, p.stdout
