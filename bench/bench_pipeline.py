"""Durable creation from one client: 100 000 make_persistent(alias=...) pipelined
(bettong.pipeline()) against the same call waiting for each answer, in one run
(issue 11, items 5 and 7). Each figure on a fresh `bettong store` on loopback
(data dir in /tmp):

  (a) pipelined: N x make_persistent(alias=...) inside `with bettong.pipeline():`,
      timed to the end of the block (the sync point: all of them on disk);
  (b) baseline, wait per call: make_persistent(alias=...) outside a pipeline
      (what every aliased call did before), M calls (default 5000: at ~1,500/s
      the full N takes about a minute; --wait-all runs N), rate extrapolated;
  (c) context, no alias: N x make_persistent() (write-behind) + flush();
  (d) durability: N pipelined as in (a), the store SIGKILLed as soon as the
      block ends, restarted on its directory, and every alias looked up (each
      must name the id the client gave);
  (e) the store's group commit: N one-object PERSIST requests sent on one
      connection without waiting (no client-side batching).

Commits / requests come from the line each store logs when it stops
("committer: C commits for R requests (at most K in one)"). Rounds run (a) to
(e) back to back; the table gives medians and the per-round ratios.

    python3 bench/bench_pipeline.py                 # 3 rounds (about 1 minute)
    python3 bench/bench_pipeline.py --quick         # 1 round, N = 20 000
    python3 bench/bench_pipeline.py --record        # appended to bench/RESULTS.md
"""

import argparse
import datetime
import os
import pickle
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "python"))

import bettong  # noqa: E402
from bettong import objects  # noqa: E402
from bettong.objects import Persistent  # noqa: E402

TARGET_S = 3.0   # 100 000 aliased make_persistent, durable


class Rec(Persistent):
    n: int
    name: str

    def __init__(self, n):
        self.n = n
        self.name = "rec-%d" % n


# ------------------------------------------------------------------ stores

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Store:
    """`bettong store` on a fresh directory; its log kept for the committer line."""

    def __init__(self, binary):
        self.binary = binary
        self.tmp = tempfile.mkdtemp(prefix="bettong-bench-pipeline-")
        self.port = free_port()
        self.address = "127.0.0.1:%d" % self.port
        self.logs = []
        self.start()

    def start(self):
        path = os.path.join(self.tmp, "log-%d" % len(self.logs))
        self.logs.append(path)
        with open(path, "wb") as log:
            self.proc = subprocess.Popen(
                [self.binary, "store", "--listen", self.address,
                 "--dir", os.path.join(self.tmp, "data")], stdout=log, stderr=log)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise SystemExit("the store did not start: " + open(path).read())
                time.sleep(0.01)

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self):
        """SIGTERM; returns (commits, requests, largest) of this run of the store."""
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(30)
        text = open(self.logs[-1], errors="replace").read()
        mt = re.search(r"committer: (\d+) commits for (\d+) requests(?: \(at most (\d+) in one\))?",
                       text)
        if not mt:
            raise SystemExit("no committer line in the store's log:\n" + text[-2000:])
        return tuple(int(x) if x else 0 for x in mt.groups())

    def remove(self):
        if self.proc.poll() is None:
            self.kill()
        shutil.rmtree(self.tmp, ignore_errors=True)


def on_fresh_store(binary, fn):
    """fn(store) on a fresh store, connected; returns (fn's result, commit stats)."""
    st = Store(binary)
    try:
        objects.connect(st.address)
        Rec(-1).make_persistent()      # the class registered, connections open
        objects.flush()
        result = fn(st)
        objects.disconnect()
        return result, st.stop()
    finally:
        objects.disconnect()
        st.remove()


# ------------------------------------------------------------------ the figures

def pipelined(n, prefix):
    objs = [Rec(i) for i in range(n)]
    t0 = time.perf_counter()
    with bettong.pipeline():
        for i, o in enumerate(objs):
            o.make_persistent(alias="%s%d" % (prefix, i))
    return time.perf_counter() - t0, objs


def wait_per_call(m):
    objs = [Rec(i) for i in range(m)]
    t0 = time.perf_counter()
    for i, o in enumerate(objs):
        o.make_persistent(alias="w%d" % i)
    return time.perf_counter() - t0


def no_alias(n):
    objs = [Rec(i) for i in range(n)]
    t0 = time.perf_counter()
    for o in objs:
        o.make_persistent()
    objects.flush()
    return time.perf_counter() - t0


