"""Wallaroo 0.6.1's connectors (wallaroo.experimental): the codecs' bytes, the
configs, the connector-script side (SourceConnector, SinkConnector) in-process,
then examples/celsius/celsius_connectors_06.py end to end on 1 worker and on
2 (`--workers 2`, and an initializer plus a worker joining it), fed by a
source connector script and read by a sink connector script written as
Wallaroo's connectors/udp_source and udp_sink are (tests/py/apps/
connector_feed.py, connector_print.py).

Ports: the sink script listens on port 0 (the application's
--conversion-port 0) and prints its address; the engine gets that port and
--feed-port 0, and logs where the source connector listens; the feed script
gets that port."""

import datetime
import os
import socket
import struct
import subprocess
import sys
from pathlib import Path

import pytest

import wallaroo
import wallaroo.experimental as X
from conftest import APPS, EXAMPLES, REPO, Cluster, read_to_end, wait_sources, wait_until

APP = EXAMPLES / "celsius" / "celsius_connectors_06.py"
FEED = APPS / "connector_feed.py"
PRINT = APPS / "connector_print.py"
SOURCE = "convert temperature readings"
W061 = Path(os.environ.get("WALLAROO061", "/tmp/w061"))

FEED_ARGS = ["--application-module", "celsius_connectors_06", "--connector", "celsius_feed"]
SINK_ARGS = ["--application-module", "celsius_connectors_06", "--connector",
             "fahrenheit_conversion"]


@pytest.fixture
def on_path(monkeypatch):
    """The example's directory on sys.path, where the connectors import it from."""
    monkeypatch.syspath_prepend(str(EXAMPLES / "celsius"))
    for name in ("celsius_connectors_06", "celsius"):
        sys.modules.pop(name, None)


def fahrenheit(celsius):
    """What the application outputs for a reading: the float32 the feed
    sends, times 1.8, plus 32, as Python prints it."""
    return str(struct.unpack(">f", struct.pack(">f", celsius))[0] * 1.8 + 32)


def listening_socket():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    return s


def recv_all(conn, n):
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        assert chunk, "connection closed after %d of %d bytes" % (len(data), n)
        data += chunk
    return data


# ------------------------------------------------------------------ codecs

@X.stream_message_encoder
def enc_identity(data):
    return data


@X.stream_message_decoder
def dec_text(data):
    return data.decode("utf-8")


def test_import_wallaroo_brings_experimental():
    # As in Wallaroo 0.6.1 (its __init__ imports wallaroo.experimental).
    assert wallaroo.experimental is X
    assert issubclass(wallaroo.ConnectorDecoder, wallaroo.Decoder)
    assert issubclass(wallaroo.ConnectorEncoder, wallaroo.Encoder)
    assert isinstance(dec_text, wallaroo.ConnectorDecoder)
    assert dec_text() is dec_text  # decorated objects return themselves when called


def test_encoder_frames_exactly():
    assert enc_identity.encode(b"ab").hex() == "0a000000" "0000000000000000" "6162"
    assert enc_identity.encode(b"ab", 1000).hex() == "0a000000" "e803000000000000" "6162"
    assert enc_identity.encode(b"", -1).hex() == "08000000" "ffffffffffffffff"
    # A datetime is whole ms since the epoch.
    t = datetime.datetime(2018, 12, 31, 0, 0, 1, 250000, tzinfo=datetime.timezone.utc)
    assert enc_identity.encode(b"x", t) == struct.pack("<Iq", 9, 1546214401250) + b"x"
    # A str goes as UTF-8, None is nothing to send (Bettong; see the user guide).
    assert enc_identity.encode("é") == struct.pack("<Iq", 10, 0) + "é".encode()
    assert enc_identity.encode(None) is None
    assert enc_identity.encode(bytearray(b"yz")) == struct.pack("<Iq", 10, 0) + b"yz"


@pytest.mark.parametrize("data, event_time, error", [
    (12, 0, "returned int; expected bytes, str or None"),
    (b"a", 1.5, "event_time must be an int"),
    (b"a", 1 << 63, "does not fit"),
])
def test_encoder_refuses_what_it_cannot_frame(data, event_time, error):
    with pytest.raises((TypeError, ValueError), match=error):
        enc_identity.encode(data, event_time)


