"""Wallaroo 0.6 test app: keys of every type 0.6 allows, state_computation_multi,
and to_sinks with an encoder that returns None.

Frames are "key,value". The key extractor turns "b:x" into b"x", "i:N" into
the int N (which Wallaroo reads as chr(N)), "f:..." into a float (refused: the
message is dropped with an error), anything else into the str itself; so "a",
"b:a" and "i:97" are one key. Each key keeps a running sum; the state
computation returns [(key text, sum)], plus (key text, -sum) when the sum is a
multiple of 10. Sink 1 (the first --out) gets "key => sum\\n" for every output;
sink 2 gets "key sum\\n" for the even sums only (its encoder returns None for
the others).
"""

import wallaroo


def application_setup(args):
    in_host, in_port = wallaroo.tcp_parse_input_addrs(args)[0]
    outs = wallaroo.tcp_parse_output_addrs(args)
    pipeline = (wallaroo.source("keyed", wallaroo.TCPSourceConfig(in_host, in_port, decode))
                .to(parse)
                .key_by(extract_key)
                .to(add)
                .to_sinks([wallaroo.TCPSinkConfig(outs[0][0], outs[0][1], encode_all),
                           wallaroo.TCPSinkConfig(outs[1][0], outs[1][1], encode_even)]))
    return wallaroo.build_application("keyed", pipeline)


@wallaroo.decoder(header_length=4, length_fmt=">I")
def decode(bs):
    return bs.decode()


@wallaroo.computation(name="parse")
def parse(text):
    key, value = text.split(",")
    return key, int(value)


@wallaroo.key_extractor
def extract_key(msg):
    key = msg[0]
    if key.startswith("b:"):
        return key[2:].encode()
    if key.startswith("i:"):
        return int(key[2:])
    if key.startswith("f:"):
        return float(key[2:])
    return key


class Sum(object):
    def __init__(self):
        self.total = 0


@wallaroo.state_computation_multi(name="add", state=Sum)
def add(msg, state):
    state.total += msg[1]
    out = [(msg[0], state.total)]
    if state.total % 10 == 0:
        out.append((msg[0], -state.total))
    return out


@wallaroo.encoder
def encode_all(out):
    return "%s => %d\n" % out


@wallaroo.encoder
def encode_even(out):
    if out[1] % 2:
        return None
    return ("%s %d\n" % out).encode()
