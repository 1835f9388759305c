"""Test app with a GenSourceConfig source: the values 1..N, then the source ends.

    bettong run tests/py/apps/gen_app.py --out H:P --count N

The generator's initial_value() is 1 and apply(prev) is prev + 1 up to N, then
None. The sink gets "n n*n\\n" for each value, in order.
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
    ab = wallaroo.ApplicationBuilder("generated")
    ab.new_pipeline("squares", wallaroo.GenSourceConfig(Counter(count)))
    ab.to(square)
    ab.to_sink(wallaroo.TCPSinkConfig(out_host, out_port, encoder))
    return ab.build()


class Counter(object):
    def __init__(self, count):
        self.count = count

    def initial_value(self):
        return 1

    def apply(self, previous):
        if previous >= self.count:
            return None
        return previous + 1


@wallaroo.computation(name="square")
def square(n):
    return (n, n * n)


@wallaroo.encoder
def encoder(data):
    return "%d %d\n" % data
