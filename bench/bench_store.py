"""Persistent-object benchmarks against a `bettong store` on loopback: the latency
of a read-only active call, a field read and a field write; make_persistent of many
small objects (write-behind, batched PERSIST).

    python3 bench/bench_store.py                       # starts a store in a temp dir
    python3 bench/bench_store.py --store 127.0.0.1:7450
"""

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "python"))

from bettong import objects  # noqa: E402
from bettong.objects import Persistent, active  # noqa: E402


class Point(Persistent):
    x: float
    y: float

    def __init__(self, x=0.0, y=0.0):
        self.x = x
        self.y = y

    @active
    def norm2(self):
        return self.x * self.x + self.y * self.y

    @active
    def move(self, dx):
        self.x += dx
        return self.x


def percentiles(samples):
    s = sorted(samples)
    n = len(s)
    return {p: s[min(n - 1, int(n * p / 100))] * 1e6 for p in (50, 90, 99)}


def timed(fn, n):
    out = []
    clock = time.perf_counter
    for _ in range(n):
        t0 = clock()
        fn()
        out.append(clock() - t0)
    return out


ECHO_SERVER = r"""
import socket, sys
l = socket.socket(); l.bind(("127.0.0.1", 0)); l.listen(1)
print(l.getsockname()[1], flush=True)
c, _ = l.accept(); c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
while True:
    d = c.recv(65536)
    if not d:
        break
    c.sendall(d)
"""


def echo_rtt(n):
    """Round trips of a small message to a plain Python TCP echo process: the floor
    any request/answer over loopback pays on this machine right now."""
    p = subprocess.Popen([sys.executable, "-c", ECHO_SERVER], stdout=subprocess.PIPE)
    try:
        port = int(p.stdout.readline())
        s = socket.create_connection(("127.0.0.1", port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        msg = b"x" * 60

        def once():
            s.sendall(msg)
            s.recv(65536)

        for _ in range(500):
            once()
        pc = percentiles(timed(once, n))
        s.close()
        return pc
    finally:
        p.wait(10)


def start_store(binary):
    d = tempfile.mkdtemp(prefix="bettong-bench-store-")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(os.path.join(d, "log"), "wb")
    p = subprocess.Popen([binary, "store", "--listen", "127.0.0.1:%d" % port,
                          "--dir", os.path.join(d, "data"), "--log-level", "warn"],
                         stdout=log, stderr=log)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if time.monotonic() > deadline or p.poll() is not None:
                raise SystemExit("the store did not start")
            time.sleep(0.01)
    return p, d, "127.0.0.1:%d" % port


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--store", help="HOST:PORT of a running store (default: start one)")
    ap.add_argument("--bin", default=os.environ.get("BETTONG_BIN") or
                    os.path.join(REPO, "build", "bettong"))
    ap.add_argument("--calls", type=int, default=20000)
    ap.add_argument("--objects", type=int, default=100000)
    args = ap.parse_args()

    proc = tmp = None
    address = args.store
    if not address:
        proc, tmp, address = start_store(args.bin)
    try:
        pc = echo_rtt(args.calls)
        print("%-30s p50 %6.1f us   p90 %6.1f us   p99 %6.1f us" % (
            "baseline: Python TCP echo", pc[50], pc[90], pc[99]))
        objects.connect(address)
        p = Point(3.0, 4.0)
        p.make_persistent()
        for _ in range(1000):  # warm up
            p.norm2()
        n = args.calls
        for name, fn in (("read-only call (norm2)", p.norm2),
                         ("field read (p.x)", lambda: p.x),
                         ("call, nothing changed (move 0)", lambda: p.move(0.0)),
                         ("durable write call (move +1)", lambda: p.move(1.0))):
            pc = percentiles(timed(fn, n if "durable" not in name else max(1, n // 10)))
            print("%-30s p50 %6.1f us   p90 %6.1f us   p99 %6.1f us" % (
                name, pc[50], pc[90], pc[99]))

        pts = [Point(float(i), 1.0) for i in range(args.objects)]
        t0 = time.perf_counter()
        for q in pts:
            q.make_persistent()
        objects.flush()
        el = time.perf_counter() - t0
        print("make_persistent x %d: %.2f s (%.1f us/object), durable at flush()" % (
            args.objects, el, el / args.objects * 1e6))
        assert Point.get_by_id(pts[-1].id).norm2() == (args.objects - 1) ** 2 + 1
    finally:
        objects.disconnect()
        if proc is not None:
            proc.terminate()
            proc.wait(10)
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
