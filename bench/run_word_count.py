#!/usr/bin/env python3
"""Word count benchmark: Bettong end to end against two baselines from the same run.

    make bench
    python3 bench/run_word_count.py --bin build/bettong [--quick] [--soak-seconds 60]

Phases (all on this machine, in this run, so the ratios are not hurt by the noise
between runs):

  a. in-process limit: build/bench/inproc calls the application's plain functions
     in a C loop in one embedded interpreter, no I/O.
  b. bettong end to end: `bettong receive` <- `bettong run word_count.py` <-
     `bettong send --repeat`; words/s = output records / receive's time.
  c. the same with bench/asyncio_wc.py (plain Python asyncio) in place of the engine.
     (a), (b), (c) run back to back in --rounds rounds (default 3); the figures are
     medians, the ratios medians of the per-round ratios.
  d. latency at half of (b)'s rate: build/bench/latency is both source client and
     sink; p50/p99/p999/max of line -> marker-output time. The asyncio server is
     measured at the same offered rate too, as context for the machine's noise.
  e. peak RSS of `bettong run` (and its children) over a --soak-seconds full-speed run,
     sampled every second (VmRSS), plus the kernel's high-water mark (VmHWM).

Prints a table with the ratios and the targets, and (unless --quick) adds a dated
section to bench/RESULTS.md. Process logs go to bench/out/<time>/.
"""

import argparse
import collections
import datetime
import importlib.util
import math
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
APP_DIR = os.path.join(REPO, "examples", "word_count")
APP = os.path.join(APP_DIR, "word_count.py")
DEFAULT_CORPUS = os.path.join(APP_DIR, "data", "bettong_tales.txt")
RESULTS = os.path.join(HERE, "RESULTS.md")

TARGET_INPROC_RATIO = 0.7
TARGET_ASYNCIO_RATIO = 10.0
TARGET_P99_US = 1000.0
TARGET_RSS_MB = 200.0
FLAT_GROWTH = 0.10  # RSS growth (10 % in, to the end) above this is "not flat"

LISTENING = re.compile(r"listening on (\S+):(\d+)")
RECV_SUMMARY = re.compile(r"bettong receive: (\d+) records \((\d+) bytes\) in ([0-9.]+) s")
SEND_SUMMARY = re.compile(r"bettong send: sent (\d+) records \((\d+) bytes\) in ([0-9.]+) s")
KV = re.compile(r"(\w+)=([-0-9.]+)")


class BenchError(Exception):
    pass


def log(msg):
    print("bench: " + msg, flush=True)


# ------------------------------------------------------------------ processes

class Proc:
    """A child process whose stdout and stderr lines are collected (and logged to
    files) by two threads; notes the first "listening on HOST:PORT"."""

    registry = []

    def __init__(self, name, argv, logdir, cwd=REPO):
        self.name = name
        self.argv = argv
        self.lines = []
        self.port = None
        self.listening = threading.Event()
        self.lock = threading.Lock()
        self.logpath = os.path.join(logdir, name + ".log")
        self.logf = open(self.logpath, "w", encoding="utf-8")
        self.logf.write("$ " + shlex.join(argv) + "\n")
        self.logf.flush()
        self.p = subprocess.Popen(argv, cwd=cwd, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.pid = self.p.pid
        Proc.registry.append(self)
        self.threads = [threading.Thread(target=self._pump, args=(s,), daemon=True)
                        for s in (self.p.stdout, self.p.stderr)]
        for t in self.threads:
            t.start()

    def _pump(self, stream):
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            with self.lock:
                self.lines.append(line)
                self.logf.write(line + "\n")
                self.logf.flush()
            m = LISTENING.search(line)
            if m and self.port is None:
                self.port = int(m.group(2))
                self.listening.set()

    def wait_listening(self, timeout):
        deadline = time.monotonic() + timeout
        while not self.listening.wait(0.05):
            if self.p.poll() is not None or time.monotonic() > deadline:
                raise BenchError("%s did not report a listening port:\n%s"
                                 % (self.name, self.tail()))
        return self.port

    def alive(self):
        return self.p.poll() is None

    def wait(self, timeout=None):
        try:
            rc = self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        for t in self.threads:
            t.join(2)
        return rc

    def stop(self, sig=signal.SIGTERM, timeout=10):
        """Signal the process, wait, kill it if it lingers. Returns the exit code."""
        if self.p.poll() is None:
            try:
                self.p.send_signal(sig)
            except ProcessLookupError:
                pass
            if self.wait(timeout) is None:
                self.p.kill()
                self.wait(5)
        else:
            self.wait(5)
        if not self.logf.closed:
            with self.lock:
                self.logf.write("[exit %s]\n" % self.p.returncode)
                self.logf.close()
        return self.p.returncode

    def find(self, regex):
        with self.lock:
            for line in self.lines:
                m = regex.search(line)
                if m:
                    return m
        return None

    def tail(self, n=15):
        with self.lock:
            return "\n".join("    " + l for l in self.lines[-n:]) or "    (no output)"

    @classmethod
    def stop_all(cls):
        for p in cls.registry:
            if p.alive():
                p.stop(signal.SIGKILL, 5)


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def is_listening(port):
    """Whether some socket listens on `port`, from /proc/net/tcp (no connection made,
    so the server never sees a stray client)."""
    want = ":%04X" % port
    found_table = False
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                found_table = True
                for row in f:
                    cols = row.split()
                    if cols[1].endswith(want) and cols[3] == "0A":
                        return True
        except (OSError, StopIteration):
            pass
    if not found_table:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            return False
    return False


def wait_port(port, proc, timeout=20):
    deadline = time.monotonic() + timeout
    while not is_listening(port):
        if not proc.alive():
            raise BenchError("%s exited with %s before listening on %d:\n%s"
                             % (proc.name, proc.p.returncode, port, proc.tail()))
        if time.monotonic() > deadline:
            raise BenchError("%s did not listen on port %d within %d s:\n%s"
                             % (proc.name, port, timeout, proc.tail()))
        time.sleep(0.02)


def process_tree(pid):
    """pid and all its descendants (from /proc/*/stat)."""
    children = collections.defaultdict(list)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        children[ppid].append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, ()))
    return out


