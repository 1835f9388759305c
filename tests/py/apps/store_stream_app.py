"""A streaming application whose computations use persistent objects: frames are
"key,n"; the state partition of the key keeps a running sum, and every message
also adds n to the persistent Tally found by the alias given with --tally, whose
add() runs in the store on the master copy. The workers reach the store named by
$BETTONG_STORE (a cluster's workers each connect on first use)."""

import wallaroo

from bettong.objects import Persistent, active


class Tally(Persistent):
    total: int
    count: int

    def __init__(self):
        self.total = 0
        self.count = 0

    @active
    def add(self, n):
        self.total += n
        self.count += 1
        return self.total


_tally = {}


def tally(alias):
    if alias not in _tally:
        _tally[alias] = Tally.get_by_alias(alias)
    return _tally[alias]


def application_setup(args):
    in_host, in_port = wallaroo.tcp_parse_input_addrs(args)[0]
    out_host, out_port = wallaroo.tcp_parse_output_addrs(args)[0]
    alias = args[args.index("--tally") + 1]
    ab = wallaroo.ApplicationBuilder("Tallied sums")
    ab.new_pipeline("sums", wallaroo.TCPSourceConfig(in_host, in_port, decoder))
    ab.to_state_partition(Add(alias), Sum, "sums", partition, [])
    ab.to_sink(wallaroo.TCPSinkConfig(out_host, out_port, encoder))
    return ab.build()


class Sum:
    def __init__(self):
        self.total = 0


@wallaroo.decoder(header_length=4, length_fmt=">I")
def decoder(bs):
    key, value = bs.decode().split(",")
    return key, int(value)


@wallaroo.partition
def partition(msg):
    return msg[0]


class Add:
    """A state computation written as a class; it holds the alias to use."""

    def __init__(self, alias):
        self.alias = alias

    def name(self):
        return "add and tally"

    def compute(self, msg, state):
        state.total += msg[1]
        tally(self.alias).add(msg[1])
        return (msg[0], state.total), True


@wallaroo.encoder
def encoder(out):
    return "%s => %d\n" % out
