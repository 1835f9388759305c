"""Word count with Wallaroo 0.6's pipeline API: the same input and output as
word_count.py, with the state keyed by the word itself (key_by) instead of a
partition per first letter.

Each input frame (4-byte big-endian length, then UTF-8 text) holds a line of
text. The line is split into lower-cased words with surrounding punctuation
removed; key_by makes each word its own key, so each word has its own
WordTotal state, and for every word seen the application writes
"word => running count\\n" to the sink.

Run it by hand (three terminals, from the repository root):

    bettong receive --listen 127.0.0.1:7002 --out /tmp/counts.txt
    bettong run examples/word_count/word_count_06.py \\
        --in 127.0.0.1:7010 --out 127.0.0.1:7002
    bettong send --to 127.0.0.1:7010 --file examples/word_count/data/bettong_tales.txt

and the same on two workers: add `--workers 2` to `bettong run`. As in
Wallaroo 0.6, the source runs on the first worker (the initializer); each word
is counted on the worker that owns its key.
"""

import string

import wallaroo


def application_setup(args):
    in_host, in_port = wallaroo.tcp_parse_input_addrs(args)[0]
    out_host, out_port = wallaroo.tcp_parse_output_addrs(args)[0]

    lines = wallaroo.source("Split and Count",
                            wallaroo.TCPSourceConfig(in_host, in_port, decode_lines))
    pipeline = (lines
                .to(split)
                .key_by(extract_word)
                .to(count_word)
                .to_sink(wallaroo.TCPSinkConfig(out_host, out_port, encode_word_count)))
    return wallaroo.build_application("Word Count Application", pipeline)


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
def decode_lines(bs):
    return bs.decode("utf-8")


@wallaroo.computation_multi(name="split into words")
def split(line):
    return split_words(line)


@wallaroo.key_extractor
def extract_word(word):
    return word


class WordTotal(object):
    """How many times one word was seen."""

    def __init__(self):
        self.count = 0


@wallaroo.state_computation(name="count word", state=WordTotal)
def count_word(word, word_total):
    word_total.count += 1
    return (word, word_total.count)


@wallaroo.encoder
def encode_word_count(word_count):
    return "%s => %d\n" % word_count
