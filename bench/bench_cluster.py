#!/usr/bin/env python3
"""Cluster benchmark: the seed's word count with a generator source on 1 worker
and on 2 (so no sender competes for the cores), and the CPU cost of a message
forwarded between workers against one run where it is.

    python3 bench/bench_cluster.py [--bin build/bettong] [--rounds 3]
        [--lines N] [--messages N] [--record]

(1) Speed-up. Each worker generates --lines lines of the corpus (one worker: N
    lines; two workers: N lines each, so twice the work) and runs the example's
    split, count and encoder; `bettong receive --expect` counts every output
    record. words/s = output records / the receiver's first-to-last time.
    speed-up = words/s on 2 workers / words/s on 1, per round; the median is
    reported. Target >= 1.7.
(2) Forwarding. bench/apps/keys_gen.py: each worker generates --messages
    integers into a state partition keyed by n mod 4096 (no output). With one
    worker every message is local; with two, the messages whose slot the other
    worker owns (about half) are forwarded. CPU of all workers (from
    /proc/PID/stat, minus the same cluster's start-up CPU measured with 0
    messages) divided by messages gives local = cpu1 / M and, on two workers,
    per message = local + f * extra with f the forwarded fraction (from
    `bettong cluster status`); a forwarded message costs local + extra.
    Target: (local + extra) / local <= 2.

Each round runs every configuration back to back. The machine's speed drifts
by tens of percent between runs, so a ratio measured within one round is noisy:
the reported ratios are ratios of medians over all rounds (rates, or CPU per
message), with the per-round ratios listed beside them. --record appends a section to
bench/RESULTS.md.
"""

import argparse
import datetime
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "python"))
sys.path.insert(0, os.path.join(REPO, "examples", "word_count"))
import word_count as wc  # noqa: E402

CORPUS = os.path.join(REPO, "examples", "word_count", "data", "bettong_tales.txt")
TICKS = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def words_in(lines):
    text = open(CORPUS, encoding="utf-8").read().split("\n")[:-1]
    per_line = [len(wc.split_words(l)) for l in text]
    full, rest = divmod(lines, len(text))
    return full * sum(per_line) + sum(per_line[:rest])


class Cluster:
    """n workers of `app` formed with Wallaroo's flags (so every pid is known)."""

    def __init__(self, binary, app, n, app_args, outdir, tag):
        self.control = "127.0.0.1:%d" % free_port()
        self.procs = []
        for i in range(n):
            flags = ["--name", "w%d" % (i + 1)]
            if i == 0:
                flags += ["--cluster-initializer", "--worker-count", str(n), "--control",
                          self.control, "--data", "127.0.0.1:0"]
            else:
                flags += ["--control", self.control]
            log = open(os.path.join(outdir, "%s-w%d.log" % (tag, i + 1)), "wb")
            self.procs.append(subprocess.Popen([binary, "run", app] + app_args + flags,
                                               cwd=REPO, stdout=log, stderr=log))
        self.binary = binary

    def cpu(self):
        return sum(cpu_seconds(p.pid) for p in self.procs)

    def wait_idle(self, quiet=0.4, timeout=300):
        deadline = time.monotonic() + timeout
        last, since = self.cpu(), time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(0.1)
            now = self.cpu()
            if now != last:
                last, since = now, time.monotonic()
            elif time.monotonic() - since >= quiet:
                return now
        raise RuntimeError("the cluster did not go idle")

    def status(self):
        out = subprocess.run([self.binary, "cluster", "status", "--control", self.control],
                             capture_output=True, text=True, timeout=30).stdout
        rows = {}
        for line in out.splitlines()[2:]:
            f = line.split()
            rows[f[0]] = {"slots": int(f[3]), "in": int(f[5]), "forwarded": int(f[7])}
        return rows

    def wait_formed(self, n):
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            out = subprocess.run([self.binary, "cluster", "status", "--control", self.control],
                                 capture_output=True, text=True, timeout=30).stdout
            if "cluster formed, %d active" % n in out:
                return
            time.sleep(0.05)
        raise RuntimeError("the cluster did not form")

    def stop(self):
        self.procs[0].terminate()
        for p in self.procs:
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()


def forwarded_in_logs(outdir, tag, n):
    total = 0
    for i in range(n):
        text = open(os.path.join(outdir, "%s-w%d.log" % (tag, i + 1))).read()
        m = re.search(r"(\d+) forwarded to other workers", text)
        total += int(m.group(1)) if m else 0
    return total


