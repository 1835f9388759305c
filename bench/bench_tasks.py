#!/usr/bin/env python3
"""Task executor benchmark: bettong's parallel functions against the standard
library's process pools, side by side in one run, on the same functions and the
same number of workers.

    PYTHONPATH=python python3 bench/bench_tasks.py            # print the table
    PYTHONPATH=python python3 bench/bench_tasks.py --record   # and append a section
                                                               # to bench/RESULTS.md
    PYTHONPATH=python python3 bench/bench_tasks.py --quick    # harness check

Figures (each system measured back to back in every round; a figure is the
median over --rounds, a ratio the median of the per-round ratios):

  1. per-task overhead of a trivial function, --tasks calls (default 20,000):
     bettong call_async and map (one item per call) against
     multiprocessing.Pool.apply_async and ProcessPoolExecutor.submit. Wall time
     from the first submit to the last result, per task (us).
  2. chunked map of a cheap function over --map-items items (default 200,000),
     chunksize 100: bettong map(chunksize=100) + get_result against
     Pool.map(chunksize=100) (and ProcessPoolExecutor.map, for context).
  3. CPU-bound speed-up: 8 tasks of ~0.25 s of pure Python loop, on 1 and then
     2 workers (bettong; multiprocessing.Pool and plain forked processes, the
     machine's ceiling at that moment, for context).
  4. transfer: one call returning a 100 MB bytes result; MB/s = 100 MB / wall time
     of call_async(...).result() (Pool.apply_async for context).

Targets: (1) <= 10 us per task and >= 3x better than Pool.apply_async;
(2) within 1.2x of Pool.map; (3) speed-up >= 1.9x on 2 workers; (4) >= 500 MB/s.

The baselines are used as documented, with their defaults (fork start method on
Linux) and the same worker count; nothing is done to slow them down.
"""

import argparse
import concurrent.futures
import datetime
import multiprocessing
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
RESULTS = os.path.join(HERE, "RESULTS.md")
sys.path.insert(0, os.path.join(REPO, "python"))

import bettong  # noqa: E402

TARGET_US = 10.0
TARGET_VS_APPLY = 3.0
TARGET_MAP_RATIO = 1.2
TARGET_SPEEDUP = 1.9
TARGET_MBPS = 500.0


# ------------------------------------------------------------------ the functions
# (module level, so multiprocessing's fork children have them too; bettong sends
# them by value since this script is __main__)

def noop(x):
    return x


def cheap(x):
    return x * x + 1


def spin(n):
    """Pure Python CPU work: n loop iterations."""
    acc = 0
    for i in range(n):
        acc = (acc + i * i) % 1000003
    return acc


def blob(nbytes):
    return b"\x5a" * nbytes


# ------------------------------------------------------------------ helpers

def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def median(xs):
    return statistics.median(xs)


def fmt_us(s, n):
    return s / n * 1e6


def calibrate_spin(target_s):
    """Loop count for about `target_s` seconds of spin() here."""
    n = 200000
    while True:
        t, _ = timed(lambda: spin(n))
        if t > 0.05:
            break
        n *= 2
    best = min(timed(lambda: spin(n))[0] for _ in range(3))
    return int(n * target_s / best)


def machine():
    model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = "?"
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    mem = "%.1f GB" % (int(line.split()[1]) / 1024 / 1024)
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "model": model, "mem": mem, "kernel": platform.release(),
            "python": "%s %s" % (sys.executable, platform.python_version())}


