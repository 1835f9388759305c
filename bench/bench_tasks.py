#!/usr/bin/env python3
"""Task executor benchmark: bettong's parallel functions side by side with
multiprocessing.Pool, concurrent.futures.ProcessPoolExecutor and Dask distributed,
in one run, on the same functions and the same number of workers.

    PYTHONPATH=python /usr/bin/python3 bench/bench_tasks.py            # print the tables
    PYTHONPATH=python /usr/bin/python3 bench/bench_tasks.py --record   # and append a section
                                                                        # to bench/RESULTS.md
    PYTHONPATH=python /usr/bin/python3 bench/bench_tasks.py --quick    # harness check, < 1 min

Dask comes from Debian's python3-distributed (`make -C bench deps`); without it the
Dask column is skipped and the reason printed.

Systems, each with --workers worker processes (default 2):
  bettong    bettong.FunctionExecutor(workers=W) (a local pool)
  Pool       multiprocessing.Pool(W) (fork, the Linux default)
  PPE        concurrent.futures.ProcessPoolExecutor(W) (fork)
  Dask       distributed.LocalCluster(n_workers=W, threads_per_worker=1,
             processes=True, dashboard_address=None) + Client(cluster); every
             submit/map with pure=False, so each call really runs
  forked     plain os.fork()ed processes, no pool: the machine's ceiling (CPU only)

Figures (every one for every system; per round the systems run one at a time,
in alternating order: forward in even rounds, reversed in odd ones; only the
system being measured has processes alive; for figures 1, 2, 3 and 5 each
system's executor is created and warmed up -- 1,000 calls (Dask 100) and a
chunked map of 20 chunks, twice -- then measured, then closed):
  1. per-call overhead: --tasks calls of a function returning its argument, each
     its own future (bettong call_async, Pool.apply_async, PPE.submit,
     Client.submit); wall time from the first submit to the last result, per call.
  2. unchunked map of --map-items items of x*x+1, one item per call (bettong map,
     Pool.map(chunksize=1), PPE.map(chunksize=1), Client.map). Dask is measured
     on --dask-map-items items and scaled linearly (said in the output).
  3. chunked map, same items, --chunksize per call (bettong map(chunksize),
     Pool.map(chunksize), PPE.map(chunksize); Dask has no chunksize: dask.bag
     with partition_size=chunksize computed on the same Client).
  4. CPU-bound: --cpu-tasks tasks of --cpu-seconds of a pure Python loop on 1 and
     on 2 workers (fresh executor for each, warmed up); plain forked processes are
     the ceiling; ratios to forked in the same round.
  5. 100 MB result (the worker makes --transfer-mb MB of bytes and returns it) and
     100 MB argument (the caller sends it, the worker returns its length):
     MB / wall time of one call + result.
  6. start-up: each system in a fresh `python3 -c` subprocess. Counted from the
     child's first line (interpreter already up): "import" = importing the
     system's module; "create+first" = creating the executor and getting the
     first result of a trivial call (the target's figure); both printed.
  7. memory: in the same start-up subprocess, after the first result and 200
     more calls: VmRSS of the client process and of each process below it
     (workers and helpers, from /proc), plus their total PSS.

Each figure is the median over --rounds (with the min-max range); each ratio is
the median of the ratios measured within one round. Targets (issue 15), each
printed with met / NOT MET: call_async <= 5 us per call; chunked map bettong /
Pool.map (same chunksize) <= 1.0; CPU-bound bettong / forked <= 1.02 (1 worker);
start-up (create+first) <= 30 ms; 100 MB result and argument >= 1500 MB/s.

The baselines are used as documented, with their defaults; nothing is done to slow
them down.
"""

import argparse
import concurrent.futures
import datetime
import json
import logging
import multiprocessing
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
RESULTS = os.path.join(HERE, "RESULTS.md")
sys.path.insert(0, os.path.join(REPO, "python"))

import bettong  # noqa: E402

TARGET_CALL_US = 5.0
TARGET_CHUNKED_RATIO = 1.0
TARGET_CPU_RATIO = 1.02
TARGET_STARTUP_MS = 30.0
TARGET_MBPS = 1500.0

SYSTEMS = ("bettong", "Pool", "PPE", "Dask")