def test_decoder_takes_the_payload_after_the_event_time():
    frame = enc_identity.encode("héllo".encode(), 77)
    assert dec_text.header_length() == 4
    assert dec_text.payload_length(frame[:4]) == len(frame) - 4
    assert dec_text.decode(frame[4:]) == "héllo"
    assert dec_text.decoder()(b"raw") == "raw"


def test_codecs_check_their_function():
    with pytest.raises(wallaroo.WallarooParameterError, match="stream_message_decoder"):
        X.stream_message_decoder(lambda a, b: a)
    with pytest.raises(wallaroo.WallarooParameterError, match="stream_message_encoder"):
        X.stream_message_encoder(42)


# ------------------------------------------------------------------ configs

def test_config_tuples():
    src = X.SourceConnectorConfig("feed", encoder=enc_identity, decoder=dec_text, port=7100)
    assert src.to_tuple() == ("source_connector", "feed", "127.0.0.1", "7100", enc_identity,
                              dec_text)
    sink = X.SinkConnectorConfig("out", enc_identity, dec_text, "7200", host="localhost")
    assert sink.to_tuple() == ("sink_connector", "out", "localhost", "7200", enc_identity,
                               dec_text)


@pytest.mark.parametrize("name, port, error", [
    ("feed", "x", "not a number"),
    ("feed", 70000, "out of range"),
    ("", 1, "non-empty str"),
])
def test_bad_configs_are_refused(name, port, error):
    with pytest.raises(wallaroo.WallarooError, match=error):
        X.SourceConnectorConfig(name, enc_identity, dec_text, port)


def test_connectors_need_the_06_api():
    ab = wallaroo.ApplicationBuilder("a")
    with pytest.raises(wallaroo.WallarooError, match="pipeline API"):
        ab.new_pipeline("p", X.SourceConnectorConfig("feed", enc_identity, dec_text, 1))


# ------------------------------------------------------------------ the script side

def test_connector_args():
    p = X.parse_connector_args(["prog"] + FEED_ARGS + ["--celsius_feed-host", "h",
                                                       "--celsius_feed-port", "8801",
                                                       "--other", "x"],
                               required_params=["host", "port"], optional_params=["extra"])
    assert (p.application, p.connector_name, p.host, p.port, p.extra) == (
        "celsius_connectors_06", "celsius_feed", "h", "8801", None)
    with pytest.raises(SystemExit):
        X.parse_connector_args(["prog"] + FEED_ARGS, required_params=["host"])
    with pytest.raises(SystemExit):
        X.parse_connector_args(["prog", "--connector", "c"])


def test_connectors_find_their_configs(on_path):
    src = X.SourceConnector(["prog"] + FEED_ARGS + ["--feed-port", "7301"])
    assert (src._host, src._port) == ("127.0.0.1", "7301")
    assert src.params.connector_name == "celsius_feed"
    sink = X.SinkConnector(["prog"] + SINK_ARGS)
    assert (sink._host, sink._port) == ("127.0.0.1", "7200")
    with pytest.raises(RuntimeError, match="Unable to find a source connector with the name "
                                           "fahrenheit_conversion"):
        X.SourceConnector(["prog"] + SINK_ARGS)
    with pytest.raises(RuntimeError, match="Unable to find a sink connector with the name "
                                           "nope"):
        X.SinkConnector(["prog", "--application-module", "celsius_connectors_06",
                         "--connector", "nope"])
    with pytest.raises(RuntimeError, match="Please call connect before writing"):
        src.write(1.0)


def test_wallaroo_celsius_connectors_configs_are_found(monkeypatch):
    """Wallaroo 0.6.1's own example, unchanged."""
    example = W061 / "examples" / "python" / "celsius_connectors"
    if not example.exists():
        pytest.skip("Wallaroo 0.6.1's sources are not at %s (set WALLAROO061)" % W061)
    monkeypatch.syspath_prepend(str(example))
    sys.modules.pop("celsius", None)
    src = X.SourceConnector(["prog", "--application-module", "celsius", "--connector",
                             "celsius_feed", "--celsius_feed-host", "127.0.0.1",
                             "--celsius_feed-port", "8801"], required_params=["host", "port"])
    assert (src._host, src._port, src.params.port) == ("127.0.0.1", "7100", "8801")
    sink = X.SinkConnector(["prog", "--application-module", "celsius", "--connector",
                            "fahrenheit_conversion"])
    assert (sink._host, sink._port) == ("127.0.0.1", "7200")
    sys.modules.pop("celsius", None)


