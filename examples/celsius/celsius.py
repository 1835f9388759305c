"""Celsius to Fahrenheit.

Each input frame is a 4-byte big-endian length (always 4) followed by a
big-endian float32 temperature in degrees Celsius. Two stateless steps multiply
it by 1.8 and add 32; the sink receives each result as a frame of the same
shape: struct.pack(">If", 4, fahrenheit).

Run it by hand (from the repository root):

    python3 -c 'import struct, sys; sys.stdout.buffer.write(b"".join(
        struct.pack(">If", 4, c) for c in (-40.0, 0.0, 36.6, 100.0)))' > /tmp/celsius.bin
    bettong receive --listen 127.0.0.1:7002 --framed --out /tmp/fahrenheit.bin
    bettong run examples/celsius/celsius.py --in 127.0.0.1:7010 --out 127.0.0.1:7002
    bettong send --to 127.0.0.1:7010 --framed --file /tmp/celsius.bin

The input is made on the spot (binary data is not kept in the repository); the
tests in tests/py/test_examples.py do the same.
"""

import struct

import wallaroo


def application_setup(args):
    in_host, in_port = wallaroo.tcp_parse_input_addrs(args)[0]
    out_host, out_port = wallaroo.tcp_parse_output_addrs(args)[0]

    ab = wallaroo.ApplicationBuilder("Celsius to Fahrenheit")
    ab.new_pipeline("Celsius Conversion",
                    wallaroo.TCPSourceConfig(in_host, in_port, decoder))
    ab.to(multiply)
    ab.to(add)
    ab.to_sink(wallaroo.TCPSinkConfig(out_host, out_port, encoder))
    return ab.build()


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
