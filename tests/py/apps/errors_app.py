"""Test app: every message whose text starts with "boom" fails in one chosen step.

    bettong run tests/py/apps/errors_app.py --in H:P --out H:P --fail-in STEP

STEP is compute, partition, state, encoder, encoder-type or none. Good messages come out as
"text\\n", in order per connection (to, then to_state_partition keyed by the
first character). The failure raises ValueError("deliberate failure in STEP"),
the same text every time. A frame whose payload starts with b"!decoder" makes
the decoder raise; a payload that is not UTF-8 makes it raise too. With
encoder-type, the encoder returns an int (not bytes or str) for "boom"
messages instead of raising.
"""

import wallaroo

STEPS = ("compute", "partition", "state", "encoder", "encoder-type", "none")


def flag(args, name, default):
    for i, a in enumerate(args):
        if a == name and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(name + "="):
            return a[len(name) + 1:]
    return default


def application_setup(args):
    step = flag(args, "--fail-in", "none")
    if step not in STEPS:
        raise ValueError("--fail-in must be one of %s" % ", ".join(STEPS))
    in_host, in_port = wallaroo.tcp_parse_input_addrs(args)[0]
    out_host, out_port = wallaroo.tcp_parse_output_addrs(args)[0]
    ab = wallaroo.ApplicationBuilder("errors")
    ab.new_pipeline("maybe fail", wallaroo.TCPSourceConfig(in_host, in_port, TextDecoder()))
    ab.to(Echo(step))
    ab.to_state_partition(Tally(step), Seen, "seen", FirstChar(step),
                          list("abcdefghijklmnopqrstuvwxyz"))
    ab.to_sink(wallaroo.TCPSinkConfig(out_host, out_port, LineEncoder(step)))
    return ab.build()


def maybe_fail(configured, here, text):
    if configured == here and text.startswith("boom"):
        raise ValueError("deliberate failure in %s" % here)


class TextDecoder(object):
    def header_length(self):
        return 4

    def payload_length(self, bs):
        return int.from_bytes(bs, "big")

    def decode(self, bs):
        if bs.startswith(b"!decoder"):
            raise ValueError("deliberate failure in decoder")
        return bs.decode("utf-8")


class Echo(object):
    def __init__(self, step):
        self.step = step

    def name(self):
        return "echo"

    def compute(self, data):
        maybe_fail(self.step, "compute", data)
        return data


class FirstChar(object):
    def __init__(self, step):
        self.step = step

    def partition(self, data):
        maybe_fail(self.step, "partition", data)
        return data[:1]


class Seen(object):
    def __init__(self):
        self.n = 0


class Tally(object):
    def __init__(self, step):
        self.step = step

    def name(self):
        return "tally"

    def compute(self, data, state):
        maybe_fail(self.step, "state", data)
        state.n += 1
        return (data, True)


class LineEncoder(object):
    def __init__(self, step):
        self.step = step

    def encode(self, data):
        maybe_fail(self.step, "encoder", data)
        if self.step == "encoder-type" and data.startswith("boom"):
            return len(data)
        return data + "\n"
