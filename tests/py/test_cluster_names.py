"""A worker name is one worker's: a second worker with a name in the cluster
is refused, with one clear line on each side, whether the name was taken
before its handshake or only between its handshake and its JOIN (two workers
started with one name at the same time)."""

import re
import socket
import struct

from conftest import (FakeServer, app_path, auth_handshake, auth_server_challenge, frame,
                      recv_frame, wait_until)
from test_cluster import Cluster, cl_identity

CH_CONTROL = 1
CL_WELCOME, CL_REFUSED, CL_JOIN = 4, 5, 20
APP = app_path("keyed_sums")


def str16(s):
    b = s.encode()
    return struct.pack(">H", len(b)) + b


def join_frame(name):
    """CL_JOIN (src/cluster/cproto.h): name, control, data addresses, token."""
    return frame(bytes([CL_JOIN]) + str16(name) + str16("127.0.0.1:1") + str16("127.0.0.1:2")
                 + str16("0" * 32))


def refused(why):
    return bytes([CL_REFUSED]) + str16(why)


def test_a_name_taken_between_handshake_and_join_is_refused_clearly(bt):
    recv = bt.receiver()
    c = Cluster(bt, APP, 2, "flags", outs=[recv.port])
    c.wait_formed(2)
    port = int(c.control.rsplit(":", 1)[1])
    # Our handshake as 'w3' passes: no worker has that name yet.
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    assert auth_handshake(s, "cluster", cl_identity(CH_CONTROL, 0xffff, "w3"), b"") == \
        bytes([CL_WELCOME])
    local = "127.0.0.1:%d" % s.getsockname()[1]
    # A worker named 'w3' joins meanwhile; then we say JOIN.
    w3 = c.add_worker(join=True, name="w3")
    c.wait_formed(3)
    s.sendall(join_frame("w3"))
    why = "a worker named 'w3' is already in the cluster"
    assert recv_frame(s) == refused(why)
    assert recv_frame(s) is None  # then the coordinator closes
    s.close()
    log = c.engines[0].stderr()
    assert re.findall(r"^\S+ bettong\[w1\] WARN: (.*)$", log, re.M).count(
        "cluster coordinator: refusing connection from %s: %s" % (local, why)) == 1, log
    assert "unexpected or malformed" not in log, log
    st = c.workers()
    assert sorted(st) == ["w1", "w2", "w3"] and all(w[0] == "active" for w in st.values()), st
    rc, err = c.engines[0].stop(timeout=30)
    assert rc == 0, err
    for e in (c.engines[1], w3):
        rc, err = e.wait_exit(30)
        assert rc == 0, err


def test_the_joiner_logs_a_refusal_of_its_join(bt):
    """The refusal of a JOIN (after the WELCOME) reaches the joiner: it stops
    with the coordinator's reason."""
    why = "a worker named 'w9' is already in the cluster"
    joins = []

    def coordinator(conn, hello):
        challenge, _, _, _ = auth_server_challenge(b"", "cluster", hello)
        conn.sendall(challenge)
        recv_frame(conn)  # the PROOF
        conn.sendall(frame(bytes([CL_WELCOME])))
        joins.append(recv_frame(conn))
        conn.sendall(frame(refused(why)))

    fake = FakeServer(coordinator)
    try:
        recv = bt.receiver()
        eng = bt.engine(APP, ins=[0], outs=[recv.port], wait=False,
                        extra=["--name", "w9", "--join", fake.address])
        rc, err = eng.wait_exit(20)
        assert rc == 2, err
        assert joins and joins[0][0] == CL_JOIN and joins[0][1:].startswith(str16("w9")), joins
        lines = re.findall(r"^\S+ bettong\[w9\] ERROR: (.*)$", err, re.M)
        assert lines == [
            "control link to the coordinator: refused: %s" % why,
            "cluster: could not join the cluster at %s: refused: %s; stopping"
            % (fake.address, why)], err
    finally:
        fake.close()
