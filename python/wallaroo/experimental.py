"""Wallaroo 0.6.1's `wallaroo.experimental`: connectors, as run by Bettong.

A connector is a separate process that moves data between the outside world
(UDP, Kafka, files, ...) and the application over TCP, one frame per message:

    u32 little-endian   L = 8 + len(payload)
    i64 little-endian   event time (ms since the epoch by convention; 0 by default)
    payload             the user's encoder's bytes

Inside `application_setup`, `SourceConnectorConfig` and `SinkConnectorConfig`
name the connectors and where they meet the engine:

* a source connector: the engine (the cluster's initializer) listens on
  host:port, up to 10 connections; the connector script connects to it
  (`SourceConnector.connect`) and writes frames made by the config's encoder;
  the engine decodes their payloads with the config's decoder.
* a sink connector: the connector script listens on host:port
  (`SinkConnector.listen`); every worker connects to it and writes each output
  as a frame whose payload is the config's encoder's bytes (event time 0); the
  script decodes them with the config's decoder (`SinkConnector.read`).

The engine cuts and writes these frames itself, in C: the user's functions
decorated with `stream_message_decoder` / `stream_message_encoder` see only
the payload, as they do here.

The script side (`SourceConnector`, `SinkConnector`) imports the application
module named by `--application-module`, calls its `application_setup(argv)`
with the script's own command line, and finds the config named by
`--connector` in what `wallaroo.build_application` returned. Each connector's
own parameters are flags `--<connector name>-<param>`.

Differences from Wallaroo 0.6.1 (each documented in docs/user-guide.md):
an encoder may return a str (sent as UTF-8) or None (nothing is sent);
`SinkConnector.read(timeout)` returns None when `timeout` seconds pass without
a message (Wallaroo's went on waiting); a closed connection is dropped rather
than polled forever; a sink connector inside `to_sinks([...])` is found too;
`SinkConnector.address` gives the address listened on (for port 0).
"""

import argparse
import datetime
import errno
import importlib
import select
import socket
import struct
import sys
import time

import wallaroo

__all__ = [
    "stream_message_decoder", "stream_message_encoder",
    "SourceConnectorConfig", "SinkConnectorConfig",
    "SourceConnector", "SinkConnector",
    "UnexpectedSocketError", "parse_connector_args",
    "ConnectorDecoder", "ConnectorEncoder",
]

_LENGTH = struct.Struct("<I")
_EVENT_TIME = struct.Struct("<q")
_EVENT_TIME_SIZE = _EVENT_TIME.size  # counted in the frame's length
_MAX_PAYLOAD = 0xFFFFFFFF - _EVENT_TIME_SIZE

# How long SourceConnector.connect waits between attempts while the engine
# does not listen yet (Wallaroo 0.6.1: 1 s).
CONNECT_RETRY_SECONDS = 1.0


# ---------------------------------------------------------------- codecs

def _event_time_ms(event_time):
    """The frame's event time: a datetime becomes whole ms since the epoch
    (a naive one is local time, as datetime.timestamp() takes it); an int is
    written as given."""
    if isinstance(event_time, datetime.datetime):
        return int(event_time.timestamp() * 1000)
    if isinstance(event_time, bool) or not isinstance(event_time, int):
        raise TypeError("event_time must be an int (ms) or a datetime.datetime, not %s"
                        % type(event_time).__name__)
    if not -(1 << 63) <= event_time < (1 << 63):
        raise ValueError("event_time %d does not fit in a signed 64-bit integer" % event_time)
    return event_time


def _payload_bytes(payload, what):
    """An encoder's result as bytes (a str as UTF-8), or None for "send nothing"."""
    if payload is None or isinstance(payload, bytes):
        return payload
    if isinstance(payload, str):
        return payload.encode("utf-8")
    try:
        return bytes(memoryview(payload))
    except TypeError:
        raise TypeError("%s returned %s; expected bytes, str or None"
                        % (what, type(payload).__name__))


class ConnectorDecoder(wallaroo.Decoder):
    """What `@stream_message_decoder` makes: the methods a decoder has
    (header_length, payload_length, decode over the length-counted bytes, which
    start with the event time) around the user's function of the payload.
    The engine frames in C and calls that function directly."""

    # Read by the engine (src/stream/graph.c): frame this codec's input in C.
    _bettong_connector_frame = True

    def __init__(self, fn):
        wallaroo._check_arity(fn, 1, "@wallaroo.experimental.stream_message_decoder")
        self._bettong_fn = fn

    def header_length(self):
        return _LENGTH.size

    def payload_length(self, bs):
        return _LENGTH.unpack(bs)[0]

    def decode(self, bs):
        # The event time is not passed on, as in Wallaroo 0.6.1.
        return self._bettong_fn(bs[_EVENT_TIME_SIZE:])

    def decoder(self):
        return self._bettong_fn


