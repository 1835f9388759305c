#!/usr/bin/env python3
"""What --metrics-listen costs a pool and a store: metrics off vs on (with
/metrics scraped every second during the run), in alternating rounds.

- pool: `bettong pool --workers 2` on loopback; a FunctionExecutor client runs
  --calls calls of a trivial function (map, after a warm-up); figures: calls/s
  (wall) and calls per CPU-second of the pool process (utime + stime; less
  sensitive to what else runs on this shared machine);
- store: `bettong store`; one client runs --store-calls read-only active
  calls (Point.norm2) one after another; figure: p50 latency (us).

The report gives the medians per mode and the ratios on/off.

    /usr/bin/python3 bench/bench_service_metrics.py [--rounds 5] [--calls 5000]
        [--store-calls 3000] [--record]

With metrics off the services still keep their counters (plain fields
incremented in place, with or without an endpoint); what "on" adds is the
endpoint, its scrapes and, for the store, the latency clock reads.
"""

import argparse
import datetime
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "python"))
os.environ.setdefault("BETTONG_BIN", os.path.join(REPO, "build", "bettong"))
os.environ.pop("BETTONG_SECRET", None)

import bettong  # noqa: E402
from bettong import objects  # noqa: E402
from bettong.objects import Persistent, active  # noqa: E402

METRICS_RE = re.compile(r"metrics listening on (\S+)")
POOL_RE = re.compile(r"bettong pool: listening on (\S+)")
STORE_RE = re.compile(r"bettong store: listening on (\S+)")


class Point(Persistent):
    x: float
    y: float

    def __init__(self, x=0.0, y=0.0):
        self.x = x
        self.y = y

    @active
    def norm2(self):
        return self.x * self.x + self.y * self.y


def ident(x):
    return x


