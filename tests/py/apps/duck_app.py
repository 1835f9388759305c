"""Test app built only from hand-written (duck-typed) classes, no decorators.

    bettong run tests/py/apps/duck_app.py --in H:P --out H:P

Frames have a 2-byte big-endian header (">H") and UTF-8 text. Steps:
  Shout (compute):       "drop..." -> None (dropped), else the text upper-cased
  Echo (compute_multi):  "TWICE..." -> [t, t]; "NONE..." -> None; else [t]
  Tally (to_stateful):   counts every message it sees; "QUIET..." -> (None, True),
                         else ("TEXT #n", True)
  LineEncoder:           returns bytes: text + b"\\n"
"""

import wallaroo


def application_setup(args):
    in_host, in_port = wallaroo.tcp_parse_input_addrs(args)[0]
    out_host, out_port = wallaroo.tcp_parse_output_addrs(args)[0]
    ab = wallaroo.ApplicationBuilder("duck typed")
    ab.new_pipeline("ducks", wallaroo.TCPSourceConfig(in_host, in_port, ShortFrameDecoder()))
    ab.to(Shout())
    ab.to(Echo())
    ab.to_stateful(Tally(), Count, "count")
    ab.to_sink(wallaroo.TCPSinkConfig(out_host, out_port, LineEncoder()))
    return ab.build()


class ShortFrameDecoder(object):
    def header_length(self):
        return 2

    def payload_length(self, bs):
        return (bs[0] << 8) | bs[1]

    def decode(self, bs):
        return bs.decode("utf-8")


class Shout(object):
    def name(self):
        return "shout"

    def compute(self, data):
        if data.startswith("drop"):
            return None
        return data.upper()


class Echo(object):
    def name(self):
        return "echo"

    def compute_multi(self, data):
        if data.startswith("TWICE"):
            return [data, data]
        if data.startswith("NONE"):
            return None
        return [data]


class Count(object):
    def __init__(self):
        self.n = 0


class Tally(object):
    def name(self):
        return "tally"

    def compute(self, data, state):
        state.n += 1
        if data.startswith("QUIET"):
            return (None, True)
        return ("%s #%d" % (data, state.n), True)


class LineEncoder(object):
    def encode(self, data):
        return data.encode("utf-8") + b"\n"


def expected_output(texts):
    """What the app writes for `texts` sent in order on one connection."""
    out, n = [], 0
    for t in texts:
        if t.startswith("drop"):
            continue
        t = t.upper()
        if t.startswith("NONE"):
            continue
        for item in ([t, t] if t.startswith("TWICE") else [t]):
            n += 1
            if not item.startswith("QUIET"):
                out.append("%s #%d\n" % (item, n))
    return "".join(out)
