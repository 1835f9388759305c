"""Alphabet votes with Wallaroo 0.6's pipeline API: the same input and output
as alphabet.py, with one state object per letter (key_by the letter) instead
of one for all letters.

Each input frame is a 4-byte big-endian length (always 5) followed by one
ASCII letter and a 4-byte big-endian vote count. Every frame adds its votes to
its letter's total, and the sink receives "letter => new total\\n" for each
frame; a letter's totals come in the order its frames arrived.

Run it as alphabet.py (see there), with examples/alphabet/alphabet_06.py.
"""

import struct

import wallaroo


def application_setup(args):
    in_host, in_port = wallaroo.tcp_parse_input_addrs(args)[0]
    out_host, out_port = wallaroo.tcp_parse_output_addrs(args)[0]

    votes = wallaroo.source("Alphabet", wallaroo.TCPSourceConfig(in_host, in_port, decoder))
    pipeline = (votes
                .key_by(extract_letter)
                .to(add_votes)
                .to_sink(wallaroo.TCPSinkConfig(out_host, out_port, encoder)))
    return wallaroo.build_application("Alphabet Votes", pipeline)


class Votes(object):
    def __init__(self, letter, votes):
        self.letter = letter
        self.votes = votes


class LetterTotal(object):
    """The votes of one letter so far."""

    def __init__(self):
        self.votes = 0


@wallaroo.decoder(header_length=4, length_fmt=">I")
def decoder(bs):
    letter, votes = struct.unpack(">cI", bs)
    return Votes(letter.decode("ascii"), votes)


@wallaroo.key_extractor
def extract_letter(data):
    return data.letter


@wallaroo.state_computation(name="add votes", state=LetterTotal)
def add_votes(data, total):
    total.votes += data.votes
    return Votes(data.letter, total.votes)


@wallaroo.encoder
def encoder(data):
    return "%s => %d\n" % (data.letter, data.votes)