def tree():
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                             capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=REPO, capture_output=True, text=True, timeout=10).stdout.strip()
        return rev + (" (uncommitted changes)" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "?"


def loadavg():
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"


def cpu_steal():
    """(steal, total) jiffies over all CPUs."""
    with open("/proc/stat") as f:
        vals = [int(v) for v in f.readline().split()[1:]]
    return vals[7], sum(vals[:8])


# ------------------------------------------------------------------ phases

def overhead_round(n, workers, ex, pool, ppe, pex):
    out = {}
    # bettong call_async: one future per call
    t, res = timed(lambda: ex.get_result([ex.call_async(noop, i) for i in range(n)],
                                         show_progressbar=False))
    assert res[-1] == n - 1
    out["bettong call_async"] = t
    # bettong map, one item per call
    t, res = timed(lambda: ex.get_result(ex.map(noop, range(n)), show_progressbar=False))
    assert res[-1] == n - 1
    out["bettong map"] = t
    # bettong PoolExecutor.submit (concurrent.futures interface), for context
    t, res = timed(lambda: [f.result() for f in [pex.submit(noop, i) for i in range(n)]])
    assert res[-1] == n - 1
    out["bettong PoolExecutor.submit"] = t
    # multiprocessing.Pool.apply_async
    t, res = timed(lambda: [r.get() for r in [pool.apply_async(noop, (i,)) for i in range(n)]])
    assert res[-1] == n - 1
    out["Pool.apply_async"] = t
    # concurrent.futures.ProcessPoolExecutor.submit
    t, res = timed(lambda: [f.result() for f in [ppe.submit(noop, i) for i in range(n)]])
    assert res[-1] == n - 1
    out["ProcessPoolExecutor.submit"] = t
    return out


def chunked_round(n, chunk, ex, pool, ppe):
    out = {}
    want_last = cheap(n - 1)
    t, res = timed(lambda: ex.get_result(ex.map(cheap, range(n), chunksize=chunk),
                                         show_progressbar=False))
    assert len(res) == n and res[-1] == want_last
    out["bettong map(chunksize)"] = t
    t, res = timed(lambda: pool.map(cheap, range(n), chunksize=chunk))
    assert len(res) == n and res[-1] == want_last
    out["Pool.map(chunksize)"] = t
    t, res = timed(lambda: list(ppe.map(cheap, range(n), chunksize=chunk)))
    assert len(res) == n and res[-1] == want_last
    out["ProcessPoolExecutor.map(chunksize)"] = t
    return out


def forked_spin(loops, tasks, procs):
    """Wall time of `tasks` spin(loops) shared out over `procs` plain forked
    processes (no pool at all): what the machine gives at this moment."""
    t0 = time.perf_counter()
    pids = []
    for p in range(procs):
        pid = os.fork()
        if pid == 0:
            try:
                for _ in range(p, tasks, procs):
                    spin(loops)
            finally:
                os._exit(0)
        pids.append(pid)
    for pid in pids:
        os.waitpid(pid, 0)
    return time.perf_counter() - t0


def speedup_round(loops, tasks):
    out = {}
    # the machine's own ceiling in this round (context for the figures below)
    out["forked 1"] = forked_spin(loops, tasks, 1)
    out["forked 2"] = forked_spin(loops, tasks, 2)
    for w in (1, 2):
        with bettong.FunctionExecutor(workers=w) as ex:
            ex.get_result(ex.map(noop, range(4)), show_progressbar=False)  # pool up
            t, res = timed(lambda: ex.get_result(ex.map(spin, [loops] * tasks),
                                                 show_progressbar=False))
        out["bettong %d" % w] = t
        with multiprocessing.Pool(w) as pool:
            pool.map(noop, range(4))
            t, res2 = timed(lambda: pool.map(spin, [loops] * tasks, chunksize=1))
        assert res == res2
        out["Pool %d" % w] = t
    return out


def transfer_round(nbytes, ex, pool):
    out = {}
    fut = []
    t, res = timed(lambda: fut.append(ex.call_async(blob, nbytes)) or fut[0].result())
    assert len(res) == nbytes
    del res
    out["bettong"] = t
    st = fut[0].stats
    out["bettong function"] = max(0.0, st["finished"] - st["started"])
    t, res = timed(lambda: pool.apply_async(blob, (nbytes,)).get())
    assert len(res) == nbytes
    del res
    out["Pool.apply_async"] = t
    return out


# ------------------------------------------------------------------ main

def verdict(ok):
    return "MET" if ok else "NOT MET"


def main():
    ap = argparse.ArgumentParser(description="bettong task executor benchmark")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--tasks", type=int, default=20000, help="calls for the overhead figure")
    ap.add_argument("--map-items", type=int, default=200000, help="items of the chunked map")
    ap.add_argument("--chunksize", type=int, default=100)
    ap.add_argument("--cpu-tasks", type=int, default=8)
    ap.add_argument("--cpu-seconds", type=float, default=0.25, help="length of one CPU task")
    ap.add_argument("--transfer-mb", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="small sizes, one round, no record")
    ap.add_argument("--record", action="store_true", help="append a section to bench/RESULTS.md")
    ap.add_argument("--results", default=RESULTS, help="file --record appends to")
    args = ap.parse_args()
    if args.quick:
        args.tasks, args.map_items, args.rounds = 2000, 20000, 1
        args.cpu_tasks, args.cpu_seconds, args.transfer_mb = 4, 0.1, 20
    command = "PYTHONPATH=python " + " ".join(shlex.quote(a) for a in [
        sys.executable, os.path.relpath(os.path.abspath(sys.argv[0]), REPO)] + sys.argv[1:])

    m = machine()
    print("machine: %d CPUs, %s, %s RAM; Python %s" % (m["nproc"], m["model"], m["mem"], m["python"]))
    load0, steal0 = loadavg(), cpu_steal()
    started = datetime.datetime.now(datetime.timezone.utc)
    W = args.workers

    # ---- 1 + 2 + 4: long-lived pools of W workers, warmed up
    ex = bettong.FunctionExecutor(workers=W)
    pex = bettong.PoolExecutor(workers=W)
    pool = multiprocessing.Pool(W)
    ppe = concurrent.futures.ProcessPoolExecutor(W)
    try:
        for warm in range(2):
            ex.get_result(ex.map(noop, range(1000)), show_progressbar=False)
            [f.result() for f in [pex.submit(noop, i) for i in range(1000)]]
            pool.map(noop, range(1000))
            list(ppe.map(noop, range(1000)))

        over, chunked, transfer = [], [], []
        for r in range(args.rounds):
            print("round %d/%d: overhead..." % (r + 1, args.rounds), flush=True)
            over.append(overhead_round(args.tasks, W, ex, pool, ppe, pex))
            print("  " + ", ".join("%s %.2f us" % (k, fmt_us(v, args.tasks))
                                   for k, v in over[-1].items()), flush=True)
            print("round %d/%d: chunked map..." % (r + 1, args.rounds), flush=True)
            chunked.append(chunked_round(args.map_items, args.chunksize, ex, pool, ppe))
            print("  " + ", ".join("%s %.3f s" % kv for kv in chunked[-1].items()), flush=True)
            print("round %d/%d: transfer..." % (r + 1, args.rounds), flush=True)
            transfer.append(transfer_round(args.transfer_mb * 1000000, ex, pool))
            print("  " + ", ".join("%s %.3f s" % kv for kv in transfer[-1].items()), flush=True)
    finally:
        ex.close()
        pex.shutdown()
        pool.terminate()
        pool.join()
        ppe.shutdown()

    # ---- 3: speed-up from 1 to 2 workers (fresh pools each time)
    loops = calibrate_spin(args.cpu_seconds)
    one_task = min(timed(lambda: spin(loops))[0] for _ in range(2))
    print("CPU task: spin(%d) takes %.3f s here" % (loops, one_task), flush=True)
    speed = []
    for r in range(args.rounds):
        print("round %d/%d: speed-up..." % (r + 1, args.rounds), flush=True)
        speed.append(speedup_round(loops, args.cpu_tasks))
        print("  " + ", ".join("%s workers %.3f s" % kv for kv in speed[-1].items()), flush=True)

    load1, steal1 = loadavg(), cpu_steal()
    steal_pct = 100.0 * (steal1[0] - steal0[0]) / max(1, steal1[1] - steal0[1])

    # ---- figures
    N = args.tasks
    us = {k: median([fmt_us(o[k], N) for o in over]) for k in over[0]}
    ratio_apply = {k: median([o["Pool.apply_async"] / o[k] for o in over])
                   for k in ("bettong call_async", "bettong map")}
    ratio_ppe = {k: median([o["ProcessPoolExecutor.submit"] / o[k] for o in over])
                 for k in ("bettong call_async", "bettong map")}
    ch = {k: median([c[k] for c in chunked]) for k in chunked[0]}
    map_ratio = median([c["bettong map(chunksize)"] / c["Pool.map(chunksize)"] for c in chunked])
    sp_b = median([s["bettong 1"] / s["bettong 2"] for s in speed])
    sp_p = median([s["Pool 1"] / s["Pool 2"] for s in speed])
    mb = args.transfer_mb
    mbps = {k: median([mb / t[k] for t in transfer]) for k in ("bettong", "Pool.apply_async")}
    mbps_x = median([mb / max(1e-9, t["bettong"] - t["bettong function"]) for t in transfer])
    fn_ms = median([t["bettong function"] * 1000 for t in transfer])

    rows = []  # (figure, value, target, verdict)
    for k in ("bettong call_async", "bettong map"):
        rows.append(("(1) %s, us per task" % k, "%.2f" % us[k], "<= %.0f" % TARGET_US,
                     verdict(us[k] <= TARGET_US)))
        rows.append(("(1) Pool.apply_async / %s" % k, "%.2f x (rounds: %s)" % (
            ratio_apply[k], ", ".join("%.2f" % (o["Pool.apply_async"] / o[k]) for o in over)),
            ">= %.0f x" % TARGET_VS_APPLY, verdict(ratio_apply[k] >= TARGET_VS_APPLY)))
        rows.append(("(1) ProcessPoolExecutor.submit / %s" % k, "%.2f x" % ratio_ppe[k], "", ""))
    for k in ("bettong PoolExecutor.submit", "Pool.apply_async", "ProcessPoolExecutor.submit"):
        rows.append(("(1) %s, us per task" % k, "%.2f" % us[k], "", ""))
    rows.append(("(2) bettong map(chunksize=%d), %d items" % (args.chunksize, args.map_items),
                 "%.3f s" % ch["bettong map(chunksize)"], "", ""))
    rows.append(("(2) Pool.map(chunksize=%d)" % args.chunksize, "%.3f s" % ch["Pool.map(chunksize)"],
                 "", ""))
    rows.append(("(2) ProcessPoolExecutor.map(chunksize=%d)" % args.chunksize,
                 "%.3f s" % ch["ProcessPoolExecutor.map(chunksize)"], "", ""))
    rows.append(("(2) bettong / Pool.map", "%.2f x (rounds: %s)" % (map_ratio, ", ".join(
        "%.2f" % (c["bettong map(chunksize)"] / c["Pool.map(chunksize)"]) for c in chunked)),
        "<= %.1f x" % TARGET_MAP_RATIO, verdict(map_ratio <= TARGET_MAP_RATIO)))
    rows.append(("(3) bettong, %d x %.2f s tasks: 1 / 2 workers" % (args.cpu_tasks, one_task),
                 "%.2f s / %.2f s" % (median([s["bettong 1"] for s in speed]),
                                      median([s["bettong 2"] for s in speed])), "", ""))
    rows.append(("(3) bettong speed-up 1 -> 2 workers", "%.2f x (rounds: %s)" % (sp_b, ", ".join(
        "%.2f" % (s["bettong 1"] / s["bettong 2"]) for s in speed)),
        ">= %.1f x" % TARGET_SPEEDUP, verdict(sp_b >= TARGET_SPEEDUP)))
    rows.append(("(3) Pool speed-up 1 -> 2 workers (context)", "%.2f x (%.2f s / %.2f s)" % (
        sp_p, median([s["Pool 1"] for s in speed]), median([s["Pool 2"] for s in speed])), "", ""))
    rows.append(("(3) 1 -> 2 plain forked processes, the machine's ceiling (context)",
                 "%.2f x (rounds: %s)" % (median([s["forked 1"] / s["forked 2"] for s in speed]),
                                          ", ".join("%.2f" % (s["forked 1"] / s["forked 2"])
                                                    for s in speed)), "", ""))
    rows.append(("(4) bettong %d MB result, MB/s" % mb, "%.0f (rounds: %s)" % (
        mbps["bettong"], ", ".join("%.0f" % (mb / t["bettong"]) for t in transfer)),
        ">= %.0f" % TARGET_MBPS, verdict(mbps["bettong"] >= TARGET_MBPS)))
    rows.append(("(4) bettong, without the function's own time (%.0f ms), MB/s" % fn_ms,
                 "%.0f" % mbps_x, "", ""))
    rows.append(("(4) Pool.apply_async %d MB result, MB/s (context)" % mb,
                 "%.0f" % mbps["Pool.apply_async"], "", ""))

    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    print()
    for r in rows:
        print("%-*s  %-*s  %-10s %s" % (w0, r[0], w1, r[1], r[2], r[3]))
    print()
    print("load average %s at the start, %s at the end; CPU steal %.1f %%" % (load0, load1, steal_pct))

    if args.record and not args.quick:
        lines = ["", "## Task executor (bench/bench_tasks.py), %s" % started.strftime("%Y-%m-%d %H:%M UTC"),
                 "",
                 "- machine: %d CPUs (nproc), %s, %s RAM, Linux %s" % (
                     m["nproc"], m["model"], m["mem"], m["kernel"]),
                 "- Python: %s (the caller, the baselines and the workers)" % m["python"],
                 "- tree: %s" % tree(),
                 "- command (from the repository root): `%s`" % command,
                 "- %d workers for every system; %d rounds, each system back to back in a round; "
                 "figures are medians over the rounds, ratios medians of the per-round ratios"
                 % (W, args.rounds),
                 "",
                 "| figure | value | target | verdict |",
                 "|---|---|---|---|"]
        for r in rows:
            lines.append("| %s | %s | %s | %s |" % r)
        lines += [
            "",
            "- (1) wall time from the first submit to the last result of %d calls of a "
            "function returning its argument, divided by %d; every call is its own "
            "future/AsyncResult" % (N, N),
            "- (2) %d items of `x*x + 1`, results collected as a list" % args.map_items,
            "- (3) spin(%d) (a pure Python loop, %.3f s in the caller); fresh pools for 1 "
            "and 2 workers; the wall time of map + results. The ceiling row runs the same "
            "tasks in 1 and then 2 plain forked processes in each round, before the pools: "
            "what the machine gave at that moment" % (loops, one_task),
            "- (4) one call returning %d MB of bytes made in the worker; wall time of "
            "call_async(...).result() (includes making the bytes in the worker; the row "
            "after it subtracts the function's run time from the future's stats)" % mb,
            "- machine load: load average %s at the start, %s at the end; CPU steal %.1f %%"
            % (load0, load1, steal_pct),
            ""]
        with open(args.results, "a") as f:
            f.write("\n".join(lines))
        print("appended a section to %s" % args.results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