def test_source_connector_writes_frames(on_path):
    server = listening_socket()
    port = server.getsockname()[1]
    src = X.SourceConnector(["prog"] + FEED_ARGS + ["--feed-port", str(port)])
    src.connect()
    conn, _ = server.accept()
    src.write(b"ab")
    src.write(struct.pack(">f", 1.5), event_time=5)
    assert recv_all(conn, 14).hex() == "0a000000" "0000000000000000" "6162"
    assert recv_all(conn, 16) == struct.pack("<Iq", 12, 5) + struct.pack(">f", 1.5)
    src.close()
    assert conn.recv(1) == b""
    conn.close()
    server.close()


def test_source_connector_retries_until_the_engine_listens(on_path, monkeypatch):
    """connect() tries again while the connection is refused (the engine is
    not up yet): here a reserved port that starts listening after the
    connector has been refused twice."""
    reserved = socket.socket()
    reserved.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    reserved.bind(("127.0.0.1", 0))
    port = reserved.getsockname()[1]
    refusals = []

    def counted_sleep(seconds):
        assert seconds == X.CONNECT_RETRY_SECONDS
        refusals.append(seconds)
        if len(refusals) == 2:
            reserved.listen(1)

    monkeypatch.setattr(X.time, "sleep", counted_sleep)
    src = X.SourceConnector(["prog"] + FEED_ARGS + ["--feed-port", str(port)])
    src.connect()
    assert len(refusals) == 2
    conn, _ = reserved.accept()
    src.write(b"x")
    assert recv_all(conn, 13) == struct.pack("<Iq", 9, 0) + b"x"
    src.close()
    conn.close()
    reserved.close()


def test_sink_connector_reads_every_worker(on_path):
    """Frames from several connections, split anywhere, come out whole and
    decoded; a connection's frames keep their order; a closed connection's
    last whole frames are still read; a timeout gives None."""
    sink = X.SinkConnector(["prog"] + SINK_ARGS + ["--conversion-port", "0"])
    sink.listen(backlog=8)
    host, port = sink.address
    assert host == "127.0.0.1" and port != 0
    frame = X.stream_message_encoder(lambda s: s.encode()).encode
    a = socket.create_connection((host, port))
    b = socket.create_connection((host, port))
    stream_a = frame("a1") + frame("a2") + frame("")
    stream_b = frame("b1") + frame("b2-longer")
    a.sendall(stream_a[:3])
    b.sendall(stream_b[:17])
    got = []
    # Nothing whole yet from a; b1 is whole.
    got.append(sink.read(timeout=10))
    a.sendall(stream_a[3:])
    b.sendall(stream_b[17:])
    b.close()
    while len(got) < 5:
        value = sink.read(timeout=10)
        assert value is not None, "only %r" % got
        got.append(value)
    assert got[0] == "b1"
    assert [v for v in got if v.startswith("a") or v == ""] == ["a1", "a2", ""]
    assert [v for v in got if v.startswith("b")] == ["b1", "b2-longer"]
    assert sink.read(timeout=0.2) is None
    a.close()


def test_sink_connector_found_in_to_sinks(tmp_path, monkeypatch):
    (tmp_path / "two_sinks.py").write_text(
        "import wallaroo, wallaroo.experimental as X\n"
        "def application_setup(args):\n"
        "    c = X.stream_message_encoder(lambda x: x)\n"
        "    d = X.stream_message_decoder(lambda x: x)\n"
        "    p = wallaroo.source('s', X.SourceConnectorConfig('in', c, d, 0))\n"
        "    return wallaroo.build_application('a', p.to_sinks([\n"
        "        X.SinkConnectorConfig('one', c, d, 1), X.SinkConnectorConfig('two', c, d, 2)]))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    sink = X.SinkConnector(["prog", "--application-module", "two_sinks", "--connector", "two"])
    assert sink._port == "2"


# ------------------------------------------------------------------ end to end

def script_env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "python"), str(EXAMPLES / "celsius")])
    return env


