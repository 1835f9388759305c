"""Persistent-object benchmarks against a `bettong store` on loopback, side by side
with the same operations done by hand with a Redis server and pickle, in one run:

  - round trip of a read-only active call (Point.norm2) and of a field read (p.x),
    p50/p99 latency and aggregate calls/s from 1 and from 4 client processes;
  - a mutating call with durability (Point.move), one client;
  - make_persistent of 100 000 small objects (write-behind, batched PERSIST).

The Redis baseline (Debian's redis-server, started here on loopback in a temp dir,
one server without persistence for the reads, one with --appendonly yes
--appendfsync always for the durable writes) is used as a user would by hand, with
a minimal RESP client written here (no redis package is installed) and pickle,
with the same pickle protocol as bettong (5):

  - read-only call: GET the pickled object, unpickle, call the method locally;
  - field read:     HGET of one field of a hash whose values are pickled fields,
                    unpickle (cheaper than GET + unpickle of the whole object);
  - mutating call:  GET, unpickle, mutate, pickle, SET (appendfsync always);
  - make_persistent: SET of each pickled object, pipelined in batches of 1000
                    (on the appendfsync-always server; the same on the server
                    without persistence as context).

    python3 bench/bench_store.py                 # full run (about 1-2 minutes)
    python3 bench/bench_store.py --quick         # short harness check
    python3 bench/bench_store.py --record        # full run, appended to bench/RESULTS.md
    python3 bench/bench_store.py --store 127.0.0.1:7450
"""

import argparse
import array
import datetime
import os
import pickle
import platform
import resource
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "python"))

from bettong import objects  # noqa: E402
from bettong.objects import Persistent, active  # noqa: E402

PROTOCOL = 5            # the pickle protocol bettong uses for arguments, results, state
REDIS_BATCH = 1000      # commands per pipelined batch for the Redis make_persistent
CLIENTS = (1, 4)
TARGETS = {
    "call_p50_us": 30.0,        # read-only call p50 on loopback
    "call_rate_4": 50000.0,     # read-only calls/s from 4 clients
    "make_persistent_s": 3.0,   # 100 000 make_persistent
}


class Point(Persistent):
    x: float
    y: float

    def __init__(self, x=0.0, y=0.0):
        self.x = x
        self.y = y

    @active
    def norm2(self):
        return self.x * self.x + self.y * self.y

    @active
    def move(self, dx):
        self.x += dx
        return self.x


class PlainPoint:
    """The same model as a user would write it for Redis + pickle."""

    def __init__(self, x=0.0, y=0.0):
        self.x = x
        self.y = y

    def norm2(self):
        return self.x * self.x + self.y * self.y

    def move(self, dx):
        self.x += dx
        return self.x


# ------------------------------------------------------------------ a minimal RESP client

class RespError(Exception):
    pass


