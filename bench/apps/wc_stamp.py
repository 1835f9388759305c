"""The seed's word count with a send time carried through, for the resilience
benchmark's latency part (bench/bench_resilience.py, part 4).

    bettong run bench/apps/wc_stamp.py --in H:P --out H:P [--run-with-resilience ...]

Each input frame (4-byte big-endian length) holds "<stamp> <line of text>": the
stamp is the sender's time (any run of digits) and the rest is a line of the
corpus. The line goes through the example's own split, partition, state
(WordTotals) and count (examples/word_count/word_count.py); every output line is
"<stamp> <word> => <count>\\n", so a receiver can tell when the words of a line
sent at <stamp> came out. The stamp is not a word: the state is exactly the
word count's.
"""

import os
import string
import sys

import wallaroo

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "examples", "word_count"))
import word_count as wc  # noqa: E402


@wallaroo.decoder(header_length=4, length_fmt=">I")
def decoder(bs):
    stamp, _, text = bs.partition(b" ")
    return (stamp, text.decode("utf-8"))


@wallaroo.computation_multi(name="split into words")
def split(data):
    stamp, text = data
    return [(stamp, w) for w in wc.split_words(text)]


@wallaroo.partition
def partition(data):
    return wc.partition_key(data[1])


@wallaroo.state_computation(name="count word")
def count_word(data, word_totals):
    stamp, word = data
    return ((stamp, word, word_totals.update(word)), True)


@wallaroo.encoder
def encoder(data):
    return b"%s %s => %d\n" % (data[0], data[1].encode("utf-8"), data[2])


def application_setup(args):
    in_host, in_port = wallaroo.tcp_parse_input_addrs(args)[0]
    out_host, out_port = wallaroo.tcp_parse_output_addrs(args)[0]
    ab = wallaroo.ApplicationBuilder("Word Count Application (stamped lines)")
    ab.new_pipeline("Split and Count", wallaroo.TCPSourceConfig(in_host, in_port, decoder))
    ab.to_parallel(split)
    ab.to_state_partition(count_word, wc.WordTotals, "word totals", partition,
                          list(string.ascii_lowercase) + ["!"])
    ab.to_sink(wallaroo.TCPSinkConfig(out_host, out_port, encoder))
    return ab.build()
