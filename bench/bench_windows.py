#!/usr/bin/env python3
"""Windowed word count on event time (issue 12, item 5): `bettong run` on 1
worker and on `--workers 2` against the same application's in-process limit,
in one run.

    python3 bench/bench_windows.py [--bin build/bettong] [--rounds 3] [--record]

The application is bench/apps/wc_eventtime.py: each line carries its event
time; words are counted per word in 1 s tumbling windows of event time (max
out of order 1 s). The input is the word count corpus
(examples/word_count/data/bettong_tales.txt) cycled to --words words, one
line every 1/--lines-per-window s of event time (so windows hold
--lines-per-window lines), sorted, plus a last line, 1000 s later, holding
every word of the corpus once: it moves every word's watermark past all the
data's windows, so they close by event time, not on the idle clock, and
`bettong receive --expect N` sees the last of the N windows' outputs as soon
as it is written.

  (a) in-process limit: bench/apps/wc_eventtime.py's inproc_windows(), the
      application's own functions in a plain loop in this process (decode,
      split, key, event time, per-word watermark and windows, update, output,
      encode), no engine, no I/O: the ceiling for one core.
  (b) `bettong send --file` -> `bettong run` (1 worker) -> `bettong receive`.
  (c) the same with `bettong run --workers 2`.

words/s = input words / (time from starting the sender to the receiver
having every window's output). (a), (b), (c) alternate in each round; the
figures are medians, the ratios medians of the per-round ratios. Round 1's
outputs of (b) and (c) are checked: exactly one line per (word, window) with
its count. Process logs go to bench/out/<time>/.
"""

import argparse
import collections
import datetime
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(REPO, "python"))
sys.path.insert(0, os.path.join(HERE, "apps"))

import run_word_count as rw  # noqa: E402  (Proc, free_port, wait_port, ...)
import wc_eventtime as app  # noqa: E402

APP = os.path.join(HERE, "apps", "wc_eventtime.py")
CORPUS = os.path.join(REPO, "examples", "word_count", "data", "bettong_tales.txt")
RESULTS = os.path.join(HERE, "RESULTS.md")
BASE_NS = 1_700_000_000 * 10 ** 9


def log(msg):
    print("bench_windows: " + msg, flush=True)


def make_input(path, words_target, lines_per_window):
    """Writes the input file; returns (payloads of the data lines, words,
    expected {(word, window start): count})."""
    with open(CORPUS, encoding="utf-8") as f:
        corpus = [l for l in f.read().split("\n") if l.strip()]
    step = 10 ** 9 // lines_per_window
    payloads, words, vocab = [], 0, {}
    expect = collections.Counter()
    i = 0
    while words < words_target:
        text = corpus[i % len(corpus)]
        ts = BASE_NS + i * step
        ws = app.split_words(text)
        words += len(ws)
        start = ts - ts % app.RANGE
        for w in ws:
            expect[(w, start)] += 1
            vocab[w] = None
        payloads.append(("%d %s" % (ts, text)).encode("utf-8"))
        i += 1
    closer = ("%d %s" % (BASE_NS + i * step + 1000 * 10 ** 9, " ".join(vocab))).encode()
    with open(path, "wb") as f:
        for p in payloads + [closer]:
            f.write(p + b"\n")
    return payloads, words, expect


