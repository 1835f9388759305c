"""Test app: a TCP source that serves --parallelism N connections at once
(Wallaroo's TCPSourceConfig parallelism); without the flag, TCPSourceConfig's
default. Each text frame comes back as a line. Built with Wallaroo 0.6's
pipeline API, or with ApplicationBuilder given --classic."""

import wallaroo


def flag(args, name, default):
    for i, a in enumerate(args):
        if a == name and i + 1 < len(args):
            return args[i + 1]
    return default


def application_setup(args):
    in_host, in_port = wallaroo.tcp_parse_input_addrs(args)[0]
    out_host, out_port = wallaroo.tcp_parse_output_addrs(args)[0]
    n = flag(args, "--parallelism", None)
    source = (wallaroo.TCPSourceConfig(in_host, in_port, decode) if n is None else
              wallaroo.TCPSourceConfig(in_host, in_port, decode, parallelism=int(n)))
    if "--classic" in args:
        ab = wallaroo.ApplicationBuilder("echo")
        ab.new_pipeline("echo", source)
        ab.to(same)
        ab.to_sink(wallaroo.TCPSinkConfig(out_host, out_port, encode))
        return ab.build()
    pipeline = (wallaroo.source("echo", source)
                .to(same)
                .to_sink(wallaroo.TCPSinkConfig(out_host, out_port, encode)))
    return wallaroo.build_application("echo", pipeline)


@wallaroo.decoder(header_length=4, length_fmt=">I")
def decode(bs):
    return bs.decode()


@wallaroo.computation(name="same")
def same(text):
    return text


@wallaroo.encoder
def encode(text):
    return text + "\n"
