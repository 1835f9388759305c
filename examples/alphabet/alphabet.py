"""Alphabet votes: one running total per letter, in a single state object.

Each input frame is a 4-byte big-endian length (always 5) followed by one
ASCII letter and a 4-byte big-endian vote count. Every frame adds its votes to
the letter's total in the one AllVotes state (to_stateful), and the sink
receives "letter => new total\\n" for each frame, in the order they arrived.

Run it by hand (from the repository root):

    python3 -c 'import struct, sys; sys.stdout.buffer.write(b"".join(
        struct.pack(">IcI", 5, l.encode(), v) for l, v in
        [("a", 3), ("b", 1), ("a", 2), ("z", 10)]))' > /tmp/votes.bin
    bettong receive --listen 127.0.0.1:7002 --out /tmp/totals.txt
    bettong run examples/alphabet/alphabet.py --in 127.0.0.1:7010 --out 127.0.0.1:7002
    bettong send --to 127.0.0.1:7010 --framed --file /tmp/votes.bin

/tmp/totals.txt then holds "a => 3", "b => 1", "a => 5", "z => 10".
"""

import struct

import wallaroo


def application_setup(args):
    in_host, in_port = wallaroo.tcp_parse_input_addrs(args)[0]
    out_host, out_port = wallaroo.tcp_parse_output_addrs(args)[0]

    ab = wallaroo.ApplicationBuilder("Alphabet Votes")
    ab.new_pipeline("Alphabet", wallaroo.TCPSourceConfig(in_host, in_port, decoder))
    ab.to_stateful(add_votes, AllVotes, "letter state")
    ab.to_sink(wallaroo.TCPSinkConfig(out_host, out_port, encoder))
    return ab.build()


class Votes(object):
    def __init__(self, letter, votes):
        self.letter = letter
        self.votes = votes


class AllVotes(object):
    def __init__(self):
        self.totals = {}

    def add(self, letter, votes):
        total = self.totals.get(letter, 0) + votes
        self.totals[letter] = total
        return total


@wallaroo.decoder(header_length=4, length_fmt=">I")
def decoder(bs):
    letter, votes = struct.unpack(">cI", bs)
    return Votes(letter.decode("ascii"), votes)


@wallaroo.state_computation(name="add votes")
def add_votes(data, state):
    return (Votes(data.letter, state.add(data.letter, data.votes)), True)


@wallaroo.encoder
def encoder(data):
    return "%s => %d\n" % (data.letter, data.votes)
