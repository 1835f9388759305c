"""keyed_sums with messages of its own class and its own serialize/deserialize
that, like Wallaroo's performance-suite market spread, know that class only:
anything else (a key, a dict of states, a state) gives None. Wallaroo used an
application's serialize for its messages between workers; Bettong too, and for
nothing else. Frames are "key,value"; the output is "key => running sum".

`--serialize-returns int` makes serialize return an int for every message;
`--serialize-raises` and `--deserialize-raises` make them raise: the tests of
how such errors are reported."""

import struct

import wallaroo

MODE = {"returns": None, "raises": False, "de_raises": False}


def application_setup(args):
    if "--serialize-returns" in args:
        MODE["returns"] = args[args.index("--serialize-returns") + 1]
    MODE["raises"] = "--serialize-raises" in args
    MODE["de_raises"] = "--deserialize-raises" in args
    in_host, in_port = wallaroo.tcp_parse_input_addrs(args)[0]
    out_host, out_port = wallaroo.tcp_parse_output_addrs(args)[0]
    ab = wallaroo.ApplicationBuilder("Own serializers")
    ab.new_pipeline("sums", wallaroo.TCPSourceConfig(in_host, in_port, decoder))
    ab.to_state_partition(add, Sum, "sums", partition, [])
    ab.to_sink(wallaroo.TCPSinkConfig(out_host, out_port, encoder))
    return ab.build()


class Reading(object):
    def __init__(self, key, value):
        self.key = key
        self.value = value


class Sum(object):
    def __init__(self):
        self.total = 0


def serialize(o):
    if MODE["raises"]:
        raise ValueError("cannot serialize %s" % type(o).__name__)
    if MODE["returns"] == "int":
        return 7
    if isinstance(o, Reading):
        k = o.key.encode()
        return struct.pack(">HQ", len(k), o.value) + k
    return None  # as Wallaroo's market spread: it knows its messages only


def deserialize(bs):
    if MODE["de_raises"]:
        raise ValueError("cannot deserialize %d bytes" % len(bs))
    n, value = struct.unpack(">HQ", bs[:10])
    if len(bs) != 10 + n:
        return None
    return Reading(bs[10:].decode(), value)


@wallaroo.decoder(header_length=4, length_fmt=">I")
def decoder(bs):
    key, value = bs.decode().split(",")
    return Reading(key, int(value))


@wallaroo.partition
def partition(msg):
    return msg.key


@wallaroo.state_computation(name="add")
def add(msg, state):
    state.total += msg.value
    return (msg.key, state.total), True


@wallaroo.encoder
def encoder(out):
    return "%s => %d\n" % out