def wait_log(path, rx, proc, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(path, encoding="utf-8", errors="replace") as f:
            m = rx.search(f.read())
        if m:
            return m.group(1)
        if proc.poll() is not None:
            raise SystemExit("exited early: %s" % open(path).read())
        time.sleep(0.01)
    raise SystemExit("timed out waiting for %s in %s" % (rx.pattern, path))


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Scraper(threading.Thread):
    def __init__(self, addr):
        super().__init__(daemon=True)
        self.addr, self.stop, self.n = addr, threading.Event(), 0

    def run(self):
        while not self.stop.wait(1.0):
            with urllib.request.urlopen("http://%s/metrics" % self.addr, timeout=5) as r:
                r.read()
            self.n += 1


def start(bin_, tmp, args, ready_rx, metrics):
    log = os.path.join(tmp, "log-%d" % time.monotonic_ns())
    extra = ["--metrics-listen", "127.0.0.1:0"] if metrics else []
    p = subprocess.Popen([bin_] + args + extra + ["--log-level", "info"],
                         stdout=open(log, "wb"), stderr=subprocess.STDOUT)
    addr = wait_log(log, ready_rx, p)
    scraper = None
    if metrics:
        scraper = Scraper(wait_log(log, METRICS_RE, p))
        scraper.start()
    return p, addr, scraper


def finish(p, scraper):
    if scraper:
        scraper.stop.set()
        scraper.join()
    p.terminate()
    p.wait(15)


def pool_round(bin_, tmp, metrics, calls):
    p, addr, scraper = start(bin_, tmp, ["pool", "--listen", "127.0.0.1:0", "--workers", "2"],
                             POOL_RE, metrics)
    try:
        with bettong.FunctionExecutor(address=addr) as ex:
            ex.get_result(ex.map(ident, range(500)), timeout=60)  # warm-up
            cpu0, t0 = cpu_seconds(p.pid), time.perf_counter()
            ex.get_result(ex.map(ident, range(calls)), timeout=300)
            wall, cpu = time.perf_counter() - t0, cpu_seconds(p.pid) - cpu0
    finally:
        finish(p, scraper)
    return calls / wall, calls / max(cpu, 1e-3)


def store_round(bin_, tmp, metrics, calls):
    d = tempfile.mkdtemp(dir=tmp)
    p, addr, scraper = start(bin_, tmp, ["store", "--listen", "127.0.0.1:0", "--dir", d],
                             STORE_RE, metrics)
    try:
        objects.connect(addr)
        pt = Point(3.0, 4.0)
        pt.make_persistent()
        for _ in range(200):
            pt.norm2()
        lat = []
        for _ in range(calls):
            t = time.perf_counter()
            pt.norm2()
            lat.append(time.perf_counter() - t)
        objects.disconnect()
    finally:
        finish(p, scraper)
    return statistics.median(lat) * 1e6


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", default=os.path.join(REPO, "build", "bettong"))
    ap.add_argument("--rounds", type=int, default=5, help="rounds per mode (alternating)")
    ap.add_argument("--calls", type=int, default=5000, help="pool calls a round")
    ap.add_argument("--store-calls", type=int, default=3000, help="store calls a round")
    ap.add_argument("--record", action="store_true", help="append to bench/RESULTS.md")
    a = ap.parse_args()
    res = {m: {"rate": [], "cpu": [], "p50": []} for m in ("off", "on")}
    with tempfile.TemporaryDirectory(prefix="bettong-svc-metrics-") as tmp:
        for r in range(a.rounds):
            order = ("off", "on") if r % 2 == 0 else ("on", "off")
            for m in order:
                rate, cpu = pool_round(a.bin, tmp, m == "on", a.calls)
                p50 = store_round(a.bin, tmp, m == "on", a.store_calls)
                res[m]["rate"].append(rate)
                res[m]["cpu"].append(cpu)
                res[m]["p50"].append(p50)
                print("round %d %-3s pool %8.0f calls/s %8.0f calls/CPU-s  store p50 %6.1f us"
                      % (r + 1, m, rate, cpu, p50), flush=True)
    med = {m: {k: statistics.median(v) for k, v in res[m].items()} for m in res}
    lines = [
        "- pool: %d calls of a trivial function a round (map, 2 local workers), "
        "store: %d read-only calls (Point.norm2) one after another a round; %d rounds "
        "per mode, alternating; /metrics scraped every second when on"
        % (a.calls, a.store_calls, a.rounds),
        "- pool calls/s (wall), medians: off %.0f, on %.0f, on/off %.3f"
        % (med["off"]["rate"], med["on"]["rate"], med["on"]["rate"] / med["off"]["rate"]),
        "- pool calls per CPU-second of the pool process, medians: off %.0f, on %.0f, "
        "on/off %.3f" % (med["off"]["cpu"], med["on"]["cpu"],
                         med["on"]["cpu"] / med["off"]["cpu"]),
        "- store call p50 (us), medians: off %.1f, on %.1f, on/off %.3f"
        % (med["off"]["p50"], med["on"]["p50"], med["on"]["p50"] / med["off"]["p50"]),
        "- per round (off): pool %s calls/s; store p50 %s us"
        % (", ".join("%.0f" % x for x in res["off"]["rate"]),
           ", ".join("%.1f" % x for x in res["off"]["p50"])),
        "- per round (on): pool %s calls/s; store p50 %s us"
        % (", ".join("%.0f" % x for x in res["on"]["rate"]),
           ", ".join("%.1f" % x for x in res["on"]["p50"])),
    ]
    print("\n".join(lines))
    if a.record:
        now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        cmd = "/usr/bin/python3 bench/bench_service_metrics.py " + " ".join(sys.argv[1:])
        with open(os.path.join(HERE, "RESULTS.md"), "a") as f:
            f.write("\n## %s: pool and store metrics cost (bench/bench_service_metrics.py)\n\n"
                    "- command (from the repository root): `%s`\n%s\n"
                    % (now, cmd.strip(), "\n".join(lines)))


if __name__ == "__main__":
    main()
