#!/usr/bin/env python3
"""Start-up benchmark: how long until the first result, for bettong's
FunctionExecutor against multiprocessing.Pool and ProcessPoolExecutor, and how
long `bettong pool` takes to be ready.

    python3 bench/bench_startup.py                 # print the table
    python3 bench/bench_startup.py --record        # and append a section to bench/RESULTS.md
    python3 bench/bench_startup.py --rounds 3      # quicker

Figures (the three systems measured back to back in every round, in an order
that rotates from round to round; a figure is the median over --rounds with its
range, a ratio the median of the per-round ratios):

  1. creation + first result: a fresh interpreter has imported the package
     (`import bettong`, `import multiprocessing`, `import concurrent.futures`:
     the lazy names of each are imported by the measured code, as a script's
     first use does) and defined f in __main__; the time from before
     `bettong.FunctionExecutor()` / `multiprocessing.Pool(N)` /
     `concurrent.futures.ProcessPoolExecutor(N)` until the first call of f(1)
     has returned its result to the caller. N = the CPU count, bettong's
     default. Closing the executor is not counted (it is measured and printed
     apart).
  2. the same, counted from the interpreter's start (the package's import too):
     what a user waiting for a script sees.
  3. `bettong pool --workers N` exec -> its "listening on" line (it accepts
     calls from then on), and -> all N workers joined (from its log).

"bettong" is the default, the local pool's worker template forked from the
caller; "bettong (exec)" the same with BETTONG_WORKER_START=exec (the template
exec's python3 and imports). --caller-imports MODULE (e.g. numpy) has the
script import MODULE before the clock and f use it, as a data program's
function does: workers forked from the caller have it already, exec'd ones
import it before the first call runs. --function helper has f call another
function of the script (f then travels by value, with cloudpickle, which the
caller and the worker import on the way of the first call); the default, plain,
is f(x) = x + 1 alone.

The bettong package's modules are byte-compiled first (python3 -m compileall,
as an installed package is; `make` does it too), so that no run compiles them.

Targets (issue 15): (1) <= 30 ms; (3) ready <= 20 ms.
"""

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
RESULTS = os.path.join(HERE, "RESULTS.md")
PYDIR = os.path.join(REPO, "python")
TARGET_FIRST_MS = 30.0
TARGET_READY_MS = 20.0

# Each trial runs in a fresh interpreter: {setup} before the clock, {create}
# and {first} timed, {close} timed apart.
TRIAL = r'''
import os, sys, time
t_start = time.perf_counter()
sys.path.insert(0, {pydir!r})
{caller_imports}
{imp}
t_imported = time.perf_counter()
{function}
t0 = time.perf_counter()
{create}
r = {first}
t1 = time.perf_counter()
assert r == 2, r
{close}
t2 = time.perf_counter()
import json
print(json.dumps({{"first": t1 - t0, "total": t1 - t_start, "import": t_imported - t_start,
                  "close": t2 - t1}}))
'''

BETTONG = dict(imp="import bettong",
               create="ex = bettong.FunctionExecutor()",
               first="ex.call_async(f, 1).result()",
               close="ex.close()")
SYSTEMS = {
    "bettong": BETTONG,
    "bettong (exec)": dict(BETTONG, env={"BETTONG_WORKER_START": "exec"}),
    "mp.Pool": dict(imp="import multiprocessing",
                    create="ex = multiprocessing.Pool({n})",
                    first="ex.apply_async(f, (1,)).get()",
                    close="ex.close(); ex.join()"),
    "ProcessPoolExecutor": dict(imp="import concurrent.futures",
                                create="ex = concurrent.futures.ProcessPoolExecutor({n})",
                                first="ex.submit(f, 1).result()",
                                close="ex.shutdown()"),
}


# f as the script defines it (--function): "plain" uses nothing of the script
# (bettong sends it without cloudpickle, src: python/bettong/_serial.py);
# "helper" calls another function of the script's __main__, which travels by
# value (cloudpickle, imported by the caller and by the worker).
FUNCTIONS = {
    "plain": "def f(x):\n    return x + 1{uses}\n",
    "helper": "def g(x):\n    return x + 1{uses}\ndef f(x):\n    return g(x)\n",
}