# ------------------------------------------------------------------ the functions
# (module level, so the fork children of Pool and PPE have them; bettong and Dask
# send them by value since this script is __main__)

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


def length(data):
    return len(data)


# ------------------------------------------------------------------ the systems
# One adapter per system, with the same operations; each used as its documentation
# shows.

class Bettong:
    name = "bettong"

    def open(self, workers):
        self.ex = bettong.FunctionExecutor(workers=workers)

    def close(self):
        self.ex.close()

    def calls(self, fn, args):
        ex = self.ex
        return ex.get_result([ex.call_async(fn, a) for a in args], show_progressbar=False)

    def map(self, fn, items, chunksize):
        kw = {} if chunksize is None else {"chunksize": chunksize}
        return self.ex.get_result(self.ex.map(fn, items, **kw), show_progressbar=False)

    def call(self, fn, arg):
        fut = self.ex.call_async(fn, arg)
        out = fut.result()
        self.last = fut
        return out

    def function_time(self):
        """The last call's own run time in the worker (from the future's stats)."""
        try:
            st = self.last.stats
            return max(0.0, st["finished"] - st["started"])
        except (AttributeError, KeyError, TypeError):
            return None


class MpPool:
    name = "Pool"

    def open(self, workers):
        self.pool = multiprocessing.Pool(workers)

    def close(self):
        self.pool.terminate()
        self.pool.join()

    def calls(self, fn, args):
        return [r.get() for r in [self.pool.apply_async(fn, (a,)) for a in args]]

    def map(self, fn, items, chunksize):
        return self.pool.map(fn, items, chunksize=chunksize or 1)

    def call(self, fn, arg):
        return self.pool.apply_async(fn, (arg,)).get()


class Ppe:
    name = "PPE"

    def open(self, workers):
        self.ppe = concurrent.futures.ProcessPoolExecutor(workers)

    def close(self):
        self.ppe.shutdown()

    def calls(self, fn, args):
        return [f.result() for f in [self.ppe.submit(fn, a) for a in args]]

    def map(self, fn, items, chunksize):
        return list(self.ppe.map(fn, items, chunksize=chunksize or 1))

    def call(self, fn, arg):
        return self.ppe.submit(fn, arg).result()


def quiet_dask():
    logging.getLogger("distributed").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="distributed")
    warnings.filterwarnings("ignore", message=".*[Ll]arge object.*")


class Dask:
    name = "Dask"

    def open(self, workers):
        from dask.distributed import Client, LocalCluster
        quiet_dask()
        self.cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                    dashboard_address=None)
        self.client = Client(self.cluster)

    def close(self):
        self.client.close()
        self.cluster.close()

    def calls(self, fn, args):
        c = self.client
        return c.gather([c.submit(fn, a, pure=False) for a in args])

    def map(self, fn, items, chunksize):
        if chunksize is None:
            return self.client.gather(self.client.map(fn, items, pure=False))
        import dask.bag
        return dask.bag.from_sequence(items, partition_size=chunksize).map(fn).compute(
            scheduler=self.client)

    def call(self, fn, arg):
        return self.client.submit(fn, arg, pure=False).result()


ADAPTERS = {"bettong": Bettong, "Pool": MpPool, "PPE": Ppe, "Dask": Dask}


def dask_missing():
    """None if Dask distributed can be used, else the reason it cannot."""
    try:
        import dask.bag  # noqa: F401
        import distributed  # noqa: F401
    except ImportError as e:
        return "Dask distributed is not importable (%s); install it with `make -C bench deps` " \
               "(Debian's python3-distributed)" % e
    return None


# ------------------------------------------------------------------ helpers

def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


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


def versions():
    out = ["bettong (this tree)"]
    try:
        import dask
        import distributed
        out.append("dask %s, distributed %s" % (dask.__version__, distributed.__version__))
    except ImportError:
        pass
    return ", ".join(out)


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


def order_of(systems, rnd):
    """Forward in even rounds, reversed in odd ones."""
    return list(systems) if rnd % 2 == 0 else list(reversed(systems))


# ------------------------------------------------------------------ steady-state phase

