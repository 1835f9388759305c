#!/usr/bin/env python3
"""Resilience benchmark: what checkpoints, recovery and exactly-once output cost,
each against a baseline measured in the same run. Run by hand, not in CI.

    /usr/bin/python3 bench/bench_resilience.py [--bin build/bettong] [--quick] [--record]
        [--only throughput,checkpoint,recovery,latency] [--rounds N]

(1) Throughput. The seed's word count with a generator source
    (bench/apps/wc_gen.py: the example's steps, state and encoder; the engine
    generates --wc-lines lines of the corpus itself, so no sender competes for
    the cores), resilience off and on (1 s checkpoints), both into this
    script's plain TCP receiver, alternating, --rounds rounds. words/s = 80 %
    of the output records / the time from the 10 % to the 90 % record (the
    steady state). ratio on/off = median of on / median of off. Target >= 0.9.
    For context, resilience on with `bettong receive --exactly-once` (whose
    output comes in commits, so measured from engine ready to the last record).
(2) Checkpoint time and size. bench/apps/keys_state.py with --keys 1,000,000:
    a generator touches every key once, then keys 0..9,999 (1 %) over and over,
    so every 1 s checkpoint interval changes the same 10,000 keys. From the
    engine's debug log: the first full checkpoint holding every key and the
    incremental ones after it (size, loop pause, cut -> complete). --rounds
    runs; medians.
(3) Recovery. keys_state.py with 1,000,000 keys of about 100 bytes each
    (--recovery-value-bytes; ~100 MB of pickled state) plus a TCP pipeline fed
    by `bettong send --resumable` (2,000 records/s, forever) writing to a plain
    TCP receiver (a small Python receiver in this script that stamps the first
    bytes of every connection). The target: on 2 WORKERS (`bettong run
    --workers 2`, the keys' slots spread over both, ~50 MB each), after the fill
    and a checkpoint complete on both, SIGKILL one worker (alternately worker1,
    the initializer that runs the coordinator, and worker2; --cluster-kills,
    --cluster-kill-spacing apart); the parent restarts it, the other worker
    restarts too and the cluster forms again from the checkpoint. Measured: the
    time from the SIGKILL to the first output record at the receiver on a
    connection of the restarted cluster (median; target <= 3 s), each worker's
    "recovered ... T ms", SIGKILL -> "cluster: formed with 2 workers", and the
    steps between (the parent's restarts, ready, sender reconnected, the
    sinks' 0.5 s wait for an exactly-once greeting). For context, the same on
    ONE worker killed and started again at once by this script (--kills times).
(4) Latency at half load. bench/apps/wc_stamp.py: the word count with the
    sender's CLOCK_MONOTONIC time at the head of every line, carried to every
    output line. Its maximum rate over TCP (resilience off; `bettong send` at
    full speed into `bettong receive --expect`) is measured first (for context
    also with resilience on, 100 ms checkpoints, exactly-once); then a paced
    Python sender offers half of it (--load), resilience off with a plain
    Python TCP receiver that stamps what it reads, against resilience on with
    100 ms checkpoints, a resumable sender and `bettong receive --exactly-once`
    writing to a file that a Python tailer polls every 1 ms. Latency of an
    output line = the time it was read (from the socket, or from the file)
    - the stamp of its line. p50/p99/p99.9/max per run, rounds alternating;
    ratio on/off of the medians. The same again at --extra-loads (default a
    quarter of the maximum), for context.

--quick runs all of it small (about a minute). --record appends a section to
bench/RESULTS.md. Process logs go to bench/out/resil-<time>/.
"""

import argparse
import collections
import datetime
import json
import os
import platform
import re
import selectors
import shlex
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "python"))
sys.path.insert(0, os.path.join(REPO, "examples", "word_count"))
sys.path.insert(0, os.path.join(REPO, "tests", "py"))
from proctree import children_of  # noqa: E402

CORPUS = os.path.join(REPO, "examples", "word_count", "data", "bettong_tales.txt")
RESULTS = os.path.join(HERE, "RESULTS.md")
WC_GEN = os.path.join(HERE, "apps", "wc_gen.py")
KEYS_STATE = os.path.join(HERE, "apps", "keys_state.py")
WC_STAMP = os.path.join(HERE, "apps", "wc_stamp.py")

TARGET_THROUGHPUT_RATIO = 0.9
TARGET_RECOVERY_S = 3.0
# The incremental checkpoint "follows the changed keys" when its size over the
# full one's is at most this many times the fraction of keys changed.
TARGET_DELTA_SLACK = 1.5

LISTENING = re.compile(r"listening on (\S+):(\d+)")
RECV_SUMMARY = re.compile(r"bettong receive: (\d+) records \((\d+) bytes\) in ([0-9.]+) s")
CUT = re.compile(r"checkpoint (\d+) cut: (full|incremental), (\d+) keys, (\d+) bytes, "
                 r"loop paused ([0-9.]+) ms")
COMPLETE = re.compile(r"checkpoint (\d+) complete \((full|incremental), (\d+) bytes, "
                      r"([0-9.]+) ms after its cut\)")
RECOVERED = re.compile(r"recovered from checkpoint (\d+) in (\S+): (\d+) keys of state, "
                       r"([0-9.]+) ms")
LONGEST = re.compile(r"longest loop pause ([0-9.]+) ms")
GEN_DONE = re.compile(r"generator source returned None")
READY = re.compile(r"INFO: ready: application")
RESUMES = re.compile(r"stream '(\S+)' .* resumes at record (\d+)")
SINK_CONNECTED = re.compile(r"DEBUG: sink \S+: connected")
PLAIN_SINK = re.compile(r"plain receiver \(no exactly-once greeting\)")
# On a cluster (`--workers 2`): every worker's lines carry "bettong[NAME]", and
# the parent ("bettong run --workers") restarts the workers.
WORKER_LINE = re.compile(r"bettong\[([^\]]+)\] ")
FORMED = re.compile(r"INFO: cluster: formed with (\d+) workers")
KILLED = r"worker %s \(pid %d\) was killed by signal 9; restarting it"
# A crashed worker: "restarted (pid P, restart K)"; one that only restarted
# with the cluster (exit 75): "restarted with the cluster (pid P)" (restart 0).
RESTARTED = re.compile(r"worker (\S+) restarted (?:with the cluster )?\(pid (\d+)"
                       r"(?:, restart (\d+))?\)")
LOADS = re.compile(r"cluster: every worker loads checkpoint (\d+)")
SOURCE_PORT = re.compile(r"source '[^']*' listening on [^ ]*:(\d+)$")


class BenchError(Exception):
    pass


def log(msg):
    print("bench: " + msg, flush=True)


# ------------------------------------------------------------------ processes

