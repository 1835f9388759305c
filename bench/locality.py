#!/usr/bin/env python3
"""Computation next to the data, measured (run by hand): a store service of three
backends (a redis-server of its own on a Unix socket), `--objects` objects
spread evenly on them, and a pool over TCP with `--procs` workers started next
to each backend (`bettong worker --join POOL --near-store bN`, each with its
backend as $BETTONG_STORE). The same map (one call per object: read one field
of it) runs without locality (near=False: calls go anywhere) and with it (the
default: each call prefers the workers near its object's backend), alternating
in the same run. Reports the map's wall time (submission to the last result),
the share of calls that ran next to their object's backend, and the ratio
against the same round's baseline.

On one machine every backend is as near as any other: the figure is what the
locality machinery costs (placing each call client-side, the pool's choice),
not what it saves. --far-ms D models a network: a call that runs away from its
object's backend sleeps D ms more (what a round trip across a WAN would add).

    /usr/bin/python3 bench/locality.py [--objects 10000] [--procs 1] [--rounds 3] [--far-ms 0]
"""

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "python"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
BIN = os.environ.get("BETTONG_BIN", str(REPO / "build" / "bettong"))
os.environ["BETTONG_BIN"] = BIN
NAMES = ["b1", "b2", "b3"]
SECRET = "bench-locality-%d" % os.getpid()

import bettong  # noqa: E402
from bettong import objects  # noqa: E402
from locality_models import Item, Bag  # noqa: E402


def wait_line(path, pattern, proc, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = re.search(pattern, Path(path).read_text(errors="replace"))
        if m:
            return m
        if proc.poll() is not None:
            break
        time.sleep(0.01)
    sys.exit("no '%s' in %s:\n%s" % (pattern, path, Path(path).read_text(errors="replace")))


class Procs:
    def __init__(self, tmp):
        self.tmp, self.all = tmp, []

    def start(self, name, argv, env=None):
        log = os.path.join(self.tmp, name + ".log")
        with open(log, "wb") as f:
            p = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, env=env,
                                 stdin=subprocess.DEVNULL, start_new_session=True)
        self.all.append(p)
        return p, log

    def stop(self):
        for p in reversed(self.all):
            if p.poll() is None:
                p.terminate()
        for p in self.all:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()


def start_service(procs, tmp):
    sock = os.path.join(tmp, "redis.sock")
    r, rlog = procs.start("redis", ["redis-server", "--port", "0", "--unixsocket", sock,
                                    "--unixsocketperm", "700", "--save", "", "--appendonly",
                                    "no"])
    wait_line(rlog, r"(?i)ready to accept connections", r)
    env = dict(os.environ)
    env.pop("BETTONG_SECRET", None)
    env.pop("BETTONG_STORE_SECRET", None)
    env["PYTHONPATH"] = str(REPO / "python")
    addrs = {}
    for name in NAMES:
        p, log = procs.start("store-" + name, [
            BIN, "store", "--listen", "127.0.0.1:0", "--dir", os.path.join(tmp, name),
            "--name", name, "--metadata", "unix:" + sock], env=env)
        addrs[name] = wait_line(log, r"listening on (127\.0\.0\.1:\d+)", p).group(1)
    return addrs


def start_pool(procs, tmp, addrs, nprocs):
    env = dict(os.environ)
    p, log = procs.start("pool", [BIN, "pool", "--listen", "127.0.0.1:0", "--workers", "0",
                                  "--secret", SECRET, "--log-level", "warn"], env=env)
    address = wait_line(log, r"listening on (\S+)", p).group(1)
    path = os.pathsep.join([str(REPO / "python"), str(Path(__file__).resolve().parent)])
    for name in NAMES:
        wenv = dict(os.environ, BETTONG_SECRET=SECRET, BETTONG_STORE=addrs[name],
                    BETTONG_STORE_SECRET="", BETTONG_WORKER_PATH=path)
        procs.start("workers-" + name, [BIN, "worker", "--join", address, "--procs",
                                        str(nprocs), "--near-store", name, "--log-level",
                                        "warn"], env=wenv)
    return address


def fill(ids, n):
    """n Items spread evenly on the backends (one Bag per backend carries them,
    so each backend gets its share in one request)."""
    items = []
    per = [n // 3 + (1 if k < n % 3 else 0) for k in range(3)]
    for k, name in enumerate(NAMES):
        bag = Bag([Item(i) for i in range(per[k])])
        bag.make_persistent(backend_id=ids[name])
        items += bag.items
    # interleaved, as a collection of mixed objects would be
    return [items[j] for j in sorted(range(len(items)), key=lambda j: j % per[0])]


def read_value(item, far_s=0.0):
    if far_s and os.environ.get("BETTONG_NEAR_STORE") != read_value.home(item):
        time.sleep(far_s)
    return item.value


def _home(item, _names={}):
    if not _names:
        _names.update({bid: b.name for bid, b in objects.backends().items()})
    return _names[objects.backend_of(item)]


read_value.home = _home


def one_map(ex, items, near, far_s, homes):
    t0 = time.perf_counter()
    fs = ex.map(read_value, items, extra_args=(far_s,), near=near)
    values = ex.get_result(fs, show_progressbar=False)
    took = time.perf_counter() - t0
    assert values == [it.value for it in items] if len(items) <= 100 else len(values) == len(items)
    hit = sum(f.stats["worker_near"] == h for f, h in zip(fs, homes))
    return took, hit / len(items)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--objects", type=int, default=10000)
    ap.add_argument("--procs", type=int, default=1, help="workers near each backend")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--far-ms", type=float, default=0.0)
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="bench-locality-")
    procs = Procs(tmp)
    try:
        addrs = start_service(procs, tmp)
        objects.connect(addrs["b1"], secret="")
        ids = {b.name: bid for bid, b in objects.backends().items()}
        names = {bid: name for name, bid in ids.items()}
        address = start_pool(procs, tmp, addrs, args.procs)
        t0 = time.perf_counter()
        items = fill(ids, args.objects)
        print("stored %d objects on %s in %.1f s" % (len(items), ", ".join(NAMES),
                                                      time.perf_counter() - t0))
        homes = [names[objects.backend_of(it)] for it in items]
        with bettong.FunctionExecutor(address=address, secret=SECRET) as ex:
            deadline = time.monotonic() + 30
            while ex.status()["workers"] < 3 * args.procs:
                if time.monotonic() > deadline:
                    sys.exit("the workers did not join:\n" + Path(tmp, "pool.log").read_text())
                time.sleep(0.05)
            one_map(ex, items[:600], None, 0.0, homes[:600])  # interpreters and connections up
            t0 = time.perf_counter()
            _near_places = bettong.executor._near.Places(None).of_items(items)
            place_s = time.perf_counter() - t0
            print("placing %d calls client-side: %.3f s" % (len(items), place_s))
            far_s = args.far_ms / 1000.0
            print("| round | without locality | share near | with locality | share near "
                  "| with/without |")
            print("|---|---|---|---|---|---|")
            ratios = []
            for r in range(1, args.rounds + 1):
                base, base_hit = one_map(ex, items, False, far_s, homes)
                near, near_hit = one_map(ex, items, None, far_s, homes)
                ratios.append(near / base)
                print("| %d | %.2f s | %.0f%% | %.2f s | %.0f%% | %.2f |"
                      % (r, base, 100 * base_hit, near, 100 * near_hit, near / base))
            print("median with/without: %.2f" % statistics.median(ratios))
    finally:
        procs.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