def lookup_all(address, aliases):
    """{alias: object id} for every alias, by LOOKUP_ALIAS requests pipelined on
    one connection in chunks (answers read before the next chunk)."""
    c = bettong.objects._extension().Connection(address, b"", "bench-check")
    found = {}
    try:
        for lo in range(0, len(aliases), 1000):
            chunk = aliases[lo:lo + 1000]
            req = {c.send(objects._LOOKUP_ALIAS, a): a for a in chunk}
            c.flush()
            while req:
                for ans in c.recv():
                    a = req.pop(ans[1])
                    if ans[0] == objects._REF:
                        found[a] = ans[2]
    finally:
        c.close()
    return found


def durability(binary, n):
    """(seconds, missing, wrong) for n pipelined creations, the store SIGKILLed
    right after the sync point."""
    st = Store(binary)
    try:
        objects.connect(st.address)
        el, objs = pipelined(n, "d")
        st.kill()
        ids = [o.__dict__.get("_bettong_id") for o in objs]
        objects.disconnect()
        st.start()
        aliases = ["d%d" % i for i in range(n)]
        found = lookup_all(st.address, aliases)
        missing = sum(1 for a in aliases if a not in found)
        wrong = sum(1 for a, oid in zip(aliases, ids) if a in found and found[a] != oid)
        st.stop()
        return el, missing, wrong
    finally:
        objects.disconnect()
        st.remove()


def raw_pipelined(n):
    """n one-object PERSIST requests on one connection, not waited for one by one."""
    probe = Rec(0)
    probe.make_persistent(alias="raw-probe")
    cid = probe.__dict__["_bettong_cid"]
    state = pickle.dumps({"n": 1, "name": "raw"}, protocol=5)
    c = objects._get_conn()
    t0 = time.perf_counter()
    pending = 0
    for i in range(n):
        c.send(objects._PERSIST, [(objects._new_oid(), cid, "raw-%d" % i, state)])
        pending += 1
        if pending >= 1000:
            c.flush()
            while pending > 200:
                for ans in c.recv():
                    assert ans[0] == objects._OK, ans
                    pending -= 1
    c.flush()
    while pending:
        for ans in c.recv():
            assert ans[0] == objects._OK, ans
            pending -= 1
    return time.perf_counter() - t0


# ------------------------------------------------------------------ report

def tree_state():
    try:
        rev = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", REPO, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True).stdout.strip()
        return rev + (" (uncommitted changes)" if dirty else "")
    except OSError:
        return "?"


