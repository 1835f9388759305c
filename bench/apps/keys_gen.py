"""The cluster benchmark's forwarding probe: each worker generates --gen N
integers; a state partition keyed by the integer modulo 4096 adds them up.
Nothing is written out, so the CPU a message costs is the source, routing and
the state step, plus, for a message whose key another worker owns, forwarding.

    bettong run bench/apps/keys_gen.py --gen N
"""

import wallaroo


def flag(args, name, default):
    for i, a in enumerate(args):
        if a == name and i + 1 < len(args):
            return args[i + 1]
    return default


class Count(object):
    def __init__(self, n):
        self.n = n

    def initial_value(self):
        return 0 if self.n > 0 else None

    def apply(self, previous):
        nxt = previous + 1
        return nxt if nxt < self.n else None


class Total(object):
    def __init__(self):
        self.total = 0


@wallaroo.partition
def key(n):
    return n % 4096


@wallaroo.state_computation(name="add")
def add(n, state):
    state.total += n
    return None, False


def application_setup(args):
    n = int(flag(args, "--gen", "100000"))
    ab = wallaroo.ApplicationBuilder("keys")
    ab.new_pipeline("keys", wallaroo.GenSourceConfig(Count(n)))
    ab.to_state_partition_u64(add, Total, "totals", key, [])
    ab.done()
    return ab.build()