def steady_round(sysname, args, items_payload):
    """Figures 1, 2, 3, 5 of one system: its executor opened, warmed up, measured,
    closed. Returns {figure: value}."""
    a = ADAPTERS[sysname]()
    a.open(args.workers)
    out = {}
    try:
        for _ in range(2):  # workers up and warm, the chunked path too
            a.calls(noop, range(100 if sysname == "Dask" else 1000))
            a.map(cheap, range(args.chunksize * 20), args.chunksize)
        # 1: per-call overhead
        n = args.dask_tasks if sysname == "Dask" else args.tasks
        t, res = timed(lambda: a.calls(noop, range(n)))
        assert len(res) == n and res[-1] == n - 1
        out["call_us"] = t / n * 1e6
        # 2: unchunked map
        n = args.dask_map_items if sysname == "Dask" else args.map_items
        t, res = timed(lambda: a.map(cheap, range(n), None))
        assert len(res) == n and res[-1] == cheap(n - 1)
        out["map1_s"] = t * args.map_items / n
        # 3: chunked map
        n = args.map_items
        t, res = timed(lambda: a.map(cheap, range(n), args.chunksize))
        assert len(res) == n and res[-1] == cheap(n - 1)
        out["mapk_s"] = t
        # 5: large result, large argument
        nbytes = args.transfer_mb * 1000000
        t, res = timed(lambda: a.call(blob, nbytes))
        assert len(res) == nbytes
        del res
        out["result_mbps"] = args.transfer_mb / t
        if sysname == "bettong":
            ft = a.function_time()
            if ft is not None and t > ft:
                out["result_nofn_mbps"] = args.transfer_mb / (t - ft)
        t, res = timed(lambda: a.call(length, items_payload))
        assert res == nbytes
        out["arg_mbps"] = args.transfer_mb / t
    finally:
        a.close()
    return out


def forked_make(nbytes):
    """MB/s of blob(nbytes) made in a freshly forked process and sent nowhere:
    the ceiling of a result made in the call (what a scheduler running the
    function in the caller's own process, copying nothing, gets)."""
    rd, wr = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(rd)
            t = time.perf_counter()
            b = blob(nbytes)
            t = time.perf_counter() - t
            os.write(wr, b"%.9f %d" % (t, len(b)))
        finally:
            os._exit(0)
    os.close(wr)
    with os.fdopen(rd, "rb") as f:
        t, n = f.read().split()
    t, n = float(t), int(n)
    os.waitpid(pid, 0)
    assert n == nbytes
    return nbytes / 1e6 / t


# ------------------------------------------------------------------ CPU phase

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


def cpu_round(sysname, loops, tasks, want):
    out = {}
    for w in (1, 2):
        if sysname == "forked":
            out["cpu%d_s" % w] = forked_spin(loops, tasks, w)
            continue
        a = ADAPTERS[sysname]()
        a.open(w)
        try:
            a.calls(noop, range(20))  # every worker up
            t, res = timed(lambda: a.map(spin, [loops] * tasks, None))
        finally:
            a.close()
        assert res == want
        out["cpu%d_s" % w] = t
    return out


# ------------------------------------------------------------------ start-up phase

