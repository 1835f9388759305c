"""Test app for stopping: a slow echo whose encoder leaves a mark per message.

    bettong run tests/py/apps/marked_app.py --in H:P --out H:P --marker FILE --delay SEC

Each frame's UTF-8 text is held for SEC seconds (a sleep in the computation),
then the encoder appends one byte to FILE and returns "text\\n". So FILE's size
is the number of messages encoded, all of which must reach the sink.
"""

import os
import time

import wallaroo


def flag(args, name, default):
    for i, a in enumerate(args):
        if a == name and i + 1 < len(args):
            return args[i + 1]
    return default


def application_setup(args):
    in_host, in_port = wallaroo.tcp_parse_input_addrs(args)[0]
    out_host, out_port = wallaroo.tcp_parse_output_addrs(args)[0]
    marker = flag(args, "--marker", None)
    if marker is None:
        raise ValueError("--marker FILE is required")
    delay = float(flag(args, "--delay", "0.002"))
    ab = wallaroo.ApplicationBuilder("marked")
    ab.new_pipeline("slow echo", wallaroo.TCPSourceConfig(in_host, in_port, decoder))
    ab.to(SlowEcho(delay))
    ab.to_sink(wallaroo.TCPSinkConfig(out_host, out_port, MarkingEncoder(marker)))
    return ab.build()


@wallaroo.decoder(header_length=4, length_fmt=">I")
def decoder(bs):
    return bs.decode("utf-8")


class SlowEcho(object):
    def __init__(self, delay):
        self.delay = delay

    def name(self):
        return "slow echo"

    def compute(self, data):
        time.sleep(self.delay)
        return data


class MarkingEncoder(object):
    def __init__(self, path):
        self.path = path

    def encode(self, data):
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, b"x")
        finally:
            os.close(fd)
        return data + "\n"
