"""Wallaroo 0.6 test app: a state computation with no key_by before it. In
Wallaroo 0.6.1 each message then has a random key, hence a new state: every
frame's output is "text 1\\n"."""

import wallaroo


def application_setup(args):
    in_host, in_port = wallaroo.tcp_parse_input_addrs(args)[0]
    out_host, out_port = wallaroo.tcp_parse_output_addrs(args)[0]
    pipeline = (wallaroo.source("unkeyed", wallaroo.TCPSourceConfig(in_host, in_port, decode))
                .to(count)
                .to_sink(wallaroo.TCPSinkConfig(out_host, out_port, encode)))
    return wallaroo.build_application("unkeyed", pipeline)


@wallaroo.decoder(header_length=4, length_fmt=">I")
def decode(bs):
    return bs.decode()


class Seen(object):
    def __init__(self):
        self.n = 0


@wallaroo.state_computation(name="count", state=Seen)
def count(text, state):
    state.n += 1
    return (text, state.n)


@wallaroo.encoder
def encode(out):
    return "%s %d\n" % out
