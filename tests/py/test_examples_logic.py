"""The examples' and test apps' Python logic, and the wallaroo builder's checks,
run in-process: no engine needed."""

import collections
import json
import struct

import pytest

import wallaroo
from conftest import EXAMPLES, app_path, example_path, load_module

ARGS = ["bettong", "--in", "127.0.0.1:7010", "--out", "127.0.0.1:7002"]


@pytest.fixture(scope="module")
def wc():
    return load_module(example_path("word_count"))


# ------------------------------------------------------------------ word count

def test_split_words(wc):
    assert wc.split.name() == "split into words"
    assert wc.split.compute_multi("Hello, World! hello") == ["hello", "world", "hello"]
    assert wc.split.compute_multi("  \"Quoted\" -- (parens) end.  ") == ["quoted", "parens", "end"]
    assert wc.split.compute_multi("... --- !!!") == []
    assert wc.split.compute_multi("") == []
    assert wc.split.compute_multi("don't stop-me now's") == ["don't", "stop-me", "now's"]
    assert wc.split.compute_multi("tab\tsep\nnew line") == ["tab", "sep", "new", "line"]
    assert wc.split.compute_multi("Caf\u00e9 \u201cQuoted\u201d 42") == ["caf\u00e9", "quoted", "42"]


def test_partition(wc):
    assert wc.partition.partition("apple") == "a"
    assert wc.partition.partition("zebra") == "z"
    assert wc.partition.partition("42") == "!"
    assert wc.partition.partition("\u00e9t\u00e9") == "!"
    keys = wc.application_setup(ARGS)["pipelines"][0]["steps"][1]["partition_keys"]
    assert keys == list("abcdefghijklmnopqrstuvwxyz") + ["!"]


def test_count_word_and_encoder(wc):
    totals = wc.WordTotals()
    out = []
    for w in ["the", "cat", "the", "the"]:
        result, changed = wc.count_word.compute(w, totals)
        assert changed is True
        out.append(wc.encoder.encode(result))
    assert out == ["the => 1\n", "cat => 1\n", "the => 2\n", "the => 3\n"]
    assert totals.totals == {"the": 3, "cat": 1}


def test_word_count_decoder(wc):
    d = wc.decoder
    assert d.header_length() == 4
    assert d.payload_length(struct.pack(">I", 1234)) == 1234
    assert d.decode("h\u00e9llo".encode("utf-8")) == "h\u00e9llo"


def test_word_count_description(wc):
    desc = wc.application_setup(ARGS)
    (pipe,) = desc["pipelines"]
    assert pipe["name"] == "Split and Count"
    assert pipe["source"]["kind"] == "tcp" and pipe["source"]["port"] == 7010
    assert [s["kind"] for s in pipe["steps"]] == ["to_parallel", "to_state_partition"]
    assert pipe["steps"][0]["arity"] == "multi"
    assert pipe["steps"][1]["state_name"] == "word totals"
    assert pipe["sink"]["port"] == 7002


def test_bundled_text(wc):
    text = (EXAMPLES / "word_count" / "data" / "bettong_tales.txt").read_text("utf-8")
    lines = text.split("\n")
    assert 30000 <= len(text.encode("utf-8")) <= 60000
    assert 200 <= len(lines) <= 1000
    counts = collections.Counter(w for line in lines for w in wc.split_words(line))
    assert sum(counts.values()) > 5000
    # Realistic frequencies: the commonest words are the small ones.
    top = [w for w, _ in counts.most_common(5)]
    assert "the" in top and "and" in top


def test_demo_digit_sum():
    demo = load_module(EXAMPLES / "word_count" / "demo.py", "bt_demo")
    for n in (0, 1, 9, 10, 99, 100, 12345):
        assert demo.digits_sum(n) == sum(len(str(k)) for k in range(1, n + 1))


# ------------------------------------------------------------------ other examples

def test_celsius():
    m = load_module(example_path("celsius"))
    for c in (-40.0, 0.0, 36.6, 100.0, -273.15):
        c32 = struct.unpack(">f", struct.pack(">f", c))[0]
        assert m.decoder.decode(struct.pack(">f", c)) == c32
        f = m.add.compute(m.multiply.compute(c32))
        assert f == c32 * 1.8 + 32
        assert m.encoder.encode(f) == struct.pack(">If", 4, c32 * 1.8 + 32)
    assert struct.unpack(">f", m.encoder.encode(-40.0)[4:])[0] == -40.0
    steps = m.application_setup(ARGS)["pipelines"][0]["steps"]
    assert [s["kind"] for s in steps] == ["to", "to"]


