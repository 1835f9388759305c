"""Monte Carlo estimate of pi with bettong's parallel functions.

Each task throws `--samples` random points into the unit square and counts those
inside the quarter circle; a reduce on a worker adds the counts up
(`map_reduce`). pi ~= 4 * inside / total.

    PYTHONPATH=python python3 examples/tasks/pi.py                  # a local pool
    PYTHONPATH=python python3 examples/tasks/pi.py --tasks 32 --samples 500000
    PYTHONPATH=python python3 examples/tasks/pi.py --address 127.0.0.1:7100   # a running pool
"""

import argparse
import math
import random
import time

import bettong


def count_inside(seed, samples):
    """Points of `samples` random throws (seeded) that land inside the circle."""
    rng = random.Random(seed)
    rand = rng.random
    inside = 0
    for _ in range(samples):
        x, y = rand(), rand()
        if x * x + y * y <= 1.0:
            inside += 1
    return inside


def add_up(counts):
    return sum(counts)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", type=int, default=16, help="parallel tasks (default 16)")
    ap.add_argument("--samples", type=int, default=250000, help="points per task (default 250000)")
    ap.add_argument("--workers", type=int, default=None,
                    help="local pool size (default: one worker per core)")
    ap.add_argument("--address", default=None, help="HOST:PORT of a running bettong pool")
    ap.add_argument("--seed", type=int, default=1, help="base random seed (default 1)")
    args = ap.parse_args()

    kw = {"address": args.address} if args.address else {"workers": args.workers}
    t0 = time.monotonic()
    with bettong.FunctionExecutor(**kw) as ex:
        iterdata = [(args.seed * 1000003 + i, args.samples) for i in range(args.tasks)]
        inside = ex.map_reduce(count_inside, iterdata, add_up).result()
    elapsed = time.monotonic() - t0

    total = args.tasks * args.samples
    estimate = 4.0 * inside / total
    print("pi ~= %.6f (error %+.6f) from %d points in %d tasks" % (
        estimate, estimate - math.pi, total, args.tasks))
    print("time: %.2f s (%.2f M points/s)" % (elapsed, total / elapsed / 1e6))


if __name__ == "__main__":
    main()