class ConnectorEncoder(wallaroo.Encoder):
    """What `@stream_message_encoder` makes: encode(data, event_time=0) gives a
    whole connector frame around the user's function's bytes (None when the
    function returns None: nothing to send)."""

    _bettong_connector_frame = True

    def __init__(self, fn):
        wallaroo._check_arity(fn, 1, "@wallaroo.experimental.stream_message_encoder")
        self._bettong_fn = fn

    def encode(self, data, event_time=0):
        payload = _payload_bytes(self._bettong_fn(data), "stream_message_encoder %s"
                                 % getattr(self._bettong_fn, "__name__", "?"))
        if payload is None:
            return None
        if len(payload) > _MAX_PAYLOAD:
            raise ValueError("a connector frame holds at most %d bytes of payload, not %d"
                             % (_MAX_PAYLOAD, len(payload)))
        return (_LENGTH.pack(len(payload) + _EVENT_TIME_SIZE)
                + _EVENT_TIME.pack(_event_time_ms(event_time)) + payload)


def stream_message_decoder(func):
    return ConnectorDecoder(func)


def stream_message_encoder(func):
    return ConnectorEncoder(func)


# ---------------------------------------------------------------- configs

class _ConnectorConfig(object):
    _kind = None

    def __init__(self, name, encoder, decoder, port, host='127.0.0.1'):
        if not isinstance(name, str) or not name:
            raise wallaroo.WallarooParameterError(
                "%s: the connector's name must be a non-empty str, not %r"
                % (type(self).__name__, name))
        wallaroo._check_port(port, "%s %r" % (type(self).__name__, name))
        self._name = name
        self._host = host
        self._port = port
        self._encoder = encoder
        self._decoder = decoder

    def to_tuple(self):
        return (self._kind, self._name, self._host, str(self._port), self._encoder,
                self._decoder)

    def _describe(self):
        raise wallaroo.WallarooError(
            "%s %r: connectors work in Wallaroo 0.6's pipeline API (wallaroo.source(...) ... "
            "wallaroo.build_application), not in ApplicationBuilder"
            % (type(self).__name__, self._name))


class SourceConnectorConfig(_ConnectorConfig):
    """The engine listens on host:port for the connector named `name`, and
    decodes its frames with `decoder`; the connector script encodes with
    `encoder`."""
    _kind = "source_connector"


class SinkConnectorConfig(_ConnectorConfig):
    """Every worker connects to host:port, where the connector named `name`
    listens, and writes outputs encoded with `encoder`; the connector script
    decodes them with `decoder`."""
    _kind = "sink_connector"


# ---------------------------------------------------------------- the script side

class UnexpectedSocketError(Exception):
    """The SinkConnector's listening socket failed."""


def _connector_prefix(args):
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument('--connector', dest='connector_name')
    return parser.parse_known_args(args)[0].connector_name


def parse_connector_args(args, required_params=[], optional_params=[]):
    """`--application-module MOD --connector NAME` and the connector's own
    parameters, each `--NAME-<param>` (in the result as `.<param>`). Other
    arguments are left alone: they are the application's."""
    prefix = _connector_prefix(args) or 'CONNECTOR_NAME'
    parser = argparse.ArgumentParser()
    parser.add_argument('--application-module', dest='application', required=True)
    parser.add_argument('--connector', dest='connector_name', required=True)
    for key in required_params:
        parser.add_argument('--{}-{}'.format(prefix, key), dest=key, required=True)
    for key in optional_params:
        parser.add_argument('--{}-{}'.format(prefix, key), dest=key)
    return parser.parse_known_args(args)[0]


def _application_stages(params, argv):
    """The stages of every node of the application the connector belongs to."""
    module = importlib.import_module(params.application)
    application = module.application_setup(argv)
    if not (isinstance(application, tuple) and len(application) == 4
            and isinstance(application[2], list)):
        raise RuntimeError("application_setup() of %s did not return "
                           "wallaroo.build_application()'s tuple: connectors need Wallaroo "
                           "0.6's pipeline API" % params.application)
    for node in application[2]:
        for stage in node:
            yield stage


def _find_source_config(params, argv):
    found = None
    for stage in _application_stages(params, argv):
        if (stage[0] == 'source' and stage[2][0] == 'source_connector'
                and stage[2][1] == params.connector_name):
            found = stage[2]
    if found is None:
        raise RuntimeError("Unable to find a source connector with the name "
                           + str(params.connector_name))
    return found


def _find_sink_config(params, argv):
    found = None
    for stage in _application_stages(params, argv):
        if stage[0] == 'to_sink':
            configs = [stage[1]]
        elif stage[0] == 'to_sinks':
            configs = stage[1]
        else:
            continue
        for config in configs:
            if config[0] == 'sink_connector' and config[1] == params.connector_name:
                found = config
    if found is None:
        raise RuntimeError("Unable to find a sink connector with the name "
                           + str(params.connector_name))
    return found