def run_word_count(args, n, outdir, tag, lines=None, rebalance=0):
    lines = args.lines if lines is None else lines
    expect = n * words_in(lines)
    rlog = os.path.join(outdir, tag + "-receive.log")
    port = free_port()
    with open(rlog, "wb") as log:
        recv = subprocess.Popen([args.bin, "receive", "--listen", "127.0.0.1:%d" % port, "--out",
                                 "/dev/null", "--expect", str(expect), "--timeout", "600"],
                                stdout=log, stderr=log)
    time.sleep(0.2)
    c = Cluster(args.bin, os.path.join(REPO, "bench", "apps", "wc_gen.py"), n,
                ["--out", "127.0.0.1:%d" % port, "--gen-lines", str(lines), "--rebalance",
                 str(rebalance)], outdir, tag)
    return finish_word_count(args, c, n, recv, rlog, expect, outdir, tag)


def finish_word_count(args, c, n, recv, rlog, expect, outdir, tag):
    if expect == 0:
        c.wait_formed(n)
        cpu = c.wait_idle()
        recv.kill()
        recv.wait()
        c.stop()
        return {"cpu": cpu}
    rc = recv.wait(900)
    cpu = c.cpu()
    c.stop()
    text = open(rlog).read()
    m = re.search(r"(\d+) records \(\d+ bytes\) in ([\d.]+) s", text)
    if rc != 0 or not m or int(m.group(1)) != expect:
        raise RuntimeError("%s: the receiver got %s of %d records (exit %d): %s"
                           % (tag, m.group(1) if m else "?", expect, rc, text[-300:]))
    secs = float(m.group(2))
    balanced = sum(open(os.path.join(outdir, "%s-w%d.log" % (tag, i + 1))).read()
                   .count("load balanced") for i in range(n))
    return {"words": expect, "secs": secs, "rate": expect / secs, "cpu": cpu,
            "forwarded": forwarded_in_logs(outdir, tag, n), "balanced": balanced}


def run_pair_alone(args, outdir, tag):
    """Two single-worker engines (no cluster) side by side, each with its own
    receiver: what two cores give two independent engines on this machine."""
    expect = words_in(args.lines)
    recvs, engines, logs = [], [], []
    for k in range(2):
        port = free_port()
        rlog = os.path.join(outdir, "%s-%d-receive.log" % (tag, k))
        logs.append(rlog)
        with open(rlog, "wb") as log:
            recvs.append(subprocess.Popen(
                [args.bin, "receive", "--listen", "127.0.0.1:%d" % port, "--out", "/dev/null",
                 "--expect", str(expect), "--timeout", "600"], stdout=log, stderr=log))
        time.sleep(0.2)
        with open(os.path.join(outdir, "%s-%d.log" % (tag, k)), "wb") as log:
            engines.append(subprocess.Popen(
                [args.bin, "run", os.path.join(REPO, "bench", "apps", "wc_gen.py"), "--out",
                 "127.0.0.1:%d" % port, "--gen-lines", str(args.lines)], cwd=REPO, stdout=log,
                stderr=log))
    for r in recvs:
        r.wait(900)
    for e in engines:
        e.terminate()
        e.wait(60)
    firsts, lasts = [], []
    secs = []
    for rlog in logs:
        m = re.search(r"(\d+) records \(\d+ bytes\) in ([\d.]+) s", open(rlog).read())
        secs.append(float(m.group(2)))
    # Both ran at once: the pair's rate is all words over the slower one's time.
    return {"words": 2 * expect, "secs": max(secs), "rate": 2 * expect / max(secs)}