def status_kb(pid, field):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def tree_kb(pid, field):
    return sum(status_kb(p, field) for p in process_tree(pid))


def loadavg():
    try:
        with open("/proc/loadavg") as f:
            return f.read().split()[0]
    except OSError:
        return "?"


def cpu_times():
    """user nice system idle iowait irq softirq steal, all CPUs (jiffies)."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()[1:9]
        return [int(x) for x in fields] + [0] * (8 - len(fields))
    except (OSError, ValueError):
        return None


def tree_cpu_seconds(pid):
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for p in process_tree(pid):
        try:
            with open("/proc/%d/stat" % p) as f:
                stat = f.read()
            fields = stat[stat.rindex(")") + 2:].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except (OSError, ValueError, IndexError):
            pass
    return total / tick


# ------------------------------------------------------------------ the workload

def load_app():
    sys.path.insert(0, os.path.join(REPO, "python"))
    spec = importlib.util.spec_from_file_location("word_count", APP)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class Corpus:
    """The corpus as `bettong send` sends it (one record per line) and what one pass
    of it produces, computed by running the application's own functions here."""

    def __init__(self, path, app):
        self.path = path
        with open(path, "rb") as f:
            raw = f.read()
        lines = raw.split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()
        self.lines = len(lines)
        self.bytes = len(raw)
        dec, split = app.decoder._bettong_fn, app.split._bettong_fn
        part, count = app.partition._bettong_fn, app.count_word._bettong_fn
        enc = app.encoder._bettong_fn
        states = {}
        self.per_pass = collections.Counter()
        self.outputs = 0      # output records (= lines of output) per pass
        self.words = 0        # words per pass
        nonempty = 0
        for payload in lines:
            data = dec(payload)
            words = split(data) if data is not None else None
            if not words:
                continue
            nonempty += 1
            for w in words:
                self.words += 1
                self.per_pass[w] += 1
                key = part(w)
                st = states.get(key)
                if st is None:
                    st = states[key] = app.WordTotals()
                out, _ = count(w, st)
                if out is not None:
                    e = enc(out)
                    self.outputs += (e.count("\n") if isinstance(e, str)
                                     else e.count(b"\n"))
        if self.words == 0 or self.outputs != self.words:
            raise BenchError("corpus %s: %d words give %d output records; the benchmark "
                             "needs one output line per word" % (path, self.words,
                                                                 self.outputs))
        self.words_per_line = self.words / max(1, nonempty)


def verify_output(path, corpus, repeat):
    """Final count of every word in the output file == count in corpus * repeat."""
    final = {}
    n = 0
    with open(path, "rb") as f:
        for raw in f:
            word, sep, cnt = raw.rstrip(b"\n").rpartition(b" => ")
            if not sep:
                return "malformed output line %r" % raw[:80]
            final[word] = int(cnt)
            n += 1
    expected = {w.encode("utf-8"): c * repeat for w, c in corpus.per_pass.items()}
    problems = []
    if n != corpus.words * repeat:
        problems.append("%d output lines, expected %d" % (n, corpus.words * repeat))
    if final != expected:
        wrong = [w for w in set(final) | set(expected) if final.get(w) != expected.get(w)]
        problems.append("%d words with a wrong final count (e.g. %s)" % (
            len(wrong), ", ".join("%s: %s != %s" % (w.decode("utf-8", "replace"),
                                                    final.get(w), expected.get(w))
                                  for w in sorted(wrong)[:3])))
    return "; ".join(problems) or None


# ------------------------------------------------------------------ phases

