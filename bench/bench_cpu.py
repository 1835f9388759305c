"""CPU-bound Python in a pool worker against the same code in a plain forked
python3 process (issue 15, item 1: a worker must run within 1.02x).

    /usr/bin/python3 bench/bench_cpu.py [--rounds 7] [--tasks 4] [--task-seconds 0.25]
    /usr/bin/python3 bench/bench_cpu.py --instructions [--loops 1000000]

Run it with the interpreter the build embeds (/usr/bin/python3 by default): the
forked baseline is a fork of this process. Each round runs `tasks` calls of
spin() (a pure-Python loop) on:

  forked          one os.fork() child of this process, the calls one after the
                  other (what bench_tasks.py calls "forked 1")
  pool            FunctionExecutor(workers=1): the worker hosted by python3
                  (bettong._wproc, the default)
  pool-embedded   FunctionExecutor(workers=1) whose pool was started with
                  BETTONG_WORKER_HOST=embedded: the bettong binary's interpreter
                  (Debian's static libpython3.X.a, the code of python3 without LTO)
  pyembed         (if build/bench/pyembed exists: `make bench`) a fresh process
                  of a tiny C program linked like build/bettong, running the
                  calls itself: the embedded interpreter without any pool

The order of the kinds rotates from round to round and is reversed every other
round, and the figures are medians with ranges, and each kind's ratio to forked
is the median of the per-round ratios: the machine may be busy (2 cores shared
with other work), and a ratio within one round cancels most of that.

Two figures per kind: the wall time of the calls as the caller sees it (fork to
waitpid; map to get_result; pyembed: inside the process) and the CPU time of the
loop itself (time.thread_time() around each call, summed: the interpreter's
speed, less disturbed by what else runs on the machine).

--instructions counts instead of timing, which no other load disturbs: the
machine instructions of one spin(--loops) call under valgrind's callgrind
(valgrind must be installed; it is not a build dependency) in a worker of each
host (a `bettong pool --workers 0` and one worker started by hand under
valgrind; counters zeroed and dumped around the call with callgrind_control),
and in a forked python3 child (the child of a run with 0 loops subtracted).
"""

import argparse
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "python"))

import bettong  # noqa: E402

PYEMBED = os.path.join(os.environ.get("BETTONG_BUILD", os.path.join(REPO, "build")),
                       "bench", "pyembed")

SPIN_SRC = '''
import time

def spin(n):
    """Pure Python CPU work: n loop iterations."""
    acc = 0
    for i in range(n):
        acc = (acc + i * i) % 1000003
    return acc

def timed_spin(n):
    """The CPU time of spin(n) in this thread."""
    t = time.thread_time()
    spin(n)
    return time.thread_time() - t
'''
exec(SPIN_SRC)  # spin, timed_spin: the same source here, in the forks and in pyembed


def calibrate(target_s):
    """Loop count for about target_s seconds of spin() here."""
    n = 100_000
    while timed_spin(n) < 0.05:
        n *= 2
    best = min(timed_spin(n) for _ in range(3))
    return max(1, int(n * target_s / best))


def run_forked(loops, tasks):
    r, w = os.pipe()
    t0 = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        try:
            cpu = sum(timed_spin(loops) for _ in range(tasks))
            os.write(w, repr(cpu).encode())
        finally:
            os._exit(0)
    os.close(w)
    os.waitpid(pid, 0)
    wall = time.perf_counter() - t0
    with os.fdopen(r, "rb") as f:
        cpu = float(f.read())
    return wall, cpu


def run_pool(ex, loops, tasks):
    t0 = time.perf_counter()
    cpus = ex.get_result(ex.map(timed_spin, [loops] * tasks), show_progressbar=False)
    return time.perf_counter() - t0, sum(cpus)


PYEMBED_MAIN = SPIN_SRC + '''
import sys
loops, tasks = int(sys.argv[1]), int(sys.argv[2])
t0 = time.perf_counter()
cpu = sum(timed_spin(loops) for _ in range(tasks))
print(time.perf_counter() - t0, cpu)
'''


def run_pyembed(loops, tasks):
    out = subprocess.run([PYEMBED, "-c", PYEMBED_MAIN, str(loops), str(tasks)],
                         capture_output=True, text=True, check=True).stdout.split()
    return float(out[0]), float(out[1])


def executor(host):
    """A one-worker executor whose pool starts its worker in `host`."""
    saved = os.environ.get("BETTONG_WORKER_HOST")
    os.environ["BETTONG_WORKER_HOST"] = host
    try:
        ex = bettong.FunctionExecutor(workers=1)
        ex.get_result(ex.map(timed_spin, [10, 10]), show_progressbar=False)  # started
    finally:
        if saved is None:
            os.environ.pop("BETTONG_WORKER_HOST", None)
        else:
            os.environ["BETTONG_WORKER_HOST"] = saved
    return ex


def worker_exe(ex):
    return ex.get_result(ex.call_async(lambda _: os.path.realpath("/proc/self/exe"), 0),
                         show_progressbar=False)


# ------------------------------------------------------------------ --instructions

BOOT = ("import sys; sys.path[:1] = [sys.argv[1]] + ([] if sys.path[0] == '' else sys.path[:1]); "
        "from bettong._wproc import main; sys.exit(main(sys.argv[2:]))")  # as src/pool/spawn.c

FORK_MAIN = SPIN_SRC + '''
import os, sys
spin(10)
pid = os.fork()
if pid == 0:
    spin(int(sys.argv[1]))
    os._exit(0)
os.waitpid(pid, 0)
'''


def callgrind_summary(path):
    with open(path) as f:
        for line in f:
            if line.startswith("summary:"):
                return int(line.split()[1])
    raise RuntimeError("no summary in " + path)


