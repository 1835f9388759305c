#!/usr/bin/env python3
"""What a connection's handshake costs (run by hand): connecting to a
`bettong store` with a secret through the client extension (TCP connect, the
mutual challenge-response handshake of src/net/auth.h, WELCOME) against a bare
TCP connect and close to the same port, measured in the same run, alternating.

    /usr/bin/python3 bench/handshake_cost.py [--bin build/bettong] [--n 500] [--rounds 3]
"""

import argparse
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "python"))
from bettong import _store  # noqa: E402


def start_store(binary, tmp, secret_file):
    log = open(os.path.join(tmp, "store.log"), "wb")
    p = subprocess.Popen([binary, "store", "--dir", os.path.join(tmp, "store"), "--listen",
                          "127.0.0.1:0", "--secret-file", secret_file],
                         stdout=log, stderr=log)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        m = re.search(r"listening on 127\.0\.0\.1:(\d+)",
                      Path(tmp, "store.log").read_text(errors="replace"))
        if m:
            return p, int(m.group(1))
        if p.poll() is not None:
            break
        time.sleep(0.01)
    p.kill()
    sys.exit("the store did not start:\n" + Path(tmp, "store.log").read_text(errors="replace"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=str(REPO / "build" / "bettong"))
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        secret = os.urandom(16).hex()
        secret_file = os.path.join(tmp, "secret")
        with open(os.open(secret_file, os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
            f.write(secret + "\n")
        proc, port = start_store(args.bin, tmp, secret_file)
        try:
            address = "127.0.0.1:%d" % port

            def bare():
                socket.create_connection(("127.0.0.1", port)).close()

            def handshake():
                _store.Connection(address, secret=secret.encode(), name="bench").close()

            bare()
            handshake()
            print("binary: %s; %d connections per measurement, loopback" % (args.bin, args.n))
            for r in range(args.rounds):
                us = {}
                for f in (bare, handshake):
                    t0 = time.perf_counter()
                    for _ in range(args.n):
                        f()
                    us[f.__name__] = (time.perf_counter() - t0) / args.n * 1e6
                print("round %d: bare TCP connect+close %.0f us; connect+handshake+WELCOME "
                      "%.0f us; ratio %.1f" % (r + 1, us["bare"], us["handshake"],
                                               us["handshake"] / us["bare"]))
        finally:
            proc.terminate()
            proc.wait(10)


if __name__ == "__main__":
    main()
