#!/usr/bin/env python3
"""End-to-end word count demo: `make demo`, or

    python3 examples/word_count/demo.py --bin build/bettong

Starts a `bettong receive`, runs examples/word_count/word_count.py under
`bettong run`, sends the bundled text through it with `bettong send` (repeated
until about two million words go through), then prints the ten most frequent
words with their final counts, the throughput in words/s, and checks every
final count against a count made here in plain Python ("OK", or exit 1).
"""

import argparse
import collections
import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
APP = os.path.join(HERE, "word_count.py")
DATA = os.path.join(HERE, "data", "bettong_tales.txt")
LISTENING = re.compile(r"listening on (\S+):(\d+)")
SOURCE_LISTENING = re.compile(r"source '.*' listening on (\S+):(\d+)")


def load_app():
    sys.path.insert(0, os.path.join(REPO, "python"))
    spec = importlib.util.spec_from_file_location("word_count", APP)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def fail(msg):
    print("demo: FAILED: " + msg, file=sys.stderr)
    sys.exit(1)


def read_text(path):
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


class StderrWatcher(threading.Thread):
    """Collects a process's stderr lines; notes the receive tool's listening line."""

    def __init__(self, stream):
        super().__init__(daemon=True)
        self.stream = stream
        self.lines = []
        self.port = None
        self.ready = threading.Event()

    def run(self):
        for raw in iter(self.stream.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.lines.append(line)
            m = LISTENING.search(line)
            if m and self.port is None:
                self.port = int(m.group(2))
                self.ready.set()
        self.ready.set()


def digits_sum(n):
    """Total number of decimal digits of 1..n."""
    total, width, low = 0, 1, 1
    while low <= n:
        high = min(n, low * 10 - 1)
        total += (high - low + 1) * width
        width, low = width + 1, low * 10
    return total


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", default=os.path.join(REPO, "build", "bettong"))
    ap.add_argument("--words", type=int, default=2000000,
                    help="about how many words to send (default 2000000)")
    ap.add_argument("--timeout", type=float, default=120.0,
                    help="give up after this many seconds of waiting for output")
    opts = ap.parse_args()
    bettong = os.path.abspath(opts.bin)
    if not os.access(bettong, os.X_OK):
        fail("no bettong binary at %s (run make first)" % bettong)

    app = load_app()
    with open(DATA, encoding="utf-8") as f:
        lines = f.read().split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    per_pass = collections.Counter()
    for line in lines:
        per_pass.update(app.split_words(line))
    words_per_pass = sum(per_pass.values())
    repeat = max(1, round(opts.words / words_per_pass))
    n_words = words_per_pass * repeat
    expected = {w: c * repeat for w, c in per_pass.items()}
    expected_bytes = sum(c * (len(w.encode("utf-8")) + len(" => \n")) + digits_sum(c)
                         for w, c in expected.items())

    tmp = tempfile.mkdtemp(prefix="bettong-demo-")
    out_path = os.path.join(tmp, "counts.txt")
    engine_err = os.path.join(tmp, "engine.stderr")
    procs = []
    try:
        print("demo: %d lines, %d words a pass, sending %d passes = %d words"
              % (len(lines), words_per_pass, repeat, n_words))
        recv = subprocess.Popen(
            [bettong, "receive", "--listen", "127.0.0.1:0", "--out", out_path,
             "--expect", str(n_words)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        procs.append(recv)
        watcher = StderrWatcher(recv.stderr)
        watcher.start()
        if not watcher.ready.wait(10) or watcher.port is None:
            fail("bettong receive did not report its port:\n" + "\n".join(watcher.lines))
        out_port = watcher.port

        # Port 0: the kernel picks the source's port, which the engine logs.
        with open(engine_err, "wb") as err:
            engine = subprocess.Popen(
                [bettong, "run", APP, "--in", "127.0.0.1:0",
                 "--out", "127.0.0.1:%d" % out_port],
                cwd=REPO, stdin=subprocess.DEVNULL, stdout=err, stderr=err)
        procs.append(engine)
        deadline = time.monotonic() + 15
        while True:
            exited = engine.poll() is not None
            m = SOURCE_LISTENING.search(read_text(engine_err))
            if m:
                in_port = int(m.group(2))
                break
            if exited:
                fail("bettong run exited with %d:\n%s" % (engine.returncode, read_text(engine_err)))
            if time.monotonic() > deadline:
                fail("bettong run did not listen within 15 s:\n%s" % read_text(engine_err))
            time.sleep(0.05)

        t0 = time.monotonic()
        sender = subprocess.run(
            [bettong, "send", "--to", "127.0.0.1:%d" % in_port, "--file", DATA,
             "--repeat", str(repeat)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            timeout=opts.timeout)
        if sender.returncode != 0:
            fail("bettong send exited with %d:\n%s"
                 % (sender.returncode, sender.stdout.decode("utf-8", "replace")))
        # Done when the receiver has seen --expect outputs and exited (or, to
        # not depend on how it counts, when every expected byte is in the file).
        deadline = t0 + opts.timeout
        while recv.poll() is None:
            try:
                if os.path.getsize(out_path) >= expected_bytes:
                    break
            except OSError:
                pass
            if engine.poll() is not None:
                fail("bettong run exited early with %d:\n%s"
                     % (engine.returncode, read_text(engine_err)))
            if time.monotonic() > deadline:
                fail("timed out waiting for output (%d of %d bytes)"
                     % (os.path.getsize(out_path) if os.path.exists(out_path) else 0,
                        expected_bytes))
            time.sleep(0.01)
        elapsed = time.monotonic() - t0

        engine.send_signal(signal.SIGTERM)
        try:
            rc = engine.wait(15)
        except subprocess.TimeoutExpired:
            fail("bettong run did not exit within 15 s of SIGTERM")
        if rc != 0:
            print("demo: warning: bettong run exited with %d after SIGTERM" % rc)
        if recv.poll() is None:
            time.sleep(0.2)
            recv.terminate()
            try:
                recv.wait(5)
            except subprocess.TimeoutExpired:
                recv.kill()

        final = {}
        n_lines = 0
        with open(out_path, "rb") as f:
            for raw in f:
                line = raw.decode("utf-8").rstrip("\n")
                word, sep, count = line.rpartition(" => ")
                if not sep:
                    fail("malformed output line %r" % line)
                final[word] = int(count)
                n_lines += 1

        print("\ntop 10 words:")
        top = sorted(final.items(), key=lambda wc: (-wc[1], wc[0]))[:10]
        for word, count in top:
            print("  %-12s %9d" % (word, count))
        print("\n%d words counted in %.2f s: %.0f words/s"
              % (n_lines, elapsed, n_lines / elapsed if elapsed > 0 else float("inf")))

        problems = []
        if n_lines != n_words:
            problems.append("received %d output lines, expected %d" % (n_lines, n_words))
        if final != expected:
            wrong = sorted(w for w in set(final) | set(expected)
                           if final.get(w) != expected.get(w))
            problems.append("%d words with a wrong final count, e.g. %s"
                            % (len(wrong), ", ".join("%s: got %s want %s"
                                                     % (w, final.get(w), expected.get(w))
                                                     for w in wrong[:5])))
        if problems:
            fail("; ".join(problems))
        print("OK")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    pass
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
