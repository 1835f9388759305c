#!/usr/bin/env python3
"""What --metrics-listen costs: word count on one worker, metrics off vs on
(with /metrics scraped every second during the run), in alternating rounds.

Each round: `bettong receive --no-write --expect N`, `bettong run` of
examples/word_count (with or without --metrics-listen 127.0.0.1:0), then
`bettong send --file bettong_tales.txt --repeat P`; the round's figures are
words per second from the first send to the last output (wall) and words
per CPU-second of the engine (its utime + stime: less sensitive to what else
runs on the machine). The report gives the medians per mode and the cost
(1 - on/off) of each; also the cost of one clock_gettime(CLOCK_MONOTONIC),
the call latency sampling adds (twice per step and once per output, for one
input in 64).

    /usr/bin/python3 bench/bench_metrics.py [--rounds 5] [--passes 300]
        [--baseline-bin PATH] [--record]

With metrics off the engine still keeps its message counters (they are plain
fields incremented in place, with or without an endpoint); --baseline-bin
adds a third mode, a `bettong` built from a commit before the metrics code,
to measure those counters too; the runs in bench/RESULTS.md used one built
from c22d26d, the commit before them:

    git archive c22d26d | tar -x -C /tmp/m/base && make -C /tmp/m/base build/bettong

--record appends a section to bench/RESULTS.md.
"""

import argparse
import datetime
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
APP = os.path.join(REPO, "examples", "word_count", "word_count.py")
CORPUS = os.path.join(REPO, "examples", "word_count", "data", "bettong_tales.txt")
SOURCE_RE = re.compile(r"source '[^']*' listening on \S+:(\d+)")
METRICS_RE = re.compile(r"metrics listening on (\S+)")
LISTEN_RE = re.compile(r"listening on \S+:(\d+)")


def words_per_pass():
    sys.path.insert(0, os.path.join(REPO, "python"))
    import importlib.util
    spec = importlib.util.spec_from_file_location("wc_bench", APP)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    with open(CORPUS, encoding="utf-8") as f:
        lines = f.read().split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return sum(len(mod.split_words(line)) for line in lines)