def _encode(args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        if isinstance(a, str):
            a = a.encode()
        elif isinstance(a, int):
            a = b"%d" % a
        out.append(b"$%d\r\n" % len(a))
        out.append(a)
        out.append(b"\r\n")
    return b"".join(out)


class Redis:
    """RESP2 over one TCP connection: command(), pipeline(), get/set/hget/hset."""

    def __init__(self, host, port):
        self.sock = socket.create_connection((host, port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.pos = 0

    def close(self):
        self.sock.close()

    def _fill(self):
        d = self.sock.recv(1 << 20)
        if not d:
            raise ConnectionError("redis closed the connection")
        if self.pos:
            self.buf = self.buf[self.pos:] + d
            self.pos = 0
        else:
            self.buf += d

    def _line(self):
        while True:
            i = self.buf.find(b"\r\n", self.pos)
            if i >= 0:
                line = self.buf[self.pos:i]
                self.pos = i + 2
                return line
            self._fill()

    def _reply(self):
        line = self._line()
        t = line[:1]
        if t == b"$":
            n = int(line[1:])
            if n < 0:
                return None
            while len(self.buf) - self.pos < n + 2:
                self._fill()
            v = self.buf[self.pos:self.pos + n]
            self.pos += n + 2
            return v
        if t == b"+":
            return line[1:]
        if t == b":":
            return int(line[1:])
        if t == b"-":
            raise RespError(line[1:].decode(errors="replace"))
        if t == b"*":
            n = int(line[1:])
            return None if n < 0 else [self._reply() for _ in range(n)]
        raise RespError("bad reply %r" % line)

    def command(self, *args):
        self.sock.sendall(_encode(args))
        return self._reply()

    def pipeline(self, cmds):
        self.sock.sendall(b"".join(_encode(c) for c in cmds))
        return [self._reply() for _ in cmds]

    def get(self, key):
        self.sock.sendall(b"*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n" % (len(key), key))
        return self._reply()

    def set(self, key, value):
        self.sock.sendall(b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (
            len(key), key, len(value), value))
        return self._reply()

    def hget(self, key, field):
        self.sock.sendall(b"*3\r\n$4\r\nHGET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (
            len(key), key, len(field), field))
        return self._reply()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_redis(tmp, name, durable):
    d = os.path.join(tmp, name)
    os.makedirs(d)
    port = free_port()
    argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1",
            "--dir", d, "--save", "", "--daemonize", "no",
            "--logfile", os.path.join(d, "redis.log")]
    argv += ["--appendonly", "yes", "--appendfsync", "always"] if durable else \
        ["--appendonly", "no"]
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:
        try:
            r = Redis("127.0.0.1", port)
            if r.command("PING") == b"PONG":
                return p, port, r, argv
        except (OSError, RespError):
            pass
        if time.monotonic() > deadline or p.poll() is not None:
            raise SystemExit("redis-server did not start (%s)" % " ".join(argv))
        time.sleep(0.02)


# ------------------------------------------------------------------ measurement helpers

def pct(sorted_samples, p):
    n = len(sorted_samples)
    return sorted_samples[min(n - 1, int(n * p / 100))] * 1e6


def summarize(samples, t_first, t_last):
    s = sorted(samples)
    return {"p50": pct(s, 50), "p90": pct(s, 90), "p99": pct(s, 99),
            "n": len(s), "rate": len(s) / (t_last - t_first), "wall": t_last - t_first}


def timed_for(fn, duration, max_calls=None):
    """Call fn back to back for `duration` seconds; (latencies, t_start, t_end)."""
    clock = time.perf_counter
    lat = []
    app = lat.append
    t_start = clock()
    end = t_start + duration
    while True:
        t0 = clock()
        fn()
        t1 = clock()
        app(t1 - t0)
        if t1 >= end or (max_calls is not None and len(lat) >= max_calls):
            return lat, t_start, t1


ECHO_SERVER = r"""
import socket, sys
l = socket.socket(); l.bind(("127.0.0.1", 0)); l.listen(1)
print(l.getsockname()[1], flush=True)
c, _ = l.accept(); c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
while True:
    d = c.recv(65536)
    if not d:
        break
    c.sendall(d)
"""


def echo_rtt(duration):
    """Round trips of a small message to a plain Python TCP echo process: the floor
    any request/answer over loopback pays on this machine right now."""
    p = subprocess.Popen([sys.executable, "-c", ECHO_SERVER], stdout=subprocess.PIPE)
    try:
        port = int(p.stdout.readline())
        s = socket.create_connection(("127.0.0.1", port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        msg = b"x" * 60

        def once():
            s.sendall(msg)
            s.recv(65536)

        for _ in range(500):
            once()
        r = summarize(*timed_for(once, duration))
        s.close()
        return r
    finally:
        p.wait(10)


def start_store(binary, extra=()):
    d = tempfile.mkdtemp(prefix="bettong-bench-store-")
    port = free_port()
    log = open(os.path.join(d, "log"), "wb")
    argv = [binary, "store", "--listen", "127.0.0.1:%d" % port,
            "--dir", os.path.join(d, "data"), "--log-level", "warn"] + list(extra)
    p = subprocess.Popen(argv, stdout=log, stderr=log)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if time.monotonic() > deadline or p.poll() is not None:
                raise SystemExit("the store did not start")
            time.sleep(0.01)
    return p, d, "127.0.0.1:%d" % port


# ------------------------------------------------------------------ client processes

def worker_main(args):
    """One client process: set up, print "ready", wait for "go" on stdin, call for
    --duration seconds, write the latencies (array of doubles) to --out and print
    the start and end of the window (perf_counter: CLOCK_MONOTONIC, shared by the
    processes of this machine)."""
    kind = args.worker
    if kind.startswith("bettong"):
        objects.connect(args.target)
        p = Point.get_by_id(args.key)
        fn = p.norm2 if kind == "bettong-call" else (lambda: p.x)
        expect = fn()
    else:
        host, port = args.target.rsplit(":", 1)
        r = Redis(host, int(port))
        key = args.key.encode()
        loads = pickle.loads
        if kind == "redis-call":
            def fn():
                return loads(r.get(key)).norm2()
        else:
            hkey = b"h" + key

            def fn():
                return loads(r.hget(hkey, b"x"))
        expect = fn()
    warm_end = time.perf_counter() + min(0.3, args.duration / 3)
    while time.perf_counter() < warm_end:
        fn()
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    lat, t0, t1 = timed_for(fn, args.duration)
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    assert fn() == expect
    with open(args.out, "wb") as f:
        array.array("d", lat).tofile(f)
    print("%r %r %r" % (t0, t1, cpu), flush=True)
    if kind.startswith("bettong"):
        objects.disconnect()


def proc_cpu(pid):
    """CPU seconds (user + system) of process pid so far."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_clients(kind, target, keys, duration, tmp, server_pid=None, env=None):
    """len(keys) client processes of `kind`, started together; merged summary, with
    the clients' CPU per call (getrusage around their timed loops, the loop's own
    clock reads included) and the server's (its /proc CPU time from "go" to the
    last client's report, divided by the calls)."""
    procs = []
    for i, key in enumerate(keys):
        out = os.path.join(tmp, "lat-%s-%d-%d" % (kind, len(keys), i))
        argv = [sys.executable, os.path.abspath(__file__), "--worker", kind,
                "--target", target, "--key", str(key), "--duration", repr(duration),
                "--out", out]
        procs.append((subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                       text=True, env=env), out))
    try:
        for p, _ in procs:
            if p.stdout.readline().strip() != "ready":
                raise SystemExit("a %s client did not start" % kind)
        s0 = proc_cpu(server_pid) if server_pid else 0.0
        for p, _ in procs:
            p.stdin.write("go\n")
            p.stdin.flush()
        lat, starts, ends, cpu = [], [], [], 0.0
        lines = [p.stdout.readline().split() for p, _ in procs]
        s1 = proc_cpu(server_pid) if server_pid else 0.0
        for (p, out), line in zip(procs, lines):
            if len(line) != 3 or p.wait(30) != 0:
                raise SystemExit("a %s client failed" % kind)
            starts.append(float(line[0]))
            ends.append(float(line[1]))
            cpu += float(line[2])
            a = array.array("d")
            with open(out, "rb") as f:
                a.frombytes(f.read())
            lat.extend(a)
            os.unlink(out)
    finally:
        for p, _ in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    r = summarize(lat, min(starts), max(ends))
    r["client_cpu"] = cpu / len(lat) * 1e6
    r["server_cpu"] = (s1 - s0) / len(lat) * 1e6 if server_pid else None
    return r


# ------------------------------------------------------------------ machine facts

def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def mem_gb():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    return 0.0


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def cpu_times():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]
    steal = v[7] if len(v) > 7 else 0
    return sum(v[:8]), idle, steal