class Bench:
    def __init__(self, opts):
        self.opts = opts
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        self.outdir = os.path.join(HERE, "out", "windows-" + stamp)
        os.makedirs(self.outdir, exist_ok=True)
        self.bettong = os.path.join(self.outdir, "bettong")
        shutil.copy2(os.path.abspath(opts.bin), self.bettong)
        self.input = os.path.join(self.outdir, "input.txt")
        self.payloads, self.words, self.expect = make_input(self.input, opts.words,
                                                            opts.lines_per_window)
        self.n_out = len(self.expect)
        self.runs = {"inproc": [], "w1": [], "w2": []}
        log("input: %d lines, %d words, %d windows' outputs (%d 1 s windows)"
            % (len(self.payloads), self.words, self.n_out,
               len({s for _, s in self.expect})))

    def inproc(self, rnd):
        t0 = time.perf_counter()
        c0 = time.process_time()
        outputs, still_open = app.inproc_windows(self.payloads)
        secs, cpu = time.perf_counter() - t0, time.process_time() - c0
        if outputs + still_open != self.n_out:
            raise rw.BenchError("in-process loop: %d outputs + %d open windows, expected %d"
                                % (outputs, still_open, self.n_out))
        wps = self.words / secs
        self.runs["inproc"].append({"wps": wps, "secs": secs, "cpu": cpu})
        log("round %d: in-process limit %s words/s (%.2f s, %.2f s CPU)"
            % (rnd, rw.fmt_rate(wps), secs, cpu))

    def engine(self, workers, rnd, verify):
        tag = "w%d-round%d" % (workers, rnd)
        out = os.path.join(self.outdir, tag + ".out") if verify else "/dev/null"
        recv = rw.Proc("receive-" + tag, [self.bettong, "receive", "--listen", "127.0.0.1:0",
                                          "--out", out, "--expect", str(self.n_out)],
                       self.outdir)
        procs = [recv]
        try:
            out_port = recv.wait_listening(10)
            in_port = rw.free_port()
            argv = [self.bettong, "run", APP, "--in", "127.0.0.1:%d" % in_port,
                    "--out", "127.0.0.1:%d" % out_port]
            if workers > 1:
                argv += ["--workers", str(workers)]
            server = rw.Proc("run-" + tag, argv, self.outdir)
            procs.append(server)
            rw.wait_port(in_port, server, timeout=30)
            t0 = time.monotonic()
            send = rw.Proc("send-" + tag, [self.bettong, "send", "--to",
                                           "127.0.0.1:%d" % in_port, "--file", self.input],
                           self.outdir)
            procs.append(send)
            deadline = t0 + self.opts.timeout
            while recv.alive():
                if not server.alive():
                    raise rw.BenchError("%s exited with %s:\n%s"
                                        % (server.name, server.p.returncode, server.tail()))
                if time.monotonic() > deadline:
                    raise rw.BenchError("%s: not every window's output within %d s"
                                        % (tag, self.opts.timeout))
                time.sleep(0.005)
            wall = time.monotonic() - t0
            cpu = rw.tree_cpu_seconds(server.pid)
            if recv.wait(5) != 0:
                raise rw.BenchError("bettong receive exited with %s:\n%s"
                                    % (recv.p.returncode, recv.tail()))
            server.stop(signal.SIGTERM, 20)
            late = server.find(rw.re.compile(r"(\d+) late messages"))
            if late or server.find(rw.re.compile(r"a late message")):
                raise rw.BenchError("%s dropped late messages:\n%s" % (tag, server.tail()))
            if verify:
                self.verify(out)
            wps = self.words / wall
            self.runs["w%d" % workers].append({"wps": wps, "wall": wall, "cpu": cpu,
                                               "verified": verify})
            log("round %d: bettong run%s %s words/s (%.2f s from the first send to the "
                "last output; engine CPU %.1f s)%s"
                % (rnd, " --workers %d" % workers if workers > 1 else "", rw.fmt_rate(wps),
                   wall, cpu, ", output checked" if verify else ""))
        finally:
            for p in procs:
                p.stop(signal.SIGTERM, 10)

    def verify(self, path):
        got = {}
        with open(path, encoding="utf-8") as f:
            for line in f:
                word, start, n = line.rsplit(" ", 2)
                key = (word, int(start))
                if key in got:
                    raise rw.BenchError("window %r output twice" % (key,))
                got[key] = int(n)
        if got != dict(self.expect):
            wrong = [k for k in set(got) | set(self.expect) if got.get(k) != self.expect.get(k)]
            raise rw.BenchError("%d windows wrong, e.g. %s" % (
                len(wrong), ["%s: got %s, want %s" % (k, got.get(k), self.expect.get(k))
                             for k in sorted(wrong)[:3]]))

    def run(self):
        load0 = rw.loadavg()
        for rnd in range(1, self.opts.rounds + 1):
            self.inproc(rnd)
            self.engine(1, rnd, verify=rnd == 1)
            self.engine(2, rnd, verify=rnd == 1)
        self.load = (load0, rw.loadavg())

    def report(self):
        med = {k: statistics.median(r["wps"] for r in v) for k, v in self.runs.items()}
        ratios = {k: statistics.median(self.runs[k][i]["wps"] / self.runs["inproc"][i]["wps"]
                                       for i in range(len(self.runs[k])))
                  for k in ("w1", "w2")}
        r21 = statistics.median(self.runs["w2"][i]["wps"] / self.runs["w1"][i]["wps"]
                                for i in range(len(self.runs["w1"])))
        rows = [("(a) in-process limit (same functions, plain loop, one process)",
                 med["inproc"], "1.00"),
                ("(b) bettong run, 1 worker", med["w1"], "%.2f" % ratios["w1"]),
                ("(c) bettong run --workers 2", med["w2"], "%.2f" % ratios["w2"])]
        lines = ["| measurement | words/s (median of %d rounds) | / in-process (median of "
                 "per-round ratios) |" % self.opts.rounds, "|---|---|---|"]
        lines += ["| %s | %s | %s |" % (name, rw.fmt_rate(v), r) for name, v, r in rows]
        lines.append("| (c) / (b) | | %.2f |" % r21)
        per = "; ".join("%s %s" % (k, ", ".join(rw.fmt_rate(r["wps"]) for r in v))
                        for k, v in self.runs.items())
        notes = [
            "- input: %d lines, %d words, %d (word, window) outputs over %d 1 s windows of "
            "event time (%d lines per window), sorted by event time, plus the closing line"
            % (len(self.payloads), self.words, self.n_out, len({s for _, s in self.expect}),
               self.opts.lines_per_window),
            "- per-round words/s: " + per,
            "- CPU seconds per run (the engine: all its processes): in-process %s; 1 worker "
            "%s; 2 workers %s; words per CPU second (medians): in-process %s, 1 worker %s, "
            "2 workers %s"
            % (", ".join("%.2f" % r["cpu"] for r in self.runs["inproc"]),
               ", ".join("%.2f" % r["cpu"] for r in self.runs["w1"]),
               ", ".join("%.2f" % r["cpu"] for r in self.runs["w2"]),
               *(rw.fmt_rate(statistics.median(self.words / r["cpu"] for r in self.runs[k]))
                 for k in ("inproc", "w1", "w2"))),
            "- round 1's outputs of (b) and (c) checked: one line per (word, window), "
            "its exact count; no late message",
            "- machine: %s, %d CPUs, Python %s; load average %s at the start, %s at the end"
            % (platform.machine(), os.cpu_count(), platform.python_version(),
               self.load[0], self.load[1]),
        ]
        return "\n".join(lines), "\n".join(notes)

    def record(self, table, notes):
        stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
        cmd = "python3 bench/bench_windows.py --rounds %d --words %d --record" % (
            self.opts.rounds, self.opts.words)
        with open(RESULTS, "a", encoding="utf-8") as f:
            f.write("\n## Windowed word count on event time (%s, %s)\n\n`%s`\n\n%s\n\n%s\n"
                    % (stamp, platform.node() or "?", cmd, table, notes))
        log("recorded in " + RESULTS)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", default=os.path.join(REPO, "build", "bettong"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--words", type=int, default=1_500_000)
    ap.add_argument("--lines-per-window", type=int, default=5000)
    ap.add_argument("--timeout", type=int, default=300)
    ap.add_argument("--record", action="store_true")
    opts = ap.parse_args()
    b = Bench(opts)
    try:
        b.run()
    except rw.BenchError as e:
        log("FAILED: %s" % e)
        rw.Proc.stop_all()
        return 1
    table, notes = b.report()
    print(table)
    print(notes)
    if opts.record:
        b.record(table, notes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