class Proc:
    """A child process whose stdout and stderr lines are read by a thread, stamped
    with time.monotonic() as they arrive, and logged to a file."""

    registry = []

    def __init__(self, name, argv, logdir):
        self.name = name
        self.argv = argv
        self.lines = []  # (monotonic time, text)
        self.cond = threading.Condition()
        self.logf = open(os.path.join(logdir, name + ".log"), "a", encoding="utf-8")
        self.logf.write("$ " + shlex.join(argv) + "\n")
        self.logf.flush()
        self.t_start = time.monotonic()
        self.p = subprocess.Popen(argv, cwd=REPO, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.pid = self.p.pid
        Proc.registry.append(self)
        self.thread = threading.Thread(target=self._pump, daemon=True)
        self.thread.start()

    def _pump(self):
        for raw in iter(self.p.stdout.readline, b""):
            t = time.monotonic()
            line = raw.decode("utf-8", "replace").rstrip("\n")
            with self.cond:
                self.lines.append((t, line))
                self.logf.write(line + "\n")
                self.logf.flush()
                self.cond.notify_all()
        with self.cond:
            self.cond.notify_all()

    def wait_for(self, regex, timeout, since=0, what=None):
        """The first line from index `since` on matching regex: (index, time, match)."""
        deadline = time.monotonic() + timeout
        i = since
        with self.cond:
            while True:
                while i < len(self.lines):
                    m = regex.search(self.lines[i][1])
                    if m:
                        return i, self.lines[i][0], m
                    i += 1
                left = deadline - time.monotonic()
                if left <= 0 or (self.p.poll() is not None and not self.thread.is_alive()):
                    raise BenchError("%s: no line matching %r within %.0f s (%s):\n%s"
                                     % (self.name, what or regex.pattern, timeout,
                                        "running" if self.p.poll() is None else
                                        "exited %s" % self.p.returncode, self.tail()))
                self.cond.wait(min(left, 0.2))

    def matches(self, regex, since=0):
        with self.cond:
            return [(i, t, m) for i, (t, line) in enumerate(self.lines[since:], since)
                    for m in [regex.search(line)] if m]

    def count(self):
        with self.cond:
            return len(self.lines)

    def tail(self, n=15):
        with self.cond:
            return "\n".join("    " + l for _, l in self.lines[-n:]) or "    (no output)"

    def alive(self):
        return self.p.poll() is None

    def wait(self, timeout=None):
        try:
            rc = self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        self.thread.join(5)
        return rc

    def stop(self, sig=signal.SIGTERM, timeout=60):
        if self.p.poll() is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass
            if self.wait(timeout) is None:
                os.kill(self.pid, signal.SIGKILL)
                self.wait(10)
        else:
            self.wait(5)
        with self.cond:
            if not self.logf.closed:
                self.logf.write("[exit %s]\n" % self.p.returncode)
                self.logf.close()
        return self.p.returncode

    @classmethod
    def stop_all(cls):
        for p in cls.registry:
            if p.alive():
                p.stop(signal.SIGKILL, 10)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listen_ports(pid):
    """TCP ports process pid listens on (from /proc; for an engine that logs the
    port it was asked for, 0, rather than the one the kernel picked)."""
    inodes = set()
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            target = os.readlink("/proc/%d/fd/%s" % (pid, fd))
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = open(table).read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            f = row.split()
            if f[3] == "0A" and f[9] in inodes:
                ports.append(int(f[1].rsplit(":", 1)[1], 16))
    return ports


def engine_port(proc, timeout=30):
    """The port of a one-worker engine's source asked for on port 0: the engine
    logs the port it got ("source '...' listening on 127.0.0.1:PORT")."""
    proc.wait_for(READY, timeout, what="ready")
    got = [int(m.group(1)) for _, _, m in proc.matches(SOURCE_PORT)]
    if got and got[0] != 0:
        return got[0]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ports = listen_ports(proc.pid)
        if ports:
            return ports[0]
        time.sleep(0.05)
    raise BenchError("%s listens on no port" % proc.name)


def receiver_addr(proc, timeout=30):
    _, _, m = proc.wait_for(LISTENING, timeout, what="listening on")
    return "%s:%s" % (m.group(1), m.group(2))


def cpu_seconds(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def cpu_times():
    with open("/proc/stat") as f:
        return [int(x) for x in f.readline().split()[1:9]]


# ------------------------------------------------------------------ corpus

class Corpus:
    def __init__(self, path=CORPUS):
        import word_count as wc
        with open(path, encoding="utf-8") as f:
            self.lines = f.read().split("\n")[:-1]
        self.words_per_line = [len(wc.split_words(l)) for l in self.lines]
        self.words = sum(self.words_per_line)

    def words_in(self, nlines):
        full, rest = divmod(nlines, len(self.lines))
        return full * self.words + sum(self.words_per_line[:rest])


# ------------------------------------------------------------------ helpers run as
# separate processes (this file with --_send / --_collect), so that their timing
# does not share a GIL with the harness

def window_us(t0, warmup, seconds):
    """The measured window of stamps (us) for a sender starting at t0 (ns)."""
    return (t0 + int(warmup * 1e9)) // 1000, (t0 + int((warmup + seconds) * 1e9)) // 1000


def hello_frame(name):
    payload = b"\xffBTRSM\x01\x00" + struct.pack(">H", len(name)) + name.encode()
    return struct.pack(">I", len(payload)) + payload


def run_sender(a):
    """Paced sender of stamped corpus lines: a line is "<monotonic ns> <text>";
    every ~1 ms it sends the lines due, all stamped with the time just before the
    write. Prints a JSON summary on stdout."""
    corpus = Corpus()
    lines = [l.encode("utf-8") for l in corpus.lines]
    wpl = corpus.words_per_line
    n = len(lines)
    rate = a.rate
    host, port = a.to.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    acks, position = [], None
    if a.stream:
        sock.sendall(hello_frame(a.stream))
        hdr = b""
        while len(hdr) < 13:
            chunk = sock.recv(13 - len(hdr))
            if not chunk:
                raise SystemExit("sender: the engine closed the connection after the hello")
            hdr += chunk
        if hdr[4:5] != b"R":
            raise SystemExit("sender: the engine refused the stream: %r" % hdr)
        position = struct.unpack(">Q", hdr[5:13])[0]
    sock.settimeout(None)
    pending = b""
    t0 = a.start_at
    while time.monotonic_ns() < t0:
        time.sleep(0.0005)
    w_lo, w_hi = window_us(t0, a.warmup, a.seconds)
    end = t0 + int((a.warmup + a.seconds) * 1e9)
    base = t0           # the schedule: line k is due at base + k / rate
    sent = 0
    words_window = lines_window = 0
    slips = 0
    slipped_ns = 0
    worst_late_ns = 0
    longest_write_ns = 0
    max_burst = max(1, int(rate * 0.005))  # at most 5 ms of lines at once
    while True:
        now = time.monotonic_ns()
        if now >= end:
            break
        due = int((now - base) * rate / 1e9) - sent
        if due > max_burst:
            late = int((due - max_burst) / rate * 1e9)
            worst_late_ns = max(worst_late_ns, late)
            if late > 1000000:
                slips += 1
                slipped_ns += late
            base += late
            due = max_burst
        if due > 0:
            stamp = time.monotonic_ns()
            head = b"%d " % (stamp // 1000)
            parts = []
            for k in range(sent, sent + due):
                p = head + lines[k % n]
                parts.append(struct.pack(">I", len(p)))
                parts.append(p)
            if w_lo <= stamp // 1000 < w_hi:
                lines_window += due
                words_window += sum(wpl[k % n] for k in range(sent, sent + due))
            t = time.monotonic_ns()
            sock.sendall(b"".join(parts))
            longest_write_ns = max(longest_write_ns, time.monotonic_ns() - t)
            sent += due
        if a.stream:
            try:
                got = sock.recv(65536, socket.MSG_DONTWAIT)
                pending += got
            except BlockingIOError:
                pass
            while len(pending) >= 13:
                if pending[4:5] == b"A":
                    acks.append(struct.unpack(">Q", pending[5:13])[0])
                pending = pending[13:]
        nxt = base + int((sent + 1) * 1e9 / rate)
        delay = (nxt - time.monotonic_ns()) / 1e9
        if delay > 0:
            time.sleep(min(delay, 0.001))
    print(json.dumps({"sent": sent, "lines_window": lines_window, "words_window": words_window,
                      "slips": slips, "slipped_ms": slipped_ns / 1e6,
                      "worst_late_ms": worst_late_ns / 1e6,
                      "longest_write_ms": longest_write_ns / 1e6,
                      "position": position, "acks": len(acks),
                      "last_ack": acks[-1] if acks else None}), flush=True)
    # Stay connected until told to stop: a closed source is not the point here.
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGTERM, signal.SIGINT])
    signal.sigwait([signal.SIGTERM, signal.SIGINT])


class Collector:
    """Turns output bytes, read at time t (ns), into latencies of stamped lines
    (stamps in us). One worker keeps the order of its input, and the sender's
    stamps only grow, so the lines of one stamp come in one run: a chunk is cut
    into runs with a few C-level searches per distinct stamp, not per line.
    A stamp lower than the one before is counted in `disorder`."""

    def __init__(self, w_lo, w_hi, marks=()):
        self.w_lo, self.w_hi = w_lo, w_hi
        self.rest = b""
        self.lines = 0
        self.in_window = 0
        self.disorder = 0
        self.last_stamp = 0
        self.hist = collections.Counter()       # latency in us -> lines
        self.per_second = {}                    # send second -> max latency us
        self.marks = sorted(marks)               # line counts whose time to report
        self.marked = []

    def feed(self, data, t):
        data = self.rest + data if self.rest else data
        cut = data.rfind(b"\n") + 1
        self.rest = data[cut:]
        if not cut:
            return
        n = data.count(b"\n", 0, cut)
        self.lines += n
        while self.marks and self.lines >= self.marks[0]:
            self.marked.append((self.marks.pop(0), t))
        if self.w_hi <= self.w_lo:
            return
        t_us = t // 1000
        pos = 0
        while pos < cut:
            s = self.stamp_at(data, pos)
            # The first line after pos with another stamp, by bisection over byte
            # offsets (stamps never go down): O(log chunk) per distinct stamp.
            lo, hi = pos + 1, cut
            while lo < hi:
                mid = (lo + hi) // 2
                ls = data.find(b"\n", mid - 1, cut) + 1
                if ls == 0 or ls >= cut or self.stamp_at(data, ls) != s:
                    hi = mid
                else:
                    lo = mid + 1
            end = data.find(b"\n", lo - 1, cut) + 1
            if end <= pos:
                end = cut
            k = data.count(b"\n", pos, end)
            if s is not None:
                if s < self.last_stamp:
                    self.disorder += 1
                self.last_stamp = s
                if self.w_lo <= s < self.w_hi:
                    us = t_us - s
                    self.hist[us] += k
                    self.in_window += k
                    sec = (s - self.w_lo) // 1000000
                    if us > self.per_second.get(sec, -1):
                        self.per_second[sec] = us
            pos = end

    @staticmethod
    def stamp_at(data, i):
        sp = data.find(b" ", i, i + 24)
        try:
            return int(data[i:sp]) if sp > i else None
        except ValueError:
            return None


def run_collector(a):
    """The receiving end: --_collect tcp (a plain TCP receiver on 127.0.0.1:0)
    or --_collect tail:FILE (polls FILE every 1 ms). Prints "collect: listening
    on H:P", "collect: conn N accepted T" (monotonic s) for each connection
    accepted and "collect: conn N first T" for its first bytes, "collect:
    progress LINES IN_WINDOW" every 0.2 s, and at SIGTERM a JSON summary."""
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    col = Collector(a.w_lo, a.w_hi, [int(x) for x in a.marks.split(",")] if a.marks else ())
    last_progress = 0.0

    def progress(force=False):
        nonlocal last_progress
        now = time.monotonic()
        if force or now - last_progress >= 0.2:
            last_progress = now
            while col.marked:
                n, t = col.marked.pop(0)
                print("collect: mark %d %.6f" % (n, t / 1e9), flush=True)
            print("collect: progress %d %d" % (col.lines, col.in_window), flush=True)

    if a.mode == "tcp":
        ls = socket.socket()
        ls.bind(("127.0.0.1", 0))
        ls.listen(16)
        ls.setblocking(False)
        print("collect: listening on 127.0.0.1:%d" % ls.getsockname()[1], flush=True)
        sel = selectors.DefaultSelector()
        sel.register(ls, selectors.EVENT_READ, None)
        conns = 0
        while not stop:
            for key, _ in sel.select(0.05):
                if key.data is None:
                    c, _ = ls.accept()
                    c.setblocking(False)
                    conns += 1
                    sel.register(c, selectors.EVENT_READ, [conns, False])
                    print("collect: conn %d accepted %.6f" % (conns, time.monotonic()),
                          flush=True)
                    continue
                c = key.fileobj
                try:
                    data = c.recv(1 << 20)
                except BlockingIOError:
                    continue
                except ConnectionError:
                    data = b""
                t = time.monotonic_ns()
                if not data:
                    sel.unregister(c)
                    c.close()
                    print("collect: conn %d closed %.6f" % (key.data[0], t / 1e9), flush=True)
                    continue
                if not key.data[1]:
                    key.data[1] = True
                    print("collect: conn %d first %.6f" % (key.data[0], t / 1e9), flush=True)
                col.feed(data, t)
            progress()
    else:
        path = a.mode.split(":", 1)[1]
        while not os.path.exists(path) and not stop:
            time.sleep(0.001)
        fd = os.open(path, os.O_RDONLY)
        first = True
        while True:
            got = False
            while True:
                data = os.read(fd, 4 << 20)
                if not data:
                    break
                t = time.monotonic_ns()
                if first:
                    first = False
                    print("collect: conn 1 first %.6f" % (t / 1e9), flush=True)
                col.feed(data, t)
                got = True
            progress()
            if stop:
                break
            if not got:
                time.sleep(0.001)
    progress(True)
    print("collect: summary " + json.dumps({
        "lines": col.lines, "in_window": col.in_window, "disorder": col.disorder,
        "hist": sorted(col.hist.items()), "per_second": sorted(col.per_second.items())}),
        flush=True)


# ------------------------------------------------------------------ statistics

def pct(hist, q):
    """The q-quantile (0..1) of a histogram [(value, count)] sorted by value."""
    total = sum(c for _, c in hist)
    if not total:
        return float("nan")
    rank = q * (total - 1)
    seen = 0
    for v, c in hist:
        seen += c
        if seen > rank:
            return v
    return hist[-1][0]


def median(xs):
    xs = [x for x in xs if x == x]
    return statistics.median(xs) if xs else float("nan")


def fmt_ms(us):
    return "%.1f ms" % (us / 1000.0) if us == us else "-"


def fmt_int(x):
    return "{:,}".format(int(round(x))) if x == x else "-"


def fmt_mb(b):
    return "%.1f MB" % (b / 1e6)


def verdict(ok):
    return "MET" if ok else "NOT MET"


# ------------------------------------------------------------------ the benchmark

class Bench:
    def __init__(self, o):
        self.o = o
        stamp = datetime.datetime.utcnow().strftime("%Y%m%d-%H%M%S")
        self.outdir = os.path.join(HERE, "out", "resil-" + stamp)
        os.makedirs(self.outdir)
        # A private copy: a rebuild during the run changes nothing.
        self.bin = os.path.join(self.outdir, "bettong")
        shutil.copy2(o.bin, self.bin)
        self.corpus = Corpus()
        self.seq = 0
        self.results = {}
        self.errors = {}
        self.notes = []

    def name(self, tag):
        self.seq += 1
        return "%02d-%s" % (self.seq, tag)

    def resil_dir(self, tag):
        d = os.path.join(self.outdir, "ckpt-" + tag)
        os.makedirs(d, exist_ok=True)
        return d

    def drop_dir(self, d):
        if not self.o.keep_checkpoints:
            shutil.rmtree(d, ignore_errors=True)

    def helper(self, tag, args):
        return Proc(self.name(tag), [sys.executable, os.path.abspath(__file__)] + args,
                    self.outdir)

    # -------------------------------------------------------------- (1) throughput

    def throughput(self, kind, rnd):
        """kind: "off"; "on" (1 s checkpoints, plain receiver); "eo" (the same with
        an exactly-once receiver, for context)."""
        tag = "wc-%s-r%d" % (kind, rnd)
        lines = self.o.wc_lines
        expect = self.corpus.words_in(lines)
        lo, hi = int(expect * 0.1), int(expect * 0.9)
        procs, d = [], None
        try:
            if kind == "eo":
                outfile = os.path.join(self.outdir, tag + ".out")
                recv = Proc(self.name(tag + "-eoreceive"),
                            [self.bin, "receive", "--exactly-once", "--listen", "127.0.0.1:0",
                             "--out", outfile], self.outdir)
                procs.append(recv)
                addr = receiver_addr(recv)
                col = self.helper(tag + "-collect", ["--_collect", "tail:" + outfile,
                                                     "--marks", "%d,%d" % (lo, hi)])
            else:
                col = self.helper(tag + "-collect", ["--_collect", "tcp",
                                                     "--marks", "%d,%d" % (lo, hi)])
                addr = receiver_addr(col)
            procs.append(col)
            argv = [self.bin, "run", WC_GEN, "--out", addr, "--gen-lines", str(lines),
                    "--log-level", "debug"]
            if kind != "off":
                d = self.resil_dir(tag)
                argv += ["--run-with-resilience", "--resilience-dir", d,
                         "--time-between-checkpoints", "1000000000"]
            eng = Proc(self.name(tag + "-engine"), argv, self.outdir)
            procs.append(eng)
            _, t_ready, _ = eng.wait_for(READY, 60, what="ready")
            _, t_gen, _ = eng.wait_for(GEN_DONE, 900, what="the generator's end")
            cpu = cpu_seconds(eng.pid)
            _, t_last, _ = col.wait_for(re.compile(r"collect: progress %d " % expect), 120,
                                        what="all %d records" % expect)
            marks = {int(m.group(1)): float(m.group(2)) for _, _, m in
                     col.matches(re.compile(r"collect: mark (\d+) ([0-9.]+)"))}
        finally:
            for p in reversed(procs):
                p.stop()
            if d:
                self.drop_dir(d)
            if kind == "eo":
                self.drop_output(outfile)
        got = col.matches(re.compile(r"collect: progress (\d+)"))[-1][2]
        if int(got.group(1)) != expect:
            raise BenchError("%s: %s output records, %d expected" % (tag, got.group(1), expect))
        cps = [x[2] for x in eng.matches(COMPLETE)]
        cuts = [x[2] for x in eng.matches(CUT)]
        pauses = [x[2] for x in eng.matches(re.compile(r"pausing sources"))]
        r = {"words": expect, "cpu": cpu,
             "rate": (hi - lo) / (marks[hi] - marks[lo]),
             "window_s": marks[hi] - marks[lo],
             "total_s": t_last - t_ready, "total_rate": expect / (t_last - t_ready),
             "engine_s": t_gen - t_ready, "engine_rate": expect / (t_gen - t_ready),
             "checkpoints": len(cps), "bp_pauses": len(pauses),
             "pause_max": max([float(c.group(5)) for c in cuts] or [0.0]),
             "pause_med": median([float(c.group(5)) for c in cuts]),
             "cp_bytes": median([float(c.group(3)) for c in cps]),
             "cp_ms": median([float(c.group(4)) for c in cps])}
        log("(1) round %d, %s: %d words; 10-90 %% of the output in %.2f s = %s words/s; "
            "ready -> last output %.2f s (%s words/s); ready -> generator done %.2f s; "
            "%.1f s CPU%s"
            % (rnd, {"off": "resilience off", "on": "resilience on, plain receiver",
                     "eo": "resilience on, exactly-once receiver"}[kind], expect,
               r["window_s"], fmt_int(r["rate"]), r["total_s"], fmt_int(r["total_rate"]),
               r["engine_s"], cpu,
               "; %d checkpoints (median %s bytes, %.1f ms; loop paused <= %.2f ms); sources "
               "paused for the output backlog %d times" % (r["checkpoints"],
                                                           fmt_int(r["cp_bytes"]), r["cp_ms"],
                                                           r["pause_max"], r["bp_pauses"])
               if kind != "off" else ""))
        return r

    # -------------------------------------------------------------- (2) checkpoints

    def checkpoints(self, rnd):
        tag = "ckpt-r%d" % rnd
        keys, hot = self.o.keys, self.o.hot
        d = self.resil_dir(tag)
        argv = [self.bin, "run", KEYS_STATE, "--keys", str(keys), "--hot", str(hot),
                "--run-with-resilience", "--resilience-dir", d,
                "--time-between-checkpoints", "1000000000", "--log-level", "debug"]
        eng = Proc(self.name(tag + "-engine"), argv, self.outdir)
        try:
            # The first full checkpoint that holds every key, then incrementals.
            full_re = re.compile(r"checkpoint (\d+) cut: full, %d keys," % keys)
            i, _, m = eng.wait_for(full_re, 120, what="a full checkpoint of %d keys" % keys)
            n_full = int(m.group(1))
            want = self.o.incrementals
            deadline = time.monotonic() + 60 + 2 * want
            while True:
                incs = [x for x in eng.matches(COMPLETE, i) if x[2].group(2) == "incremental"
                        and int(x[2].group(1)) > n_full]
                if len(incs) >= want:
                    break
                if time.monotonic() > deadline or not eng.alive():
                    raise BenchError("%s: %d incremental checkpoints after the full one, "
                                     "%d wanted:\n%s" % (tag, len(incs), want, eng.tail()))
                time.sleep(0.1)
        finally:
            eng.stop()
            self.drop_dir(d)
        cuts = {int(x[2].group(1)): x[2] for x in eng.matches(CUT)}
        done = {int(x[2].group(1)): x[2] for x in eng.matches(COMPLETE)}
        full_cut, full_done = cuts[n_full], done.get(n_full)
        if not full_done:
            raise BenchError("%s: checkpoint %d never completed" % (tag, n_full))
        inc_ns = sorted(n for n, c in cuts.items() if n > n_full and c.group(2) == "incremental"
                        and n in done)
        inc = [(cuts[n], done[n]) for n in inc_ns]
        r = {"full_n": n_full, "full_keys": int(full_cut.group(3)),
             "full_bytes": int(full_cut.group(4)), "full_pause": float(full_cut.group(5)),
             "full_ms": float(full_done.group(4)),
             "inc_n": inc_ns,
             "inc_keys": median([int(c.group(3)) for c, _ in inc]),
             "inc_bytes": median([int(c.group(4)) for c, _ in inc]),
             "inc_pause": median([float(c.group(5)) for c, _ in inc]),
             "inc_ms": median([float(x.group(4)) for _, x in inc]),
             "inc_all": [(int(c.group(3)), int(c.group(4)), float(c.group(5)),
                          float(x.group(4))) for c, x in inc]}
        lm = eng.matches(LONGEST)
        r["longest_pause"] = float(lm[-1][2].group(1)) if lm else float("nan")
        log("(2) round %d: full checkpoint %d: %d keys, %s bytes, loop paused %.1f ms, "
            "%.1f ms cut -> complete; incremental (median of %d): %s keys, %s bytes, "
            "paused %.1f ms, %.1f ms"
            % (rnd, n_full, r["full_keys"], fmt_int(r["full_bytes"]), r["full_pause"],
               r["full_ms"], len(inc), fmt_int(r["inc_keys"]), fmt_int(r["inc_bytes"]),
               r["inc_pause"], r["inc_ms"]))
        return r

    # -------------------------------------------------------------- (3) recovery

    def ticks_file(self):
        path = os.path.join(self.outdir, "ticks.txt")
        if not os.path.exists(path):
            with open(path, "w") as f:
                f.write("".join("%d\n" % k for k in range(1000)))
        return path

    def recovery_argv(self, d, port, out_addr, workers):
        """keys_state.py with ~100 MB of state and the TCP pipeline. `port` is
        fixed: a restart must use the same command line (and with --workers every
        worker binds it, SO_REUSEPORT; port 0 would give each its own)."""
        argv = [self.bin, "run", KEYS_STATE, "--keys", str(self.o.recovery_keys),
                "--value-bytes", str(self.o.recovery_value_bytes),
                "--in", "127.0.0.1:%d" % port, "--out", out_addr]
        if workers > 1:
            argv += ["--workers", str(workers)]
        return argv + ["--run-with-resilience", "--resilience-dir", d,
                       "--time-between-checkpoints", "1000000000", "--log-level", "debug"]

    def ticks_sender(self, tag, port):
        """`bettong send --resumable` of 0..999, forever, at --tick-rate."""
        return Proc(self.name(tag + "-send"),
                    [self.bin, "send", "--resumable", "--stream", "ticks", "--to",
                     "127.0.0.1:%d" % port, "--file", self.ticks_file(), "--repeat", "0",
                     "--rate", str(self.o.tick_rate), "--connect-timeout", "300",
                     "--ack-timeout", "0"], self.outdir)

    @staticmethod
    def first_output_after(col, t_kill, timeout, eng):
        """When the receiver read the first bytes on a connection it accepted after
        t_kill (a connection of the restarted engine: a surviving worker may still
        flush on its old one before it exits)."""
        acc = re.compile(r"collect: conn (\d+) accepted ([0-9.]+)")
        first = re.compile(r"collect: conn (\d+) first ([0-9.]+)")
        deadline = time.monotonic() + timeout
        while True:
            new = {int(m.group(1)) for _, _, m in col.matches(acc) if float(m.group(2)) > t_kill}
            for _, _, m in col.matches(first):
                if int(m.group(1)) in new:
                    return float(m.group(2))
            if time.monotonic() > deadline:
                raise BenchError("no output at the receiver within %.0f s of the SIGKILL:\n%s"
                                 % (timeout, eng.tail()))
            time.sleep(0.01)

    def recovery(self):
        """(3) on one worker: SIGKILL, the same command again at once (as a
        supervisor would), SIGKILL -> first output."""
        tag = "recovery"
        keys = self.o.recovery_keys
        d = self.resil_dir(tag)
        col = self.helper(tag + "-receiver", ["--_collect", "tcp"])
        procs = [col]
        kills = []
        try:
            out_addr = receiver_addr(col)
            port = free_port()
            argv = self.recovery_argv(d, port, out_addr, 1)
            eng = Proc(self.name(tag + "-engine"), argv, self.outdir)
            procs.append(eng)
            eng.wait_for(READY, 60, what="ready")
            procs.append(self.ticks_sender(tag, port))
            col.wait_for(re.compile(r"collect: conn \d+ first"), 60, what="first output")
            i_done, t_done, _ = eng.wait_for(GEN_DONE, 600, what="the fill's end")
            fill_s = t_done - eng.t_start
            log("(3) 1 worker: %d keys filled in %.1f s" % (keys, fill_s))
            since = i_done
            for k in range(self.o.kills):
                # A checkpoint cut after the fill (or the last recovery) and complete.
                i_cut, _, mc = eng.wait_for(CUT, 60, since=since, what="a checkpoint cut")
                n = int(mc.group(1))
                eng.wait_for(re.compile(r"checkpoint %d complete" % n), 120, since=i_cut,
                             what="checkpoint %d complete" % n)
                chain = self.chain([p for p in procs if "-engine" in p.name], n)
                time.sleep(0.3)
                t_kill = time.monotonic()
                os.kill(eng.pid, signal.SIGKILL)
                eng.wait(30)
                eng.stop()
                eng = Proc(self.name(tag + "-engine-restart%d" % (k + 1)), argv, self.outdir)
                procs.append(eng)
                t_exec = time.monotonic()
                _, t_rec, mr = eng.wait_for(RECOVERED, 300, what="recovered from checkpoint")
                _, t_ready, _ = eng.wait_for(READY, 300, what="ready")
                _, t_resume, _ = eng.wait_for(RESUMES, 300, what="the sender's reconnect")
                _, t_sink, _ = eng.wait_for(SINK_CONNECTED, 300, what="the sink's connection")
                _, t_plain, _ = eng.wait_for(PLAIN_SINK, 300, what="a plain receiver")
                t_first = self.first_output_after(col, t_kill, 120, eng)
                rec = {"kill": k + 1, "checkpoint": n, "chain": chain,
                       "recovered_n": int(mr.group(1)), "recovered_keys": int(mr.group(3)),
                       "engine_ms": float(mr.group(4)),
                       "to_exec": t_exec - t_kill, "to_recovered_log": t_rec - t_kill,
                       "to_ready": t_ready - t_kill, "to_resume": t_resume - t_kill,
                       "to_sink": t_sink - t_kill, "to_plain": t_plain - t_kill,
                       "to_first": t_first - t_kill}
                kills.append(rec)
                log("(3) 1 worker, kill %d after checkpoint %d (%s of state: %s): recovered "
                    "checkpoint %d, %d keys, engine %.0f ms; from the SIGKILL: ready %.2f s, "
                    "sender back %.2f s, first output %.2f s"
                    % (k + 1, n, fmt_mb(chain["bytes"]), chain["text"], rec["recovered_n"],
                       rec["recovered_keys"], rec["engine_ms"], rec["to_ready"],
                       rec["to_resume"], rec["to_first"]))
                since = eng.count()
                # Let it settle (the sender's backlog) before the next kill.
                time.sleep(0.5)
            time.sleep(1.0)
        finally:
            for p in reversed(procs):
                p.stop()
            self.drop_dir(d)
        lm = col.matches(re.compile(r"collect: progress (\d+)"))
        return {"kills": kills, "fill_s": fill_s, "keys": keys,
                "output_lines": int(lm[-1][2].group(1)) if lm else 0}

    # On a cluster: the lines of every worker come through the parent's stderr.

    @staticmethod
    def worker_of(m):
        w = WORKER_LINE.search(m.string)
        return w.group(1) if w else None

    def per_worker(self, eng, regex, after, timeout, what, name=None):
        """{worker: (index, time, match)}: for every worker w of `after` ({w: line
        index}), the first line of w after after[w] matching regex. `name(match)`
        names the worker a line is about (default: the worker that logged it)."""
        name = name or self.worker_of
        deadline = time.monotonic() + timeout
        while True:
            got = {}
            for i, t, m in eng.matches(regex, min(after.values()) + 1):
                w = name(m)
                if w in after and w not in got and i > after[w]:
                    got[w] = (i, t, m)
            if len(got) == len(after):
                return got
            if time.monotonic() > deadline or not eng.alive():
                raise BenchError("%s: %s: none from %s within %.0f s:\n%s"
                                 % (eng.name, what, ", ".join(sorted(set(after) - set(got))),
                                    timeout, eng.tail()))
            time.sleep(0.02)

    def cluster_checkpoint(self, eng, names, since, timeout=120):
        """The first checkpoint cut by every worker after line `since`, once it is
        complete on every worker (the coordinator recorded it): its number."""
        deadline = time.monotonic() + timeout
        while True:
            cut, done = collections.defaultdict(set), collections.defaultdict(set)
            for _, _, m in eng.matches(CUT, since + 1):
                cut[int(m.group(1))].add(self.worker_of(m))
            for _, _, m in eng.matches(COMPLETE, since + 1):
                done[int(m.group(1))].add(self.worker_of(m))
            both = sorted(n for n, ws in cut.items() if ws >= set(names))
            if both and done[both[0]] >= set(names):
                return both[0]
            if time.monotonic() > deadline or not eng.alive():
                raise BenchError("%s: no checkpoint cut and complete on %s within %.0f s:\n%s"
                                 % (eng.name, " and ".join(names), timeout, eng.tail()))
            time.sleep(0.05)

    @staticmethod
    def worker_pid(parent, name):
        """The pid of the `--workers` child of `parent` named `name`, or None."""
        for pid, args in children_of(parent).items():
            if any(a == b"--name" and b == name.encode() for a, b in zip(args, args[1:])):
                return pid
        return None

    def recovery_cluster(self):
        """(3) on 2 workers (`--workers 2`): the parent restarts a killed worker, the
        other one restarts too, the cluster forms again from its last complete
        checkpoint. The kills alternate worker1 (the initializer, which runs the
        coordinator) and worker2."""
        tag = "recovery2"
        keys = self.o.recovery_keys
        names = ["worker1", "worker2"]
        d = self.resil_dir(tag)
        col = self.helper(tag + "-receiver", ["--_collect", "tcp"])
        procs = [col]
        kills = []
        try:
            out_addr = receiver_addr(col)
            port = free_port()
            argv = self.recovery_argv(d, port, out_addr, 2)
            eng = Proc(self.name(tag + "-engine"), argv, self.outdir)
            procs.append(eng)
            eng.wait_for(FORMED, 120, what="cluster: formed with 2 workers")
            procs.append(self.ticks_sender(tag, port))
            col.wait_for(re.compile(r"collect: conn \d+ first"), 60, what="first output")
            # Every worker runs the generator: each touches every key once, and the
            # keys' slots are spread over both workers.
            done = self.per_worker(eng, GEN_DONE, {w: -1 for w in names}, 900,
                                   "the fill's end")
            fill_s = max(t for _, t, _ in done.values()) - eng.t_start
            log("(3) 2 workers: %d keys filled in %.1f s" % (keys, fill_s))
            since = max(i for i, _, _ in done.values())
            t_prev = None
            for k in range(self.o.cluster_kills):
                victim = names[k % 2]
                if t_prev is not None and self.o.cluster_kill_spacing > 0:
                    wait = t_prev + self.o.cluster_kill_spacing - time.monotonic()
                    if wait > 0:
                        log("(3) 2 workers: %.0f s until kill %d (--cluster-kill-spacing: the "
                            "parent's restart pause grows with restarts within 60 s)"
                            % (wait, k + 1))
                        time.sleep(wait)
                    if not eng.alive():
                        raise BenchError("the cluster stopped:\n" + eng.tail())
                    since = eng.count() - 1
                n = self.cluster_checkpoint(eng, names, since)
                chains = {w: self.chain([eng], n, w) for w in names}
                pid = self.worker_pid(eng.pid, victim)
                if not pid:
                    raise BenchError("no process of %s under pid %d" % (victim, eng.pid))
                time.sleep(0.3)
                i_kill = eng.count() - 1
                t_kill = time.monotonic()
                os.kill(pid, signal.SIGKILL)
                _, t_noticed, _ = eng.wait_for(re.compile(KILLED % (victim, pid)), 30,
                                               since=i_kill + 1, what="the parent's note")
                restarted = self.per_worker(eng, RESTARTED, {w: i_kill for w in names}, 60,
                                            "restarted by the parent",
                                            name=lambda m: m.group(1))
                new = {w: restarted[w][0] for w in names}
                i_formed, t_formed, _ = eng.wait_for(FORMED, 300, since=i_kill + 1,
                                                     what="formed again")
                loads = eng.matches(LOADS, i_kill + 1)
                rec_w = self.per_worker(eng, RECOVERED, new, 300, "recovered from checkpoint")
                ready = self.per_worker(eng, READY, new, 300, "ready")
                plain = self.per_worker(eng, PLAIN_SINK, new, 300, "a plain receiver")
                resumed = None
                deadline = time.monotonic() + 120
                while resumed is None:
                    resumed = next(((t, self.worker_of(m)) for i, t, m in
                                    eng.matches(RESUMES, i_kill + 1)
                                    if new.get(self.worker_of(m), 1 << 60) < i), None)
                    if resumed is None:
                        if time.monotonic() > deadline:
                            raise BenchError("the sender did not come back:\n" + eng.tail())
                        time.sleep(0.02)
                t_first = self.first_output_after(col, t_kill, 120, eng)
                rec = {"kill": k + 1, "victim": victim, "checkpoint": n, "chains": chains,
                       "state_bytes": sum(c["bytes"] for c in chains.values()),
                       "loads": int(loads[0][2].group(1)) if loads else None,
                       "recovered": {w: {"n": int(m.group(1)), "keys": int(m.group(3)),
                                         "ms": float(m.group(4)), "at": t - t_kill}
                                     for w, (_, t, m) in rec_w.items()},
                       "restart": {w: {"no": int(m.group(3) or 0), "at": t - t_kill}
                                   for w, (_, t, m) in restarted.items()},
                       "ready": {w: t - t_kill for w, (_, t, _) in ready.items()},
                       "plain": {w: t - t_kill for w, (_, t, _) in plain.items()},
                       "to_noticed": t_noticed - t_kill, "to_formed": t_formed - t_kill,
                       "to_resume": resumed[0] - t_kill, "resume_worker": resumed[1],
                       "to_first": t_first - t_kill}
                rec["recovered_keys"] = sum(r["keys"] for r in rec["recovered"].values())
                kills.append(rec)
                log("(3) 2 workers, kill %d: %s, after checkpoint %d (%s of state: %s): "
                    "%s; from the SIGKILL: both restarted %.2f s (restart %s), formed %.2f s, "
                    "sender back %.2f s, first output %.2f s"
                    % (k + 1, victim, n, fmt_mb(rec["state_bytes"]),
                       "; ".join("%s %s" % (w, chains[w]["text"]) for w in names),
                       ", ".join("%s recovered checkpoint %d, %d keys, %.0f ms"
                                 % (w, r["n"], r["keys"], r["ms"])
                                 for w, r in sorted(rec["recovered"].items())),
                       max(r["at"] for r in rec["restart"].values()),
                       "/".join(str(rec["restart"][w]["no"]) for w in names),
                       rec["to_formed"], rec["to_resume"], rec["to_first"]))
                t_prev = t_kill
                since = eng.count() - 1
                time.sleep(0.5)
            time.sleep(1.0)
        finally:
            for p in reversed(procs):
                p.stop()
            self.drop_dir(d)
        lm = col.matches(re.compile(r"collect: progress (\d+)"))
        return {"kills": kills, "fill_s": fill_s, "keys": keys,
                "output_lines": int(lm[-1][2].group(1)) if lm else 0}

    def chain(self, engines, n, worker=None):
        """The checkpoints a recovery from n loads: the last full one up to n, then
        the incremental ones after it (from the logs of every engine process so far:
        numbers go on after a recovery, and a later process's line wins); on a
        cluster, those of `worker`."""
        kinds = {}
        for eng in engines:
            kinds.update({int(x[2].group(1)): x[2] for x in eng.matches(COMPLETE)
                          if worker is None or self.worker_of(x[2]) == worker})
        fulls = [k for k, m in kinds.items() if k <= n and m.group(2) == "full"]
        if not fulls:
            return {"bytes": float("nan"), "text": "no full checkpoint logged",
                    "full_bytes": float("nan")}
        full = max(fulls)
        deltas = [kinds[k] for k in sorted(kinds) if full < k <= n]
        total = int(kinds[full].group(3)) + sum(int(m.group(3)) for m in deltas)
        return {"bytes": total, "full_bytes": int(kinds[full].group(3)),
                "text": "full checkpoint %d (%s) + %d incremental (%s bytes)"
                % (full, fmt_mb(int(kinds[full].group(3))), len(deltas),
                   fmt_int(sum(int(m.group(3)) for m in deltas)))}

    # -------------------------------------------------------------- (4) latency

    def stamped_file(self):
        path = os.path.join(self.outdir, "stamped.txt")
        if not os.path.exists(path):
            with open(path, "w", encoding="utf-8") as f:
                f.write("".join("0 %s\n" % l for l in self.corpus.lines))
        return path

    def max_rate(self, run, eo=False):
        """wc_stamp.py at full speed over TCP: resilience off into `bettong receive`,
        or (eo) resilience on at 100 ms checkpoints from a resumable sender into
        `bettong receive --exactly-once` (--expect counts committed records)."""
        tag = "maxrate-%s-%d" % ("eo" if eo else "off", run)
        repeat = self.o.maxrate_passes
        expect = self.corpus.words * repeat
        out = os.path.join(self.outdir, tag + ".out") if eo else "/dev/null"
        recv = Proc(self.name(tag + "-receive"),
                    [self.bin, "receive"] + (["--exactly-once"] if eo else []) +
                    ["--listen", "127.0.0.1:0", "--out", out, "--expect", str(expect),
                     "--timeout", "180"], self.outdir)
        procs, d = [recv], None
        try:
            addr = receiver_addr(recv)
            argv = [self.bin, "run", WC_STAMP, "--in", "127.0.0.1:0", "--out", addr,
                    "--log-level", "debug"]
            if eo:
                d = self.resil_dir(tag)
                # The receiver leaves once it has every record: the engine's final
                # checkpoint cannot complete then, so do not wait 10 s for it.
                argv += ["--run-with-resilience", "--resilience-dir", d,
                         "--time-between-checkpoints", "100000000", "--flush-timeout", "1"]
            eng = Proc(self.name(tag + "-engine"), argv, self.outdir)
            procs.append(eng)
            port = engine_port(eng)
            t_send = time.monotonic()
            snd = Proc(self.name(tag + "-send"),
                       [self.bin, "send", "--to", "127.0.0.1:%d" % port, "--file",
                        self.stamped_file(), "--repeat", str(repeat)] +
                       # The default --ack-timeout: the sender ends once everything is
                       # acknowledged (then shuts its side and waits for the
                       # engine's close), so nothing is left in flight at its exit.
                       (["--resumable", "--stream", tag] if eo else []),
                       self.outdir)
            procs.append(snd)
            rc = recv.wait(240)
            _, t_end, m = recv.wait_for(RECV_SUMMARY, 10)
            if rc != 0 or int(m.group(1)) != expect:
                raise BenchError("%s: the receiver got %s of %d records:\n%s"
                                 % (tag, m.group(1), expect, recv.tail()))
        finally:
            for p in reversed(procs):
                p.stop()
            if d:
                self.drop_dir(d)
            self.drop_output(out)
        # From starting the sender to the receiver's last record: the receiver's own
        # first-to-last time leaves out the start (and so flatters a short run).
        rate = expect / (t_end - t_send)
        pauses = len(eng.matches(re.compile(r"pausing sources")))
        log("(4) maximum rate over TCP (%s), run %d: %s words/s (%d words, %.2f s from starting "
            "the sender to the last record; the receiver's first-to-last %.2f s)%s"
            % ("resilience on, 100 ms checkpoints, exactly-once" if eo else "resilience off",
               run, fmt_int(rate), expect, t_end - t_send, float(m.group(3)),
               "; sources paused for the output backlog %d times" % pauses if eo else ""))
        return rate, pauses

    def drop_output(self, path):
        if self.o.keep_checkpoints or not path.startswith(self.outdir):
            return
        for f in os.listdir(self.outdir):
            if os.path.join(self.outdir, f).startswith(path):
                try:
                    os.unlink(os.path.join(self.outdir, f))
                except OSError:
                    pass

    def latency(self, resil, rnd, words_rate):
        tag = "lat-%s-r%d" % ("on" if resil else "off", rnd)
        lines_rate = words_rate * len(self.corpus.lines) / self.corpus.words
        warm, secs = self.o.latency_warmup, self.o.latency_seconds
        procs = []
        d = None
        try:
            if resil:
                outfile = os.path.join(self.outdir, tag + ".out")
                for p in [outfile, outfile + ".eostate"]:
                    if os.path.exists(p):
                        os.unlink(p)
                recv = Proc(self.name(tag + "-eoreceive"),
                            [self.bin, "receive", "--exactly-once", "--listen", "127.0.0.1:0",
                             "--out", outfile], self.outdir)
                procs.append(recv)
                out_addr = receiver_addr(recv)
            # The collector needs the measured window; the sender starts at t0.
            argv = [self.bin, "run", WC_STAMP, "--in", "127.0.0.1:0", "--log-level", "debug"]
            if resil:
                d = self.resil_dir(tag)
                argv += ["--run-with-resilience", "--resilience-dir", d,
                         "--time-between-checkpoints", "100000000"]
            # Start the engine first (for its port), then the collector, then the sender.
            if not resil:
                t0 = time.monotonic_ns() + int(3e9)
                lo, hi = window_us(t0, warm, secs)
                col = self.helper(tag + "-collect", [
                    "--_collect", "tcp", "--w-lo", str(lo), "--w-hi", str(hi)])
                procs.append(col)
                out_addr = receiver_addr(col)
            eng = Proc(self.name(tag + "-engine"), argv + ["--out", out_addr], self.outdir)
            procs.append(eng)
            port = engine_port(eng)
            if resil:
                t0 = time.monotonic_ns() + int(2e9)
                lo, hi = window_us(t0, warm, secs)
                col = self.helper(tag + "-collect", [
                    "--_collect", "tail:" + outfile, "--w-lo", str(lo), "--w-hi", str(hi)])
                procs.append(col)
            sargs = ["--_send", "--to", "127.0.0.1:%d" % port, "--rate", repr(lines_rate),
                     "--start-at", str(t0), "--warmup", repr(warm), "--seconds", repr(secs)]
            if resil:
                sargs += ["--stream", "lat-%d-%d" % (rnd, os.getpid())]
            snd = self.helper(tag + "-send", sargs)
            procs.append(snd)
            cpu0 = cpu_seconds(eng.pid)
            _, _, ms = snd.wait_for(re.compile(r"^\{.*\}$"), warm + secs + 60,
                                    what="the sender's summary")
            cpu1 = cpu_seconds(eng.pid)
            sres = json.loads(ms.group(0))
            # Wait until every window line is out (or 10 s).
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                pm = col.matches(re.compile(r"collect: progress (\d+) (\d+)"))
                if pm and int(pm[-1][2].group(2)) >= sres["words_window"]:
                    break
                time.sleep(0.05)
            time.sleep(0.1)
            col_start = col.count()
            os.kill(col.pid, signal.SIGTERM)
            _, _, mj = col.wait_for(re.compile(r"collect: summary (.*)$"), 60, since=col_start,
                                    what="the collector's summary")
            cres = json.loads(mj.group(1))
        finally:
            for p in reversed(procs):
                p.stop()
            if d:
                self.drop_dir(d)
            if resil:
                self.drop_output(outfile)
        hist = [tuple(x) for x in cres["hist"]]
        n = sum(c for _, c in hist)
        r = {"offered_words": words_rate, "offered_lines": lines_rate,
             "samples": n, "expected": sres["words_window"],
             "lost": sres["words_window"] - cres["in_window"],
             "p50": pct(hist, 0.5), "p90": pct(hist, 0.9), "p99": pct(hist, 0.99),
             "p999": pct(hist, 0.999), "max": hist[-1][0] if hist else float("nan"),
             "mean": sum(v * c for v, c in hist) / n if n else float("nan"),
             "sender": sres, "per_second": cres["per_second"],
             "engine_cpu": cpu1 - cpu0,
             "bp_pauses": len(eng.matches(re.compile(r"pausing sources")))}
        if resil:
            cuts = [x[2] for x in eng.matches(CUT)]
            cps = [x[2] for x in eng.matches(COMPLETE)]
            r["checkpoints"] = len(cps)
            r["pause_max"] = max([float(c.group(5)) for c in cuts] or [float("nan")])
            r["cp_ms_med"] = median([float(c.group(4)) for c in cps])
            r["cp_ms_max"] = max([float(c.group(4)) for c in cps] or [float("nan")])
            r["cp_bytes"] = median([float(c.group(3)) for c in cps])
        log("(4) round %d, %s: %s words/s offered (%.0f lines/s); %d samples, %d lost; p50 %s, "
            "p99 %s, p99.9 %s, max %s; sender late > 1 ms %d times (worst %.1f ms), "
            "longest write %.1f ms%s"
            % (rnd, "resilience on, 100 ms checkpoints, exactly-once" if resil else
               "resilience off, plain receiver", fmt_int(words_rate), lines_rate, n, r["lost"],
               fmt_ms(r["p50"]), fmt_ms(r["p99"]), fmt_ms(r["p999"]), fmt_ms(r["max"]),
               sres["slips"], sres["worst_late_ms"], sres["longest_write_ms"],
               "; %d checkpoints, cut -> complete median %.1f ms, max %.1f ms, loop paused "
               "<= %.2f ms" % (r["checkpoints"], r["cp_ms_med"], r["cp_ms_max"],
                               r["pause_max"]) if resil else ""))
        return r

    def run(self, phase, fn):
        try:
            return fn()
        except BenchError as e:
            log("%s FAILED: %s" % (phase, e))
            self.errors.setdefault(phase, str(e).splitlines()[0])
            return None


# ------------------------------------------------------------------ report

def report(b, o):
    rows, details = [], []
    R = b.results

    # (1)
    tp = R.get("throughput", [])
    offs = [x["off"]["rate"] for x in tp if x.get("off")]
    ons = [x["on"]["rate"] for x in tp if x.get("on")]
    eos = [x["eo"] for x in tp if x.get("eo")]
    if offs and ons:
        ratio = median(ons) / median(offs)
        per = ", ".join("%.2f" % (x["on"]["rate"] / x["off"]["rate"]) for x in tp
                        if x.get("on") and x.get("off"))
        rows += [("(1) word count, generator source, resilience off, words/s",
                  fmt_int(median(offs)), "", ""),
                 ("(1) the same, resilience on (1 s checkpoints, plain receiver), words/s",
                  fmt_int(median(ons)), "", ""),
                 ("(1) on / off (ratio of medians)", "%.2f (rounds: %s)" % (ratio, per),
                  ">= %.1f" % TARGET_THROUGHPUT_RATIO,
                  verdict(ratio >= TARGET_THROUGHPUT_RATIO))]
        if eos:
            eo_total = median([x["total_rate"] for x in eos])
            off_total = median([x["off"]["total_rate"] for x in tp if x.get("off")])
            rows.append(("(1) context: resilience on with an exactly-once receiver, words/s "
                         "(engine ready -> last record committed)",
                         "%s (%.2f x off measured the same way: %s)"
                         % (fmt_int(eo_total), eo_total / off_total, fmt_int(off_total)),
                         "", ""))
        for i, x in enumerate(tp):
            for kind in ("off", "on", "eo"):
                y = x.get(kind)
                if not y:
                    continue
                details.append(
                    "- (1) round %d, %s: %d words; 10-90 %% of the output in %.2f s: %s "
                    "words/s; engine ready -> last record at the receiver %.2f s (%s "
                    "words/s); ready -> generator done %.2f s (%s words/s); engine CPU %.1f s%s"
                    % (i + 1, {"off": "resilience off", "on": "resilience on, plain receiver",
                               "eo": "resilience on, exactly-once receiver"}[kind],
                       y["words"], y["window_s"], fmt_int(y["rate"]), y["total_s"],
                       fmt_int(y["total_rate"]), y["engine_s"], fmt_int(y["engine_rate"]),
                       y["cpu"],
                       "; %d checkpoints complete, median %s bytes, %.1f ms cut -> complete, "
                       "loop paused <= %.2f ms (median %.2f ms); sources paused for the output "
                       "backlog %d times" % (y["checkpoints"], fmt_int(y["cp_bytes"]),
                                              y["cp_ms"], y["pause_max"], y["pause_med"],
                                              y["bp_pauses"]) if kind != "off" else ""))
        details.append(
            "- (1) setup: bench/apps/wc_gen.py --gen-lines %s (the example's word count, a "
            "generator source), output to this script's TCP receiver (off, on) or to "
            "`bettong receive --exactly-once` tailed by it (context). words/s = 80 %% of the "
            "output over the time from its 10 %% to its 90 %% (the steady state; start-up and"
            " the last checkpoint's wait are left out). The exactly-once output comes in 1 s "
            "commits, so its figure is all words over engine ready -> last record, which "
            "includes the wait for the last commit. \"Sources paused for the output "
            "backlog\" counts the engine's \"pausing sources\" lines: over 8 MiB waiting in "
            "the sinks, or over 64 MiB of output kept for exactly-once receivers until its "
            "checkpoint is complete" % fmt_int(o.wc_lines))
        if min(x["off"]["total_s"] for x in tp if x.get("off")) < 5:
            details.append("- (1) note: a resilience-off run took under 5 s; raise --wc-lines")
    else:
        rows.append(("(1) throughput on / off", "-", ">= %.1f" % TARGET_THROUGHPUT_RATIO,
                     "not measured"))

    # (2)
    ck = [x for x in R.get("checkpoint", []) if x]
    if ck:
        fb, inb = median([x["full_bytes"] for x in ck]), median([x["inc_bytes"] for x in ck])
        frac = o.hot / o.keys
        size_ratio = inb / fb
        follows = size_ratio <= TARGET_DELTA_SLACK * frac
        rows += [
            ("(2) full checkpoint, %s keys: size" % fmt_int(o.keys), "%s bytes (%s)"
             % (fmt_int(fb), fmt_mb(fb)), "", ""),
            ("(2) full checkpoint: loop pause / cut -> complete",
             "%.1f ms / %.1f ms" % (median([x["full_pause"] for x in ck]),
                                    median([x["full_ms"] for x in ck])), "", ""),
            ("(2) incremental checkpoint, %s keys changed (%.1f %%): size"
             % (fmt_int(o.hot), 100 * frac), "%s bytes" % fmt_int(inb), "", ""),
            ("(2) incremental: loop pause / cut -> complete",
             "%.1f ms / %.1f ms" % (median([x["inc_pause"] for x in ck]),
                                    median([x["inc_ms"] for x in ck])), "", ""),
            ("(2) incremental / full size", "%.2f %% (%.1f bytes per changed key, full "
             "%.1f bytes per key)" % (100 * size_ratio, inb / o.hot, fb / o.keys),
             "follows the changed keys (~%.0f %%; <= %.1f x that)"
             % (100 * frac, TARGET_DELTA_SLACK),
             verdict(follows)),
        ]
        for i, x in enumerate(ck):
            details.append(
                "- (2) round %d: full checkpoint %d: %d keys, %s bytes, loop paused %.1f ms, "
                "complete %.1f ms after its cut; incremental checkpoints %s after it: "
                "(keys, bytes, pause ms, ms to complete) %s; the run's longest loop pause "
                "%.1f ms"
                % (i + 1, x["full_n"], x["full_keys"], fmt_int(x["full_bytes"]),
                   x["full_pause"], x["full_ms"], ", ".join(map(str, x["inc_n"])),
                   "; ".join("%d, %s, %.1f, %.1f" % (k, fmt_int(s), p, t)
                             for k, s, p, t in x["inc_all"]), x["longest_pause"]))
        if not follows:
            details.append(
                "- (2) note: the incremental checkpoint is %.2f %% of the full one with "
                "%.1f %% of the keys changed: %.1f bytes per changed key against %.1f per key "
                "in the full one. A delta is one pickle per store ([slot, {key: state}, ...] "
                "for every routing slot of 4,096 with a changed key): each changed slot adds "
                "its number and a dict of its own, so with few changed keys per slot the "
                "delta costs more per key than the full checkpoint"
                % (100 * size_ratio, 100 * frac, inb / o.hot, fb / o.keys))
    else:
        rows.append(("(2) checkpoint time and size", "-", "", "not measured"))

    # (3)
    rv = R.get("recovery")
    if rv and rv["kills"]:
        ks = rv["kills"]
        first = median([k["to_first"] for k in ks])
        chain_b = median([k["chain"]["bytes"] for k in ks])
        rows += [
            ("(3) context, 1 worker: state at the kill: keys / checkpoint bytes loaded",
             "%s / %s" % (fmt_int(median([k["recovered_keys"] for k in ks])),
                          fmt_mb(chain_b) if chain_b == chain_b else "-"), "~100 MB", ""),
            ("(3) context, 1 worker: engine's own recovery figure (\"recovered ... T ms\")",
             "%.0f ms (kills: %s)" % (median([k["engine_ms"] for k in ks]),
                                      ", ".join("%.0f" % k["engine_ms"] for k in ks)), "", ""),
            ("(3) context, 1 worker: SIGKILL -> engine ready (restarted at once)",
             "%.2f s" % median([k["to_ready"] for k in ks]), "", ""),
            ("(3) context, 1 worker: SIGKILL -> sender reconnected / sink sends plain output "
             "(after its 0.5 s wait for an exactly-once greeting)",
             "%.2f s / %.2f s" % (median([k["to_resume"] for k in ks]),
                                  median([k["to_plain"] for k in ks])), "", ""),
            ("(3) context, 1 worker: SIGKILL -> first output at the receiver",
             "%.2f s (kills: %s)" % (first, ", ".join("%.2f" % k["to_first"] for k in ks)),
             "", "context"),
        ]
        for k in ks:
            details.append(
                "- (3) 1 worker, kill %d, 300 ms after checkpoint %d completed (state: %s): "
                "restarted %.3f s after the SIGKILL; \"recovered from checkpoint %d: %s keys, "
                "%.0f ms\" logged at %.2f s; ready at %.2f s; the resumable sender reconnected "
                "at %.2f s; the sink connected at %.2f s and, no exactly-once greeting having "
                "come, went plain at %.2f s; first output record at the receiver %.2f s "
                "after the SIGKILL"
                % (k["kill"], k["checkpoint"], k["chain"]["text"], k["to_exec"],
                   k["recovered_n"], fmt_int(k["recovered_keys"]), k["engine_ms"],
                   k["to_recovered_log"], k["to_ready"], k["to_resume"], k["to_sink"],
                   k["to_plain"], k["to_first"]))
        details.append(
            "- (3) setup, 1 worker (context): bench/apps/keys_state.py --keys %s --value-bytes "
            "%d (filled by its generator in %.1f s), 1 s checkpoints, a TCP pipeline fed by "
            "`bettong send --resumable --rate %d --repeat 0` into a plain TCP receiver (this "
            "script's, stamping the first bytes of each connection); `bettong run` killed and "
            "started again at once with the same command line"
            % (fmt_int(rv["keys"]), o.recovery_value_bytes, rv["fill_s"], o.tick_rate))
    rc = R.get("recovery2")
    if rc and rc["kills"]:
        ks = rc["kills"]
        names = sorted(ks[0]["recovered"])
        firsts = [k["to_first"] for k in ks]
        first = median(firsts)
        over = [x for x in firsts if x > TARGET_RECOVERY_S]
        state_b = median([k["state_bytes"] for k in ks])
        rows += [
            ("(3) 2 workers: state at the kill: keys (both workers) / checkpoint bytes loaded "
             "(both workers)",
             "%s / %s" % (fmt_int(median([k["recovered_keys"] for k in ks])),
                          fmt_mb(state_b) if state_b == state_b else "-"), "~100 MB", ""),
            ("(3) 2 workers: each worker's \"recovered ... T ms\" (median)",
             ", ".join("%s %.0f ms" % (w, median([k["recovered"][w]["ms"] for k in ks]))
                       for w in names), "", ""),
            ("(3) 2 workers: SIGKILL -> the parent has restarted both workers",
             "%.2f s (kills: %s)"
             % (median([max(r["at"] for r in k["restart"].values()) for k in ks]),
                ", ".join("%s %.2f, restart %d" % (
                    k["victim"], max(r["at"] for r in k["restart"].values()),
                    max(r["no"] for r in k["restart"].values())) for k in ks)), "", ""),
            ("(3) 2 workers: SIGKILL -> \"cluster: formed with 2 workers\"",
             "%.2f s (kills: %s)" % (median([k["to_formed"] for k in ks]),
                                     ", ".join("%s %.2f" % (k["victim"], k["to_formed"])
                                               for k in ks)), "", ""),
            ("(3) 2 workers: SIGKILL -> sender reconnected / first sink sends plain output",
             "%.2f s / %.2f s" % (median([k["to_resume"] for k in ks]),
                                  median([min(k["plain"].values()) for k in ks])), "", ""),
            ("(3) SIGKILL -> first output at the receiver, 2 workers (the target)",
             "%.2f s (kills: %s)" % (first, ", ".join("%s %.2f" % (k["victim"], k["to_first"])
                                                     for k in ks)),
             "<= %.0f s" % TARGET_RECOVERY_S,
             verdict(first <= TARGET_RECOVERY_S) +
             (" (median; %d of %d kills over)" % (len(over), len(ks)) if over else "")),
        ]
        for k in ks:
            details.append(
                "- (3) 2 workers, kill %d: SIGKILL of %s 300 ms after checkpoint %d completed "
                "(state: %s); the parent noted it at %.3f s and restarted %s; the cluster "
                "loaded checkpoint %s; %s; formed again at %.2f s; ready at %s; the resumable "
                "sender reconnected to %s at %.2f s; the sinks went plain (no exactly-once "
                "greeting) at %s; first output record at the receiver %.2f s after the SIGKILL"
                % (k["kill"], k["victim"], k["checkpoint"],
                   "; ".join("%s %s" % (w, k["chains"][w]["text"]) for w in names),
                   k["to_noticed"],
                   ", ".join("%s at %.2f s (restart %d)" % (w, k["restart"][w]["at"],
                                                            k["restart"][w]["no"])
                             for w in names),
                   k["loads"], "; ".join(
                       "%s \"recovered from checkpoint %d: %s keys, %.0f ms\" logged at %.2f s"
                       % (w, k["recovered"][w]["n"], fmt_int(k["recovered"][w]["keys"]),
                          k["recovered"][w]["ms"], k["recovered"][w]["at"]) for w in names),
                   k["to_formed"], ", ".join("%s %.2f s" % (w, k["ready"][w]) for w in names),
                   k["resume_worker"], k["to_resume"],
                   ", ".join("%s %.2f s" % (w, k["plain"][w]) for w in names), k["to_first"]))
        details.append(
            "- (3) setup, 2 workers (the target): the same application and sender on "
            "`bettong run --workers 2` (both workers share the --in port; each runs the "
            "generator, which touches every key, and the keys' slots are spread over both; "
            "filled in %.1f s); each kill SIGKILLs one worker, alternating worker1 (the "
            "initializer, which runs the coordinator) and worker2, %s; the parent restarts "
            "the killed worker, the other exits 75 and is restarted too, and the cluster forms "
            "again from its last complete checkpoint. The parent pauses 100 ms before it "
            "restarts a worker (doubling with each restart of that worker within 60 s), one "
            "worker after the other. Both figures include the resumable sender's reconnect "
            "backoff (50 ms doubling to 250 ms) and each sink's 0.5 s wait for an "
            "exactly-once greeting (docs/resilience.md)"
            % (rc["fill_s"], "%.0f s apart" % o.cluster_kill_spacing
               if o.cluster_kill_spacing > 0 else "one right after the other recovered"))
    elif "recovery2" in R:
        rows.append(("(3) SIGKILL -> first output at the receiver, 2 workers (the target)", "-",
                     "<= %.0f s" % TARGET_RECOVERY_S, "not measured"))
    if not rv and not rc:
        rows.append(("(3) recovery", "-", "<= %.0f s" % TARGET_RECOVERY_S, "not measured"))

    # (4)
    lt = R.get("latency")
    if lt and lt.get("loads"):
        rows.append(("(4) max rate of wc_stamp.py over TCP (resilience off), words/s",
                     "%s (runs: %s)" % (fmt_int(lt["max_rate"]),
                                        ", ".join(fmt_int(x) for x in lt["max_runs"])), "", ""))
        if lt["eo_max_runs"]:
            eo_peak = median([x[0] for x in lt["eo_max_runs"]])
            rows.append(("(4) context: max rate with resilience on, 100 ms checkpoints, "
                         "exactly-once, words/s",
                         "%s (%.2f x off; runs: %s)" % (
                             fmt_int(eo_peak), eo_peak / lt["max_rate"],
                             ", ".join(fmt_int(x[0]) for x in lt["eo_max_runs"])), "", ""))
        for li, (load, lr) in enumerate(lt["loads"]):
            offs = [x["off"] for x in lr if x.get("off")]
            ons = [x["on"] for x in lr if x.get("on")]
            what = "%s load (%s words/s)" % (
                "half" if load == 0.5 else "%.0f %%" % (100 * load),
                fmt_int(lt["max_rate"] * load))
            ctx = "" if li == 0 else "context: "
            if offs and ons:
                p50o, p99o = median([x["p50"] for x in offs]), median([x["p99"] for x in offs])
                p50n, p99n = median([x["p50"] for x in ons]), median([x["p99"] for x in ons])
                rows += [
                    ("(4) %slatency p50 / p99 at %s, resilience off, plain receiver"
                     % (ctx, what), "%s / %s" % (fmt_ms(p50o), fmt_ms(p99o)), "", ""),
                    ("(4) %slatency p50 / p99 at %s, resilience on, 100 ms checkpoints, "
                     "exactly-once" % (ctx, what),
                     "%s / %s" % (fmt_ms(p50n), fmt_ms(p99n)), "", ""),
                    ("(4) %son / off at %s: p50, p99 (ratios of medians)" % (ctx, what),
                     "%.1f x, %.1f x" % (p50n / p50o, p99n / p99o), "",
                     "no target" if li == 0 else ""),
                ]
            for i, x in enumerate(lr):
                for kind in ("off", "on"):
                    y = x.get(kind)
                    if not y:
                        continue
                    sd = y["sender"]
                    worst = sorted(y["per_second"], key=lambda kv: -kv[1])[:3]
                    details.append(
                        "- (4) %s, round %d, resilience %s: %s words/s offered (%.0f lines/s);"
                        " %d samples, %d lost; p50 %s, p90 %s, p99 %s, p99.9 %s, max %s, mean "
                        "%s; engine CPU %.1f s; sender late > 1 ms %d times (slipped %.0f ms "
                        "in all, worst %.1f ms), longest write %.1f ms%s; worst seconds of the"
                        " window (second: max): %s"
                        % (what, i + 1, kind, fmt_int(y["offered_words"]), y["offered_lines"],
                           y["samples"], y["lost"], fmt_ms(y["p50"]), fmt_ms(y["p90"]),
                           fmt_ms(y["p99"]), fmt_ms(y["p999"]), fmt_ms(y["max"]),
                           fmt_ms(y["mean"]), y["engine_cpu"], sd["slips"], sd["slipped_ms"],
                           sd["worst_late_ms"], sd["longest_write_ms"],
                           "; %d checkpoints, cut -> complete median %.1f ms, max %.1f ms, "
                           "median %s bytes, loop paused <= %.2f ms; sources paused for the "
                           "output backlog %d times; %d acknowledgements read by the sender"
                           % (y["checkpoints"], y["cp_ms_med"], y["cp_ms_max"],
                              fmt_int(y["cp_bytes"]), y["pause_max"], y["bp_pauses"],
                              sd["acks"]) if kind == "on" else
                           "; sources paused for the output backlog %d times" % y["bp_pauses"],
                           ", ".join("%d: %s" % (sec, fmt_ms(us)) for sec, us in worst)))
        details.append(
            "- (4) setup: bench/apps/wc_stamp.py (the word count carrying the sender's "
            "CLOCK_MONOTONIC stamp to every output line); the maximum rate with `bettong send`"
            " at full speed (%d corpus passes, from starting the sender to the last record; "
            "median of the runs); then a paced Python sender (this script, ~1 ms ticks) for "
            "%.0f s after %.0f s of warm-up; off: a plain Python TCP receiver stamping each "
            "read; on: a resumable sender, `bettong receive --exactly-once --out FILE` and a "
            "Python tailer reading FILE every 1 ms (adds ~0.5 ms on average). Every output "
            "line (one per word) is a sample; stamps in microseconds"
            % (o.maxrate_passes, o.latency_seconds, o.latency_warmup))
    else:
        rows.append(("(4) latency", "-", "", "not measured"))
    return rows, details


def machine():
    model = "?"
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    try:
        tree = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                              capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=REPO, capture_output=True, text=True).stdout.strip()
    except OSError:
        tree, dirty = "?", ""
    nproc = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    return model, nproc, tree + (" (uncommitted changes)" if dirty else "")


