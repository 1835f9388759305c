"""Word count: the seed's example application for the classic Wallaroo API.

Each input frame (4-byte big-endian length, then UTF-8 text) holds a line of
text. The line is split into lower-cased words with surrounding punctuation
removed; every word is counted in the state partition of its first letter
('a'..'z', or "!" for anything else), and for every word seen the application
writes "word => running count\\n" to the sink.

Run it by hand (three terminals, from the repository root):

    bettong receive --listen 127.0.0.1:7002 --out /tmp/counts.txt
    bettong run examples/word_count/word_count.py \\
        --in 127.0.0.1:7010 --out 127.0.0.1:7002
    bettong send --to 127.0.0.1:7010 --file examples/word_count/data/bettong_tales.txt

or let the demo do all of it and check the result: `make demo`.
"""

import string

import wallaroo


def application_setup(args):
    in_host, in_port = wallaroo.tcp_parse_input_addrs(args)[0]
    out_host, out_port = wallaroo.tcp_parse_output_addrs(args)[0]

    word_partitions = list(string.ascii_lowercase) + ["!"]

    ab = wallaroo.ApplicationBuilder("Word Count Application")
    ab.new_pipeline("Split and Count",
                    wallaroo.TCPSourceConfig(in_host, in_port, decoder))
    ab.to_parallel(split)
    ab.to_state_partition(count_word, WordTotals, "word totals",
                          partition, word_partitions)
    ab.to_sink(wallaroo.TCPSinkConfig(out_host, out_port, encoder))
    return ab.build()


# Characters removed from both ends of every word.
PUNCTUATION = string.punctuation + "\u2018\u2019\u201c\u201d\u2014\u2013\u2026"


def split_words(text):
    """The words of `text`, in order: lower-cased, surrounding punctuation
    removed, empty results skipped."""
    words = []
    for token in text.split():
        word = token.strip(PUNCTUATION).lower()
        if word:
            words.append(word)
    return words


@wallaroo.decoder(header_length=4, length_fmt=">I")
def decoder(bs):
    return bs.decode("utf-8")


@wallaroo.computation_multi(name="split into words")
def split(data):
    return split_words(data)


def partition_key(word):
    first = word[:1]
    if "a" <= first <= "z":
        return first
    return "!"


@wallaroo.partition
def partition(data):
    return partition_key(data)


class WordTotals(object):
    """The running total of every word of one partition."""

    def __init__(self):
        self.totals = {}

    def update(self, word):
        count = self.totals.get(word, 0) + 1
        self.totals[word] = count
        return count


class WordCount(object):
    def __init__(self, word, count):
        self.word = word
        self.count = count

    def __eq__(self, other):
        return (isinstance(other, WordCount) and self.word == other.word
                and self.count == other.count)

    def __repr__(self):
        return "WordCount(%r, %d)" % (self.word, self.count)


@wallaroo.state_computation(name="count word")
def count_word(word, word_totals):
    return (WordCount(word, word_totals.update(word)), True)


@wallaroo.encoder
def encoder(data):
    return "%s => %d\n" % (data.word, data.count)