def cpu_model():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def fmt_stats(s):
    c, r, k = s
    return "%s commits / %s requests (at most %s in one)" % (
        "{:,}".format(c), "{:,}".format(r), "{:,}".format(k))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", default=os.path.join(REPO, "build", "bettong"))
    ap.add_argument("--objects", type=int, default=100000, help="N")
    ap.add_argument("--wait-calls", type=int, default=5000, help="M, the baseline's calls")
    ap.add_argument("--wait-all", action="store_true", help="the baseline runs N calls")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--record", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.objects, args.wait_calls, args.rounds = 20000, 1000, 1
    n = args.objects
    m = n if args.wait_all else min(args.wait_calls, n)
    started = datetime.datetime.now(datetime.timezone.utc)
    load0 = os.getloadavg()[0]
    rounds = []
    for r in range(args.rounds):
        a, a_st = on_fresh_store(args.bin, lambda st: pipelined(n, "a")[0])
        b, b_st = on_fresh_store(args.bin, lambda st: wait_per_call(m))
        c, c_st = on_fresh_store(args.bin, lambda st: no_alias(n))
        d = durability(args.bin, n)
        e, e_st = on_fresh_store(args.bin, lambda st: raw_pipelined(n))
        row = dict(a=a, a_st=a_st, b=b, b_st=b_st, c=c, c_st=c_st, d=d, e=e, e_st=e_st)
        rounds.append(row)
        print("round %d: pipelined %.2f s (%s); wait-per-call %d in %.2f s (%.0f/s, %s); "
              "no alias %.2f s (%s); SIGKILL after the sync point: %.2f s, %d missing, "
              "%d wrong; raw one-object PERSISTs %.2f s (%s)"
              % (r + 1, a, fmt_stats(a_st), m, b, m / b, fmt_stats(b_st), c, fmt_stats(c_st),
                 d[0], d[1], d[2], e, fmt_stats(e_st)), flush=True)
    load1 = os.getloadavg()[0]

    med = lambda k: statistics.median(x[k] for x in rounds)  # noqa: E731
    a, b, c, e = med("a"), med("b"), med("c"), med("e")
    b_rate = m / b
    b_full = n / b_rate
    speedups = ["%.0f" % ((n / x["a"]) / (m / x["b"])) for x in rounds]
    alias_cost = ["%.2f" % (x["a"] / x["c"]) for x in rounds]
    lost = sum(x["d"][1] + x["d"][2] for x in rounds)
    ok = a * 100000 / n <= TARGET_S
    table = [
        ("(a) %s x make_persistent(alias=...) in bettong.pipeline(), durable at the block's end"
         % "{:,}".format(n), "%.2f s (%s/s)" % (a, "{:,.0f}".format(n / a)),
         "<= %.3g s" % (TARGET_S * n / 100000), "MET" if ok else "NOT MET"),
        ("(b) baseline: make_persistent(alias=...) waiting for each answer (%s calls)"
         % "{:,}".format(m), "%.2f s (%s/s; %s calls: %.0f s)"
         % (b, "{:,.0f}".format(b_rate), "{:,}".format(n), b_full), "", ""),
        ("(a) / (b), calls/s", "%.0f x (rounds: %s)" % ((n / a) / b_rate, ", ".join(speedups)),
         "", ""),
        ("(c) %s x make_persistent() without alias + flush()" % "{:,}".format(n),
         "%.2f s (%s/s)" % (c, "{:,.0f}".format(n / c)), "", ""),
        ("(a) / (c), time: the cost of the aliases", "%s (rounds)" % ", ".join(alias_cost),
         "", ""),
        ("(d) store SIGKILLed right after the sync point, aliases lost or wrong",
         "%d of %s x %d rounds" % (lost, "{:,}".format(n), len(rounds)), "0",
         "MET" if lost == 0 else "NOT MET"),
        ("(e) %s one-object PERSISTs pipelined on one connection" % "{:,}".format(n),
         "%.2f s (%s/s)" % (e, "{:,.0f}".format(n / e)), "", ""),
    ]
    commits = [
        ("(a) pipelined", rounds[0]["a_st"]),
        ("(b) wait per call", rounds[0]["b_st"]),
        ("(c) no alias", rounds[0]["c_st"]),
        ("(e) one-object PERSISTs, pipelined", rounds[0]["e_st"]),
    ]
    lines = ["| figure | value | target | verdict |", "|---|---|---|---|"]
    lines += ["| %s | %s | %s | %s |" % t for t in table]
    lines += ["", "| store commits (round 1; each includes the client's setup requests) | "
              "commits / requests | requests per commit |", "|---|---|---|"]
    for name, (cm, rq, k) in commits:
        lines.append("| %s | %s | %.1f (at most %s in one) |" % (
            name, "{:,} / {:,}".format(cm, rq), rq / max(cm, 1), "{:,}".format(k)))
    cmd = "/usr/bin/python3 bench/bench_pipeline.py" + " ".join(
        [""] + [a for a in sys.argv[1:] if a != "--record"])
    notes = [
        "- machine: %d CPUs, %s; load average %.2f at the start, %.2f at the end"
        % (os.cpu_count(), cpu_model(), load0, load1),
        "- Python: %s %s; tree: %s" % (sys.executable, platform.python_version(), tree_state()),
        "- command (from the repository root): `%s`" % cmd,
        "- each figure on a fresh `build/bettong store` (loopback, data dir in /tmp); "
        "medians of %d round(s); objects: `Rec(n)` with an int and a short str field; "
        "aliases `a0`, `a1`, ..." % len(rounds),
        "- (a) requests = PERSIST batches: the client groups the queued calls (2000 objects "
        "or 4 MiB a batch, one in flight); (e) shows the store's own group commit of "
        "requests arriving during a commit",
    ]
    report = "\n".join(lines + [""] + notes)
    print()
    print(report)
    if args.record:
        with open(os.path.join(HERE, "RESULTS.md"), "a") as f:
            f.write("\n## Pipelined durable creation (bench/bench_pipeline.py), %s\n\n"
                    % started.strftime("%Y-%m-%d %H:%M UTC"))
            f.write(report + "\n")
        print("\nrecorded in bench/RESULTS.md")
    return 0 if ok and lost == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
