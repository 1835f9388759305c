"""Wallaroo 0.6 test app: collect() then key_by() again.

Frames hold integers separated by spaces. split (a computation_multi) sends
each on; collect() brings them all to one state, which keeps the running total
and its count; key_by then keys by n % 3, and a second state counts the
numbers of each residue. The sink gets "n total count residue_count\\n".
"""

import wallaroo


def application_setup(args):
    in_host, in_port = wallaroo.tcp_parse_input_addrs(args)[0]
    out_host, out_port = wallaroo.tcp_parse_output_addrs(args)[0]
    pipeline = (wallaroo.source("numbers", wallaroo.TCPSourceConfig(in_host, in_port, decode))
                .to(split)
                .collect()
                .to(running_total)
                .key_by(residue)
                .to(count_residue)
                .to_sink(wallaroo.TCPSinkConfig(out_host, out_port, encode)))
    return wallaroo.build_application("collected", pipeline)


@wallaroo.decoder(header_length=4, length_fmt=">I")
def decode(bs):
    return bs.decode()


@wallaroo.computation_multi(name="split")
def split(text):
    return [int(w) for w in text.split()]


class Total(object):
    def __init__(self):
        self.total = 0
        self.count = 0


@wallaroo.state_computation(name="running total", state=Total)
def running_total(n, state):
    state.total += n
    state.count += 1
    return (n, state.total, state.count)


@wallaroo.key_extractor
def residue(msg):
    return str(msg[0] % 3)


class Count(object):
    def __init__(self):
        self.n = 0


@wallaroo.state_computation(name="count residue", state=Count)
def count_residue(msg, state):
    state.n += 1
    return msg + (state.n,)


@wallaroo.encoder
def encode(out):
    return "%d %d %d %d\n" % out