def run_keys(args, n, messages, outdir, tag):
    c = Cluster(args.bin, os.path.join(REPO, "bench", "apps", "keys_gen.py"), n,
                ["--gen", str(messages)], outdir, tag)
    c.wait_formed(n)
    cpu = c.wait_idle()
    st = c.status()
    c.stop()
    forwarded = sum(r["forwarded"] for r in st.values())
    return {"cpu": cpu, "forwarded": forwarded, "in": sum(r["in"] for r in st.values())}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", default=os.path.join(REPO, "build", "bettong"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--lines", type=int, default=200000, help="lines generated per worker")
    ap.add_argument("--messages", type=int, default=1000000,
                    help="messages generated per worker in the forwarding probe")
    ap.add_argument("--rebalance", type=float, default=1.0,
                    help="the balancing period of the second 2-worker run (seconds)")
    ap.add_argument("--record", action="store_true")
    args = ap.parse_args()
    stamp = datetime.datetime.utcnow().strftime("%Y%m%d-%H%M%S")
    outdir = os.path.join(REPO, "bench", "out", "cluster-" + stamp)
    os.makedirs(outdir, exist_ok=True)
    load0 = os.getloadavg()
    rounds = []
    for r in range(args.rounds):
        one = run_word_count(args, 1, outdir, "r%d-wc1" % r)
        two = run_word_count(args, 2, outdir, "r%d-wc2" % r)
        twob = run_word_count(args, 2, outdir, "r%d-wc2b" % r, rebalance=args.rebalance)
        pair = run_pair_alone(args, outdir, "r%d-pair" % r)
        wz1 = run_word_count(args, 1, outdir, "r%d-wz1" % r, lines=0)
        wz2 = run_word_count(args, 2, outdir, "r%d-wz2" % r, lines=0)
        k1 = run_keys(args, 1, args.messages, outdir, "r%d-k1" % r)
        k2 = run_keys(args, 2, args.messages, outdir, "r%d-k2" % r)
        z1 = run_keys(args, 1, 0, outdir, "r%d-z1" % r)
        z2 = run_keys(args, 2, 0, outdir, "r%d-z2" % r)
        m = args.messages
        local = (k1["cpu"] - z1["cpu"]) / m
        per2 = (k2["cpu"] - z2["cpu"]) / (2 * m)
        f = k2["forwarded"] / (2 * m)
        extra = (per2 - local) / f if f else float("nan")
        wlocal = (one["cpu"] - wz1["cpu"]) / one["words"]
        wper2 = (two["cpu"] - wz2["cpu"]) / two["words"]
        wf = two["forwarded"] / two["words"]
        wextra = (wper2 - wlocal) / wf if wf else float("nan")
        row = {"wc1": one, "wc2": two, "speedup": two["rate"] / one["rate"], "local": local,
               "wc2b": twob, "speedup_b": twob["rate"] / one["rate"],
               "pair": pair, "ceiling": pair["rate"] / one["rate"],
               "wlocal": wlocal, "wper2": wper2, "wf": wf, "wextra": wextra,
               "wfwd_ratio": (wlocal + wextra) / wlocal,
               "per2": per2, "f": f, "extra": extra, "fwd_ratio": (local + extra) / local,
               "in_ok": k1["in"] == m and k2["in"] == 2 * m}
        rounds.append(row)
        print("round %d: word count 1 worker %.0f words/s (%.2f s), 2 workers %.0f words/s "
              "(%.2f s): speed-up %.2f, balancing every %g s: %.2f (%d balancings); two "
              "separate engines: %.2f; a word costs %.2f us "
              "CPU, forwarded %.2f us (%.2f x, %.0f %% forwarded); probe: local %.2f us, "
              "forwarded %.2f us = %.2f x"
              % (r + 1, one["rate"], one["secs"], two["rate"], two["secs"], row["speedup"],
                 args.rebalance, row["speedup_b"], twob["balanced"], row["ceiling"], wlocal * 1e6, (wlocal + wextra) * 1e6, row["wfwd_ratio"],
                 wf * 100, local * 1e6, (local + extra) * 1e6, row["fwd_ratio"]),
              flush=True)
    load1 = os.getloadavg()
    med = lambda key: statistics.median(x[key] for x in rounds)  # noqa: E731
    rate = lambda key: statistics.median(x[key]["rate"] for x in rounds)  # noqa: E731
    # The machine's speed drifts by tens of percent from one run to the next, so
    # a ratio within one round is noisy: the figures are ratios of the medians
    # over all rounds (the per-round ratios are listed beside them).
    speed = rate("wc2") / rate("wc1")
    speed_b = rate("wc2b") / rate("wc1")
    ceiling = rate("pair") / rate("wc1")

    def fwd_ratio(local, per2, f):
        return (local + (per2 - local) / f) / local if f else float("nan")
    fwd = fwd_ratio(med("local"), med("per2"), med("f"))
    wfwd = fwd_ratio(med("wlocal"), med("wper2"), med("wf"))
    summary = [
        ("(1) word count, generator source, 1 worker, words/s",
         "%.0f" % statistics.median(x["wc1"]["rate"] for x in rounds), "", ""),
        ("(1) word count, generator source, 2 workers, words/s",
         "%.0f" % statistics.median(x["wc2"]["rate"] for x in rounds), "", ""),
        ("(1) speed-up 1 -> 2 workers (no load balancing)", "%.2f x (rounds: %s)" % (
            speed, ", ".join("%.2f" % x["speedup"] for x in rounds)), ">= 1.7 x",
         "met" if speed >= 1.7 else "NOT MET"),
        ("(1) word count, 2 workers balancing the load every %g s, words/s" % args.rebalance,
         "%.0f" % rate("wc2b"), "", ""),
        ("(1) speed-up 1 -> 2 workers, balancing every %g s" % args.rebalance,
         "%.2f x (rounds: %s)" % (speed_b, ", ".join(
             "%.2f" % x["speedup_b"] for x in rounds)), ">= 1.7 x",
         "met" if speed_b >= 1.7 else "NOT MET"),
        ("(1) context: two separate 1-worker engines at once / one alone", "%.2f x (rounds: %s)" % (
            ceiling, ", ".join("%.2f" % x["ceiling"] for x in rounds)), "", ""),
        ("(2) word count: CPU per word, 1 worker, us", "%.2f" % (med("wlocal") * 1e6), "", ""),
        ("(2) word count: words forwarded on 2 workers", "%.0f %%" % (med("wf") * 100), "", ""),
        ("(2) word count: CPU per forwarded word, us", "%.2f" % (wfwd * med("wlocal") * 1e6),
         "", ""),
        ("(2) word count: forwarded / local", "%.2f x (rounds: %s)" % (
            wfwd, ", ".join("%.2f" % x["wfwd_ratio"] for x in rounds)), "<= 2 x",
         "met" if wfwd <= 2 else "NOT MET"),
        ("(2) probe (no output): CPU per local message, us", "%.2f" % (med("local") * 1e6), "", ""),
        ("(2) probe: messages forwarded on 2 workers", "%.0f %%" % (med("f") * 100), "", ""),
        ("(2) probe: CPU per forwarded message, us", "%.2f" % (fwd * med("local") * 1e6), "", ""),
        ("(2) probe: forwarded / local", "%.2f x (rounds: %s)" % (
            fwd, ", ".join("%.2f" % x["fwd_ratio"] for x in rounds)), "<= 2 x",
         "met" if fwd <= 2 else "NOT MET"),
    ]
    for name, value, target, verdict in summary:
        print("%-55s %-40s %-10s %s" % (name, value, target, verdict))
    if not all(x["in_ok"] for x in rounds):
        print("WARNING: a forwarding run did not take in every generated message")
    if args.record:
        record(args, rounds, summary, load0, load1)