def trial(python, system, n, env, pydir=PYDIR, caller_imports=None, function="plain"):
    spec = {k: v.format(n=n) for k, v in SYSTEMS[system].items() if k != "env"}
    uses = f" + 0 * len({caller_imports}.__name__)" if caller_imports else ""
    code = TRIAL.format(pydir=pydir,
                        caller_imports=f"import {caller_imports}" if caller_imports else "",
                        function=FUNCTIONS[function].format(uses=uses), **spec)
    env = dict(env, **SYSTEMS[system].get("env", {}))
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, env=env,
                         timeout=60)
    if out.returncode != 0:
        raise RuntimeError(f"{system} trial failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


_JOINED = re.compile(r"worker \d+ '")


def pool_ready(binary, n, env):
    """(exec -> listening line, exec -> n workers joined), in seconds."""
    d = tempfile.mkdtemp(prefix="bench-startup-")
    try:
        t0 = time.perf_counter()
        p = subprocess.Popen([binary, "pool", "--unix", os.path.join(d, "s"), "--workers",
                              str(n), "--log-level", "info"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        line = p.stdout.readline()
        t_ready = time.perf_counter() - t0
        if b"listening on" not in line:
            raise RuntimeError(f"bettong pool printed {line!r}")
        joined = 0
        t_workers = None
        deadline = time.monotonic() + 30
        while joined < n and time.monotonic() < deadline:
            err = p.stderr.readline()
            if not err:
                break
            if b" joined" in err and _JOINED.search(err.decode("utf-8", "replace")):
                joined += 1
                if joined == n:
                    t_workers = time.perf_counter() - t0
        p.terminate()
        p.wait(timeout=10)
        return t_ready, t_workers
    finally:
        shutil.rmtree(d, ignore_errors=True)


def med(xs):
    return statistics.median(xs)


def fmt_ms(xs):
    xs = [x for x in xs if x is not None]
    if not xs:
        return "n/a"
    return f"{1e3 * med(xs):.1f} ms ({1e3 * min(xs):.1f}-{1e3 * max(xs):.1f})"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--bin", default=os.path.join(REPO, "build", "bettong"))
    ap.add_argument("--pydir", default=PYDIR,
                    help="the directory of the bettong package to measure (default: this "
                         "repository's python/; another checkout's, with --bin, to compare)")
    ap.add_argument("--caller-imports", metavar="MODULE",
                    help="the script imports MODULE before the clock and f uses it")
    ap.add_argument("--function", choices=sorted(FUNCTIONS), default="plain",
                    help="f uses nothing of the script (plain, the default) or calls a "
                         "helper function of it (helper: sent with cloudpickle)")
    ap.add_argument("--record", action="store_true", help="append to bench/RESULTS.md")
    args = ap.parse_args()

    subprocess.run([args.python, "-m", "compileall", "-q", os.path.join(args.pydir, "bettong")],
                   check=True)
    env = dict(os.environ, BETTONG_BIN=args.bin)
    env.pop("BETTONG_POOL", None)
    env.pop("BETTONG_WORKER_START", None)  # each system says its own
    n = args.workers
    names = list(SYSTEMS)
    res = {s: [] for s in names}
    ratios = {s: [] for s in names[1:]}
    ready, workers_up = [], []
    for r in range(args.rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        got = {}
        for s in order:
            got[s] = trial(args.python, s, n, env, args.pydir, args.caller_imports,
                           args.function)
            res[s].append(got[s])
        for s in names[1:]:
            ratios[s].append(got["bettong"]["first"] / got[s]["first"])
        t_ready, t_workers = pool_ready(args.bin, n, env)
        ready.append(t_ready)
        workers_up.append(t_workers)
        print(f"round {r + 1}: " + ", ".join(f"{s} {1e3 * got[s]['first']:.1f} ms"
                                             for s in names)
              + f"; pool ready {1e3 * t_ready:.1f} ms", flush=True)

    load = os.getloadavg()
    lines = []
    lines.append(f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python "
                 f"{platform.python_version()}; load average at the end {load[0]:.2f}")
    other = f" --bin {args.bin} --pydir {args.pydir}" if args.pydir != PYDIR else ""
    if args.caller_imports:
        other += f" --caller-imports {args.caller_imports}"
    if args.function != "plain":
        other += f" --function {args.function}"
    lines.append(f"Command: python3 bench/bench_startup.py --rounds {args.rounds}{other}"
                 f" (workers {n})")
    lines.append("")
    lines.append("| system | creation + first result | from interpreter start | import | "
                 "close (not counted) |")
    lines.append("|---|---|---|---|---|")
    for s in names:
        lines.append(f"| {s} | {fmt_ms([x['first'] for x in res[s]])} | "
                     f"{fmt_ms([x['total'] for x in res[s]])} | "
                     f"{fmt_ms([x['import'] for x in res[s]])} | "
                     f"{fmt_ms([x['close'] for x in res[s]])} |")
    lines.append("")
    for s in names[1:]:
        lines.append(f"- bettong / {s} (creation + first result): "
                     f"{med(ratios[s]):.2f}x (range {min(ratios[s]):.2f}-{max(ratios[s]):.2f})")
    first = med([x["first"] for x in res["bettong"]]) * 1e3
    lines.append(f"- `bettong pool --workers {n}` exec -> listening: {fmt_ms(ready)}; "
                 f"-> {n} workers joined: {fmt_ms(workers_up)}")
    lines.append(f"- targets: first result <= {TARGET_FIRST_MS:.0f} ms: "
                 f"{'met' if first <= TARGET_FIRST_MS else 'NOT met'} ({first:.1f} ms); "
                 f"pool ready <= {TARGET_READY_MS:.0f} ms: "
                 f"{'met' if med(ready) * 1e3 <= TARGET_READY_MS else 'NOT met'} "
                 f"({med(ready) * 1e3:.1f} ms)")
    text = "\n".join(lines)
    print()
    print(text)
    if args.record:
        stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
        with open(RESULTS, "a") as fh:
            fh.write(f"\n## Start-up (bench_startup.py), {stamp}\n\n{text}\n")
        print(f"\nappended to {RESULTS}")


if __name__ == "__main__":
    main()
