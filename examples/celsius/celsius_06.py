"""Celsius to Fahrenheit with Wallaroo 0.6's pipeline API: the same input and
output as celsius.py.

Each input frame is a 4-byte big-endian length (always 4) followed by a
big-endian float32 temperature in degrees Celsius. Two stateless steps multiply
it by 1.8 and add 32; the sink receives each result as a frame of the same
shape: struct.pack(">If", 4, fahrenheit).

Run it as celsius.py (see there), with examples/celsius/celsius_06.py.
"""

import struct

import wallaroo


def application_setup(args):
    in_host, in_port = wallaroo.tcp_parse_input_addrs(args)[0]
    out_host, out_port = wallaroo.tcp_parse_output_addrs(args)[0]

    readings = wallaroo.source("Celsius Conversion",
                               wallaroo.TCPSourceConfig(in_host, in_port, decoder))
    pipeline = (readings
                .to(multiply)
                .to(add)
                .to_sink(wallaroo.TCPSinkConfig(out_host, out_port, encoder)))
    return wallaroo.build_application("Celsius to Fahrenheit", pipeline)


@wallaroo.decoder(header_length=4, length_fmt=">I")
def decoder(bs):
    return struct.unpack(">f", bs)[0]


@wallaroo.computation(name="multiply by 1.8")
def multiply(data):
    return data * 1.8


@wallaroo.computation(name="add 32")
def add(data):
    return data + 32


@wallaroo.encoder
def encoder(data):
    return struct.pack(">If", 4, data)