# ------------------------------------------------------------------ main

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", default=os.path.join(REPO, "build", "bettong"))
    ap.add_argument("--quick", action="store_true",
                    help="everything small (about a minute), to test the harness")
    ap.add_argument("--record", action="store_true",
                    help="append a section to bench/RESULTS.md")
    ap.add_argument("--only", help="comma-separated parts: throughput,checkpoint,recovery,"
                    "latency (default all)")
    ap.add_argument("--rounds", type=int, default=3,
                    help="rounds of (1), (2) and (4) (default 3)")
    ap.add_argument("--wc-lines", type=int, default=600000,
                    help="(1) lines the word count generates per run (default 600000)")
    ap.add_argument("--no-eo-throughput", action="store_true",
                    help="(1) skip the context run with an exactly-once receiver")
    ap.add_argument("--keys", type=int, default=1000000, help="(2) keys of state")
    ap.add_argument("--hot", type=int, default=10000,
                    help="(2) keys touched again and again after the fill (default 1 %%)")
    ap.add_argument("--incrementals", type=int, default=3,
                    help="(2) incremental checkpoints to read after the full one")
    ap.add_argument("--recovery-keys", type=int, default=1000000)
    ap.add_argument("--recovery-value-bytes", type=int, default=82,
                    help="(3) bytes of value per key (82: ~100 bytes pickled per key)")
    ap.add_argument("--kills", type=int, default=3,
                    help="(3) kills and restarts of the one worker (context)")
    ap.add_argument("--cluster-kills", type=int, default=4,
                    help="(3) kills on 2 workers, alternating worker1 and worker2 (default 4)")
    ap.add_argument("--cluster-kill-spacing", type=float, default=62.0,
                    help="(3) seconds from one kill on 2 workers to the next (default 62: the "
                    "--workers parent pauses 100 ms before restarting a worker, doubling with "
                    "each restart of it within 60 s; 62 s apart every kill is a first crash)")
    ap.add_argument("--recovery-workers", default="1,2",
                    help="(3) which recoveries to measure: 1 (one worker, context), 2 (the "
                    "target, --workers 2), or both (default 1,2)")
    ap.add_argument("--tick-rate", type=int, default=2000,
                    help="(3) records/s of the resumable sender")
    ap.add_argument("--maxrate-passes", type=int, default=300,
                    help="(4) corpus passes of each maximum rate run")
    ap.add_argument("--maxrate-runs", type=int, default=3)
    ap.add_argument("--load", type=float, default=0.5,
                    help="(4) offered rate as a fraction of the maximum (default 0.5)")
    ap.add_argument("--max-rate", type=float,
                    help="(4) take this maximum rate (words/s) instead of measuring it")
    ap.add_argument("--extra-loads", default="0.25",
                    help="(4) further loads measured the same way, for context "
                    "(comma-separated fractions; default 0.25; '' for none)")
    ap.add_argument("--no-eo-max-rate", action="store_true",
                    help="(4) skip the maximum rate runs with exactly-once output (context)")
    ap.add_argument("--latency-seconds", type=float, default=10.0)
    ap.add_argument("--latency-warmup", type=float, default=2.0)
    ap.add_argument("--keep-checkpoints", action="store_true",
                    help="keep the checkpoint directories and output files in bench/out/")
    # Internal: the helper processes.
    ap.add_argument("--_send", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--_collect", dest="mode", help=argparse.SUPPRESS)
    ap.add_argument("--to", help=argparse.SUPPRESS)
    ap.add_argument("--rate", type=float, help=argparse.SUPPRESS)
    ap.add_argument("--start-at", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--warmup", type=float, help=argparse.SUPPRESS)
    ap.add_argument("--seconds", type=float, help=argparse.SUPPRESS)
    ap.add_argument("--stream", help=argparse.SUPPRESS)
    ap.add_argument("--w-lo", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--w-hi", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--marks", help=argparse.SUPPRESS)
    o = ap.parse_args()
    if o._send:
        return run_sender(o)
    if o.mode:
        return run_collector(o)

    if o.quick:
        o.rounds = 1
        o.wc_lines = min(o.wc_lines, 30000)
        o.keys, o.hot = min(o.keys, 100000), min(o.hot, 1000)
        o.incrementals = min(o.incrementals, 2)
        o.recovery_keys = min(o.recovery_keys, 100000)
        o.kills = 1
        o.cluster_kills = min(o.cluster_kills, 2)
        o.cluster_kill_spacing = 0.0
        o.maxrate_passes = min(o.maxrate_passes, 50)
        o.maxrate_runs = 1
        o.latency_seconds, o.latency_warmup = 3.0, 1.0
    parts = ["throughput", "checkpoint", "recovery", "latency"]
    only = set(o.only.split(",")) if o.only else set(parts)
    if only - set(parts):
        ap.error("unknown part(s): %s" % ", ".join(sorted(only - set(parts))))
    if not set(o.recovery_workers.split(",")) <= {"1", "2"}:
        ap.error("--recovery-workers takes 1, 2 or 1,2")
    if not os.access(o.bin, os.X_OK):
        sys.exit("bench: no bettong binary at %s (run make first)" % o.bin)

    command = shlex.join([sys.executable, os.path.relpath(os.path.abspath(sys.argv[0]), REPO)]
                         + sys.argv[1:])
    started = datetime.datetime.utcnow()
    b = Bench(o)
    log("logs in %s" % os.path.relpath(b.outdir, REPO))
    load0, cpu0 = os.getloadavg(), cpu_times()
    t_begin = time.monotonic()

    def on_term(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_term)
    try:
        if "throughput" in only:
            tp = b.results["throughput"] = []
            kinds = ["off", "on"] + ([] if o.no_eo_throughput else ["eo"])
            for rnd in range(1, o.rounds + 1):
                # Alternate the order, so drift hurts every configuration alike.
                order = kinds if rnd % 2 else kinds[::-1]
                row = {}
                for kind in order:
                    row[kind] = b.run("throughput", lambda: b.throughput(kind, rnd))
                tp.append(row)
        if "checkpoint" in only:
            b.results["checkpoint"] = [b.run("checkpoint", lambda: b.checkpoints(rnd))
                                       for rnd in range(1, o.rounds + 1)]
        if "recovery" in only:
            rw = set(o.recovery_workers.split(","))
            if "1" in rw:
                b.results["recovery"] = b.run("recovery (1 worker)", b.recovery)
            if "2" in rw:
                b.results["recovery2"] = b.run("recovery (2 workers)", b.recovery_cluster)
        if "latency" in only:
            if o.max_rate:
                runs = [(o.max_rate, 0)]
            else:
                runs = [b.run("latency", lambda: b.max_rate(i + 1))
                        for i in range(o.maxrate_runs)]
            runs = [x for x in runs if x]
            eo_runs = [] if o.no_eo_max_rate else [
                b.run("latency", lambda: b.max_rate(i + 1, eo=True))
                for i in range(o.maxrate_runs)]
            eo_runs = [x for x in eo_runs if x]
            if runs:
                peak = median([x[0] for x in runs])
                lt = b.results["latency"] = {
                    "max_rate": peak, "max_runs": [x[0] for x in runs],
                    "eo_max_runs": eo_runs, "loads": []}
                loads = [o.load] + [float(x) for x in o.extra_loads.split(",") if x]
                for load in loads:
                    rounds = []
                    for rnd in range(1, o.rounds + 1):
                        order = (False, True) if rnd % 2 else (True, False)
                        row = {}
                        for resil in order:
                            row["on" if resil else "off"] = b.run(
                                "latency", lambda: b.latency(resil, rnd, peak * load))
                        rounds.append(row)
                    lt["loads"].append((load, rounds))
    except KeyboardInterrupt:
        log("interrupted")
        b.errors["run"] = "interrupted"
    finally:
        Proc.stop_all()
        try:
            os.unlink(b.bin)
        except OSError:
            pass
    load1, cpu1 = os.getloadavg(), cpu_times()
    elapsed = time.monotonic() - t_begin

    rows, details = report(b, o)
    d = [a - c for a, c in zip(cpu1, cpu0)]
    tot = sum(d) or 1
    details.append("- machine load: load average %.2f at the start, %.2f at the end; CPU steal "
                   "%.1f %%, all CPUs busy %.0f %% over the run (%.0f s)"
                   % (load0[0], load1[0], 100.0 * d[7] / tot,
                      100.0 * (tot - d[3] - d[4]) / tot, elapsed))
    for phase, err in b.errors.items():
        details.append("- ERROR in %s: %s" % (phase, err))
    print()
    for name, value, target, verd in rows:
        print("%-72s %-40s %-24s %s" % (name, value, target, verd))
    print()
    print("\n".join(details))
    if o.record:
        model, nproc, tree = machine()
        lines = ["", "## Resilience (bench/bench_resilience.py), %s UTC%s"
                 % (started.strftime("%Y-%m-%d %H:%M"), " (quick)" if o.quick else ""), "",
                 "- machine: nproc %s, %s, Linux %s" % (nproc, model, platform.release()),
                 "- tree: %s" % tree,
                 "- command (from the repository root): `%s`" % command,
                 "- one worker throughout, except (3)'s target: recovery on 2 workers "
                 "(`bettong run --workers 2`); (3) on one worker is context", "",
                 "| figure | value | target | verdict |", "|---|---|---|---|"]
        lines += ["| %s | %s | %s | %s |" % r for r in rows]
        lines += [""] + details
        with open(RESULTS, "a", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
        log("section appended to %s" % os.path.relpath(RESULTS, REPO))
    return 1 if b.errors else 0


if __name__ == "__main__":
    sys.exit(main())