STARTUP_CHILD = r'''
import time
T0 = time.perf_counter()
import json, os, sys
system, workers, repo = sys.argv[1], int(sys.argv[2]), sys.argv[3]

def noop(x):
    return x

def tree_memory():
    """VmRSS of this process and of every process below it; total PSS below."""
    me = os.getpid()
    parent = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open("/proc/%s/stat" % d) as f:
                    s = f.read()
                parent[int(d)] = (int(s[s.rindex(")") + 2:].split()[1]), s[s.index("(") + 1:s.rindex(")")])
            except (OSError, ValueError):
                pass
    below, todo = [], [me]
    while todo:
        p = todo.pop()
        for c, (pp, _) in parent.items():
            if pp == p:
                below.append(c)
                todo.append(c)
    def field(pid, fname, key):
        try:
            with open("/proc/%d/%s" % (pid, fname)) as f:
                for line in f:
                    if line.startswith(key):
                        return int(line.split()[1]) / 1024.0
        except OSError:
            pass
        return 0.0
    procs = [(parent[c][1], field(c, "status", "VmRSS:"), field(c, "smaps_rollup", "Pss:"))
             for c in sorted(below)]
    return {"client_rss": field(me, "status", "VmRSS:"), "client_pss": field(me, "smaps_rollup", "Pss:"),
            "procs": procs}

if system == "bettong":
    sys.path.insert(0, os.path.join(repo, "python"))
    import bettong
    T1 = time.perf_counter()
    ex = bettong.FunctionExecutor(workers=workers)
    assert ex.call_async(noop, 1).result() == 1
    T2 = time.perf_counter()
    ex.get_result([ex.call_async(noop, i) for i in range(200)], show_progressbar=False)
    mem = tree_memory()
    ex.close()
elif system == "Pool":
    import multiprocessing
    T1 = time.perf_counter()
    pool = multiprocessing.Pool(workers)
    assert pool.apply_async(noop, (1,)).get() == 1
    T2 = time.perf_counter()
    [r.get() for r in [pool.apply_async(noop, (i,)) for i in range(200)]]
    mem = tree_memory()
    pool.terminate()
    pool.join()
elif system == "PPE":
    from concurrent.futures import ProcessPoolExecutor
    T1 = time.perf_counter()
    ppe = ProcessPoolExecutor(workers)
    assert ppe.submit(noop, 1).result() == 1
    T2 = time.perf_counter()
    [f.result() for f in [ppe.submit(noop, i) for i in range(200)]]
    mem = tree_memory()
    ppe.shutdown()
elif system == "Dask":
    from dask.distributed import Client, LocalCluster
    import logging
    logging.getLogger("distributed").setLevel(logging.ERROR)
    T1 = time.perf_counter()
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                           dashboard_address=None)
    client = Client(cluster)
    assert client.submit(noop, 1, pure=False).result() == 1
    T2 = time.perf_counter()
    client.gather([client.submit(noop, i, pure=False) for i in range(200)])
    mem = tree_memory()
    client.close()
    cluster.close()
elif system == "none":
    T1 = T2 = time.perf_counter()
    mem = tree_memory()
print("RESULT " + json.dumps({"import_ms": (T1 - T0) * 1e3, "first_ms": (T2 - T1) * 1e3, "mem": mem}),
      flush=True)
'''


def startup_once(sysname, workers):
    p = subprocess.run([sys.executable, "-c", STARTUP_CHILD, sysname, str(workers), REPO],
                       capture_output=True, text=True, timeout=300, cwd="/tmp")
    for line in p.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise RuntimeError("start-up child for %s failed (exit %s): %s" % (
        sysname, p.returncode, (p.stderr or p.stdout)[-2000:]))


def startup_round(sysname, args):
    samples = [startup_once(sysname, args.workers) for _ in range(args.startup_repeats)]
    out = {"import_ms": statistics.median(s["import_ms"] for s in samples),
           "first_ms": statistics.median(s["first_ms"] for s in samples)}
    mem = samples[-1]["mem"]
    out["client_rss"] = mem["client_rss"]
    out["below_rss"] = sum(p[1] for p in mem["procs"])
    out["below_pss"] = sum(p[2] for p in mem["procs"])
    out["procs"] = mem["procs"]
    return out


# ------------------------------------------------------------------ tables

def med(xs):
    return statistics.median(xs)


class Fig:
    def __init__(self, key, label, unit, fmt, better, short):
        self.key, self.label, self.unit, self.fmt, self.better = key, label, unit, fmt, better
        self.short = short  # the row's name in the ratio table


def cell(fig, by_round):
    vals = list(by_round.values())
    if not vals:
        return "-"
    m = fig.fmt % med(vals)
    if len(vals) == 1:
        return m
    return "%s (%s-%s)" % (m, fig.fmt % min(vals), fig.fmt % max(vals))


def ratio_cell(pairs):
    """Median of per-round ratios a/b, with their range."""
    rs = [a / b for a, b in pairs if a is not None and b]
    if not rs:
        return "-", None
    if len(rs) == 1:
        return "%.2f" % rs[0], rs[0]
    return "%.2f (%.2f-%.2f)" % (med(rs), min(rs), max(rs)), med(rs)


def markdown_table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines


def text_table(header, rows):
    allrows = [header] + rows
    widths = [max(len(r[i]) for r in allrows) for i in range(len(header))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in allrows]


