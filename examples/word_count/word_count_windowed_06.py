"""Word count over time windows, with Wallaroo 0.6.1's windows: how many times
each word was seen in each window of time, instead of a running count.

The input is word_count_06.py's (frames of UTF-8 lines). key_by makes each
word a key; range_windows(...).over(WordCount) keeps, per word, a count per
window of ingest time (by default tumbling windows of 5 s; --slide-ms makes
them slide). When a window closes the application writes
"word => count\\n" for it. A window closes when a later occurrence of its
word arrives after its end, on the windows' timer once other words have moved
time on, or, once the input has been silent for 4 x (range + delay), in a
final flush that outputs every window still holding words.

Run it by hand (three terminals, from the repository root):

    bettong receive --listen 127.0.0.1:7002 --out /tmp/counts.txt
    bettong run examples/word_count/word_count_windowed_06.py \\
        --in 127.0.0.1:7010 --out 127.0.0.1:7002 [--window-ms 5000] [--slide-ms 1000]
    bettong send --to 127.0.0.1:7010 --file examples/word_count/data/bettong_tales.txt

Sent at once (well within a window), the tales give each word's total, once
per window that held it: 20 s after the input stops at the latest. Add
`--workers 2` to `bettong run` to count on two workers.
"""

import argparse

import wallaroo

from word_count_06 import decode_lines, split, extract_word


def application_setup(args):
    parser = argparse.ArgumentParser()
    parser.add_argument("--window-ms", type=int, default=5000)
    parser.add_argument("--slide-ms", type=int, default=0)
    opts, _ = parser.parse_known_args(args[1:])
    in_host, in_port = wallaroo.tcp_parse_input_addrs(args)[0]
    out_host, out_port = wallaroo.tcp_parse_output_addrs(args)[0]

    windows = wallaroo.range_windows(wallaroo.milliseconds(opts.window_ms))
    if opts.slide_ms:
        windows = windows.with_slide(wallaroo.milliseconds(opts.slide_ms))
    lines = wallaroo.source("Split and Count",
                            wallaroo.TCPSourceConfig(in_host, in_port, decode_lines))
    pipeline = (lines
                .to(split)
                .key_by(extract_word)
                .to(windows.over(WordCount))
                .to_sink(wallaroo.TCPSinkConfig(out_host, out_port, encode_word_count)))
    return wallaroo.build_application("Windowed Word Count", pipeline)


class Count(object):
    def __init__(self):
        self.n = 0


class WordCount(wallaroo.Aggregation):
    """A word's count in a window."""

    def initial_accumulator(self):
        return Count()

    def update(self, word, acc):
        acc.n += 1

    def combine(self, a1, a2):
        c = Count()
        c.n = a1.n + a2.n
        return c

    def output(self, word, acc):
        # Windows with no occurrence of the word write nothing.
        return (word, acc.n) if acc.n else None


@wallaroo.encoder
def encode_word_count(word_count):
    return "%s => %d\n" % word_count
