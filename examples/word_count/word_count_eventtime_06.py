"""Word count over windows of event time (Bettong's extension of Wallaroo
0.6's windows): how many times each word was said in each window of the
time written on its line, whatever order the lines come in.

Each input frame (4-byte big-endian length, then UTF-8 text) holds
"<ISO 8601 time> <line of text>", e.g. "2026-12-06T12:00:01.5 the cat sat"
(a time without a zone is UTC). The words (word_count_06.py's split) are
keyed by word and counted in tumbling windows of --window-ms (default 1 s) of
that time. Lines may come up to --late-ms (default 2 s) out of order; a word
said later than that, behind its own watermark, is written to the second
--out address ("LATE <time> <word>\\n") instead of being counted. Each window
writes "<window start, ISO> <word> => <count>\\n".

Run it by hand (four terminals, from the repository root):

    bettong receive --listen 127.0.0.1:7002 --out /tmp/counts.txt
    bettong receive --listen 127.0.0.1:7003 --out /tmp/late.txt
    bettong run examples/word_count/word_count_eventtime_06.py \\
        --in 127.0.0.1:7010 --out 127.0.0.1:7002,127.0.0.1:7003
    printf '2026-12-06T12:00:00.2 a b\\n2026-12-06T12:00:01.1 a\\n2026-12-06T12:00:00.7 b\\n' \\
        | bettong send --to 127.0.0.1:7010 --file -

A word's window is written once the word's own watermark (its newest time,
less --late-ms) passes the window's end, or, when the word is not seen again,
about --window-ms + --late-ms after its last line. Add `--workers 2` to
`bettong run` to count on two workers: the counts are the same.
"""

import argparse
import datetime

import wallaroo

from word_count_06 import split_words


def application_setup(args):
    parser = argparse.ArgumentParser()
    parser.add_argument("--window-ms", type=int, default=1000)
    parser.add_argument("--late-ms", type=int, default=2000)
    opts, _ = parser.parse_known_args(args[1:])
    in_host, in_port = wallaroo.tcp_parse_input_addrs(args)[0]
    outs = wallaroo.tcp_parse_output_addrs(args)
    late = wallaroo.TCPSinkConfig(outs[1][0], outs[1][1], encode_late)
    windows = (wallaroo.range_windows(wallaroo.milliseconds(opts.window_ms))
               .with_event_time(said_at, max_out_of_order=wallaroo.milliseconds(opts.late_ms))
               .with_late_data(wallaroo.late_to(late)))
    lines = wallaroo.source("Timed lines",
                            wallaroo.TCPSourceConfig(in_host, in_port, decode_timed_line))
    pipeline = (lines
                .to(split)
                .key_by(extract_word)
                .to(windows.over(WordCount))
                .to_sink(wallaroo.TCPSinkConfig(outs[0][0], outs[0][1], encode_count)))
    return wallaroo.build_application("Event-time Word Count", pipeline)


EPOCH = datetime.datetime(1970, 1, 1)


@wallaroo.decoder(header_length=4, length_fmt=">I")
def decode_timed_line(bs):
    stamp, _, text = bs.decode("utf-8").partition(" ")
    return datetime.datetime.fromisoformat(stamp), text


@wallaroo.computation_multi(name="split into words")
def split(line):
    when, text = line
    return [(when, word) for word in split_words(text)]


@wallaroo.key_extractor
def extract_word(said):
    return said[1]


def said_at(said):
    return said[0]


class Count(object):
    def __init__(self):
        self.n = 0


class WordCount(wallaroo.Aggregation):
    """A word's count in a window."""

    def initial_accumulator(self):
        return Count()

    def update(self, said, acc):
        acc.n += 1

    def combine(self, a1, a2):
        c = Count()
        c.n = a1.n + a2.n
        return c

    def output(self, word, acc, window):
        start = EPOCH + datetime.timedelta(microseconds=window[0] // 1000)
        return (start.isoformat(), word, acc.n)


@wallaroo.encoder
def encode_count(out):
    return "%s %s => %d\n" % out


@wallaroo.encoder
def encode_late(said):
    return "LATE %s %s\n" % (said[0].isoformat(), said[1])