class SourceConnector(object):
    """A connector script's link to the engine for a source connector: connect(),
    then write(message[, event_time]) for each message."""

    def __init__(self, args=None, required_params=[], optional_params=[]):
        argv = args or sys.argv
        params = parse_connector_args(argv, required_params, optional_params)
        (_, _name, host, port, encoder, _decoder) = _find_source_config(params, argv)
        self.params = params
        self._encoder = encoder
        self._host = host
        self._port = port
        self._conn = None

    def connect(self, host=None, port=None):
        """Connect to the engine (the config's host:port unless given); while it
        refuses (it is not listening yet), try again every second."""
        address = (host or self._host, int(port or self._port))
        while True:
            try:
                self._conn = socket.create_connection(address)
                return
            except OSError as err:
                if err.errno != errno.ECONNREFUSED:
                    raise
            time.sleep(CONNECT_RETRY_SECONDS)

    def write(self, message, event_time=0):
        if self._conn is None:
            raise RuntimeError("Please call connect before writing")
        frame = self._encoder.encode(message, event_time)
        if frame is not None:
            self._conn.sendall(frame)

    def close(self):
        """Close the connection to the engine (Bettong; Wallaroo's scripts
        just exit)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class SinkConnector(object):
    """A connector script's end of a sink connector: listen(), then read() the
    outputs of every worker, one decoded message per call."""

    def __init__(self, args=None, required_params=[], optional_params=[]):
        argv = args or sys.argv
        params = parse_connector_args(argv, required_params, optional_params)
        (_, _name, host, port, _encoder, decoder) = _find_sink_config(params, argv)
        self.params = params
        self._decoder = decoder
        self._host = host
        self._port = port
        self._acceptor = None
        self._live = []     # the workers' connections
        self._buffers = {}  # connection: bytearray of what it sent, not yet decoded
        self._order = []    # connections with a buffer, in the order they are looked at

    def listen(self, host=None, port=None, backlog=0):
        """Listen on the config's host:port unless given (port 0: the kernel
        picks one, see `address`)."""
        host = host or self._host
        port = int(port or self._port)
        family, kind, proto, _, sockaddr = socket.getaddrinfo(
            host, port, 0, socket.SOCK_STREAM, 0, socket.AI_PASSIVE)[0]
        acceptor = socket.socket(family, kind, proto)
        acceptor.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        acceptor.bind(sockaddr)
        acceptor.listen(backlog)
        self._acceptor = acceptor

    @property
    def address(self):
        """(host, port) listened on (Bettong)."""
        if self._acceptor is None:
            raise RuntimeError("Please call listen first")
        return self._acceptor.getsockname()[:2]

    def read(self, timeout=None):
        """The next message from any worker: the decoder's result for the next
        whole frame. With a timeout, None once that many seconds pass without
        one."""
        if self._acceptor is None:
            raise RuntimeError("Please call listen before reading")
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            for conn in list(self._order):
                ok, message = self._take_one(conn)
                if ok:
                    # The others go first next time: no worker starves the rest.
                    self._order.remove(conn)
                    self._order.append(conn)
                    return message
                if conn not in self._live:
                    self._forget(conn)
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            self._wait_readable(wait)
            if deadline is not None and time.monotonic() >= deadline:
                return None

    def _take_one(self, conn):
        buf = self._buffers[conn]
        header_len = self._decoder.header_length()
        if len(buf) < header_len:
            return False, None
        expected = self._decoder.payload_length(bytes(buf[:header_len]))
        if len(buf) < header_len + expected:
            return False, None
        data = bytes(buf[header_len:header_len + expected])
        del buf[:header_len + expected]
        return True, self._decoder.decode(data)

    def _wait_readable(self, timeout):
        """Accept and read what is ready within timeout."""
        watched = [self._acceptor] + self._live
        readable, _, broken = select.select(watched, [], watched, timeout)
        if self._acceptor in broken:
            self._acceptor.close()
            raise UnexpectedSocketError()
        for conn in readable:
            if conn is self._acceptor:
                conn, _ = self._acceptor.accept()
                conn.setblocking(False)
                self._live.append(conn)
                self._buffers[conn] = bytearray()
                self._order.append(conn)
                continue
            try:
                data = conn.recv(65536)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            if data:
                self._buffers[conn] += data
            else:
                # Closed: its whole frames are still read, then it is forgotten.
                self._live.remove(conn)
                conn.close()
        for conn in broken:
            if conn in self._live:
                self._live.remove(conn)
                conn.close()

    def _forget(self, conn):
        """A closed connection with no whole frame left."""
        if self._buffers.pop(conn):
            sys.stderr.write("wallaroo.experimental.SinkConnector: a connection closed in "
                             "the middle of a frame; its last bytes are dropped\n")
        self._order.remove(conn)
