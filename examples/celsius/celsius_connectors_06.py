"""Celsius to Fahrenheit through Wallaroo 0.6.1's connectors (wallaroo.experimental),
the shape of Wallaroo's examples/python/celsius_connectors.

A source connector named "celsius_feed" brings temperatures in degrees Celsius,
each a big-endian float32 payload; two stateless steps multiply by 1.8 and
add 32; a sink connector named "fahrenheit_conversion" takes each result as the
UTF-8 text of the Python float (str(f), e.g. "33.8").

The engine listens for celsius_feed on 127.0.0.1:--feed-port (default 7100,
as in Wallaroo's example; 0 lets the kernel pick, and the engine logs
"source 'convert temperature readings' listening on H:P"). Every worker
connects to the fahrenheit_conversion connector on 127.0.0.1:--conversion-port
(default 7200). The connector scripts call application_setup with their own
command line, so they take the same two flags.

With Wallaroo's own connector scripts (connectors/udp_source, udp_sink), from
the directory of this file, PYTHONPATH holding Bettong's python/ and this
directory:

    udp_sink --application-module celsius_connectors_06 \
        --connector fahrenheit_conversion \
        --fahrenheit_conversion-host 127.0.0.1 --fahrenheit_conversion-port 8901 &
    bettong run celsius_connectors_06.py &
    udp_source --application-module celsius_connectors_06 --connector celsius_feed \
        --celsius_feed-host 127.0.0.1 --celsius_feed-port 8801 &

then send UDP datagrams of struct.pack(">f", celsius) to 127.0.0.1:8801; the
conversions arrive as UDP datagrams on 127.0.0.1:8901 (32.0, 33.8, 35.6, ...).
"""

import argparse
import struct

import wallaroo
import wallaroo.experimental


def connector_ports(args):
    """(feed port, conversion port) from --feed-port and --conversion-port."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--feed-port", default="7100")
    parser.add_argument("--conversion-port", default="7200")
    known = parser.parse_known_args(args)[0]
    return known.feed_port, known.conversion_port


def application_setup(args):
    feed_port, conversion_port = connector_ports(args)
    celsius_feed = wallaroo.experimental.SourceConnectorConfig(
        "celsius_feed",
        encoder=encode_feed,
        decoder=decode_feed,
        port=feed_port)
    fahrenheit_conversion = wallaroo.experimental.SinkConnectorConfig(
        "fahrenheit_conversion",
        encoder=encode_conversion,
        decoder=decode_conversion,
        port=conversion_port)
    pipeline = (
        wallaroo.source("convert temperature readings", celsius_feed)
        .to(multiply)
        .to(add)
        .to_sink(fahrenheit_conversion)
    )
    return wallaroo.build_application("Celsius to Fahrenheit", pipeline)


@wallaroo.computation(name="multiply by 1.8")
def multiply(data):
    return data * 1.8


@wallaroo.computation(name="add 32")
def add(data):
    return data + 32


@wallaroo.experimental.stream_message_encoder
def encode_feed(data):
    return data


@wallaroo.experimental.stream_message_decoder
def decode_feed(data):
    return struct.unpack(">f", data)[0]


@wallaroo.experimental.stream_message_encoder
def encode_conversion(data):
    return str(data).encode("utf-8")


@wallaroo.experimental.stream_message_decoder
def decode_conversion(data):
    return data.decode("utf-8")
