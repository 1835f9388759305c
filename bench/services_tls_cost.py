"""What TLS costs the task pool and the object store, plain and TLS side by side
in one run (the same binary, a throwaway self-signed certificate):

  - pool: 20 000 small calls (FunctionExecutor.map) and one 64 MiB result, with
    two local workers that connect over TCP (so the workers' links are TLS too);
  - store: p50 latency of an active call, and 5 000 make_persistent with an
    alias (each waiting for its answer).

    python3 bench/services_tls_cost.py [--record]
"""

import argparse
import datetime
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "python"))

import bettong  # noqa: E402
from bettong import objects  # noqa: E402
from bettong.objects import Persistent, active  # noqa: E402

BIN = os.path.join(REPO, "build", "bettong")


class Box(Persistent):
    n: int

    def __init__(self, n=0):
        self.n = n

    @active
    def get(self):
        return self.n


def square(x):
    return x * x


def blob(n):
    return b"x" * n


def start(args, tmp, name):
    log = os.path.join(tmp, name + ".log")
    f = open(log, "wb")
    p = subprocess.Popen([BIN] + args, stdout=f, stderr=f)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        m = re.search(r"listening on (\S+)", open(log, errors="replace").read())
        if m:
            return p, m.group(1)
        if p.poll() is not None:
            break
        time.sleep(0.01)
    sys.exit("%s did not start:\n%s" % (name, open(log, errors="replace").read()))


def pool_figures(address):
    ex = bettong.FunctionExecutor(address=address)
    ex.get_result(ex.map(square, range(500)))          # warm: workers have the function
    t0 = time.perf_counter()
    ex.get_result(ex.map(square, range(20000)))
    calls = 20000 / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    assert len(ex.get_result(ex.call_async(blob, 64 << 20))) == 64 << 20
    big = (64 / (time.perf_counter() - t0))
    ex.close()
    return calls, big


def store_figures(address, tag):
    objects.connect(address)
    box = Box(1)
    box.make_persistent()
    for _ in range(500):
        box.get()
    lat = []
    for _ in range(5000):
        t0 = time.perf_counter_ns()
        box.get()
        lat.append(time.perf_counter_ns() - t0)
    lat.sort()
    t0 = time.perf_counter()
    for i in range(5000):
        Box(i).make_persistent(alias="%s-%d" % (tag, i))
    rate = 5000 / (time.perf_counter() - t0)
    objects.disconnect()
    return lat[len(lat) // 2] / 1000.0, rate


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--record", action="store_true")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="bench-tls-")
    cert, key = os.path.join(tmp, "c.pem"), os.path.join(tmp, "k.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out", cert, "-days",
                    "1", "-subj", "/CN=bench"], check=True, capture_output=True)
    tls = ["--tls-cert", cert, "--tls-key", key]
    procs, rows = [], {}
    try:
        for kind, extra in (("plain", []), ("TLS", tls)):
            p, addr = start(["pool", "--listen", "127.0.0.1:0", "--workers", "2"] + extra, tmp,
                            "pool-" + kind)
            procs.append(p)
            rows[("pool", kind)] = pool_figures(addr)
            p, addr = start(["store", "--dir", os.path.join(tmp, "store-" + kind), "--listen",
                             "127.0.0.1:0"] + extra, tmp, "store-" + kind)
            procs.append(p)
            rows[("store", kind)] = store_figures(addr, kind)
    finally:
        for p in procs:
            p.terminate()
            p.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)
    (pc, pb), (tc, tb) = rows[("pool", "plain")], rows[("pool", "TLS")]
    (sl, sr), (tl, tr) = rows[("store", "plain")], rows[("store", "TLS")]
    table = [
        "| measurement | plain | TLS | TLS / plain |",
        "|---|---|---|---|",
        "| pool: small calls/s (map of 20 000) | %.0f | %.0f | %.2f |" % (pc, tc, tc / pc),
        "| pool: one 64 MiB result, MiB/s | %.0f | %.0f | %.2f |" % (pb, tb, tb / pb),
        "| store: active call p50, us | %.1f | %.1f | %.2f |" % (sl, tl, tl / sl),
        "| store: make_persistent(alias=) /s | %.0f | %.0f | %.2f |" % (sr, tr, tr / sr),
    ]
    print("\n".join(table))
    if args.record:
        with open(os.path.join(HERE, "RESULTS.md"), "a") as f:
            f.write("\n## TLS on the pool and the store (%s, %s)\n\n"
                    "`python3 bench/services_tls_cost.py --record`\n\n%s\n" % (
                        datetime.datetime.now().strftime("%Y-%m-%d %H:%M"), platform.node(),
                        "\n".join(table)))


if __name__ == "__main__":
    main()