def tree_state():
    try:
        h = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"],
                           capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", REPO, "status", "--porcelain"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return h + (" (uncommitted changes)" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


# ------------------------------------------------------------------ the benchmark

def us(v):
    return "%.1f us" % v


def per_s(v):
    return "{:,.0f}".format(v)


def ratio(a, b):
    return "%.2f" % (a / b) if b else "-"


def verdict(ok):
    return "MET" if ok else "NOT MET"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--store", help="HOST:PORT of a running store (default: start one)")
    ap.add_argument("--bin", default=os.environ.get("BETTONG_BIN") or
                    os.path.join(REPO, "build", "bettong"))
    ap.add_argument("--duration", type=float, default=3.0,
                    help="seconds per latency/throughput measurement (default 3)")
    ap.add_argument("--objects", type=int, default=100000)
    ap.add_argument("--quick", action="store_true",
                    help="short harness check: 0.5 s measurements, 5000 objects")
    ap.add_argument("--record", action="store_true",
                    help="append a dated section to bench/RESULTS.md")
    # worker mode (internal)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--target", help=argparse.SUPPRESS)
    ap.add_argument("--key", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.worker:
        return worker_main(args)
    if args.quick:
        if args.record:
            raise SystemExit("--record is for full runs, not --quick")
        args.duration = 0.5
        args.objects = 5000
    command = " ".join(shlex.quote(a) for a in [sys.executable, os.path.relpath(
        os.path.abspath(__file__), os.getcwd())] + sys.argv[1:])
    D = args.duration

    load_start = loadavg()
    cpu0 = cpu_times()
    started = datetime.datetime.now(datetime.timezone.utc)
    tmp = tempfile.mkdtemp(prefix="bettong-bench-redis-")
    proc = store_tmp = None
    quiet = quiet_tmp = None
    redis_procs = []
    address = args.store
    res = {}
    try:
        if not address:
            proc, store_tmp, address = start_store(args.bin)
        rp, rport, rfast, _ = start_redis(tmp, "plain", durable=False)
        redis_procs.append(rp)
        dp, dport, rdur, _ = start_redis(tmp, "durable", durable=True)
        redis_procs.append(dp)
        redis_version = subprocess.run(["redis-server", "--version"], capture_output=True,
                                       text=True).stdout.strip()

        res["echo"] = echo_rtt(min(D, 1.0))
        print("%-44s p50 %7.1f us  p99 %7.1f us" % (
            "floor: Python TCP echo, 1 client", res["echo"]["p50"], res["echo"]["p99"]),
            flush=True)

        # --- the objects: one per client (calls on different objects run concurrently)
        objects.connect(address)
        pts = [Point(3.0, 4.0 + i) for i in range(max(CLIENTS))]
        for q in pts:
            q.make_persistent()
        objects.flush()
        oids = [q.id for q in pts]
        for i in range(max(CLIENTS)):
            pp = PlainPoint(3.0, 4.0 + i)
            key = b"pt:%d" % i
            rfast.set(key, pickle.dumps(pp, PROTOCOL))
            rfast.pipeline([("HSET", b"h" + key, "x", pickle.dumps(pp.x, PROTOCOL),
                             "y", pickle.dumps(pp.y, PROTOCOL))])
        rkeys = ["pt:%d" % i for i in range(max(CLIENTS))]
        rtarget = "127.0.0.1:%d" % rport

        def show(label, r):
            print("%-44s p50 %7.1f us  p99 %7.1f us  %10s calls/s  (%d calls)" % (
                label, r["p50"], r["p99"], per_s(r["rate"]), r["n"]), flush=True)

        # --- reads, 1 and 4 client processes, bettong and redis back to back
        spid = proc.pid if proc is not None else None
        for op in ("call", "field"):
            for n in CLIENTS:
                for system, target, keys, pid in (("bettong", address, oids[:n], spid),
                                                  ("redis", rtarget, rkeys[:n], rp.pid)):
                    r = run_clients("%s-%s" % (system, op), target, keys, D, tmp, pid)
                    res[(system, op, n)] = r
                    show("%s %s, %d client%s" % (
                        system, "read-only call" if op == "call" else "field read",
                        n, "s" if n > 1 else ""), r)
        # context: 4 clients on one shared object (calls on one object are serialized)
        r = run_clients("bettong-call", address, [oids[0]] * max(CLIENTS), D, tmp)
        res["shared"] = r
        show("bettong read-only call, 4 clients, 1 object", r)
        # context: bettong without polling (a store with --spin-us 0, clients with
        # BETTONG_STORE_SPIN_US=0): every wait sleeps at once
        if not args.store:
            quiet, quiet_tmp, qaddress = start_store(args.bin, ["--spin-us", "0"])
            objects.connect(qaddress)
            qpts = [Point(3.0, 4.0 + i) for i in range(max(CLIENTS))]
            for q in qpts:
                q.make_persistent()
            objects.flush()
            qenv = dict(os.environ, BETTONG_STORE_SPIN_US="0")
            for n in CLIENTS:
                r = run_clients("bettong-call", qaddress, [q.id for q in qpts[:n]], D, tmp,
                                quiet.pid, qenv)
                res[("nospin", n)] = r
                show("bettong read-only call, no polling, %d client%s" % (
                    n, "s" if n > 1 else ""), r)
            objects.connect(address)
            quiet.terminate()
            quiet.wait(10)
            quiet = None

        # --- mutating calls, 1 client
        p = pts[0]
        for _ in range(200):
            p.norm2()
        r = summarize(*timed_for(lambda: p.move(0.0), min(D, 1.0)))
        res["move0"] = r
        show("bettong call, nothing changed (move 0)", r)
        r = summarize(*timed_for(lambda: p.move(1.0), D))
        res[("bettong", "write")] = r
        show("bettong durable mutating call (move +1)", r)
        x_after = p.x

        dkey = b"pt:w"
        rdur.set(dkey, pickle.dumps(PlainPoint(3.0, 4.0), PROTOCOL))

        def redis_move():
            o = pickle.loads(rdur.get(dkey))
            v = o.move(1.0)
            rdur.set(dkey, pickle.dumps(o, PROTOCOL))
            return v

        for _ in range(20):
            redis_move()
        r = summarize(*timed_for(redis_move, D))
        res[("redis", "write")] = r
        show("redis durable GET+move+SET (fsync always)", r)
        assert pickle.loads(rdur.get(dkey)).x == 3.0 + 20 + r["n"]
        assert x_after == p.x

        # --- make_persistent of many small objects
        many = [Point(float(i), 1.0) for i in range(args.objects)]
        t0 = time.perf_counter()
        for q in many:
            q.make_persistent()
        objects.flush()
        el = time.perf_counter() - t0
        res[("bettong", "mp")] = el
        print("%-44s %.2f s (%.1f us/object)" % (
            "bettong make_persistent x %d + flush" % args.objects, el,
            el / args.objects * 1e6), flush=True)
        assert Point.get_by_id(many[-1].id).norm2() == (args.objects - 1) ** 2 + 1
        del many

        plain = [PlainPoint(float(i), 1.0) for i in range(args.objects)]

        def redis_mp(r, prefix):
            dumps = pickle.dumps
            t0 = time.perf_counter()
            for b in range(0, len(plain), REDIS_BATCH):
                chunk = plain[b:b + REDIS_BATCH]
                out = []
                for j, o in enumerate(chunk, b):
                    k = b"%s%d" % (prefix, j)
                    v = dumps(o, PROTOCOL)
                    out.append(b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (
                        len(k), k, len(v), v))
                r.sock.sendall(b"".join(out))
                for _ in chunk:
                    if r._reply() != b"OK":
                        raise SystemExit("redis SET failed")
            el = time.perf_counter() - t0
            last = pickle.loads(r.get(b"%s%d" % (prefix, len(plain) - 1)))
            assert last.norm2() == (len(plain) - 1) ** 2 + 1
            return el

        el = redis_mp(rdur, b"mp:")
        res[("redis", "mp")] = el
        print("%-44s %.2f s (%.1f us/object)" % (
            "redis pipelined SET x %d (fsync always)" % args.objects, el,
            el / args.objects * 1e6), flush=True)
        el = redis_mp(rfast, b"mp:")
        res["redis_mp_nodur"] = el
        print("%-44s %.2f s (%.1f us/object)" % (
            "redis pipelined SET x %d (no persistence)" % args.objects, el,
            el / args.objects * 1e6), flush=True)
        for r in (rfast, rdur):
            r.close()
    finally:
        objects.disconnect()
        for rp in redis_procs:
            rp.terminate()
            try:
                rp.wait(10)
            except subprocess.TimeoutExpired:
                rp.kill()
                rp.wait()
        for sp in (proc, quiet):
            if sp is not None:
                sp.terminate()
                sp.wait(10)
        for d in (store_tmp, quiet_tmp):
            if d:
                shutil.rmtree(d, ignore_errors=True)
        shutil.rmtree(tmp, ignore_errors=True)
    load_end = loadavg()
    cpu1 = cpu_times()
    dt = cpu1[0] - cpu0[0]
    busy = 100.0 * (1 - (cpu1[1] - cpu0[1]) / dt) if dt else 0.0
    steal = 100.0 * (cpu1[2] - cpu0[2]) / dt if dt else 0.0

    # ------------------------------------------------------------------ the table
    rows = []   # figure, bettong, redis, ratio, target, verdict
    verdicts = []
    c1, c4 = res[("bettong", "call", 1)], res[("bettong", "call", 4)]
    for op, opname in (("call", "read-only call"), ("field", "field read")):
        for n in CLIENTS:
            b, r = res[("bettong", op, n)], res[("redis", op, n)]
            who = "%d client%s" % (n, "s" if n > 1 else "")
            # p50
            tgt, ok = "<= redis", b["p50"] <= r["p50"]
            if op == "call" and n == 1:
                tgt = "<= %d us and <= redis" % TARGETS["call_p50_us"]
                ok30 = b["p50"] <= TARGETS["call_p50_us"]
                verdicts.append(("read-only call p50 <= 30 us", ok30))
                v = "%s / %s" % (verdict(ok30), verdict(ok))
            else:
                v = verdict(ok)
            verdicts.append(("%s p50, %s, <= redis" % (opname, who), ok))
            rows.append(("%s p50, %s" % (opname, who), us(b["p50"]), us(r["p50"]),
                         ratio(b["p50"], r["p50"]), tgt, v))
            rows.append(("%s p99, %s" % (opname, who), us(b["p99"]), us(r["p99"]),
                         ratio(b["p99"], r["p99"]), "", ""))
            tgt, ok = ">= redis", b["rate"] >= r["rate"]
            if op == "call" and n == 4:
                tgt = ">= 50,000 and >= redis"
                ok50 = b["rate"] >= TARGETS["call_rate_4"]
                verdicts.append((">= 50,000 read-only calls/s from 4 clients", ok50))
                v = "%s / %s" % (verdict(ok50), verdict(ok))
            else:
                v = verdict(ok)
            verdicts.append(("%s calls/s, %s, >= redis" % (opname, who), ok))
            rows.append(("%s calls/s, %s" % (opname, who), per_s(b["rate"]),
                         per_s(r["rate"]), ratio(b["rate"], r["rate"]), tgt, v))
            if b["server_cpu"] is not None:
                bt = b["client_cpu"] + b["server_cpu"]
                rt = r["client_cpu"] + r["server_cpu"]
                rows.append(("%s CPU per call, client + server, %s" % (opname, who),
                             "%.1f + %.1f = %.1f us" % (b["client_cpu"], b["server_cpu"], bt),
                             "%.1f + %.1f = %.1f us" % (r["client_cpu"], r["server_cpu"], rt),
                             ratio(bt, rt), "", ""))
    b, r = res[("bettong", "write")], res[("redis", "write")]
    rows.append(("durable mutating call p50, 1 client", us(b["p50"]), us(r["p50"]),
                 ratio(b["p50"], r["p50"]), "", ""))
    rows.append(("durable mutating call p99, 1 client", us(b["p99"]), us(r["p99"]),
                 ratio(b["p99"], r["p99"]), "", ""))
    rows.append(("durable mutating calls/s, 1 client", per_s(b["rate"]), per_s(r["rate"]),
                 ratio(b["rate"], r["rate"]), "", ""))
    b, r = res[("bettong", "mp")], res[("redis", "mp")]
    okmp = b <= TARGETS["make_persistent_s"] * args.objects / 100000
    verdicts.append(("100 000 make_persistent <= 3 s", okmp))
    rows.append(("make_persistent x %s, durable" % "{:,}".format(args.objects),
                 "%.2f s" % b, "%.2f s" % r, ratio(b, r),
                 "<= %.3g s" % (TARGETS["make_persistent_s"] * args.objects / 100000),
                 verdict(okmp)))
    ctx = []
    for n in CLIENTS:
        if ("nospin", n) in res:
            q = res[("nospin", n)]
            ctx.append(("bettong read-only call without polling (store --spin-us 0, clients "
                        "BETTONG_STORE_SPIN_US=0), %d client%s: p50 / p99 / calls/s / CPU per "
                        "call client + server" % (n, "s" if n > 1 else ""),
                        "%s / %s / %s / %.1f + %.1f us" % (
                            us(q["p50"]), us(q["p99"]), per_s(q["rate"]), q["client_cpu"],
                            q["server_cpu"])))
    ctx += [
        ("bettong read-only call, 4 clients on ONE object: p50 / p99 / calls/s",
         "%s / %s / %s" % (us(res["shared"]["p50"]), us(res["shared"]["p99"]),
                           per_s(res["shared"]["rate"]))),
        ("bettong call that changes nothing (move 0), 1 client: p50 / p99",
         "%s / %s" % (us(res["move0"]["p50"]), us(res["move0"]["p99"]))),
        ("redis pipelined SET x %s without persistence" % "{:,}".format(args.objects),
         "%.2f s" % res["redis_mp_nodur"]),
        ("floor: Python TCP echo round trip, 1 client: p50 / p99",
         "%s / %s" % (us(res["echo"]["p50"]), us(res["echo"]["p99"]))),
    ]

    table = ["| figure | bettong | redis + pickle | bettong / redis | target | verdict |",
             "|---|---|---|---|---|---|"]
    table += ["| %s |" % " | ".join(r) for r in rows]
    table += ["| (context) %s | %s | | | | |" % c for c in ctx]
    print()
    print("\n".join(table))
    print()
    for name, ok in verdicts:
        print("%-50s %s" % (name, verdict(ok)))
    print("load average %s at the start, %s at the end; all CPUs busy %.0f %%, steal %.1f %%"
          % (load_start, load_end, busy, steal))

    if args.record:
        nproc = os.cpu_count()
        lines = [
            "",
            "## Persistent objects (bench/bench_store.py), %s UTC" % started.strftime(
                "%Y-%m-%d %H:%M"),
            "",
            "- machine: %d CPUs (nproc), %s, %.1f GB RAM, %s %s" % (
                nproc, cpu_model(), mem_gb(), platform.system(), platform.release()),
            "- Python: %s %s (the harness, the client processes; the store embeds "
            "libpython)" % (sys.executable, platform.python_version()),
            "- Redis: %s" % redis_version,
            "- tree: %s" % tree_state(),
            "- command (from the repository root): `%s`" % command,
            "- each latency/throughput figure: %.1f s of back-to-back calls per client "
            "process after a 0.3 s warm-up; the 1- and 4-client runs use 1 or 4 "
            "separate processes started together, each on its own object (bettong) or "
            "key (redis); p50/p99 over all calls of all clients; calls/s = all calls / "
            "(last client's end - first client's start); bettong and redis run back to "
            "back for each figure" % D,
            "- ratio = bettong / redis: below 1 is better for latency and time, above 1 "
            "is better for calls/s",
            "",
        ] + table + [
            "",
            "- bettong: `build/bettong store` started by the benchmark on loopback "
            "(fresh data dir in /tmp); read-only call = `p.norm2()` (an @active method), "
            "field read = `p.x` (GET_FIELD), mutating call = `p.move(1.0)` (durable "
            "before it returns), make_persistent = `q.make_persistent()` of %s "
            "`Point(x, y)` then `bettong.objects.flush()` (write-behind, batched "
            "durable PERSIST)" % "{:,}".format(args.objects),
            "- polling: by default a bettong client polls its socket for up to 50 us "
            "(non-blocking recv + sched_yield) before it blocks for an answer "
            "(BETTONG_STORE_SPIN_US), and the store polls for up to 50 us after the last "
            "request before it sleeps (--spin-us); the Redis client here blocks in recv "
            "at once and redis-server does not poll. The context rows give bettong "
            "without polling",
            "- CPU per call: client = getrusage of each client process around its timed "
            "loop (the loop's clock reads and list appends included), summed over the "
            "clients, / calls; server = the server process's CPU time (/proc) from the "
            "start signal to the last client's report, / calls",
            "- redis: `redis-server --save \"\" --appendonly no` (127.0.0.1, free port, "
            "temp dir) for the reads and make_persistent (context); `redis-server --save "
            "\"\" --appendonly yes --appendfsync always` for the durable figures; a minimal RESP client in the script (pure Python over one "
            "TCP_NODELAY socket, no hiredis) and pickle protocol %d, the same as "
            "bettong's" % (PROTOCOL,),
            "- redis read-only call = GET the pickled object, unpickle, call `norm2()` "
            "locally; redis field read = HGET of field x of a hash holding each field "
            "pickled, unpickle (cheaper than GET + unpickle of the whole object); "
            "redis mutating call = GET, unpickle, `move(1.0)`, pickle, SET (one client, "
            "no WATCH/MULTI, so not atomic as bettong's call is); redis make_persistent "
            "= SET of each pickled object, pipelined in batches of %d" % REDIS_BATCH,
            "- verdicts: %s" % "; ".join("%s: %s" % (n, verdict(ok)) for n, ok in verdicts),
            "- machine load: load average %s at the start, %s at the end; all CPUs busy "
            "%.0f %%, CPU steal %.1f %% over the run" % (load_start, load_end, busy, steal),
        ]
        path = os.path.join(HERE, "RESULTS.md")
        with open(path, "a") as f:
            f.write("\n".join(lines) + "\n")
        print("recorded in %s" % path)


if __name__ == "__main__":
    main()
