"""Test app: writes the argument vector application_setup received, as one JSON line.

    bettong run tests/py/apps/args_app.py --out H:P [anything]
"""

import json

import wallaroo


def application_setup(args):
    out_host, out_port = wallaroo.tcp_parse_output_addrs(args)[0]
    ab = wallaroo.ApplicationBuilder("args")
    ab.new_pipeline("args", wallaroo.GenSourceConfig(Once(list(args))))
    ab.to_sink(wallaroo.TCPSinkConfig(out_host, out_port, encoder))
    return ab.build()


class Once(object):
    def __init__(self, args):
        self.args = args

    def initial_value(self):
        return self.args

    def apply(self, previous):
        return None


@wallaroo.encoder
def encoder(data):
    return json.dumps(data) + "\n"