def test_alphabet():
    m = load_module(example_path("alphabet"))
    state = m.AllVotes()
    out = []
    for letter, votes in [("a", 3), ("b", 1), ("a", 2), ("z", 10)]:
        data = m.decoder.decode(struct.pack(">cI", letter.encode(), votes))
        result, changed = m.add_votes.compute(data, state)
        assert changed
        out.append(m.encoder.encode(result))
    assert out == ["a => 3\n", "b => 1\n", "a => 5\n", "z => 10\n"]
    step = m.application_setup(ARGS)["pipelines"][0]["steps"][0]
    assert step["kind"] == "to_stateful" and step["state_class"] is m.AllVotes


def test_reverse():
    m = load_module(example_path("reverse"))
    assert m.reverse.compute(m.decoder.decode("na\u00efve caf\u00e9".encode())) == "\u00e9fac ev\u00efan"
    assert m.encoder.encode("olleh") == "olleh\n"
    lines = (EXAMPLES / "reverse" / "data" / "lines.txt").read_text("utf-8").splitlines()
    assert len(lines) >= 10


def test_market_spread():
    m = load_module(example_path("market_spread"))
    args = ["bettong", "--in", "127.0.0.1:7010,127.0.0.1:7011", "--out", "127.0.0.1:7002"]
    desc = m.application_setup(args)
    market, orders = desc["pipelines"]
    assert market["name"] == "Market Data" and market["sink"] is None
    assert market["source"]["port"] == 7010 and orders["source"]["port"] == 7011
    assert market["steps"][0]["state_name"] == orders["steps"][0]["state_name"] == "symbol data"
    assert orders["sink"]["port"] == 7002

    state = m.SymbolData()
    enc = m.order_result_encoder.encode

    def check(text):
        out, changed = m.check_order.compute(m.order_decoder.decode(text.encode()), state)
        return enc(out)

    assert check("O1,BTG,buy,100,10.00") == "O1,BTG,REJECT,no market data\n"
    md = m.market_data_decoder.decode(b"BTG,9.50,10.50")
    assert m.symbol_partition.partition(md) == "BTG"
    assert m.update_market_data.compute(md, state) == (None, True)
    assert check("O2,BTG,sell,100,10.00") == "O2,BTG,ACCEPT\n"
    assert check("O3,BTG,buy,100,9.50") == "O3,BTG,ACCEPT\n"
    assert check("O4,BTG,buy,100,10.50") == "O4,BTG,ACCEPT\n"
    assert check("O5,BTG,buy,100,9.49") == "O5,BTG,REJECT,below bid\n"
    assert check("O6,BTG,buy,100,10.51") == "O6,BTG,REJECT,above offer\n"
    # The bundled data only uses the listed symbols.
    data = EXAMPLES / "market_spread" / "data"
    for line in (data / "market.txt").read_text().splitlines():
        assert m.parse_market_data(line).symbol in m.SYMBOLS
    for line in (data / "orders.txt").read_text().splitlines():
        assert m.parse_order(line).symbol in m.SYMBOLS


def test_examples_have_run_instructions():
    for name in ("word_count", "celsius", "alphabet", "reverse", "market_spread"):
        doc = load_module(example_path(name)).__doc__
        assert "bettong run" in doc and "bettong send" in doc and "bettong receive" in doc, name


# ------------------------------------------------------------------ test apps

def test_test_apps_build():
    for name in ("errors_app", "marked_app", "duck_app", "u64_app"):
        extra = ["--marker", "/dev/null"] if name == "marked_app" else []
        desc = load_module(app_path(name)).application_setup(ARGS + extra)
        assert desc["bettong_description"] == 1
    gen = load_module(app_path("gen_app")).application_setup(
        ["bettong", "--out", "127.0.0.1:7002", "--count", "5"])
    assert gen["pipelines"][0]["source"]["kind"] == "gen"


def test_duck_app_model():
    m = load_module(app_path("duck_app"))
    texts = ["a", "drop me", "twice", "quiet", "none", "b"]
    assert m.expected_output(texts) == "A #1\nTWICE #2\nTWICE #3\nB #5\n"
    assert m.ShortFrameDecoder().payload_length(b"\x01\x02") == 258
    assert m.application_setup(ARGS)["pipelines"][0]["steps"][1]["arity"] == "multi"


def test_gen_app_generator():
    m = load_module(app_path("gen_app"))
    g = m.Counter(3)
    values = [g.initial_value()]
    while True:
        nxt = g.apply(values[-1])
        if nxt is None:
            break
        values.append(nxt)
    assert values == [1, 2, 3]


def test_u64_keys():
    m = load_module(app_path("u64_app"))
    assert {m.key_of(v) for v in range(12)} == set(m.KEYS)
    assert max(m.KEYS) == 2 ** 64 - 1
    assert m.encoder.encode((2 ** 64 - 1, 5, 10)) == "key=%d value=5 sum=10\n" % (2 ** 64 - 1)


