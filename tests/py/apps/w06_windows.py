"""Wallaroo 0.6 test app: windows over an Aggregation, keyed by the message's key.

Frames are "key,value". The window is chosen with --window:
  tumbling  range_windows(500 ms)
  sliding   range_windows(500 ms).with_slide(250 ms)
  delayed   range_windows(500 ms).with_delay(250 ms)   (rounded up to 500 ms)
  count     count_windows(3)
Each window's output is "key n=<messages> sum=<total> first=<first value>\\n";
an empty window outputs nothing (output returns None). With --collect the
stream is collect()ed instead of keyed, and the output names the key
output() was given.
"""

import argparse

import wallaroo

WINDOWS = {
    "tumbling": lambda: wallaroo.range_windows(wallaroo.milliseconds(500)),
    "sliding": lambda: wallaroo.range_windows(wallaroo.milliseconds(500))
    .with_slide(wallaroo.milliseconds(250)),
    "delayed": lambda: wallaroo.range_windows(wallaroo.milliseconds(500))
    .with_delay(wallaroo.milliseconds(250)),
    "count": lambda: wallaroo.count_windows(3),
}


def application_setup(args):
    parser = argparse.ArgumentParser()
    parser.add_argument("--window", default="tumbling", choices=sorted(WINDOWS))
    parser.add_argument("--collect", action="store_true")
    parser.add_argument("--unkeyed", action="store_true", help="no key_by (refused)")
    parser.add_argument("--range-ms", type=int, default=0,
                        help="tumbling windows of this range instead")
    opts, _ = parser.parse_known_args(args[1:])
    in_host, in_port = wallaroo.tcp_parse_input_addrs(args)[0]
    out_host, out_port = wallaroo.tcp_parse_output_addrs(args)[0]
    p = wallaroo.source("windows", wallaroo.TCPSourceConfig(in_host, in_port, decode))
    if not opts.unkeyed:
        p = p.collect() if opts.collect else p.key_by(extract_key)
    windows = (wallaroo.range_windows(wallaroo.milliseconds(opts.range_ms)) if opts.range_ms
               else WINDOWS[opts.window]())
    pipeline = (p.to(windows.over(Stats))
                .to_sink(wallaroo.TCPSinkConfig(out_host, out_port, encode)))
    return wallaroo.build_application("windows", pipeline)


@wallaroo.decoder(header_length=4, length_fmt=">I")
def decode(bs):
    key, value = bs.decode().split(",")
    return key, int(value)


@wallaroo.key_extractor
def extract_key(msg):
    return msg[0]


class Acc(object):
    def __init__(self):
        self.n = 0
        self.total = 0
        self.first = None


class Stats(wallaroo.Aggregation):
    def initial_accumulator(self):
        return Acc()

    def update(self, msg, acc):
        acc.n += 1
        acc.total += msg[1]
        if acc.first is None:
            acc.first = msg[1]

    def combine(self, a1, a2):
        new = Acc()
        new.n = a1.n + a2.n
        new.total = a1.total + a2.total
        new.first = a1.first if a1.first is not None else a2.first
        return new

    def output(self, key, acc):
        if acc.n == 0:
            return None
        return "%s n=%d sum=%d first=%d" % (key, acc.n, acc.total, acc.first)


@wallaroo.encoder
def encode(line):
    return (line + "\n").encode()
