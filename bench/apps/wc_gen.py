"""The seed's word count with a generator source instead of a TCP one, for the
cluster benchmark: each worker generates --gen-lines lines of the corpus itself,
so no sender competes for the cores. Steps, state and sink are the example's
own (examples/word_count/word_count.py).

    bettong run bench/apps/wc_gen.py --out H:P --gen-lines N [--corpus FILE]
"""

import os
import sys

import wallaroo

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "examples", "word_count"))
import word_count as wc  # noqa: E402


def flag(args, name, default):
    for i, a in enumerate(args):
        if a == name and i + 1 < len(args):
            return args[i + 1]
    return default


class Lines(object):
    """The corpus's lines, again and again, `count` in all."""

    def __init__(self, path, count):
        with open(path, encoding="utf-8") as f:
            self.lines = f.read().split("\n")[:-1]
        self.count = count
        self.i = 0

    def initial_value(self):
        return self.apply(None)

    def apply(self, previous):
        if self.i >= self.count:
            return None
        line = self.lines[self.i % len(self.lines)]
        self.i += 1
        return line


def application_setup(args):
    out_host, out_port = wallaroo.tcp_parse_output_addrs(args)[0]
    count = int(flag(args, "--gen-lines", "100000"))
    corpus = flag(args, "--corpus", os.path.join(HERE, "..", "..", "examples", "word_count",
                                                 "data", "bettong_tales.txt"))
    ab = wallaroo.ApplicationBuilder("Word Count Application (generated input)")
    ab.new_pipeline("Split and Count", wallaroo.GenSourceConfig(Lines(corpus, count)))
    ab.to_parallel(wc.split)
    ab.to_state_partition(wc.count_word, wc.WordTotals, "word totals", wc.partition,
                          list("abcdefghijklmnopqrstuvwxyz!"))
    ab.to_sink(wallaroo.TCPSinkConfig(out_host, out_port, wc.encoder))
    return ab.build()
