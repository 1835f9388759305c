"""The resilience benchmark's state app (bench/bench_resilience.py, parts 2 and
3): a state partition with many keys, one small state object per key.

    bettong run bench/apps/keys_state.py --keys N [--value-bytes B] [--hot H]
        [--in H:P --out H:P] [--run-with-resilience ...]

A generator source touches every key 0..N-1 once (N messages), then, with
--hot H > 0, keeps touching keys 0..H-1 in turn forever (so every checkpoint
interval changes the same H keys, as long as the engine runs more than H
messages per interval); with --hot 0 it ends after the N keys. Its value is
the message number, so a recovered generator goes on where its checkpoint was.
The generator's messages produce no output (its pipeline ends with done()).

State per key: a Cell holding a counter and, with --value-bytes B, a bytes
value of B bytes (set once, when the key is first touched), so the pickled
state grows by about B bytes per key.

With --in and --out, a second pipeline reads records over TCP (each payload an
integer in ASCII), touches the key (that integer modulo N) in the same state and
writes "<key> <count>\\n" to the sink: a source that can keep sending across a
crash (`bettong send --resumable`) and an output that shows when records flow.
"""

import wallaroo

CONFIG = {"keys": 1000000, "hot": 0, "value_bytes": 0}


def new_value():
    """A bytes object of its own per key (pickle would write one shared object
    once), or 0 without --value-bytes."""
    n = CONFIG["value_bytes"]
    return bytes(n) if n > 0 else 0


def flag(args, name, default):
    for i, a in enumerate(args):
        if a == name and i + 1 < len(args):
            return args[i + 1]
    return default


class Cell(object):
    __slots__ = ("n", "v")

    def __init__(self):
        self.n = 0
        self.v = None

    def __getstate__(self):
        return (self.n, self.v)

    def __setstate__(self, st):
        self.n, self.v = st


class Touch(object):
    """Message numbers 0, 1, 2, ...: 0..N-1 touch every key once, later ones
    the hot keys (or the source ends)."""

    def initial_value(self):
        return 0 if CONFIG["keys"] > 0 else None

    def apply(self, previous):
        nxt = previous + 1
        if nxt >= CONFIG["keys"] and CONFIG["hot"] <= 0:
            return None
        return nxt


@wallaroo.partition
def gen_key(n):
    keys = CONFIG["keys"]
    if n < keys:
        return n
    return (n - keys) % CONFIG["hot"]


@wallaroo.state_computation(name="touch")
def touch(n, cell):
    if cell.v is None:
        cell.v = new_value()
    cell.n += 1
    return None, True


@wallaroo.decoder(header_length=4, length_fmt=">I")
def decode(payload):
    return int(payload) % CONFIG["keys"]


@wallaroo.partition
def tcp_key(k):
    return k


@wallaroo.state_computation(name="touch and tell")
def touch_tell(k, cell):
    if cell.v is None:
        cell.v = new_value()
    cell.n += 1
    return (k, cell.n), True


@wallaroo.encoder
def encode(kn):
    return "%d %d\n" % kn


def application_setup(args):
    CONFIG["keys"] = int(flag(args, "--keys", "1000000"))
    CONFIG["hot"] = int(flag(args, "--hot", "0"))
    CONFIG["value_bytes"] = int(flag(args, "--value-bytes", "0"))
    ab = wallaroo.ApplicationBuilder("keys state")
    ab.new_pipeline("touch", wallaroo.GenSourceConfig(Touch()))
    ab.to_state_partition(touch, Cell, "cells", gen_key)
    ab.done()
    if "--in" in args:
        in_host, in_port = wallaroo.tcp_parse_input_addrs(args)[0]
        out_host, out_port = wallaroo.tcp_parse_output_addrs(args)[0]
        ab.new_pipeline("tcp", wallaroo.TCPSourceConfig(in_host, in_port, decode))
        ab.to_state_partition(touch_tell, Cell, "cells", tcp_key)
        ab.to_sink(wallaroo.TCPSinkConfig(out_host, out_port, encode))
    return ab.build()
