"""Test app for to_state_partition_u64: integer partition keys up to 2**64 - 1.

    bettong run tests/py/apps/u64_app.py --in H:P --out H:P

Frames are 4-byte big-endian length + an 8-byte big-endian unsigned value v.
The key is KEYS[v % len(KEYS)]; only the first four keys are in the initial
partition list, the others are created on first use. Each key's state sums the
values it saw; the sink gets "key=K value=V sum=S\\n" per frame.
"""

import struct

import wallaroo

KEYS = [0, 1, 2 ** 32, 2 ** 40 + 3, 2 ** 63, 2 ** 64 - 1]


def application_setup(args):
    in_host, in_port = wallaroo.tcp_parse_input_addrs(args)[0]
    out_host, out_port = wallaroo.tcp_parse_output_addrs(args)[0]
    ab = wallaroo.ApplicationBuilder("u64 keys")
    ab.new_pipeline("sum by key", wallaroo.TCPSourceConfig(in_host, in_port, decoder))
    ab.to_state_partition_u64(add, Sum, "sums", partition, KEYS[:4])
    ab.to_sink(wallaroo.TCPSinkConfig(out_host, out_port, encoder))
    return ab.build()


@wallaroo.decoder(header_length=4, length_fmt=">I")
def decoder(bs):
    return struct.unpack(">Q", bs)[0]


def key_of(value):
    return KEYS[value % len(KEYS)]


@wallaroo.partition
def partition(value):
    return key_of(value)


class Sum(object):
    def __init__(self):
        self.total = 0


@wallaroo.state_computation(name="add")
def add(value, state):
    state.total += value
    return ((key_of(value), value, state.total), True)


@wallaroo.encoder
def encoder(data):
    return "key=%d value=%d sum=%d\n" % data
