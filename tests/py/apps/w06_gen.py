"""Wallaroo 0.6 test app: a generator source keyed into state.

    bettong run tests/py/apps/w06_gen.py --out H:P --count N

The generator gives 1..N (then None: the source ends). key_by n % 7 (as a
str), and each key keeps a running sum; the sink gets "n key sum\\n". As in
Wallaroo 0.6.1 there is one generator in the whole cluster.
"""

import wallaroo


def flag(args, name, default):
    for i, a in enumerate(args):
        if a == name and i + 1 < len(args):
            return args[i + 1]
    return default


def application_setup(args):
    out_host, out_port = wallaroo.tcp_parse_output_addrs(args)[0]
    count = int(flag(args, "--count", "100"))
    pipeline = (wallaroo.source("numbers", wallaroo.GenSourceConfig(Numbers(count)))
                .key_by(seventh)
                .to(add)
                .to_sink(wallaroo.TCPSinkConfig(out_host, out_port, encode)))
    return wallaroo.build_application("generated", pipeline)


class Numbers(object):
    def __init__(self, count):
        self.count = count

    def initial_value(self):
        return 1

    def apply(self, previous):
        return previous + 1 if previous < self.count else None


@wallaroo.key_extractor
def seventh(n):
    return str(n % 7)


class Sum(object):
    def __init__(self):
        self.total = 0


@wallaroo.state_computation(name="add", state=Sum)
def add(n, state):
    state.total += n
    return (n, n % 7, state.total)


@wallaroo.encoder
def encode(out):
    return "%d %d %d\n" % out
