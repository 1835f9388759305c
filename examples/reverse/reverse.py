"""Reverse: every UTF-8 text frame comes back with its characters reversed.

Each input frame is a 4-byte big-endian length and UTF-8 text; the sink
receives the reversed text followed by a newline, in the order the frames
arrived on each connection.

Run it by hand (from the repository root):

    bettong receive --listen 127.0.0.1:7002 --out /tmp/reversed.txt
    bettong run examples/reverse/reverse.py --in 127.0.0.1:7010 --out 127.0.0.1:7002
    bettong send --to 127.0.0.1:7010 --file examples/reverse/data/lines.txt
"""

import wallaroo


def application_setup(args):
    in_host, in_port = wallaroo.tcp_parse_input_addrs(args)[0]
    out_host, out_port = wallaroo.tcp_parse_output_addrs(args)[0]

    ab = wallaroo.ApplicationBuilder("Reverse Words")
    ab.new_pipeline("Reverse", wallaroo.TCPSourceConfig(in_host, in_port, decoder))
    ab.to(reverse)
    ab.to_sink(wallaroo.TCPSinkConfig(out_host, out_port, encoder))
    return ab.build()


@wallaroo.decoder(header_length=4, length_fmt=">I")
def decoder(bs):
    return bs.decode("utf-8")


@wallaroo.computation(name="reverse")
def reverse(data):
    return data[::-1]


@wallaroo.encoder
def encoder(data):
    return data + "\n"
