"""Replicas in a store service of three backends (a redis-server started here
on a Unix socket), side by side in one run:

  - write latency (p50/p99 of an active method that changes the object) on
    its master b1, from a client connected to b1, with 0, 1 and 2 replicas
    (each write waits for every replica's durable copy: write-through);
  - read latency (p50/p99 of a field read) from a client connected to b2,
    of an object held by b1 without a replica on b2 (routed to b1) and with
    one (answered by b2).

    python3 bench/bench_replicas.py             # about half a minute
    python3 bench/bench_replicas.py --quick
    python3 bench/bench_replicas.py --record    # also appended to bench/RESULTS.md
"""

import argparse
import datetime
import os
import platform
import shutil
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from bench_backends import latencies, start_service  # noqa: E402
from bettong import objects  # noqa: E402
from bettong.objects import Persistent, active  # noqa: E402


class Tally(Persistent):
    value: int

    def __init__(self, value=0):
        self.value = value

    @active
    def bump(self):
        self.value += 1
        return self.value


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--record", action="store_true")
    args = ap.parse_args()
    n = 500 if args.quick else 3000
    tmp = tempfile.mkdtemp(prefix="bench-replicas-")
    procs, addr = start_service(tmp)
    rows = []
    try:
        objects.connect(addr["b1"])
        ids = {b.name: bid for bid, b in objects.backends().items()}
        objs = [Tally() for _ in range(3)]
        for i, t in enumerate(objs):
            t.make_persistent(alias="tally-%d" % i, backend_id=ids["b1"])
            for name in ("b2", "b3")[:i]:
                t.new_replica(ids[name])
        for i, t in enumerate(objs):
            rows.append(("write on b1, %d replica(s)" % i, latencies(t.bump, n),
                         None if i == 0 else 0))
        objects.connect(addr["b2"])
        routed = Tally.get_by_alias("tally-0")     # no replica on b2
        local = Tally.get_by_alias("tally-1")      # a replica on b2
        rows.append(("read from a client of b2, object on b1 (routed)",
                     latencies(lambda: routed.value, n), None))
        rows.append(("read from a client of b2, replica on b2",
                     latencies(lambda: local.value, n), 0))
    finally:
        objects.disconnect()
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)
    lines, base = [], None
    for what, (p50, p99), rel in rows:
        if rel is None:
            base = p50
        ratio = "baseline" if rel is None else "%.2f x" % (p50 / base)
        lines.append("| %s | p50 %.1f us, p99 %.1f us | %s |" % (what, p50, p99, ratio))
    report = ["| measurement | result | vs its baseline |", "|---|---|---|"] + lines
    print("\n".join(report))
    if args.record:
        head = "\n## Replicas, store service of 3 backends (%s, %s, %d requests each)\n\n" % (
            datetime.datetime.now().strftime("%Y-%m-%d %H:%M"), platform.node(), n)
        with open(os.path.join(HERE, "RESULTS.md"), "a") as f:
            f.write(head + "`python3 bench/bench_replicas.py --record`\n\n" + "\n".join(report)
                    + "\n")


if __name__ == "__main__":
    main()
