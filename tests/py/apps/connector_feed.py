"""A source connector script for the tests, written as Wallaroo 0.6.1's
connectors/udp_source is, but its values come from stdin (one Celsius float
per line) instead of UDP datagrams: each is sent as struct.pack(">f", value)
through wallaroo.experimental.SourceConnector. With --<connector>-event_time N,
message i carries event time N + i. At the end of its input it closes the
connection and exits."""

import struct
import sys

import wallaroo.experimental

connector = wallaroo.experimental.SourceConnector(required_params=[],
                                                  optional_params=['event_time'])
connector.connect()
params = connector.params
base = int(params.event_time or 0)
print("connected", flush=True)
for i, line in enumerate(sys.stdin):
    if line.strip():
        connector.write(struct.pack(">f", float(line)), base + i)
connector.close()
