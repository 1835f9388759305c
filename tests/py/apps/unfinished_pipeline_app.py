"""Test app whose build() is called with a pipeline never ended: WallarooError."""

import wallaroo


@wallaroo.decoder(header_length=4, length_fmt=">I")
def decoder(bs):
    return bs


@wallaroo.computation(name="identity")
def identity(data):
    return data


def application_setup(args):
    in_host, in_port = wallaroo.tcp_parse_input_addrs(args)[0]
    ab = wallaroo.ApplicationBuilder("unfinished")
    ab.new_pipeline("never ends", wallaroo.TCPSourceConfig(in_host, in_port, decoder))
    ab.to(identity)
    return ab.build()
