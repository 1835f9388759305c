"""A sink connector script for the tests, written as Wallaroo 0.6.1's
connectors/udp_sink is, but it prints each value (one per line, flushed)
instead of sending it as a UDP datagram. It first prints the address it
listens on (the config's port may be 0)."""

import wallaroo.experimental

connector = wallaroo.experimental.SinkConnector(required_params=[], optional_params=[])
connector.listen()
print("listening on %s:%d" % connector.address, flush=True)
while True:
    value = connector.read()
    print(value, flush=True)