class SinkScript:
    """connector_print.py on a port the kernel picks: .port, .values()."""

    def __init__(self, bt):
        self.lines = []
        self.err_path = bt.path("sink-connector.stderr")
        with open(self.err_path, "wb") as err:
            self.proc = bt.procs.spawn([sys.executable, PRINT] + SINK_ARGS
                                       + ["--conversion-port", "0"],
                                       stdout=subprocess.PIPE, stderr=err, env=script_env())
        read_to_end(self.proc.stdout, lambda line: self.lines.append(line.decode().rstrip("\n")))
        first = wait_until(lambda: self.lines[:1] or self.proc.poll() is not None, 30,
                           "the sink connector's address")
        assert first != True, self.err_path.read_text()  # noqa: E712 (it exited)
        assert first[0].startswith("listening on 127.0.0.1:"), first
        self.port = int(first[0].rsplit(":", 1)[1])

    def values(self):
        return self.lines[1:]

    def wait_values(self, n, timeout=30):
        wait_until(lambda: len(self.values()) >= n or self.proc.poll() is not None, timeout,
                   "%d values at the sink connector (have %d)" % (n, len(self.values())))
        assert self.proc.poll() is None, self.err_path.read_text()
        return self.values()


def accepted_connections(port):
    """Established TCP connections whose local end is 127.0.0.1:port (Linux's
    /proc/net/tcp: the sink connector's side of each worker's connection)."""
    n = 0
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            local, state = line.split()[1], line.split()[3]
            n += local == "0100007F:%04X" % port and state == "01"
    return n


def feed(bt, port, values, extra=()):
    """connector_feed.py: the values, then it closes its connection and exits."""
    p = bt.procs.spawn([sys.executable, FEED] + FEED_ARGS + ["--feed-port", port] + list(extra),
                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       env=script_env())
    try:
        out, _ = p.communicate("".join("%r\n" % v for v in values).encode(), timeout=30)
    except subprocess.TimeoutExpired:
        p.kill()
        pytest.fail("the feed connector did not finish within 30 s")
    assert p.returncode == 0, out.decode()
    assert out.decode() == "connected\n"


VALUES = [float(v) for v in range(20)] + [-40.0, 36.6, 100.0, -273.15, 0.1]


def test_celsius_connectors_one_worker(bt):
    sink = SinkScript(bt)
    eng = bt.engine(APP, wait=False, extra=["--feed-port", 0, "--conversion-port", sink.port])
    port = wait_sources(eng, 1)[SOURCE]
    wait_until(lambda: accepted_connections(sink.port) == 1, 15,
               "the worker connected to the sink connector")
    # Bad input: a length that leaves no room for the event time closes that
    # connection, with a log line; the engine goes on.
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(struct.pack("<I", 3) + b"abc")
        assert s.recv(1) == b""
    eng.wait_log(r"invalid frame header")
    feed(bt, port, VALUES[:10])
    assert sink.wait_values(10) == ["32.0", "33.8", "35.6", "37.4", "39.2", "41.0", "42.8",
                                    "44.6", "46.4", "48.2"]
    feed(bt, port, VALUES[10:])
    assert sink.wait_values(len(VALUES)) == [fahrenheit(v) for v in VALUES]
    rc, err = eng.stop()
    assert rc == 0, err
    assert "Traceback" not in err, err
    assert sink.values() == [fahrenheit(v) for v in VALUES]


@pytest.mark.parametrize("form", ["workers", "flags"])
def test_celsius_connectors_two_workers(bt, form):
    """The source runs on the initializer only; every worker connects to the
    sink connector. Each input's conversion comes out once."""
    sink = SinkScript(bt)
    c = Cluster(bt, APP, 2, form, nins=0, sources="initializer",
                extra=["--feed-port", 0, "--conversion-port", sink.port])
    port = wait_sources(c.engines[0], 1)[SOURCE]
    wait_until(lambda: accepted_connections(sink.port) == 2, 15,
               "both workers connected to the sink connector")
    # Event times (ms) on the frames change nothing in the output.
    feed(bt, port, VALUES, ["--celsius_feed-event_time", "1544000000000"])
    got = sink.wait_values(len(VALUES))
    assert sorted(got) == sorted(fahrenheit(v) for v in VALUES)
    c.stop()
    assert sorted(sink.values()) == sorted(fahrenheit(v) for v in VALUES)
    # Only the initializer listened.
    assert len(wait_sources(c.engines[0], 1)) == 1
    assert "source '%s' runs on the cluster's initializer only" % SOURCE in c.stderr()