def test_errors_app_fails_where_told():
    m = load_module(app_path("errors_app"))
    with pytest.raises(ValueError, match="deliberate failure in compute"):
        m.Echo("compute").compute("boom 1")
    assert m.Echo("state").compute("boom 1") == "boom 1"
    with pytest.raises(ValueError, match="deliberate failure in decoder"):
        m.TextDecoder().decode(b"!decoder")
    with pytest.raises(UnicodeDecodeError):
        m.TextDecoder().decode(b"\xff\xfe")
    with pytest.raises(ValueError):
        m.application_setup(ARGS + ["--fail-in", "nowhere"])


def test_load_error_apps_fail_in_python():
    with pytest.raises(RuntimeError, match="setup exploded on purpose"):
        load_module(app_path("setup_raises_app")).application_setup(ARGS)
    with pytest.raises(wallaroo.WallarooError, match="new_pipeline"):
        load_module(app_path("to_before_pipeline_app")).application_setup(ARGS)
    with pytest.raises(wallaroo.WallarooError, match="not finished"):
        load_module(app_path("unfinished_pipeline_app")).application_setup(ARGS)
    assert not hasattr(load_module(app_path("no_setup_app")), "application_setup")


def test_args_app_encodes_json():
    m = load_module(app_path("args_app"))
    assert json.loads(m.encoder.encode(["a", "--x"])) == ["a", "--x"]


# ------------------------------------------------------------------ builder errors

@wallaroo.computation(name="id")
def _identity(data):
    return data


@wallaroo.decoder(header_length=4, length_fmt=">I")
def _decoder(bs):
    return bs


@wallaroo.encoder
def _encoder(data):
    return data


def _source():
    return wallaroo.TCPSourceConfig("127.0.0.1", "7010", _decoder)


def _sink():
    return wallaroo.TCPSinkConfig("127.0.0.1", "7002", _encoder)


class _State(object):
    pass


def test_to_before_new_pipeline():
    ab = wallaroo.ApplicationBuilder("x")
    for call in (lambda: ab.to(_identity), lambda: ab.to_parallel(_identity),
                 lambda: ab.to_stateful(_identity, _State, "s"),
                 lambda: ab.to_sink(_sink()), lambda: ab.done()):
        with pytest.raises(wallaroo.WallarooError):
            call()


def test_build_with_unfinished_pipeline():
    ab = wallaroo.ApplicationBuilder("x").new_pipeline("p", _source()).to(_identity)
    with pytest.raises(wallaroo.WallarooError, match="not finished"):
        ab.build()
    ab.to_sink(_sink())
    assert ab.build()["pipelines"][0]["name"] == "p"


def test_new_pipeline_while_one_is_open():
    ab = wallaroo.ApplicationBuilder("x").new_pipeline("p", _source())
    with pytest.raises(wallaroo.WallarooError):
        ab.new_pipeline("q", _source())


def test_build_without_pipelines():
    with pytest.raises(wallaroo.WallarooError):
        wallaroo.ApplicationBuilder("x").build()


def test_decoder_header_length_mismatch():
    with pytest.raises(wallaroo.WallarooError):
        @wallaroo.decoder(header_length=4, length_fmt=">H")
        def bad(bs):
            return bs
    with pytest.raises(wallaroo.WallarooError):
        wallaroo.decoder(header_length=2, length_fmt=">Q")(lambda bs: bs)
    ok = wallaroo.decoder(header_length=8, length_fmt=">Q")(lambda bs: bs)
    assert ok.payload_length(struct.pack(">Q", 2 ** 40)) == 2 ** 40


def test_builder_rejects_non_objects():
    ab = wallaroo.ApplicationBuilder("x").new_pipeline("p", _source())
    with pytest.raises(wallaroo.WallarooError):
        ab.to(object())
    with pytest.raises(wallaroo.WallarooError):
        ab.to_state_partition(_identity, _State, "s", object(), ["a"])
    with pytest.raises(wallaroo.WallarooError):
        ab.to_stateful(_identity, _State, "")
    with pytest.raises(wallaroo.WallarooError):
        wallaroo.ApplicationBuilder("y").new_pipeline(
            "p", wallaroo.TCPSourceConfig("127.0.0.1", "not-a-port", _decoder))


def test_address_parsing():
    args = ["prog", "--in", "127.0.0.1:7010,localhost:7011", "-o", "127.0.0.1:7002",
            "--unknown", "x"]
    assert wallaroo.tcp_parse_input_addrs(args) == [("127.0.0.1", "7010"), ("localhost", "7011")]
    assert wallaroo.tcp_parse_output_addrs(args) == [("127.0.0.1", "7002")]
    with pytest.raises(wallaroo.WallarooError):
        wallaroo.tcp_parse_input_addrs(["prog"])