def wait_log(path, rx, proc, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(path, errors="replace") as f:
            m = rx.search(f.read())
        if m:
            return m
        if proc.poll() is not None:
            break
        time.sleep(0.01)
    with open(path, errors="replace") as f:
        raise SystemExit("no %r from %s:\n%s" % (rx.pattern, proc.args, f.read()[-3000:]))


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        stat = f.read()
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Scraper(threading.Thread):
    """GET /metrics every second until stopped; counts the scrapes."""

    def __init__(self, addr):
        super().__init__(daemon=True)
        self.addr, self.done, self.scrapes, self.bytes = addr, threading.Event(), 0, 0

    def run(self):
        while not self.done.is_set():
            with urllib.request.urlopen("http://%s/metrics" % self.addr, timeout=5) as r:
                self.bytes = len(r.read())
            self.scrapes += 1
            self.done.wait(1.0)


def one_round(bin_, tmp, tag, metrics, passes, words):
    expect = passes * words
    logs = {k: os.path.join(tmp, "%s-%s.log" % (k, tag)) for k in ("recv", "run", "send")}
    recv = subprocess.Popen([bin_, "receive", "--no-write", "--expect", str(expect),
                             "--timeout", "300"], stderr=open(logs["recv"], "w"))
    out_port = wait_log(logs["recv"], LISTEN_RE, recv).group(1)
    argv = [bin_, "run", APP, "--in", "127.0.0.1:0", "--out", "127.0.0.1:%s" % out_port]
    if metrics:
        argv += ["--metrics-listen", "127.0.0.1:0"]
    run = subprocess.Popen(argv, cwd=REPO, stderr=open(logs["run"], "w"))
    in_port = wait_log(logs["run"], SOURCE_RE, run).group(1)
    scraper = None
    if metrics:
        scraper = Scraper(wait_log(logs["run"], METRICS_RE, run).group(1))
        scraper.start()
    cpu0 = cpu_seconds(run.pid)
    t0 = time.monotonic()
    send = subprocess.Popen([bin_, "send", "--to", "127.0.0.1:%s" % in_port, "--file", CORPUS,
                             "--repeat", str(passes)], stderr=open(logs["send"], "w"),
                            stdout=subprocess.DEVNULL)
    rc = recv.wait(300)
    wall = time.monotonic() - t0
    cpu = cpu_seconds(run.pid) - cpu0
    scrapes = 0
    if scraper:
        scraper.done.set()
        scraper.join(10)
        scrapes = scraper.scrapes
    send.wait(30)
    run.send_signal(signal.SIGTERM)
    run.wait(30)
    if rc != 0 or send.returncode != 0:
        raise SystemExit("round failed: receive %s, send %s (logs in %s)" % (rc, send.returncode,
                                                                         tmp))
    return {"wall_wps": expect / wall, "cpu_wps": expect / cpu, "wall": wall, "cpu": cpu,
            "scrapes": scrapes, "words": expect,
            "scrape_bytes": scraper.bytes if scraper else 0}


CLOCK_C = r"""
#include <stdio.h>
#include <time.h>
int main(void) {
    struct timespec ts; unsigned long long sink = 0; const int n = 20000000;
    struct timespec a, b; clock_gettime(CLOCK_MONOTONIC, &a);
    for (int i = 0; i < n; i++) { clock_gettime(CLOCK_MONOTONIC, &ts); sink += ts.tv_nsec; }
    clock_gettime(CLOCK_MONOTONIC, &b);
    double ns = ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / n;
    printf("%.1f %llu\n", ns, sink & 1);
    return 0;
}
"""


def clock_cost(tmp):
    src, exe = os.path.join(tmp, "clk.c"), os.path.join(tmp, "clk")
    with open(src, "w") as f:
        f.write(CLOCK_C)
    subprocess.run(["cc", "-O2", "-o", exe, src], check=True)
    return float(subprocess.run([exe], capture_output=True, text=True).stdout.split()[0])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", default=os.path.join(REPO, "build", "bettong"))
    ap.add_argument("--rounds", type=int, default=5, help="rounds per mode (alternating)")
    ap.add_argument("--passes", type=int, default=300, help="corpus passes per round")
    ap.add_argument("--baseline-bin", help="a bettong from before the metrics code")
    ap.add_argument("--record", action="store_true", help="append to bench/RESULTS.md")
    a = ap.parse_args()
    words = words_per_pass()
    tmp = tempfile.mkdtemp(prefix="bench-metrics-")
    modes = [("off", a.bin, False), ("on", a.bin, True)]
    if a.baseline_bin:
        modes.append(("base", a.baseline_bin, False))
    res = {m[0]: [] for m in modes}
    for r in range(a.rounds):
        # every mode once a round, in an order that rotates
        for tag, bin_, metrics in modes[r % len(modes):] + modes[:r % len(modes)]:
            x = one_round(bin_, tmp, tag, metrics, a.passes, words)
            res[tag].append(x)
            print("round %d %-4s %9.0f words/s wall, %9.0f words/CPU-s%s"
                  % (r + 1, tag, x["wall_wps"], x["cpu_wps"],
                     ", %d scrapes" % x["scrapes"] if metrics else ""), flush=True)
    med = {m: {k: statistics.median(x[k] for x in res[m]) for k in ("wall_wps", "cpu_wps")}
           for m in res}
    cost_wall = 1 - med["on"]["wall_wps"] / med["off"]["wall_wps"]
    cost_cpu = 1 - med["on"]["cpu_wps"] / med["off"]["cpu_wps"]
    clk = clock_cost(tmp)
    base = []
    if a.baseline_bin:
        base = [
            "- base (the binary of --baseline-bin, without any metrics code): %s words/s "
            "wall, %s words per CPU-second; metrics on vs base: %.1f %% of wall, %.1f %% of "
            "CPU throughput; off vs base: %.1f %%, %.1f %%" % (
                "{:,.0f}".format(med["base"]["wall_wps"]),
                "{:,.0f}".format(med["base"]["cpu_wps"]),
                100 * (1 - med["on"]["wall_wps"] / med["base"]["wall_wps"]),
                100 * (1 - med["on"]["cpu_wps"] / med["base"]["cpu_wps"]),
                100 * (1 - med["off"]["wall_wps"] / med["base"]["wall_wps"]),
                100 * (1 - med["off"]["cpu_wps"] / med["base"]["cpu_wps"])),
            "- per round, base: %s" % ", ".join(
                "{:,.0f}/{:,.0f}".format(x["wall_wps"], x["cpu_wps"]) for x in res["base"]),
        ]
    lines = [
        "## %s UTC: metrics cost (bench/bench_metrics.py)" %
        datetime.datetime.utcnow().strftime("%Y-%m-%d %H:%M"),
        "",
        "- command (from the repository root): `/usr/bin/python3 bench/bench_metrics.py "
        "--rounds %d --passes %d%s%s`" % (a.rounds, a.passes,
                                          " --baseline-bin %s" % a.baseline_bin
                                          if a.baseline_bin else "",
                                          " --record" if a.record else ""),
        "- word count (examples/word_count) on one worker, %d words a round (%d passes of "
        "bettong_tales.txt), metrics off vs on (--metrics-listen, /metrics scraped every "
        "second), %d rounds each, the modes' order rotating" % (a.passes * words, a.passes,
                                                                 a.rounds),
        "- medians: off %s words/s wall, %s words per engine CPU-second; on %s words/s "
        "wall, %s words per CPU-second" % tuple("{:,.0f}".format(v) for v in (
            med["off"]["wall_wps"], med["off"]["cpu_wps"], med["on"]["wall_wps"],
            med["on"]["cpu_wps"])),
        "- cost of metrics on: %.1f %% of wall throughput, %.1f %% of CPU throughput "
        "(target: at most 3 %%)" % (100 * cost_wall, 100 * cost_cpu),
        "- per round (words/s wall / words per CPU-second), off: %s" % ", ".join(
            "{:,.0f}/{:,.0f}".format(x["wall_wps"], x["cpu_wps"]) for x in res["off"]),
        "- per round, on: %s" % ", ".join("{:,.0f}/{:,.0f}".format(x["wall_wps"], x["cpu_wps"])
                                           for x in res["on"]),
    ] + base + [
        "- one clock_gettime(CLOCK_MONOTONIC) here: %.1f ns (latency sampling reads the "
        "clock for one input in 64)" % clk,
        "- a scrape's body: %d bytes" % res["on"][-1]["scrape_bytes"],
        "",
    ]
    print("\n".join(lines))
    if a.record:
        with open(os.path.join(HERE, "RESULTS.md"), "a") as f:
            f.write("\n" + "\n".join(lines))


if __name__ == "__main__":
    main()
