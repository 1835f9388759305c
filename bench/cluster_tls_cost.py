#!/usr/bin/env python3
"""What TLS costs a cluster (run by hand): word count on `bettong run --workers 2`
with and without --tls-cert/--tls-key, the same input, alternating in the same
run. About half of the words are counted on the worker that did not read them,
so they cross a data link between the workers (TLS or not). Reports words per
second from the first byte sent to the last count received, and the ratio.

    /usr/bin/python3 bench/cluster_tls_cost.py [--bin build/bettong] [--words 500000] [--rounds 3]
"""

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
APP = REPO / "examples" / "word_count" / "word_count.py"
CORPUS = REPO / "examples" / "word_count" / "data" / "bettong_tales.txt"
sys.path.insert(0, str(APP.parent))
sys.path.insert(0, str(REPO / "python"))
from word_count import split_words  # noqa: E402


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(path, pattern, proc, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = re.search(pattern, Path(path).read_text(errors="replace"))
        if m:
            return m
        if proc.poll() is not None:
            break
        time.sleep(0.01)
    sys.exit("no '%s' in %s:\n%s" % (pattern, path, Path(path).read_text(errors="replace")))


def lines_in(path):
    try:
        with open(path, "rb") as f:
            return f.read().count(b"\n")
    except FileNotFoundError:
        return 0


def one_run(args, tmp, tls, repeat, expected, tag):
    out = os.path.join(tmp, "out-%s.txt" % tag)
    rlog = os.path.join(tmp, "recv-%s.log" % tag)
    elog = os.path.join(tmp, "engine-%s.log" % tag)
    with open(rlog, "wb") as f:
        recv = subprocess.Popen([args.bin, "receive", "--listen", "127.0.0.1:0", "--out", out],
                                stdout=f, stderr=f)
    rport = wait_for(rlog, r"listening on 127\.0\.0\.1:(\d+)", recv).group(1)
    port = free_port()
    cmd = [args.bin, "run", str(APP), "--in", "127.0.0.1:%d" % port, "--out",
           "127.0.0.1:%s" % rport, "--workers", "2"]
    if tls:
        cmd += ["--tls-cert", os.path.join(tmp, "cert.pem"), "--tls-key",
                os.path.join(tmp, "key.pem")]
    with open(elog, "wb") as f:
        eng = subprocess.Popen(cmd, stdout=f, stderr=f, cwd=str(REPO))
    try:
        wait_for(elog, r"formed with 2 workers", eng)
        t0 = time.monotonic()
        subprocess.run([args.bin, "send", "--to", "127.0.0.1:%d" % port, "--file", str(CORPUS),
                        "--repeat", str(repeat)], check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        deadline = t0 + 300
        while lines_in(out) < expected:
            if time.monotonic() > deadline or eng.poll() is not None:
                sys.exit("%s run: %d of %d counts:\n%s" % (tag, lines_in(out), expected,
                                                           Path(elog).read_text()))
            time.sleep(0.005)
        return expected / (time.monotonic() - t0)
    finally:
        eng.send_signal(signal.SIGTERM)
        eng.wait(30)
        recv.send_signal(signal.SIGTERM)
        recv.wait(10)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=str(REPO / "build" / "bettong"))
    ap.add_argument("--words", type=int, default=500000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    per_pass = sum(len(split_words(line)) for line in CORPUS.read_text().splitlines())
    repeat = max(1, round(args.words / per_pass))
    expected = per_pass * repeat
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj",
                        "/CN=bettong-bench", "-keyout", os.path.join(tmp, "key.pem"), "-out",
                        os.path.join(tmp, "cert.pem")], check=True, capture_output=True)
        print("binary: %s; word count on --workers 2, %d words a run (%d passes of the corpus)"
              % (args.bin, expected, repeat))
        for r in range(args.rounds):
            plain = one_run(args, tmp, False, repeat, expected, "plain%d" % r)
            tls = one_run(args, tmp, True, repeat, expected, "tls%d" % r)
            print("round %d: plain %.0f words/s; TLS %.0f words/s; TLS/plain %.2f"
                  % (r + 1, plain, tls, tls / plain))


if __name__ == "__main__":
    main()
