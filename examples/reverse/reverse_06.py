"""Reverse with Wallaroo 0.6's pipeline API: the same input and output as
reverse.py. Every UTF-8 text frame comes back with its characters reversed,
followed by a newline, in the order the frames arrived on each connection.

Run it as reverse.py (see there), with examples/reverse/reverse_06.py.
"""

import wallaroo


def application_setup(args):
    in_host, in_port = wallaroo.tcp_parse_input_addrs(args)[0]
    out_host, out_port = wallaroo.tcp_parse_output_addrs(args)[0]

    texts = wallaroo.source("Reverse", wallaroo.TCPSourceConfig(in_host, in_port, decoder))
    pipeline = texts.to(reverse).to_sink(wallaroo.TCPSinkConfig(out_host, out_port, encoder))
    return wallaroo.build_application("Reverse Words", pipeline)


@wallaroo.decoder(header_length=4, length_fmt=">I")
def decoder(bs):
    return bs.decode("utf-8")


@wallaroo.computation(name="reverse")
def reverse(data):
    return data[::-1]


@wallaroo.encoder
def encoder(data):
    return data + "\n"