class Bench:
    def __init__(self, opts):
        self.opts = opts
        bettong = os.path.abspath(opts.bin)
        self.tools = os.path.abspath(opts.tools_dir or
                                     os.path.join(os.path.dirname(bettong), "bench"))
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        self.outdir = os.path.join(HERE, "out", stamp)
        os.makedirs(self.outdir, exist_ok=True)
        # Run a private copy, so that a rebuild of build/bettong during the run
        # cannot change (or break) what is measured.
        self.bettong = os.path.join(self.outdir, "bettong")
        shutil.copy2(bettong, self.bettong)
        self.python = opts.python or self.embedded_python()
        self.python_version = subprocess.run(
            [self.python, "-c", "import sys; print(sys.version.split()[0])"],
            capture_output=True, text=True).stdout.strip() or "?"
        self.app = load_app()
        self.corpus = Corpus(opts.corpus, self.app)
        self.r = {}          # results
        self.runs = {"inproc": [], "bettong": [], "asyncio": [], "asyncio-emb": []}
        self.rate_guess = {}
        self.errors = {}     # phase -> message
        self.env = None      # (load at start, load at end, steal %, busy %)
        self.env_start = (loadavg(), cpu_times())

    def finish_env(self):
        load0, t0 = self.env_start
        t1 = cpu_times()
        if t0 and t1:
            d = [b - a for a, b in zip(t0, t1)]
            total = sum(d[:8]) or 1
            self.env = (load0, loadavg(), 100.0 * d[7] / total,
                        100.0 * (total - d[3] - d[4]) / total)

    def embedded_python(self):
        """The interpreter the bench tools (and so the engine) were built against."""
        out = subprocess.run([os.path.join(self.tools, "inproc"), "--print-python"],
                             capture_output=True, text=True).stdout.strip()
        if not out or not os.access(out, os.X_OK):
            log("cannot tell which Python inproc embeds; the asyncio server runs on %s"
                % sys.executable)
            return sys.executable
        return out

    # -- (a)
    def inproc(self, rnd):
        secs = self.opts.seconds
        p = Proc("inproc-%d" % rnd, [os.path.join(self.tools, "inproc"), "--corpus",
                                     self.corpus.path, "--seconds", str(secs),
                                     "--app-dir", APP_DIR], self.outdir)
        rc = p.wait(secs * 3 + 60)
        p.stop()
        m = p.find(re.compile(r"^inproc: (.*words_per_s=.*)$"))
        if rc != 0 or not m:
            raise BenchError("inproc failed (exit %s):\n%s" % (rc, p.tail()))
        kv = dict(KV.findall(m.group(1)))
        run = {"round": rnd, "wps": float(kv["words_per_s"]), "words": int(kv["words"]),
               "seconds": float(kv["seconds"]), "cpu_seconds": float(kv["cpu_seconds"])}
        self.runs["inproc"].append(run)
        log("round %d: in-process limit %s words/s (%d words in %.2f s, %.2f s CPU)"
            % (rnd, fmt_rate(run["wps"]), run["words"], run["seconds"], run["cpu_seconds"]))

    # -- servers
    def start_server(self, kind, in_port, out_port, tag):
        addr_in, addr_out = "127.0.0.1:%d" % in_port, "127.0.0.1:%d" % out_port
        if kind == "bettong":
            argv = [self.bettong, "run", APP, "--in", addr_in, "--out", addr_out]
        elif kind == "asyncio-emb":
            argv = [os.path.join(self.tools, "pyembed"), os.path.join(HERE, "asyncio_wc.py"),
                    "--in", addr_in, "--out", addr_out, "--app-dir", APP_DIR]
        else:
            argv = [self.python, os.path.join(HERE, "asyncio_wc.py"), "--in", addr_in,
                    "--out", addr_out, "--app-dir", APP_DIR]
        return Proc("%s-%s" % (kind, tag), argv, self.outdir)

    def throughput(self, kind, words_target, tag, verify):
        """One end-to-end run; returns a dict of figures."""
        c = self.corpus
        repeat = max(1, int(math.ceil(words_target / c.words)))
        expect = repeat * c.words
        out_path = os.path.join(self.outdir, "%s-%s.out" % (kind, tag)) if verify \
            else "/dev/null"
        recv = Proc("receive-%s-%s" % (kind, tag),
                    [self.bettong, "receive", "--listen", "127.0.0.1:0", "--out", out_path,
                     "--expect", str(expect)], self.outdir)
        procs = [recv]
        try:
            out_port = recv.wait_listening(10)
            in_port = free_port()
            server = self.start_server(kind, in_port, out_port, tag)
            procs.append(server)
            wait_port(in_port, server)
            # a generous limit: 10x the time at the in-process rate, at least 2 min
            limit = max(120.0, 10.0 * expect / (self.peak("inproc") or 1e5))
            t0 = time.monotonic()
            send = Proc("send-%s-%s" % (kind, tag),
                        [self.bettong, "send", "--to", "127.0.0.1:%d" % in_port, "--file",
                         c.path, "--repeat", str(repeat)], self.outdir)
            procs.append(send)
            deadline = t0 + limit
            t_sent = None
            while recv.alive():
                if t_sent is None and not send.alive():
                    t_sent = time.monotonic()
                    if send.p.returncode != 0:
                        raise BenchError("bettong send exited with %s:\n%s"
                                         % (send.p.returncode, send.tail()))
                if not server.alive():
                    raise BenchError("%s exited with %s during the run:\n%s"
                                     % (server.name, server.p.returncode, server.tail()))
                if time.monotonic() > deadline:
                    recv.stop()
                    m = recv.find(RECV_SUMMARY)
                    raise BenchError("timed out after %.0f s: %s of %d records arrived"
                                     % (limit, m.group(1) if m else "?", expect))
                time.sleep(0.01)
            wall = time.monotonic() - t0
            cpu = tree_cpu_seconds(server.pid)
            rss_kb = tree_kb(server.pid, "VmHWM")
            send.wait(30)
            rc_recv = recv.stop()
            rc_server = server.stop(signal.SIGTERM, 15)
            m = recv.find(RECV_SUMMARY)
            if not m:
                raise BenchError("no summary line from bettong receive (exit %s):\n%s"
                                 % (rc_recv, recv.tail()))
            records, nbytes, secs = int(m.group(1)), int(m.group(2)), float(m.group(3))
            if records != expect:
                raise BenchError("bettong receive counted %d records, expected %d"
                                 % (records, expect))
            res = {"kind": kind, "repeat": repeat, "words": expect, "records": records,
                   "bytes": nbytes, "recv_seconds": secs, "wall_seconds": wall,
                   "wps": records / secs if secs > 0 else 0.0,
                   "wall_wps": expect / wall, "server_cpu_seconds": cpu,
                   "server_peak_rss_mb": rss_kb / 1024.0, "server_exit": rc_server}
            ms = send.find(SEND_SUMMARY)
            if ms:
                res["send_seconds"] = float(ms.group(3))
            if rc_server not in (0, -signal.SIGTERM):
                res["note"] = "%s exited with %s after SIGTERM" % (server.name, rc_server)
            if verify:
                problem = verify_output(out_path, c, repeat)
                if problem:
                    raise BenchError("wrong output from %s: %s" % (kind, problem))
                res["verified"] = True
            return res
        finally:
            for p in procs:
                p.stop(signal.SIGTERM, 10)
            if verify and not self.opts.keep_output and os.path.exists(out_path):
                os.unlink(out_path)

    def calibrate(self, kind):
        """A short run that sizes the measured runs to about --seconds."""
        inproc = median([x["wps"] for x in self.runs["inproc"]]) or 3e5
        guess = inproc * (1.0 if kind == "bettong" else 0.7)
        if self.opts.quick:
            self.rate_guess[kind] = guess
            return
        cal = self.throughput(kind, guess * self.opts.calibrate_seconds, "calibrate",
                              verify=False)
        self.rate_guess[kind] = cal["wps"]
        log("%s calibration: %s words/s" % (kind, fmt_rate(cal["wps"])))

    def e2e(self, kind, rnd):
        o = self.opts
        if kind not in self.rate_guess:
            self.calibrate(kind)
        verify = rnd == 1 and not o.no_verify
        res = self.throughput(kind, self.rate_guess[kind] * o.seconds, "round%d" % rnd,
                              verify=verify)
        res["round"] = rnd
        self.runs[kind].append(res)
        log("round %d: %s %s words/s (%d words, receive %.2f s; wall %.2f s -> %s words/s; "
            "server CPU %.1f s = %.2f cores)%s"
            % (rnd, kind, fmt_rate(res["wps"]), res["words"], res["recv_seconds"],
               res["wall_seconds"], fmt_rate(res["wall_wps"]), res["server_cpu_seconds"],
               res["server_cpu_seconds"] / res["wall_seconds"],
               ", output verified" if res.get("verified") else ""))

    # -- (d)
    def latency(self, kind, rate):
        o = self.opts
        wpl = max(1, int(round(self.corpus.words_per_line)))
        warmup, duration = (1, 3) if o.quick else (o.latency_warmup, o.latency_seconds)
        in_port = free_port()
        lat = Proc("latency-" + kind, [os.path.join(self.tools, "latency"),
                               "--to", "127.0.0.1:%d" % in_port, "--listen", "127.0.0.1:0",
                               "--rate", "%.0f" % rate, "--duration", str(duration),
                               "--warmup", str(warmup), "--words-per-line", str(wpl)],
                   self.outdir)
        procs = [lat]
        try:
            out_port = lat.wait_listening(10)
            server = self.start_server(kind, in_port, out_port, "latency")
            procs.append(server)
            rc = lat.wait(warmup + duration + 60)
            if rc is None:
                raise BenchError("the latency tool did not finish:\n%s" % lat.tail())
            m = lat.find(re.compile(r"^latency: (rate=.*)$"))
            if not m:
                raise BenchError("latency tool failed (exit %s):\n%s\nserver:\n%s"
                                 % (rc, lat.tail(), server.tail()))
            kv = {k: float(v) for k, v in KV.findall(m.group(1))}
            kv["rate"] = rate
            kv["duration"] = duration
            kv["warmup"] = warmup
            self.r["latency-" + kind] = kv
            log(kind + " latency at %s words/s (%d words/line, %.0f s after %.0f s warm-up): "
                "p50 %s, p99 %s, p99.9 %s, max %s; %d samples, %d lost; sender: %d slips "
                "(%.0f ms), longest write %s, %.2f s CPU"
                % (fmt_rate(rate), wpl, duration, warmup, fmt_us(kv["p50_us"]),
                   fmt_us(kv["p99_us"]), fmt_us(kv["p999_us"]), fmt_us(kv["max_us"]),
                   kv["measured"], kv["lost"], kv["slips"], kv["slipped_ms"],
                   fmt_us(kv["write_max_us"]), kv["tool_cpu_seconds"]))
        finally:
            for p in procs:
                p.stop(signal.SIGTERM, 10)

    # -- (e)
    def soak(self):
        o = self.opts
        secs = 5 if o.quick else o.soak_seconds
        peak = self.peak("bettong") or self.peak("inproc") or 3e5
        repeat = max(1, int(math.ceil(peak * secs * 3 / self.corpus.words)))
        recv = Proc("receive-soak", [self.bettong, "receive", "--listen", "127.0.0.1:0",
                                     "--out", "/dev/null"], self.outdir)
        procs = [recv]
        try:
            out_port = recv.wait_listening(10)
            in_port = free_port()
            server = self.start_server("bettong", in_port, out_port, "soak")
            procs.append(server)
            wait_port(in_port, server)
            rss0 = tree_kb(server.pid, "VmRSS")
            send = Proc("send-soak", [self.bettong, "send", "--to", "127.0.0.1:%d" % in_port,
                                      "--file", self.corpus.path, "--repeat", str(repeat)],
                        self.outdir)
            procs.append(send)
            samples = []
            t0 = time.monotonic()
            for i in range(1, secs + 1):
                delay = t0 + i - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                if not server.alive():
                    raise BenchError("bettong run exited with %s during the soak:\n%s"
                                     % (server.p.returncode, server.tail()))
                samples.append(tree_kb(server.pid, "VmRSS") / 1024.0)
            hwm = tree_kb(server.pid, "VmHWM") / 1024.0
            cpu = tree_cpu_seconds(server.pid)
            elapsed = time.monotonic() - t0
            sender_done = not send.alive()
            send.stop(signal.SIGTERM, 10)
            server.stop(signal.SIGTERM, 15)
            recv.stop(signal.SIGTERM, 10)
            m = recv.find(RECV_SUMMARY)
            records = int(m.group(1)) if m else None
            early = samples[max(0, len(samples) // 10 - 1)]
            res = {"seconds": secs, "samples_mb": samples, "start_mb": rss0 / 1024.0,
                   "first_mb": samples[0], "early_mb": early, "last_mb": samples[-1],
                   "max_mb": max(samples), "hwm_mb": hwm, "records": records,
                   "wps": records / elapsed if records else None,
                   "cpu_cores": cpu / elapsed, "sender_ran_out": sender_done}
            res["growth"] = (res["last_mb"] - early) / early if early else 0.0
            self.r["soak"] = res
            log("soak %d s: RSS idle %.1f MB, after 1 s %.1f MB, at %d s %.1f MB, last %.1f MB, "
                "max sampled %.1f MB, VmHWM %.1f MB; about %s words/s over the soak%s"
                % (secs, res["start_mb"], res["first_mb"], max(1, len(samples) // 10),
                   early, res["last_mb"], res["max_mb"], hwm,
                   fmt_rate(res["wps"]) if res["wps"] else "?",
                   " (the sender ran out before the end!)" if sender_done else ""))
        finally:
            for p in procs:
                p.stop(signal.SIGTERM, 10)

    def peak(self, kind):
        """The median words/s of a system over the rounds (None if not measured)."""
        return median([x["wps"] for x in self.runs[kind]])

    def ratios(self, a, b):
        """a/b words/s within each round that measured both."""
        rb = {x["round"]: x["wps"] for x in self.runs[b]}
        return [x["wps"] / rb[x["round"]] for x in self.runs[a]
                if rb.get(x["round"])]

    def run_phase(self, name, fn):
        try:
            fn()
        except (BenchError, OSError, subprocess.SubprocessError) as e:
            self.errors[name] = str(e)
            log("%s FAILED: %s" % (name, e))


# ------------------------------------------------------------------ reporting

def median(xs):
    xs = sorted(xs)
    if not xs:
        return None
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2.0


def fmt_rate(x):
    if x is None:
        return "-"
    return "{:,.0f}".format(x)


def fmt_us(us):
    if us is None:
        return "-"
    if us >= 1000:
        return "%.2f ms" % (us / 1000.0)
    return "%.0f us" % us


def verdict(ok):
    return "met" if ok else "NOT MET"


def machine_info():
    model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = status = "?"
    try:
        with open("/proc/meminfo") as f:
            mem = "%.1f GB" % (int(f.readline().split()[1]) / 1048576.0)
    except (OSError, ValueError, IndexError):
        pass
    try:
        commit = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True).stdout.strip() or "?"
        dirty = subprocess.run(["git", "-C", REPO, "status", "--porcelain"],
                               capture_output=True, text=True).stdout.strip()
        status = commit + (" (uncommitted changes)" if dirty else "")
    except OSError:
        status = "?"
    return {"cpus": os.cpu_count(), "model": model, "mem": mem,
            "kernel": platform.release(), "python": sys.version.split()[0],
            "python_exe": sys.executable, "commit": status}


def report(b):
    r, errs = b.r, b.errors
    lines = []
    add = lines.append
    inproc, bt, aio = b.peak("inproc"), b.peak("bettong"), b.peak("asyncio")
    lat = r.get("latency-bettong")
    lat_aio = r.get("latency-asyncio")
    soak = r.get("soak")
    c = b.corpus
    nr = max(len(v) for v in b.runs.values()) if any(b.runs.values()) else 0
    med = "median of %d rounds" % nr if nr > 1 else "one round"

    def rates(kind):
        return ", ".join(fmt_rate(x["wps"]) for x in b.runs[kind])

    add("| figure | value | target | verdict |")
    add("|---|---|---|---|")
    add("| (a) in-process limit, words/s (%s) | %s | | |" % (med, fmt_rate(inproc)))
    add("| (b) bettong end to end, words/s | %s | | |" % fmt_rate(bt))
    add("| (c) asyncio server end to end, words/s | %s | | |" % fmt_rate(aio))
    aio_emb = b.peak("asyncio-emb")
    if aio_emb:
        add("| (c') the same asyncio server run on the engine's libpython (context) | %s | | |"
            % fmt_rate(aio_emb))
    for a, base, target, label in (("bettong", "inproc", TARGET_INPROC_RATIO,
                                    "bettong / in-process limit"),
                                   ("bettong", "asyncio", TARGET_ASYNCIO_RATIO,
                                    "bettong / asyncio server"),
                                   ("bettong", "asyncio-emb", None,
                                    "bettong / (c') (context)")):
        rs = b.ratios(a, base)
        if target is None:
            if rs:
                add("| %s | %.2f%s | | |" % (
                    label, median(rs),
                    " (rounds: %s)" % ", ".join("%.2f" % v for v in rs) if len(rs) > 1
                    else ""))
            continue
        if rs:
            x = median(rs)
            rng = " (rounds: %s)" % ", ".join("%.2f" % v for v in rs) if len(rs) > 1 else ""
            add("| %s | %.2f%s | >= %s | %s |" % (label, x, rng, ("%g" % target),
                                                  verdict(x >= target)))
        else:
            add("| %s | - | >= %g | not measured |" % (label, target))
    if lat:
        add("| (d) latency p50 / p99 at half load (%s words/s) | %s / %s | p99 < 1 ms | %s |"
            % (fmt_rate(lat["rate"]), fmt_us(lat["p50_us"]), fmt_us(lat["p99_us"]),
               verdict(lat["p99_us"] < TARGET_P99_US and lat["lost"] == 0)))
        add("| (d) latency p99.9 / max | %s / %s | | |" % (fmt_us(lat["p999_us"]),
                                                         fmt_us(lat["max_us"])))
    else:
        add("| (d) latency p99 at half load | - | < 1 ms | not measured |")
    if soak:
        ok = soak["max_mb"] < TARGET_RSS_MB and soak["hwm_mb"] < TARGET_RSS_MB \
            and soak["growth"] <= FLAT_GROWTH
        t10 = max(1, soak["seconds"] // 10)
        add("| (e) peak RSS over %d s at full speed | %.1f MB (VmHWM %.1f MB) | < %.0f MB "
            "| %s |" % (soak["seconds"], soak["max_mb"], soak["hwm_mb"], TARGET_RSS_MB,
                        verdict(soak["max_mb"] < TARGET_RSS_MB
                                and soak["hwm_mb"] < TARGET_RSS_MB)))
        add("| (e) RSS at 1 s / %d s / end | %.1f / %.1f / %.1f MB (%+.1f %% from %d s) "
            "| flat (<= %.0f %%) | %s |"
            % (t10, soak["first_mb"], soak["early_mb"], soak["last_mb"],
               soak["growth"] * 100, t10, FLAT_GROWTH * 100,
               verdict(ok) if soak["seconds"] >= 20 else "too short to judge"))
    else:
        add("| (e) peak RSS over a full-speed run | - | < %.0f MB, flat | not measured |"
            % TARGET_RSS_MB)

    details = []
    d = details.append
    d("- corpus: `%s`: %d lines, %d words a pass (%.1f words per non-empty line)"
      % (os.path.relpath(c.path, REPO), c.lines, c.words, c.words_per_line))
    if nr:
        d("- each round runs (a), (b), (c)%s back to back for about %g s each; per-round "
          "words/s: in-process %s; bettong %s; asyncio %s%s"
          % (", (c')" if b.runs["asyncio-emb"] else "", b.opts.seconds,
             rates("inproc") or "-", rates("bettong") or "-", rates("asyncio") or "-",
             "; asyncio on the engine's libpython " + rates("asyncio-emb")
             if b.runs["asyncio-emb"] else ""))
    for x in b.runs["inproc"]:
        d("- (a) round %d: `inproc` %d words in %.2f s after a 200,000-word warm-up, "
          "%.2f s CPU (%s words per CPU-second)"
          % (x["round"], x["words"], x["seconds"], x["cpu_seconds"],
             fmt_rate(x["words"] / x["cpu_seconds"]) if x["cpu_seconds"] else "-"))
    for kind, tag in (("bettong", "b"), ("asyncio", "c"), ("asyncio-emb", "c'")):
        for x in b.runs[kind]:
            d("- (%s) round %d: %s, %d words (%d passes); `bettong receive` %.2f s; wall "
              "from the first send to the last output %.2f s (%s words/s); server CPU "
              "%.1f s (%.2f cores); server VmHWM %.1f MB%s%s"
              % (tag, x["round"], kind, x["words"], x["repeat"], x["recv_seconds"],
                 x["wall_seconds"], fmt_rate(x["wall_wps"]), x["server_cpu_seconds"],
                 x["server_cpu_seconds"] / x["wall_seconds"], x["server_peak_rss_mb"],
                 "; every final count checked" if x.get("verified") else "",
                 "; " + x["note"] if x.get("note") else ""))
    for kind, kv in (("bettong", lat), ("asyncio", lat_aio)):
        if not kv:
            continue
        what = ("half of (b)" if kind == "bettong" else
                "the same offered rate, for context: %.0f %% of (c)"
                % (100.0 * kv["rate"] / aio if aio else 0))
        d("- (d) %s latency: %s words/s offered (%s) as %d-word lines, %.0f s measured "
          "after %.0f s warm-up; %d samples, %d lost; p50 %s, p90 %s, p99 %s, p99.9 %s, "
          "max %s, mean %s; achieved %s words/s; the sender was late by more than 1 ms "
          "%d times (its schedule slipped %.0f ms in all, worst %s), its longest write() "
          "took %s; the tool used %.2f s CPU"
          % (kind, fmt_rate(kv["rate"]), what, kv["words_per_line"], kv["duration"],
             kv["warmup"], kv["measured"], kv["lost"], fmt_us(kv["p50_us"]),
             fmt_us(kv["p90_us"]), fmt_us(kv["p99_us"]), fmt_us(kv["p999_us"]),
             fmt_us(kv["max_us"]), fmt_us(kv["mean_us"]),
             fmt_rate(kv["achieved_words_per_s"]), kv["slips"], kv["slipped_ms"],
             fmt_us(kv["sender_lag_max_us"]), fmt_us(kv["write_max_us"]),
             kv["tool_cpu_seconds"]))
    if soak:
        d("- (e) soak: RSS sampled every second: idle %.1f MB before sending; samples %s; "
          "%s words/s over the soak, engine CPU %.2f cores%s"
          % (soak["start_mb"], compact_samples(soak["samples_mb"]),
             fmt_rate(soak["wps"]) if soak["wps"] else "?", soak["cpu_cores"],
             "; the sender ran out before the end" if soak["sender_ran_out"] else ""))
    if inproc and aio:
        d("- note: the asyncio server reaches %.2f of the in-process limit, so >= %g x the "
          "asyncio server means >= %.1f x the in-process limit of one interpreter"
          % (aio / inproc, TARGET_ASYNCIO_RATIO, TARGET_ASYNCIO_RATIO * aio / inproc))
    rs = b.ratios("asyncio", "asyncio-emb")
    if rs:
        d("- note: the same asyncio server is %.2f x as fast on `%s` as on the shared "
          "libpython the engine and `inproc` embed (per round: %s)"
          % (median(rs), b.python, ", ".join("%.2f" % v for v in rs)))
    if b.env:
        d("- machine load: load average %s at the start, %s at the end; CPU steal %.1f %%, "
          "all CPUs busy %.0f %% over the run" % b.env)
    for name, msg in errs.items():
        d("- **%s FAILED**: %s" % (name, msg.strip().replace("\n", " / ")[:1500]))
    return lines, details


def compact_samples(samples):
    if len(samples) <= 12:
        return ", ".join("%.1f" % s for s in samples) + " MB"
    step = max(1, len(samples) // 10)
    picked = [(i + 1, samples[i]) for i in range(0, len(samples), step)]
    if picked[-1][0] != len(samples):
        picked.append((len(samples), samples[-1]))
    return ", ".join("%ds %.1f" % (t, s) for t, s in picked) + " MB"


def write_results(path, section):
    header = ("# Benchmark results\n\n"
              "Word count end to end on one worker against the in-process limit and a plain\n"
              "asyncio server, all measured in the same run (see bench/README.md). Newest\n"
              "first; `bench/run_word_count.py` adds a section per full run.\n\n")
    body = ""
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            old = f.read()
        i = old.find("\n## ")
        body = old[i + 1:] if i >= 0 else ""
    with open(path, "w", encoding="utf-8") as f:
        f.write(header + section + "\n" + body)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", default=os.path.join(REPO, "build", "bettong"),
                    help="the bettong binary (default build/bettong)")
    ap.add_argument("--tools-dir", help="where inproc and latency are "
                    "(default: <dir of --bin>/bench)")
    ap.add_argument("--corpus", default=DEFAULT_CORPUS,
                    help="text to count, one record per line (default: the example's data)")
    ap.add_argument("--quick", action="store_true",
                    help="short durations, to test the harness; RESULTS.md is not written")
    ap.add_argument("--seconds", type=float, default=10.0,
                    help="length of each throughput measurement (default 10)")
    ap.add_argument("--calibrate-seconds", type=float, default=2.0,
                    help="length of the sizing run before each throughput run (default 2)")
    ap.add_argument("--latency-seconds", type=float, default=10.0)
    ap.add_argument("--latency-warmup", type=float, default=2.0)
    ap.add_argument("--soak-seconds", type=int, default=60,
                    help="length of the full-speed RSS run (default 60)")
    ap.add_argument("--python", help="interpreter for the asyncio server (default: the "
                    "one the bench tools embed, i.e. the engine's)")
    ap.add_argument("--rounds", type=int, default=3,
                    help="rounds of (a), (b), (c) back to back; figures are medians, ratios "
                    "the median of per-round ratios (default 3, 1 with --quick)")
    ap.add_argument("--no-embedded-asyncio", action="store_true",
                    help="skip the asyncio server runs on the engine's libpython (context)")
    ap.add_argument("--no-latency-asyncio", action="store_true",
                    help="skip the asyncio server latency run at the same rate (context)")
    ap.add_argument("--only", help="comma-separated phases to run: "
                    "inproc,bettong,asyncio,latency,soak (default all)")
    ap.add_argument("--no-verify", action="store_true",
                    help="do not check the output of the main throughput runs")
    ap.add_argument("--keep-output", action="store_true",
                    help="keep the receivers' output files in bench/out/")
    ap.add_argument("--results", default=None,
                    help="write the section to this file (default bench/RESULTS.md, "
                    "not written with --quick unless given)")
    opts = ap.parse_args()
    if opts.quick:
        opts.seconds = min(opts.seconds, 2.0)
        opts.rounds = 1
    if opts.rounds < 1:
        ap.error("--rounds must be at least 1")

    command = shlex.join([os.path.relpath(sys.executable, REPO)
                          if sys.executable.startswith(REPO) else sys.executable]
                         + [os.path.relpath(os.path.abspath(sys.argv[0]), REPO)]
                         + sys.argv[1:])
    phases = ["inproc", "bettong", "asyncio", "latency", "soak"]
    only = set(opts.only.split(",")) if opts.only else set(phases)
    unknown = only - set(phases)
    if unknown:
        ap.error("unknown phase(s): %s" % ", ".join(sorted(unknown)))

    for tool in ("inproc", "latency", "pyembed"):
        path = os.path.join(opts.tools_dir or os.path.join(os.path.dirname(
            os.path.abspath(opts.bin)), "bench"), tool)
        if not os.access(path, os.X_OK):
            sys.exit("bench: %s is missing: build it with `make bench` or "
                     "`make -C bench BETTONG_BUILD=$PWD/build`" % path)
    if not os.access(opts.bin, os.X_OK):
        sys.exit("bench: no bettong binary at %s (run make first)" % opts.bin)

    started = datetime.datetime.now(datetime.timezone.utc)
    try:
        b = Bench(opts)
    except BenchError as e:
        sys.exit("bench: %s" % e)
    log("corpus %s: %d lines, %d words a pass; logs in %s"
        % (os.path.relpath(b.corpus.path, REPO), b.corpus.lines, b.corpus.words,
           os.path.relpath(b.outdir, REPO)))

    def stop_on_signal(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, stop_on_signal)
    try:
        for rnd in range(1, opts.rounds + 1):
            for kind in ("inproc", "bettong", "asyncio", "asyncio-emb"):
                if kind == "asyncio-emb" and (opts.no_embedded_asyncio
                                              or "asyncio" not in only):
                    continue
                if (kind in only or kind == "asyncio-emb") and kind not in b.errors:
                    if kind == "inproc":
                        b.run_phase(kind, lambda: b.inproc(rnd))
                    else:
                        b.run_phase(kind, lambda: b.e2e(kind, rnd))
        if "latency" in only:
            peak = b.peak("bettong")
            if peak:
                b.run_phase("latency", lambda: b.latency("bettong", peak / 2))
                if not opts.no_latency_asyncio:
                    b.run_phase("latency-asyncio", lambda: b.latency("asyncio", peak / 2))
            else:
                b.errors["latency"] = "not run: needs the bettong rate from phase (b)"
        if "soak" in only:
            b.run_phase("soak", b.soak)
    except KeyboardInterrupt:
        log("interrupted")
        b.errors["run"] = "interrupted"
    finally:
        Proc.stop_all()
        b.finish_env()
        try:
            os.unlink(b.bettong)  # the private copy
        except OSError:
            pass

    table, details = report(b)
    m = machine_info()
    print()
    print("\n".join(table))
    print()
    print("\n".join(details))

    if opts.results or not opts.quick:
        path = opts.results or RESULTS
        section = "\n".join(
            ["## %s%s" % (started.strftime("%Y-%m-%d %H:%M UTC"),
                          " (quick)" if opts.quick else ""),
             "",
             "- machine: %d CPUs, %s, %s RAM, Linux %s" % (m["cpus"], m["model"], m["mem"],
                                                          m["kernel"]),
             "- Python: %s %s embedded by the engine and inproc, and running the asyncio "
             "server; the harness ran on %s %s" % (b.python, b.python_version,
                                                  m["python_exe"], m["python"]),
             "- tree: %s" % m["commit"],
             "- command (from the repository root): `%s`" % command,
             ""] + table + [""] + details) + "\n"
        write_results(path, section)
        log("results added to %s" % os.path.relpath(path, REPO))
    sys.exit(1 if b.errors else 0)


if __name__ == "__main__":
    main()
