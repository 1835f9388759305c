"""Wallaroo 0.6.1's connectors (wallaroo.experimental): what framing them in C
is worth. Run by hand, not in CI:

    /usr/bin/python3 bench/bench_connectors.py [--messages N] [--rounds 3]

examples/celsius/celsius_connectors_06.py on one worker: N connector frames
(a >f reading each) sent raw over one connection to the source connector; its
sink connector is this script's own counting server. The figure is messages/s
from the first byte sent to the last output byte received. Two variants run
alternately, each round:

* "C": the example as it is: stream_message_decoder, the frame cut in C and
  the decoder's function called on the payload;
* "Python": the same application with Wallaroo 0.6.1's way of framing the
  source, a decoder object whose payload_length (struct "<I") is called per
  frame and whose decode slices the 8 bytes of event time off.

Both sinks frame in C (a stream_message_encoder). Medians are printed."""

import argparse
import os
import re
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = os.environ.get("BETTONG_BIN") or str(REPO / "build" / "bettong")
APP = REPO / "examples" / "celsius" / "celsius_connectors_06.py"

PY_FRAMED = '''
from celsius_connectors_06 import *  # noqa
import celsius_connectors_06 as _base


class _PyFramed(object):
    """Wallaroo 0.6.1's ConnectorDecoder: framing in Python."""
    def header_length(self):
        return 4

    def payload_length(self, bs):
        return struct.unpack("<I", bs)[0]

    def decode(self, bs):
        return struct.unpack(">f", bs[8:])[0]


_base.decode_feed = _PyFramed()
application_setup = _base.application_setup
'''


def output_bytes(values):
    return sum(12 + len(str(struct.unpack(">f", struct.pack(">f", v))[0] * 1.8 + 32))
               for v in values)


def one_run(app, blob, expect, app_dir):
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    got = [0, None]
    done = threading.Event()

    def sink():
        conn, _ = srv.accept()
        while got[0] < expect:
            data = conn.recv(1 << 20)
            if not data:
                break
            got[0] += len(data)
        got[1] = time.monotonic()
        done.set()

    threading.Thread(target=sink, daemon=True).start()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "python"), str(APP.parent),
                                                        app_dir]))
    eng = subprocess.Popen([BIN, "run", str(app), "--feed-port", "0", "--conversion-port",
                            str(srv.getsockname()[1])], stderr=subprocess.PIPE, text=True,
                           env=env)
    try:
        port = None
        for line in eng.stderr:
            m = re.search(r"source '.*' listening on 127\.0\.0\.1:(\d+)", line)
            if m:
                port = int(m.group(1))
                break
        assert port, "the engine did not start"
        with socket.create_connection(("127.0.0.1", port)) as s:
            t0 = time.monotonic()
            s.sendall(blob)
        assert done.wait(300), "the output did not all arrive"
        assert got[0] == expect, (got[0], expect)
        return got[1] - t0
    finally:
        eng.terminate()
        eng.wait(30)
        srv.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=1000000)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    values = [float(i % 100) for i in range(a.messages)]
    blob = b"".join(struct.pack("<Iq", 12, 0) + struct.pack(">f", v) for v in values)
    expect = output_bytes(values)
    with tempfile.TemporaryDirectory() as tmp:
        py_app = Path(tmp) / "celsius_pyframed.py"
        py_app.write_text(PY_FRAMED)
        rates = {"C": [], "Python": []}
        for r in range(a.rounds):
            for name, app in (("C", APP), ("Python", py_app)):
                secs = one_run(app, blob, expect, tmp)
                rates[name].append(a.messages / secs)
                print("round %d %-6s %d messages in %.2f s: %.0f msg/s"
                      % (r + 1, name, a.messages, secs, a.messages / secs))
    c, py = statistics.median(rates["C"]), statistics.median(rates["Python"])
    print("median: C framing %.0f msg/s, Python framing %.0f msg/s (C / Python %.2f); "
          "load average %s" % (c, py, c / py, os.getloadavg()))


if __name__ == "__main__":
    sys.exit(main())
