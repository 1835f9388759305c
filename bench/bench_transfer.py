#!/usr/bin/env python3
"""Large arguments and results on a local pool: MB/s of one call.

  result    one call returning N MB of bytes that the worker already holds
            (made by the first, untimed call): the transfer alone.
  made      one call returning N MB of bytes made in the call (b"x" * n):
            the transfer plus the making, as bench_tasks.py's figure (4).
  argument  one call taking N MB of bytes (made once in the client) and
            returning its length.
  array     one call returning an N MB numpy array made in the call
            (numpy.ones): a result pickled with an out-of-band buffer
            (--kinds result,argument,made,array; needs numpy).

MB/s = N MB / wall time of call_async(...).result() (Pool: apply_async().get()).
Each round times, in an order that alternates between rounds:

  shm       bettong, a local pool (large payloads as memfds, pool/shm.h)
  socket    bettong, a local pool started with BETTONG_NO_SHM=1 (today's
            socket path, for comparison in the same run)
  Pool      multiprocessing.Pool(1) (fork), apply_async

Prints medians and ranges. Usage:

  PYTHONPATH=python /usr/bin/python3 bench/bench_transfer.py [--mb 100] [--rounds 5]
      [--kinds result,argument,made] [--paths shm,socket,Pool]
"""

import argparse
import multiprocessing
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "python"))

import bettong  # noqa: E402

_held = {}


def held_blob(n):
    """n bytes the process keeps: only the first call of a size makes them."""
    b = _held.get(n)
    if b is None:
        _held.clear()
        b = _held[n] = b"x" * n
    return b


def made_blob(n):
    return b"y" * n


def length(b):
    return len(b)


def made_array(n):
    """An n-byte numpy array made in the call (float64s)."""
    import numpy
    return numpy.ones(n // 8)


def timed(fn):
    t = time.perf_counter()
    r = fn()
    return time.perf_counter() - t, r


def executor(shm):
    """A FunctionExecutor on a local pool of one worker; BETTONG_NO_SHM=1 in
    the environment the pool and its worker inherit, for the socket path."""
    old = os.environ.pop("BETTONG_NO_SHM", None)
    if not shm:
        os.environ["BETTONG_NO_SHM"] = "1"
    try:
        ex = bettong.FunctionExecutor(workers=1)
        ex.call_async(length, b"").result()  # started
    finally:
        os.environ.pop("BETTONG_NO_SHM", None)
        if old is not None:
            os.environ["BETTONG_NO_SHM"] = old
    return ex


def one(kind, runner, n, arg):
    if kind == "result":
        t, r = timed(lambda: runner(held_blob, n))
        assert len(r) == n
    elif kind == "made":
        t, r = timed(lambda: runner(made_blob, n))
        assert len(r) == n
    elif kind == "array":
        t, r = timed(lambda: runner(made_array, n))
        assert r.nbytes == n
    else:
        t, r = timed(lambda: runner(length, arg))
        assert r == n
    del r
    return t


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mb", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--kinds", default="result,argument,made")
    ap.add_argument("--paths", default="shm,socket,Pool",
                    help="which of shm, socket, Pool to time (shm alone: quick A/B runs "
                    "of two trees, alternated by the caller)")
    args = ap.parse_args()
    n = args.mb * 1000 * 1000
    kinds = args.kinds.split(",")
    arg = b"z" * n
    paths = args.paths.split(",")
    pool = multiprocessing.Pool(1) if "Pool" in paths else None
    ex_shm = executor(True) if "shm" in paths else None
    ex_sock = executor(False) if "socket" in paths else None
    runners = {
        "shm": lambda f, a: ex_shm.call_async(f, a).result(),
        "socket": lambda f, a: ex_sock.call_async(f, a).result(),
        "Pool": lambda f, a: pool.apply_async(f, (a,)).get(),
    }
    runners = {name: run for name, run in runners.items() if name in paths}
    # warm: every worker holds the blob, every path has run once
    for name, run in runners.items():
        run(held_blob, n)
        run(length, b"w")
    times = {(k, name): [] for k in kinds for name in runners}
    names = list(runners)
    for rnd in range(args.rounds):
        order = names if rnd % 2 == 0 else names[::-1]
        for kind in kinds:
            for name in order:
                times[(kind, name)].append(one(kind, runners[name], n, arg))
    print("%d MB, %d rounds (alternating order); MB/s median [min-max]" % (args.mb, args.rounds))
    for kind in kinds:
        for name in names:
            mbps = [args.mb / t for t in times[(kind, name)]]
            print("  %-9s %-7s %6.0f  [%.0f-%.0f]" % (kind, name, statistics.median(mbps),
                                                    min(mbps), max(mbps)))
    for ex in (ex_shm, ex_sock):
        if ex is not None:
            ex.close()
    if pool is not None:
        pool.terminate()


if __name__ == "__main__":
    main()
