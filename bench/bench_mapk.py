#!/usr/bin/env python3
"""The chunked map (issue 15's figure 3) taken apart: bettong's
map(f, items, chunksize) + get_result against multiprocessing.Pool.map(f, items,
chunksize) in the same run, and where bettong's time goes.

    PYTHONPATH=python /usr/bin/python3 bench/bench_mapk.py [--rounds 9]

Both executors live through the run (2 workers each, warmed up); per round each
maps --items items of x*x+1 with --chunksize items per call, in alternating
order. Printed: the medians and ranges of both, the median of the per-round
ratios, and for bettong the median split of one map into
  map()    the call to map: the chunks pickled and sent, the futures made;
  wait     get_result until every call is done (results already done are
           unpickled meanwhile);
  collect  the rest of get_result: the results put in order;
with the cycle collector's collections per map (young, middle, full) and their
time, from gc.callbacks."""

import argparse
import gc
import multiprocessing
import statistics
import time

import bettong
from bettong import futures as _futures


def cheap(x):
    return x * x + 1


def med(xs):
    return statistics.median(xs)


def rng(xs):
    return "%.1f-%.1f" % (min(xs) * 1e3, max(xs) * 1e3)


class GcClock:
    """Collections per generation and their time, while on."""

    def __init__(self):
        self.on = False
        self.count = [0, 0, 0]
        self.secs = [0.0, 0.0, 0.0]
        self._t = 0.0
        gc.callbacks.append(self._cb)

    def _cb(self, phase, info):
        if not self.on:
            return
        if phase == "start":
            self._t = time.perf_counter()
        else:
            g = info["generation"]
            self.count[g] += 1
            self.secs[g] += time.perf_counter() - self._t


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--items", type=int, default=200000)
    ap.add_argument("--chunksize", type=int, default=100)
    args = ap.parse_args()
    n, k = args.items, args.chunksize
    want = cheap(n - 1)

    ex = bettong.FunctionExecutor(workers=2)
    pool = multiprocessing.Pool(2)
    for _ in range(3):
        ex.get_result(ex.map(cheap, range(20 * k), chunksize=k), show_progressbar=False)
        pool.map(cheap, range(20 * k), k)

    # the end of get_result's wait, for the split (trees before _wait_runs: none)
    waited = [0.0]
    inner = getattr(_futures, "_wait_runs", None)

    def timed_wait(*a, **kw):
        r = inner(*a, **kw)
        waited[0] = time.perf_counter()
        return r

    if inner is not None:
        _futures._wait_runs = timed_wait
    clock = GcClock()
    b, p, parts, gcs = [], [], [], []
    for r in range(args.rounds):
        for who in (("b", "p") if r % 2 == 0 else ("p", "b")):
            if who == "p":
                t = time.perf_counter()
                res = pool.map(cheap, range(n), k)
                p.append(time.perf_counter() - t)
            else:
                clock.count, clock.secs, clock.on = [0, 0, 0], [0.0, 0.0, 0.0], True
                t0 = time.perf_counter()
                fs = ex.map(cheap, range(n), chunksize=k)
                t1 = time.perf_counter()
                res = ex.get_result(fs, show_progressbar=False)
                t2 = time.perf_counter()
                clock.on = False
                b.append(t2 - t0)
                parts.append((t1 - t0, waited[0] - t1, t2 - waited[0]))
                gcs.append((list(clock.count), list(clock.secs)))
                del fs
            assert len(res) == n and res[-1] == want
            del res
    if inner is not None:
        _futures._wait_runs = inner
    ex.close()
    pool.close()
    pool.join()

    print("%d items, chunksize %d, 2 workers, %d rounds (alternating order); ms, median [range]"
          % (n, k, args.rounds))
    print("  bettong  %6.1f  [%s]" % (med(b) * 1e3, rng(b)))
    print("  Pool     %6.1f  [%s]" % (med(p) * 1e3, rng(p)))
    print("  bettong / Pool: %.2f (median of the per-round ratios)"
          % med([x / y for x, y in zip(b, p)]))
    if inner is not None:
        print("bettong, one map: map() %.1f, wait %.1f, collect %.1f ms (medians)"
              % tuple(med(x[i] for x in parts) * 1e3 for i in range(3)))
    print("  collections per map (young, middle, full): %s, %s, %s; their time %.1f ms"
          % tuple([med(c[0][g] for c in gcs) for g in range(3)]
                  + [med(sum(c[1]) for c in gcs) * 1e3]))


if __name__ == "__main__":
    main()
