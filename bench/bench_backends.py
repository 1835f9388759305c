"""A store service of three backends (`bettong store --metadata`, a redis-server
started here on a Unix socket), measured side by side in one run:

  - call latency (p50/p99) from one client connected to backend b1, on an object
    held by b1 (baseline) and on an object held by b2 (the client's own
    connection to b2: routing should cost nothing);
  - a call on b1 whose method reads an object held by b1 (baseline) or by b2
    (b1 is then b2's client: one more round trip);
  - moving 10 000 objects from b1 to b2 (obj.move, one at a time), against
    storing the same 10 000 objects on b2 (make_persistent(backend_id=...), each
    waiting for its answer).

    python3 bench/bench_backends.py             # about half a minute
    python3 bench/bench_backends.py --quick
    python3 bench/bench_backends.py --record    # also appended to bench/RESULTS.md
"""

import argparse
import datetime
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "python"))

from bettong import objects  # noqa: E402
from bettong.objects import Persistent, active  # noqa: E402

BIN = os.path.join(REPO, "build", "bettong")


class Cell(Persistent):
    value: int
    other: object

    def __init__(self, value=0, other=None):
        self.value = value
        self.other = other

    @active
    def get(self):
        return self.value

    @active
    def peek(self):
        return self.other.value


def wait_line(path, pattern, proc, timeout=15):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = open(path, errors="replace").read() if os.path.exists(path) else ""
        m = re.search(pattern, text)
        if m:
            return m
        if proc.poll() is not None:
            break
        time.sleep(0.01)
    sys.exit("did not start (%s):\n%s" % (pattern, text))


def start_service(tmp):
    procs = []
    sock = os.path.join(tmp, "redis.sock")
    log = os.path.join(tmp, "redis.log")
    r = subprocess.Popen(["redis-server", "--port", "0", "--unixsocket", sock, "--save", "",
                          "--appendonly", "no", "--logfile", log],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    procs.append(r)
    wait_line(log, r"(?i)ready to accept connections", r)
    addresses = {}
    for name in ("b1", "b2", "b3"):
        out = os.path.join(tmp, name + ".log")
        with open(out, "wb") as f:
            p = subprocess.Popen([BIN, "store", "--dir", os.path.join(tmp, name), "--listen",
                                  "127.0.0.1:0", "--name", name, "--metadata", "unix:" + sock],
                                 stdout=f, stderr=f)
        procs.append(p)
        addresses[name] = wait_line(out, r"listening on (\S+)", p).group(1)
    return procs, addresses


def latencies(fn, n):
    for _ in range(min(200, n)):
        fn()
    out = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        fn()
        out.append(time.perf_counter_ns() - t0)
    out.sort()
    return out[len(out) // 2] / 1000.0, out[int(len(out) * 0.99)] / 1000.0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--record", action="store_true")
    args = ap.parse_args()
    calls = 2000 if args.quick else 20000
    moves = 1000 if args.quick else 10000
    tmp = tempfile.mkdtemp(prefix="bench-backends-")
    procs, addr = start_service(tmp)
    rows = []
    try:
        objects.connect(addr["b1"])
        ids = {b.name: bid for bid, b in objects.backends().items()}
        near, far = Cell(1), Cell(2)
        near.make_persistent(backend_id=ids["b1"])
        far.make_persistent(backend_id=ids["b2"])
        local_ref, remote_ref = Cell(0, near), Cell(0, far)
        local_ref.make_persistent(backend_id=ids["b1"])
        remote_ref.make_persistent(backend_id=ids["b1"])
        base = latencies(near.get, calls)
        routed = latencies(far.get, calls)
        rows.append(("call, object on b1 (connected)", base, None))
        rows.append(("call, object on b2 (routed)", routed, routed[0] / base[0]))
        inner_base = latencies(local_ref.peek, calls)
        inner = latencies(remote_ref.peek, calls)
        rows.append(("call on b1 reading an object on b1", inner_base, None))
        rows.append(("call on b1 reading an object on b2", inner, inner[0] / inner_base[0]))

        cells = [Cell(i) for i in range(moves)]
        t0 = time.perf_counter()
        for c in cells:
            c.make_persistent(backend_id=ids["b2"])
        store_s = time.perf_counter() - t0
        for c in cells:
            c.move(ids["b1"])           # back to b1 before the timed move
        t0 = time.perf_counter()
        for c in cells:
            c.move(ids["b2"])
        move_s = time.perf_counter() - t0
        assert all(objects.backend_of(c) == ids["b2"] for c in cells[:100])
        rows.append(("store %d objects on b2, one by one" % moves, (store_s, None), None))
        rows.append(("move %d objects b1 -> b2, one by one" % moves, (move_s, None),
                     move_s / store_s))
    finally:
        objects.disconnect()
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)

    lines = []
    for what, vals, ratio in rows:
        if vals[1] is None:
            text = "%.2f s (%.0f objects/s)" % (vals[0], moves / vals[0])
        else:
            text = "p50 %.1f us, p99 %.1f us" % vals
        lines.append("| %s | %s | %s |" % (what, text,
                                           "baseline" if ratio is None else "%.2f x" % ratio))
    report = ["| measurement | result | vs the row above it |", "|---|---|---|"] + lines
    print("\n".join(report))
    if args.record:
        head = "\n## Store service of 3 backends (%s, %s, %d calls, %d moves)\n\n" % (
            datetime.datetime.now().strftime("%Y-%m-%d %H:%M"), platform.node(), calls, moves)
        with open(os.path.join(HERE, "RESULTS.md"), "a") as f:
            f.write(head + "`python3 bench/bench_backends.py --record`\n\n" + "\n".join(report)
                    + "\n")


if __name__ == "__main__":
    main()