def record(args, rounds, summary, load0, load1):
    try:
        tree = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                              capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=REPO, capture_output=True, text=True).stdout.strip()
    except OSError:
        tree, dirty = "?", ""
    cpu = "?"
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    lines = ["", "## Cluster (bench/bench_cluster.py), %s UTC" %
             datetime.datetime.utcnow().strftime("%Y-%m-%d %H:%M"), "",
             "- machine: %d CPUs, %s, Linux %s" % (os.cpu_count(), cpu, platform.release()),
             "- tree: %s%s" % (tree, " (uncommitted changes)" if dirty else ""),
             "- command (from the repository root): `%s`" % " ".join(
                 [sys.executable] + sys.argv),
             "- %d rounds; %d generated lines per worker for (1), %d messages per worker for (2)"
             % (args.rounds, args.lines, args.messages), "",
             "| figure | value | target | verdict |", "|---|---|---|---|"]
    for name, value, target, verdict in summary:
        lines.append("| %s | %s | %s | %s |" % (name, value, target, verdict))
    lines.append("")
    for i, x in enumerate(rounds):
        lines.append("- round %d: 1 worker %d words in %.2f s (%.0f words/s, %.1f s CPU); "
                     "2 workers %d words in %.2f s (%.0f words/s, %.1f s CPU); forwarding: "
                     "local %.2f us, 2 workers %.2f us per message, %.1f %% forwarded"
                     % (i + 1, x["wc1"]["words"], x["wc1"]["secs"], x["wc1"]["rate"],
                        x["wc1"]["cpu"], x["wc2"]["words"], x["wc2"]["secs"], x["wc2"]["rate"],
                        x["wc2"]["cpu"], x["local"] * 1e6, x["per2"] * 1e6, x["f"] * 100))
    lines.append("- machine load: load average %.2f %.2f %.2f at the start, %.2f %.2f %.2f at "
                 "the end" % (load0 + load1))
    with open(os.path.join(REPO, "bench", "RESULTS.md"), "a") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
