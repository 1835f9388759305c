"""Windowed word count on event time, for bench/bench_windows.py.

    bettong run bench/apps/wc_eventtime.py --in H:P --out H:P [--workers 2]

Each input frame (4-byte big-endian length) holds "<ns> <line of text>": the
event time of the line (ns since 1970) and a line of the corpus. The words
(examples/word_count/word_count_06.py's split_words) are keyed by word and
counted in 1 s tumbling windows of event time, with a watermark per word
trailing its newest event time by 1 s (with_event_time). Each window writes
"<word> <window start ns> <count>\\n".

The same functions run in a plain loop in bench_windows.py (the in-process
limit): inproc_windows() below is that loop.
"""

import os
import sys

import wallaroo

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "examples", "word_count"))
from word_count_06 import split_words  # noqa: E402

RANGE = wallaroo.seconds(1)
MAX_OUT_OF_ORDER = wallaroo.seconds(1)


def application_setup(args):
    in_host, in_port = wallaroo.tcp_parse_input_addrs(args)[0]
    out_host, out_port = wallaroo.tcp_parse_output_addrs(args)[0]
    windows = (wallaroo.range_windows(RANGE)
               .with_event_time(event_time, max_out_of_order=MAX_OUT_OF_ORDER))
    pipeline = (wallaroo.source("lines", wallaroo.TCPSourceConfig(in_host, in_port, decode))
                .to(split)
                .key_by(extract_word)
                .to(windows.over(WordCount))
                .to_sink(wallaroo.TCPSinkConfig(out_host, out_port, encode)))
    return wallaroo.build_application("Event-time windowed word count", pipeline)


@wallaroo.decoder(header_length=4, length_fmt=">I")
def decode(bs):
    ts, _, text = bs.partition(b" ")
    return int(ts), text.decode("utf-8")


@wallaroo.computation_multi(name="split into words")
def split(line):
    ts, text = line
    return [(ts, w) for w in split_words(text)]


@wallaroo.key_extractor
def extract_word(msg):
    return msg[1]


def event_time(msg):
    return msg[0]


class Count(object):
    __slots__ = ("n",)

    def __init__(self):
        self.n = 0


class WordCount(wallaroo.Aggregation):
    def initial_accumulator(self):
        return Count()

    def update(self, msg, acc):
        acc.n += 1

    def combine(self, a1, a2):
        c = Count()
        c.n = a1.n + a2.n
        return c

    def output(self, word, acc, window):
        return (word, window[0], acc.n) if acc.n else None


@wallaroo.encoder
def encode(out):
    return "%s %d %d\n" % out


def inproc_windows(payloads):
    """The application's functions called in a plain loop, no engine: decode,
    split, key, event time, per-word watermark and windows, update, output,
    encode. Returns the encoded outputs' count and the ones still open (what
    the engine would close on its idle clock)."""
    dec, spl = decode._bettong_fn, split._bettong_fn
    key, enc = extract_word._bettong_fn, encode._bettong_fn
    agg = WordCount()
    keys = {}  # word -> [watermark, {start: acc}]
    outputs = 0
    for payload in payloads:
        for msg in spl(dec(payload)):
            k = key(msg)
            ev = event_time(msg)
            st = keys.get(k)
            if st is None:
                st = keys[k] = [ev - MAX_OUT_OF_ORDER, {}]
            elif ev - MAX_OUT_OF_ORDER > st[0]:
                st[0] = ev - MAX_OUT_OF_ORDER
            if ev < st[0]:
                continue  # late
            wins = st[1]
            start = ev - ev % RANGE
            acc = wins.get(start)
            if acc is None:
                acc = wins[start] = agg.initial_accumulator()
            agg.update(msg, acc)
            for s in [s for s in wins if s + RANGE <= st[0]]:
                out = agg.output(k, wins.pop(s), (s, s + RANGE))
                if out is not None:
                    enc(out)
                    outputs += 1
    return outputs, sum(len(st[1]) for st in keys.values())