def forked_instructions(loops, tmp):
    """Instructions of spin(loops) in a forked child: its total minus that of a
    child that ran spin(0)."""
    out = {}
    for n in (0, loops):
        d = os.path.join(tmp, "fork%d" % n)
        os.mkdir(d)
        subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=%s/cg.%%p" % d,
                        sys.executable, "-c", FORK_MAIN, str(n)], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # the child's file is the one of the process that did not start first
        files = sorted(os.listdir(d), key=lambda f: int(f.split(".")[1]))
        out[n] = callgrind_summary(os.path.join(d, files[-1]))
    return out[loops] - out[0]


def worker_instructions(host, loops, tmp):
    """Instructions of one spin(loops) call in a pool worker of `host`."""
    binary = os.path.join(os.environ.get("BETTONG_BUILD", os.path.join(REPO, "build")), "bettong")
    pool = subprocess.Popen([binary, "pool", "--listen", "127.0.0.1:0", "--workers", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    worker = None
    try:
        line = pool.stdout.readline()
        address = line.split("listening on ")[1].split()[0]
        d = os.path.join(tmp, host)
        os.mkdir(d)
        if host == "python":
            cmd = [sys.executable, "-u", "-c", BOOT, os.path.join(REPO, "python")]
        else:
            cmd = [binary, "worker"]
        worker = subprocess.Popen(["valgrind", "--tool=callgrind",
                                   "--callgrind-out-file=%s/cg.%%p" % d] + cmd
                                  + ["--connect", address, "--name", host],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        ex = bettong.FunctionExecutor(address=address, secret="")
        try:
            ex.get_result(ex.map(timed_spin, [10, 10]), show_progressbar=False)
            pid = ex.get_result(ex.call_async(lambda _: os.getpid(), 0), show_progressbar=False)
            subprocess.run(["callgrind_control", "-z", str(pid)], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            ex.get_result(ex.call_async(spin, loops), show_progressbar=False)
            subprocess.run(["callgrind_control", "-d", str(pid)], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        finally:
            ex.close()
        return callgrind_summary(os.path.join(d, "cg.%d.1" % pid))
    finally:
        pool.terminate()
        pool.wait()
        if worker is not None:
            worker.wait(timeout=60)


def instructions(loops):
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        got = {"forked": forked_instructions(loops, tmp),
               "pool": worker_instructions("python", loops, tmp),
               "pool-embedded": worker_instructions("embedded", loops, tmp)}
    print("instructions of one spin(%d) call (callgrind):" % loops)
    for k, v in got.items():
        print("  %-14s %6.1f M   %.3f x forked   %.3f x pool" % (k, v / 1e6, v / got["forked"],
                                                               v / got["pool"]))


def fmt(xs):
    return "%.3f s (%.3f-%.3f)" % (statistics.median(xs), min(xs), max(xs))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--tasks", type=int, default=4)
    ap.add_argument("--task-seconds", type=float, default=0.25)
    ap.add_argument("--no-pyembed", action="store_true")
    ap.add_argument("--instructions", action="store_true",
                    help="count instructions under callgrind instead of timing")
    ap.add_argument("--loops", type=int, default=1_000_000,
                    help="spin()'s loop count for --instructions")
    args = ap.parse_args()
    if args.instructions:
        return instructions(args.loops)
    if os.path.realpath(sys.executable) != os.path.realpath("/usr/bin/python3"):
        print("note: running on %s; the forked baseline is a fork of it" % sys.executable)

    loops = calibrate(args.task_seconds)
    print("spin(%d): about %.2f s here; %d calls per kind and round, %d rounds; load %s"
          % (loops, args.task_seconds, args.tasks, args.rounds,
             " ".join(open("/proc/loadavg").read().split()[:3])), flush=True)
    ex_py = executor("python")
    ex_emb = executor("embedded")
    print("pool worker: %s; pool-embedded worker: %s" % (worker_exe(ex_py), worker_exe(ex_emb)))
    kinds = {
        "forked": lambda: run_forked(loops, args.tasks),
        "pool": lambda: run_pool(ex_py, loops, args.tasks),
        "pool-embedded": lambda: run_pool(ex_emb, loops, args.tasks),
    }
    if not args.no_pyembed and os.access(PYEMBED, os.X_OK):
        kinds["pyembed"] = lambda: run_pyembed(loops, args.tasks)
    names = list(kinds)
    wall = {k: [] for k in names}
    cpu = {k: [] for k in names}
    try:
        for r in range(args.rounds):
            order = names[r % len(names):] + names[:r % len(names)]
            if r % 2:
                order.reverse()
            for k in order:
                w, c = kinds[k]()
                wall[k].append(w)
                cpu[k].append(c)
            print("round %d: %s" % (r + 1, "  ".join("%s %.3f/%.3f" % (k, wall[k][-1], cpu[k][-1])
                                                      for k in names)), flush=True)
    finally:
        ex_py.close()
        ex_emb.close()

    def ratio(d, k):
        return statistics.median(a / b for a, b in zip(d[k], d["forked"]))

    print()
    print("%-14s %-26s %-26s %-10s %s" % ("kind", "wall", "loop CPU", "wall/fork", "CPU/fork"))
    for k in names:
        print("%-14s %-26s %-26s %-10s %.3f" % (k, fmt(wall[k]), fmt(cpu[k]),
                                               "%.3f" % ratio(wall, k), ratio(cpu, k)))
    verdict = ratio(wall, "pool")
    print()
    print("pool worker / forked python3 (wall, median of per-round ratios): %.3f x  -> %s"
          % (verdict, "OK (<= 1.02)" if verdict <= 1.02 else "ABOVE 1.02"))


if __name__ == "__main__":
    main()