# ------------------------------------------------------------------ main

def main():
    ap = argparse.ArgumentParser(description="bettong task executor benchmark (issue 15)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--tasks", type=int, default=20000, help="calls for the per-call figure")
    ap.add_argument("--dask-tasks", type=int, default=2000,
                    help="calls for Dask's per-call figure (it is per call; Dask takes ~2 ms each)")
    ap.add_argument("--map-items", type=int, default=200000, help="items of the maps")
    ap.add_argument("--dask-map-items", type=int, default=5000,
                    help="items of Dask's unchunked map, scaled to --map-items (200k took 348 s)")
    ap.add_argument("--chunksize", type=int, default=100)
    ap.add_argument("--cpu-tasks", type=int, default=8)
    ap.add_argument("--cpu-seconds", type=float, default=0.25, help="length of one CPU task")
    ap.add_argument("--transfer-mb", type=int, default=100)
    ap.add_argument("--startup-repeats", type=int, default=3,
                    help="fresh subprocesses per system and round for the start-up figure")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--systems", default=",".join(SYSTEMS),
                    help="comma-separated subset of %s" % ",".join(SYSTEMS))
    ap.add_argument("--only", default="steady,cpu,startup",
                    help="phases: steady (figures 1,2,3,5), cpu (4), startup (6,7)")
    ap.add_argument("--quick", action="store_true", help="small sizes, one round, no record")
    ap.add_argument("--record", action="store_true", help="append a section to bench/RESULTS.md")
    ap.add_argument("--results", default=RESULTS, help="file --record appends to")
    args = ap.parse_args()
    if args.quick:
        args.tasks, args.dask_tasks, args.map_items, args.dask_map_items = 1000, 50, 5000, 100
        args.rounds, args.cpu_tasks, args.cpu_seconds, args.transfer_mb = 1, 4, 0.05, 10
        args.startup_repeats = 1
    command = "PYTHONPATH=python " + " ".join(shlex.quote(a) for a in [
        sys.executable, os.path.relpath(os.path.abspath(sys.argv[0]), REPO)] + sys.argv[1:])
    systems = [s for s in args.systems.split(",") if s]
    for s in systems:
        if s not in ADAPTERS:
            ap.error("unknown system %r" % s)
    phases = set(args.only.split(","))
    skipped = []
    if "Dask" in systems:
        why = dask_missing()
        if why:
            systems.remove("Dask")
            skipped.append("Dask: " + why)
            print("SKIPPED " + skipped[-1], flush=True)
    if "Dask" in systems:
        quiet_dask()
    dask_scale = args.map_items / max(1, args.dask_map_items)

    m = machine()
    print("machine: %d CPUs, %s, %s RAM; Python %s" % (m["nproc"], m["model"], m["mem"], m["python"]))
    load0, steal0 = loadavg(), cpu_steal()
    started = datetime.datetime.now(datetime.timezone.utc)
    t_start = time.perf_counter()

    # per figure key: {system: {round: value}}
    data = {}
    failures = []

    def add(sysname, rnd, values):
        for k, v in values.items():
            data.setdefault(k, {}).setdefault(sysname, {})[rnd] = v

    def attempt(what, sysname, rnd, fn):
        """fn() or, when it fails, None with the failure printed and noted (the run
        goes on: the system has no figure from that round)."""
        try:
            return fn()
        except Exception as e:  # noqa: BLE001 (reported, and in the record)
            msg = "round %d, %s %s: %s: %s" % (rnd + 1, what, sysname, type(e).__name__,
                                                (str(e).strip().splitlines() or [""])[-1])
            failures.append(msg)
            print("FAILED " + msg, flush=True)
            return None

    procs_seen = {}
    payload = b"\xa5" * (args.transfer_mb * 1000000) if "steady" in phases else None
    loops = want = None
    if "cpu" in phases:
        loops = calibrate_spin(args.cpu_seconds)
        one_task = min(timed(lambda: spin(loops))[0] for _ in range(2))
        want = [spin(loops)] * args.cpu_tasks
        print("CPU task: spin(%d) takes %.3f s here" % (loops, one_task), flush=True)

    for r in range(args.rounds):
        order = order_of(systems, r)
        if "steady" in phases:
            for s in order:
                print("round %d/%d steady %s..." % (r + 1, args.rounds, s), flush=True)
                v = attempt("steady", s, r, lambda: steady_round(s, args, payload))
                if v is None:
                    continue
                add(s, r, v)
                print("  " + ", ".join("%s %.3g" % kv for kv in v.items()), flush=True)
            v = {"result_mbps": forked_make(args.transfer_mb * 1000000)}
            add("forked", r, v)
            print("  forked: made in a fresh process, result_mbps %.0f" % v["result_mbps"],
                  flush=True)
        if "cpu" in phases:
            for s in order_of(["forked"] + systems, r):
                print("round %d/%d cpu %s..." % (r + 1, args.rounds, s), flush=True)
                v = attempt("cpu", s, r, lambda: cpu_round(s, loops, args.cpu_tasks, want))
                if v is None:
                    continue
                v["speedup"] = v["cpu1_s"] / v["cpu2_s"]
                add(s, r, v)
                print("  " + ", ".join("%s %.3f" % kv for kv in v.items()), flush=True)
        if "startup" in phases:
            for s in order:
                print("round %d/%d start-up %s..." % (r + 1, args.rounds, s), flush=True)
                v = attempt("start-up", s, r, lambda: startup_round(s, args))
                if v is None:
                    continue
                procs_seen[s] = v.pop("procs")
                add(s, r, v)
                print("  " + ", ".join("%s %.1f" % kv for kv in v.items()), flush=True)
    bare = None
    if "startup" in phases:
        bare = attempt("start-up", "bare python", 0,
                       lambda: startup_once("none", args.workers)["mem"]["client_rss"])

    elapsed = time.perf_counter() - t_start
    load1, steal1 = loadavg(), cpu_steal()
    steal_pct = 100.0 * (steal1[0] - steal0[0]) / max(1, steal1[1] - steal0[1])

    # ---- the tables
    N = args.map_items
    figs = [
        Fig("call_us", "(1) per call, us (call_async / apply_async / submit / submit)",
            "us", "%.1f", "low", "(1) per-call time"),
        Fig("map1_s", "(2) map of %d items, one per call, s" % N, "s", "%.3f", "low",
            "(2) unchunked map time"),
        Fig("mapk_s", "(3) map of %d items, chunksize %d, s" % (N, args.chunksize), "s", "%.3f",
            "low", "(3) chunked map time"),
        Fig("cpu1_s", "(4) CPU-bound, %d tasks, 1 worker, s" % args.cpu_tasks, "s", "%.3f", "low",
            "(4) CPU-bound time, 1 worker"),
        Fig("cpu2_s", "(4) CPU-bound, %d tasks, 2 workers, s" % args.cpu_tasks, "s", "%.3f", "low",
            "(4) CPU-bound time, 2 workers"),
        Fig("speedup", "(4) speed-up 1 -> 2 workers, x", "x", "%.2f", "high", "(4) speed-up"),
        Fig("result_mbps", "(5) %d MB result, MB/s" % args.transfer_mb, "MB/s", "%.0f", "high",
            "(5) result MB/s"),
        Fig("result_nofn_mbps", "(5) %d MB result without the function's own time, MB/s"
            % args.transfer_mb, "MB/s", "%.0f", "high", "(5) result MB/s without the function"),
        Fig("arg_mbps", "(5) %d MB argument, MB/s" % args.transfer_mb, "MB/s", "%.0f", "high",
            "(5) argument MB/s"),
        Fig("first_ms", "(6) start-up: create + first result, ms", "ms", "%.1f", "low",
            "(6) create + first result"),
        Fig("import_ms", "(6) start-up: import of the module, ms", "ms", "%.1f", "low",
            "(6) import"),
        Fig("client_rss", "(7) client RSS, MB", "MB", "%.1f", "low", "(7) client RSS"),
        Fig("below_rss", "(7) workers and helpers, total RSS, MB", "MB", "%.1f", "low",
            "(7) workers+helpers RSS"),
        Fig("below_pss", "(7) workers and helpers, total PSS, MB", "MB", "%.1f", "low",
            "(7) workers+helpers PSS"),
    ]
    figs = [f for f in figs if f.key in data]
    cols = (["forked"] if "cpu" in phases or "steady" in phases else []) + systems
    colname = {"PPE": "ProcessPoolExecutor"}
    header = ["figure"] + [colname.get(c, c) for c in cols]
    value_rows = [[f.label] + [cell(f, data[f.key].get(c, {})) for c in cols] for f in figs]

    # ratios bettong / baseline, per round, then median
    bases = [c for c in cols if c != "bettong"]
    ratio_rows = []
    ratio = {}
    for f in figs:
        b = data[f.key].get("bettong")
        if not b:
            continue
        if not any(data[f.key].get(c) for c in bases):
            continue
        row = [f.short + (" (lower is better)" if f.better == "low" else " (higher is better)")]
        for c in bases:
            o = data[f.key].get(c)
            txt, v = ratio_cell([(b[k], o[k]) for k in sorted(b) if k in o]) if o else ("-", None)
            ratio[(f.key, c)] = v
            row.append(txt)
        ratio_rows.append(row)
    ratio_header = ["bettong / ..."] + [colname.get(c, c) for c in bases]

    def verdict(ok):
        return "met" if ok else "NOT MET"

    targets = []
    if "call_us" in data and "bettong" in data["call_us"]:
        v = med(data["call_us"]["bettong"].values())
        targets.append(["call_async per call", "%.2f us" % v, "<= %.0f us" % TARGET_CALL_US,
                        verdict(v <= TARGET_CALL_US)])
    if ratio.get(("mapk_s", "Pool")) is not None:
        v = ratio[("mapk_s", "Pool")]
        targets.append(["chunked map, bettong / Pool.map (chunksize %d)" % args.chunksize,
                        "%.2f x" % v, "<= %.1f x" % TARGET_CHUNKED_RATIO,
                        verdict(v <= TARGET_CHUNKED_RATIO)])
    if ratio.get(("cpu1_s", "forked")) is not None:
        v = ratio[("cpu1_s", "forked")]
        targets.append(["CPU-bound, bettong / forked, 1 worker", "%.3f x" % v,
                        "<= %.2f x" % TARGET_CPU_RATIO, verdict(v <= TARGET_CPU_RATIO)])
        v2 = ratio.get(("cpu2_s", "forked"))
        if v2 is not None:
            targets.append(["CPU-bound, bettong / forked, 2 workers", "%.3f x" % v2,
                            "<= %.2f x" % TARGET_CPU_RATIO, verdict(v2 <= TARGET_CPU_RATIO)])
    if "first_ms" in data and "bettong" in data["first_ms"]:
        v = med(data["first_ms"]["bettong"].values())
        targets.append(["start-up, create + first result", "%.1f ms" % v,
                        "<= %.0f ms" % TARGET_STARTUP_MS, verdict(v <= TARGET_STARTUP_MS)])
    for k, what in (("result_mbps", "result"), ("arg_mbps", "argument")):
        if k in data and "bettong" in data[k]:
            v = med(data[k]["bettong"].values())
            targets.append(["%d MB %s" % (args.transfer_mb, what), "%.0f MB/s" % v,
                            ">= %.0f MB/s" % TARGET_MBPS, verdict(v >= TARGET_MBPS)])
    target_header = ["target (issue 15)", "bettong", "target", "verdict"]

    notes = []
    if "Dask" in systems and "steady" in phases:
        notes.append("Dask's per-call figure is measured on %d calls (the others on %d); its "
                     "unchunked map is measured on %d items and scaled x%.0f to %d items, "
                     "assuming a linear cost (a full run took 348 s before); its chunked map is "
                     "dask.bag.from_sequence(partition_size=%d).map(f).compute() on the same Client"
                     % (args.dask_tasks, args.tasks, args.dask_map_items, dask_scale, N,
                        args.chunksize))
    if "startup" in phases:
        notes.append("start-up: each sample is a fresh `%s -c` child; 'create + first result' "
                     "counts from after the system's import to the first result of a trivial "
                     "call in hand (bettong: FunctionExecutor(workers=%d) + call_async().result(), "
                     "the pool process and its workers started; Pool/PPE: fork of the workers; "
                     "Dask: LocalCluster(n_workers=%d, threads_per_worker=1, processes=True, "
                     "dashboard_address=None) + Client: the scheduler and %d nannies in the "
                     "client process, each nanny spawning a worker process (multiprocessing "
                     "'spawn': a fresh interpreter that imports distributed), the client "
                     "connecting, then the call); interpreter start (same for all) is not counted; "
                     "the import is shown on its own row; %d samples per round, their median"
                     % (sys.executable, args.workers, args.workers, args.workers,
                        args.startup_repeats))
        notes.append("memory: after the first result and 200 more calls, VmRSS of the client "
                     "and of every process below it (from /proc); RSS counts pages shared "
                     "after fork in each process, PSS shares them out. A bare `python3 -c` "
                     "child: %.1f MB RSS. Processes below the client in the last round: %s"
                     % (bare or 0.0, "; ".join(
                         "%s: %s" % (colname.get(s, s), ", ".join("%s %.1f MB" % (p[0], p[1])
                                                                  for p in procs_seen[s]))
                         for s in systems if s in procs_seen)))
    if "cpu" in phases:
        notes.append("CPU-bound: spin(%d), %.3f s in the caller; each system's executor is "
                     "fresh for 1 and for 2 workers and warmed up, then the wall time of "
                     "map(spin, tasks) with one task per call (Dask: Client.map); 'forked' "
                     "runs the same tasks in 1 and 2 plain forked processes"
                     % (loops, one_task))
    if "steady" in phases:
        notes.append("(5) the result is made in the worker (`b'Z' * n`), so its time is "
                     "included; the argument is made once in the caller; one call each; "
                     "'forked' makes the same bytes in a freshly forked process and sends them "
                     "nowhere: the ceiling of a result made in the call, what running the "
                     "function in the caller's own process (Dask's threaded scheduler) gives")
    notes += ["SKIPPED " + s for s in skipped]
    notes += ["FAILED " + f for f in failures]
    busy = [x for x in (load0, load1) if x != "?" and float(x.split()[0]) > 0.5 * (m["nproc"] or 1)]
    if busy:
        notes.append("WARNING: the machine was busy (1-minute load average %s on %d CPUs): "
                     "other work shared the cores, so these figures, the CPU-bound ones "
                     "most, say little; take them again on a quiet machine"
                     % (" / ".join(x.split()[0] for x in busy), m["nproc"]))

    print()
    print("Medians over %d rounds (min-max):" % args.rounds)
    for line in text_table(header, value_rows):
        print(line)
    print()
    print("Ratios, median of the per-round ratios (min-max):")
    for line in text_table(ratio_header, ratio_rows):
        print(line)
    print()
    for line in text_table(target_header, targets):
        print(line)
    print()
    for n in notes:
        print("- " + n)
    print("- load average %s at the start, %s at the end; CPU steal %.1f %%; run took %.0f s"
          % (load0, load1, steal_pct, elapsed))

    if args.record and not args.quick:
        lines = ["", "## Task executor vs Pool, ProcessPoolExecutor, Dask (bench/bench_tasks.py), %s"
                 % started.strftime("%Y-%m-%d %H:%M UTC"),
                 "",
                 "- machine: %d CPUs (nproc), %s, %s RAM, Linux %s" % (
                     m["nproc"], m["model"], m["mem"], m["kernel"]),
                 "- Python: %s (the caller, the baselines and the workers); %s"
                 % (m["python"], versions()),
                 "- tree: %s" % tree(),
                 "- command (from the repository root): `%s` (took %.0f s)" % (command, elapsed),
                 "- load: load average %s at the start, %s at the end; CPU steal %.1f %%"
                 % (load0, load1, steal_pct),
                 "- %d workers for every system; %d rounds, systems one at a time in "
                 "alternating order; figures are medians (min-max) over the rounds, ratios "
                 "medians of the per-round ratios" % (args.workers, args.rounds),
                 ""]
        lines += markdown_table(header, value_rows) + [""]
        lines += markdown_table(ratio_header, ratio_rows) + [""]
        lines += markdown_table(target_header, targets) + [""]
        lines += ["- " + n for n in notes] + [""]
        with open(args.results, "a") as f:
            f.write("\n".join(lines))
        print("appended a section to %s" % args.results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
