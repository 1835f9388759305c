"""A test application whose output shows the order in which each key's
messages ran: frames are "key,value"; the state partition of the key keeps a
running sum and writes "key => sum". Run in another order, a key's sums differ.
Many keys, so they spread over every worker of a cluster."""

import wallaroo


def application_setup(args):
    in_host, in_port = wallaroo.tcp_parse_input_addrs(args)[0]
    out_host, out_port = wallaroo.tcp_parse_output_addrs(args)[0]
    ab = wallaroo.ApplicationBuilder("Keyed sums")
    ab.new_pipeline("sums", wallaroo.TCPSourceConfig(in_host, in_port, decoder))
    ab.to_state_partition(add, Sum, "sums", partition, [])
    ab.to_sink(wallaroo.TCPSinkConfig(out_host, out_port, encoder))
    return ab.build()


class Sum:
    def __init__(self):
        self.total = 0


@wallaroo.decoder(header_length=4, length_fmt=">I")
def decoder(bs):
    key, value = bs.decode().split(",")
    return key, int(value)


@wallaroo.partition
def partition(msg):
    return msg[0]


@wallaroo.state_computation(name="add")
def add(msg, state):
    state.total += msg[1]
    return (msg[0], state.total), True


@wallaroo.encoder
def encoder(out):
    return "%s => %d\n" % out
