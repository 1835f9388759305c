"""Prometheus metrics of `bettong run` (--metrics-listen, and Wallaroo's
--metrics): each worker serves /metrics from its own event loop; the counters
are exact (messages in per source, in and out per step, per sink, forwarded per
peer), the latency histograms count the sampled inputs (one in 64), bad HTTP
requests are answered and closed without harm, and a real Prometheus server
(Debian's `prometheus`, installed by `make deps`) scrapes a two-worker cluster
and answers queries with the same numbers."""

import json
import math
import re
import shutil
import socket
import urllib.parse
import urllib.request

import pytest

from conftest import Cluster, app_path, example_path, load_module, wait_until

METRICS_RE = re.compile(r"metrics listening on (127\.0\.0\.1:\d+)")
SAMPLE_EVERY = 64

# 150 lines of 1 to 5 words, all different, of every first letter (so in
# partitions of both workers of a cluster): 450 words in all.
LINES = [" ".join("%s%d%s" % (chr(97 + (i + k) % 26), i, "x" * k) for k in range(1 + i % 5))
         for i in range(150)]


def split_words():
    wc = load_module(example_path("word_count"))
    return [wc.split_words(line) for line in LINES]


def scrape(addr, path="/metrics"):
    with urllib.request.urlopen("http://%s%s" % (addr, path), timeout=10) as r:
        assert r.status == 200
        ctype = r.headers["Content-Type"]
        assert ctype == "text/plain; version=0.0.4; charset=utf-8", ctype
        return r.read().decode("utf-8")


LINE_RE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$')
LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse(text):
    """{(name, frozenset(labels)): value}, checking the format on the way: every
    sample's family has HELP and TYPE lines before it, every line parses."""
    typed, samples = {}, {}
    for line in text.split("\n")[:-1]:
        if line.startswith("# HELP "):
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in ("counter", "gauge", "histogram"), line
            typed[name] = kind
            continue
        m = LINE_RE.match(line)
        assert m, "not a sample line: %r" % line
        name = m.group(1)
        family = re.sub(r"_(bucket|sum|count)$", "", name)
        assert name in typed or (family in typed and typed[family] == "histogram"), line
        labels = frozenset(LABEL_RE.findall(m.group(3) or ""))
        key = (name, labels)
        assert key not in samples, "duplicate series %r" % line
        samples[key] = float(m.group(4))
    assert text.endswith("\n")
    return samples


def value(samples, name, **labels):
    want = set(labels.items())
    found = [v for (n, ls), v in samples.items() if n == name and want <= set(ls)]
    assert len(found) == 1, "%s %r: %r" % (name, labels, found)
    return found[0]


def total(samples, name, **labels):
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= set(ls))


def worker_name(samples):
    [name] = [dict(ls)["worker"] for (n, ls) in samples if n == "bettong_worker_info"]
    return name


def service_kinds(samples):
    """The service label(s) of bettong_service_info, each of value 1."""
    return [dict(ls)["service"] for (n, ls), v in samples.items()
            if n == "bettong_service_info" and v == 1]


def metrics_addrs(eng, n):
    eng.wait_log(METRICS_RE.pattern, count=n)
    return METRICS_RE.findall(eng.stderr())


def sampled(words):
    """Inputs timed (indices 0, 64, ...) and their outputs."""
    picked = words[::SAMPLE_EVERY]
    return len(picked), sum(len(w) for w in picked)


def check_one_worker(m, words):
    n_words = sum(len(w) for w in words)
    pipe = "Split and Count"
    assert value(m, "bettong_source_messages_total", pipeline=pipe) == len(LINES)
    assert value(m, "bettong_step_messages_in_total", step="0") == len(LINES)
    assert value(m, "bettong_step_messages_out_total", step="0") == n_words
    assert value(m, "bettong_step_messages_in_total", step="1") == n_words
    assert value(m, "bettong_step_messages_out_total", step="1") == n_words
    assert value(m, "bettong_sink_messages_total", pipeline=pipe) == n_words
    inputs, outputs = sampled(words)
    assert value(m, "bettong_step_latency_seconds_count", step="0") == inputs
    assert value(m, "bettong_step_latency_seconds_count", step="1") == outputs
    assert value(m, "bettong_step_latency_seconds_bucket", step="0", le="+Inf") == inputs
    assert value(m, "bettong_end_to_end_latency_seconds_count") == outputs
    assert value(m, "bettong_messages_failed_total") == 0
    assert value(m, "bettong_slots") == 4096
    assert value(m, "bettong_source_paused", pipeline=pipe) == 0
    # Cumulative buckets never decrease and end at the count.
    buckets = sorted((float(dict(ls)["le"]), v) for (n, ls), v in m.items()
                     if n == "bettong_end_to_end_latency_seconds_bucket")
    assert buckets[-1] == (math.inf, outputs)
    assert all(a[1] <= b[1] for a, b in zip(buckets, buckets[1:]))


def test_one_worker_counts_exactly(bt):
    recv = bt.receiver()
    eng = bt.engine(example_path("word_count"), ins=[0], outs=[recv.port],
                    extra=["--metrics-listen", "127.0.0.1:0"])
    [addr] = metrics_addrs(eng, 1)
    before = parse(scrape(addr))
    assert value(before, "bettong_source_messages_total") == 0
    words = split_words()
    bt.send_payloads(eng.in_ports[0], [line.encode() for line in LINES])
    n_words = sum(len(w) for w in words)
    m = wait_until(lambda: (lambda s: s if value(s, "bettong_sink_messages_total") == n_words
                            else None)(parse(scrape(addr))), 10, "every output counted")
    check_one_worker(m, words)
    assert value(m, "bettong_worker_info", worker="initializer") == 1
    assert service_kinds(m) == ["stream"]
    # word_count's partitions are its keys: 'a'..'z' and '!', made up front.
    assert value(m, "bettong_state_keys") == 27
    # Every word is new: "word => 1" each, all delivered.
    want = sum(len(w) + len(" => 1\n") for ws in words for w in ws)
    assert len(recv.wait_bytes(want)) == want
    rc, err = eng.stop()
    assert rc == 0, err


def test_wallaroo_metrics_flag_serves_the_same(bt):
    """Wallaroo's --metrics/-m H:P is --metrics-listen: not ignored, not warned."""
    recv = bt.receiver()
    eng = bt.engine(example_path("word_count"), ins=[0], outs=[recv.port],
                    extra=["-m", "127.0.0.1:0"])
    [addr] = metrics_addrs(eng, 1)
    bt.send_payloads(eng.in_ports[0], [b"one two"])
    wait_until(lambda: value(parse(scrape(addr)), "bettong_sink_messages_total") == 2, 10,
               "two outputs counted")
    rc, err = eng.stop()
    assert rc == 0, err
    assert "for Wallaroo compatibility" not in err, err


def test_user_errors_by_where_and_decoder_errors(bt):
    recv = bt.receiver()
    eng = bt.engine(app_path("errors_app"), ins=[0], outs=[recv.port],
                    extra=["--fail-in", "compute", "--metrics-listen", "127.0.0.1:0"])
    [addr] = metrics_addrs(eng, 1)
    bt.send_payloads(eng.in_ports[0], [b"ab", b"boom1", b"cd", b"boom2", b"ef"])
    assert recv.wait_bytes(9) == b"ab\ncd\nef\n"
    bt.send_payloads(eng.in_ports[0], [b"!decoder"])
    m = wait_until(lambda: (lambda s: s if value(s, "bettong_source_decode_errors_total") == 1
                            else None)(parse(scrape(addr))), 10, "the decoder error counted")
    assert value(m, "bettong_source_messages_total") == 6
    assert value(m, "bettong_step_messages_in_total", step="0") == 5
    assert value(m, "bettong_step_messages_out_total", step="0") == 3
    assert value(m, "bettong_step_messages_in_total", step="1") == 3
    assert value(m, "bettong_sink_messages_total") == 3
    assert value(m, "bettong_messages_failed_total") == 2
    errors = {dict(ls)["where"]: v for (n, ls), v in m.items()
              if n == "bettong_user_errors_total"}
    assert list(errors.values()) == [2] and "echo" in list(errors)[0], errors
    rc, err = eng.stop()
    assert rc == 0, err


def test_wallaroo06_key_by_and_to_sinks(bt):
    """A 0.6 pipeline: parse -> key_by -> state_computation_multi -> two
    sinks, the second's encoder returning None for odd sums (not counted)."""
    r1, r2 = bt.receiver(), bt.receiver()
    eng = bt.engine(app_path("w06_keyed"), ins=[0], outs=[r1.port, r2.port],
                    extra=["--metrics-listen", "127.0.0.1:0"])
    [addr] = metrics_addrs(eng, 1)
    bt.send_payloads(eng.in_ports[0], [b"a,1", b"b,2", b"a,9", b"c,5"])
    # sums: a 1, b 2, a 10 (and -10), c 5
    assert r2.wait_bytes(len(b"b 2\na 10\na -10\n")) == b"b 2\na 10\na -10\n"
    m = wait_until(lambda: (lambda s: s if total(s, "bettong_sink_messages_total") == 8
                            else None)(parse(scrape(addr))), 10, "every output counted")
    for step, n_in, n_out in ((0, 4, 4), (1, 4, 4), (2, 4, 5)):
        assert value(m, "bettong_step_messages_in_total", step=str(step)) == n_in, step
        assert value(m, "bettong_step_messages_out_total", step=str(step)) == n_out, step
    assert value(m, "bettong_sink_messages_total", sink="127.0.0.1:%d" % r1.port) == 5
    assert value(m, "bettong_sink_messages_total", sink="127.0.0.1:%d" % r2.port) == 3
    assert value(m, "bettong_state_keys") == 3
    rc, err = eng.stop()
    assert rc == 0, err


def test_checkpoint_metrics(bt, tmp_path):
    recv = bt.receiver()
    eng = bt.engine(example_path("word_count"), ins=[0], outs=[recv.port],
                    extra=["--metrics-listen", "127.0.0.1:0", "--run-with-resilience",
                           "--resilience-dir", str(tmp_path / "resil"),
                           "--time-between-checkpoints", "50000000"])
    [addr] = metrics_addrs(eng, 1)
    bt.send_payloads(eng.in_ports[0], [line.encode() for line in LINES])
    m = wait_until(lambda: (lambda s: s if value(s, "bettong_checkpoints_total") >= 3
                            else None)(parse(scrape(addr))), 15, "three checkpoints")
    done = value(m, "bettong_checkpoints_total")
    assert value(m, "bettong_checkpoints_failed_total") == 0
    assert value(m, "bettong_checkpoint_duration_seconds_count") == done
    assert value(m, "bettong_checkpoint_size_bytes_count") == done
    assert value(m, "bettong_checkpoint_last_size_bytes") > 0
    assert value(m, "bettong_checkpoint_last_id") >= done
    assert value(m, "bettong_checkpoint_pause_seconds_count") >= done
    rc, err = eng.stop()
    assert rc == 0, err


def http_raw(addr, data, timeout=10):
    """Send raw bytes; everything the server answers until it closes."""
    host, port = addr.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return out
            out += chunk


def test_bad_requests_are_closed_without_harm(bt):
    recv = bt.receiver()
    eng = bt.engine(example_path("word_count"), ins=[0], outs=[recv.port],
                    extra=["--metrics-listen", "127.0.0.1:0"])
    [addr] = metrics_addrs(eng, 1)
    cases = [
        (b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n", b"HTTP/1.1 405 "),
        (b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\r\n\r\n", b"HTTP/1.1 400 "),
        (b"GET /metrics HTTP/9.9\r\n\r\n", b"HTTP/1.1 505 "),
        (b"GET /nothing-here HTTP/1.1\r\n\r\n", b"HTTP/1.1 404 "),
        (b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 9000 + b"\r\n\r\n", b"HTTP/1.1 431 "),
    ]
    for req, status in cases:
        assert http_raw(addr, req).startswith(status), req[:40]
    # A client that connects and leaves, or sends half a request and leaves.
    socket.create_connection(tuple([addr.split(":")[0], int(addr.split(":")[1])])).close()
    with socket.create_connection((addr.split(":")[0], int(addr.split(":")[1]))) as s:
        s.sendall(b"GET /met")
    # The engine still runs its data and serves its metrics.
    bt.send_payloads(eng.in_ports[0], [b"still here"])
    wait_until(lambda: value(parse(scrape(addr)), "bettong_sink_messages_total") == 2, 10,
               "the engine still counts")
    ok = http_raw(addr, b"GET /metrics?x=1 HTTP/1.0\r\n\r\n")
    assert ok.startswith(b"HTTP/1.1 200 OK\r\n") and b"Connection: close\r\n" in ok
    err = eng.stderr()
    assert err.count("metrics: closing connection from 127.0.0.1:") == 4, err
    assert "request head larger than 8192 bytes (answered 431)" in err, err
    rc, err = eng.stop()
    assert rc == 0, err


def test_metrics_port_in_use_is_refused(bt):
    """An address that cannot be bound stops the worker with a clear message
    (the flag is never accepted and ignored)."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        eng = bt.engine(example_path("word_count"), ins=[0], outs=[bt.receiver().port],
                        extra=["--metrics-listen", "127.0.0.1:%d" % port], wait=False)
        rc, err = eng.wait_exit(15)
    assert rc == 2, err
    assert "metrics: cannot listen on 127.0.0.1:%d: address already in use" % port in err, err


def test_wallaroo_metrics_address_taken_serves_on_another_port(bt):
    """Wallaroo's command lines give every worker of a host the same --metrics
    (Wallaroo sent metrics there): when it cannot be bound, the worker says so
    and serves on a port the kernel picks, instead of failing to start."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        recv = bt.receiver()
        eng = bt.engine(example_path("word_count"), ins=[0], outs=[recv.port],
                        extra=["--metrics", "127.0.0.1:%d" % port])
        [addr] = metrics_addrs(eng, 1)
        assert addr != "127.0.0.1:%d" % port and addr.startswith("127.0.0.1:"), addr
        eng.wait_log(r"metrics: cannot listen on 127\.0\.0\.1:%d: address already in use "
                     r"\(--metrics: .*\); serving on a port the kernel picks instead" % port)
        bt.send_payloads(eng.in_ports[0], [b"one two"])
        wait_until(lambda: value(parse(scrape(addr)), "bettong_sink_messages_total") == 2, 10,
                   "two outputs counted")
    rc, err = eng.stop()
    assert rc == 0, err


def cluster_counts(bt, extra=()):
    """A two-worker word count (--workers 2) fed LINES, once every output is
    counted: (cluster, metrics addresses, [parsed scrape per worker], words)."""
    recv = bt.receiver()
    c = Cluster(bt, example_path("word_count"), 2, "workers", outs=[recv.port],
                extra=["--metrics-listen", "127.0.0.1:0"] + list(extra))
    addrs = metrics_addrs(c.engines[0], 2)
    assert len(set(addrs)) == 2
    c.wait_formed()
    words = split_words()
    n_words = sum(len(w) for w in words)
    bt.send_payloads(c.ports[0][0], [line.encode() for line in LINES])

    def all_counted():
        ms = [parse(scrape(a)) for a in addrs]
        return ms if sum(total(m, "bettong_sink_messages_total") for m in ms) == n_words \
            else None
    ms = wait_until(all_counted, 15, "every output counted on the two workers")
    return c, addrs, ms, words


def test_two_workers_count_and_forward_exactly(bt):
    c, addrs, ms, words = cluster_counts(bt)
    n_words = sum(len(w) for w in words)
    names = [worker_name(m) for m in ms]
    assert sorted(names) == ["worker1", "worker2"], names
    # The lines went to either worker; each word ran where its partition is.
    assert sum(total(m, "bettong_source_messages_total") for m in ms) == len(LINES)
    assert sum(total(m, "bettong_step_messages_in_total", step="0") for m in ms) == len(LINES)
    assert sum(total(m, "bettong_step_messages_out_total", step="0") for m in ms) == n_words
    assert sum(total(m, "bettong_step_messages_in_total", step="1") for m in ms) == n_words
    assert sum(value(m, "bettong_slots") for m in ms) == 4096
    # What one sent the other is what the other ran from it, and has bytes.
    for me, other, m, o in ((names[0], names[1], ms[0], ms[1]),
                            (names[1], names[0], ms[1], ms[0])):
        sent = value(m, "bettong_forwarded_messages_total", peer=other)
        assert value(o, "bettong_forwarded_in_messages_total", peer=me) == sent
        assert (value(m, "bettong_forwarded_bytes_total", peer=other) > 0) == (sent > 0)
        assert value(m, "bettong_forward_dropped_messages_total", peer=other) == 0
        assert value(m, "bettong_link_backlog_bytes", peer=other) >= 0
    forwarded = sum(total(m, "bettong_forwarded_messages_total") for m in ms)
    ran_here = sum(total(m, "bettong_step_messages_in_total", step="1") for m in ms) - forwarded
    assert forwarded > 0 and ran_here > 0
    c.stop()


def reserve_two_ports():
    """Two consecutive ports, each held by a bound (never listening) socket
    with SO_REUSEADDR, as conftest's PortReservations holds one: (port,
    sockets to close)."""
    for _ in range(50):
        a = socket.socket()
        a.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        a.bind(("127.0.0.1", 0))
        port = a.getsockname()[1]
        b = socket.socket()
        b.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            b.bind(("127.0.0.1", port + 1))
            return port, [a, b]
        except OSError:
            a.close()
            b.close()
    pytest.fail("no two consecutive free ports")


def test_workers_get_consecutive_metrics_ports(bt):
    """--workers 2 --metrics-listen H:P: worker 1 serves on P, worker 2 on P + 1."""
    port, held = reserve_two_ports()
    try:
        recv = bt.receiver()
        c = Cluster(bt, example_path("reverse"), 2, "workers", outs=[recv.port],
                    extra=["--metrics-listen", "127.0.0.1:%d" % port])
        addrs = metrics_addrs(c.engines[0], 2)
        assert sorted(addrs) == ["127.0.0.1:%d" % port, "127.0.0.1:%d" % (port + 1)]
        names = {a: worker_name(parse(scrape(a))) for a in addrs}
        assert names == {"127.0.0.1:%d" % port: "worker1",
                         "127.0.0.1:%d" % (port + 1): "worker2"}, names
        c.stop()
    finally:
        for sock in held:
            sock.close()


PROMETHEUS = shutil.which("prometheus")


def http_json(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read().decode("utf-8"))


def prom_query(base, expr):
    d = http_json("%s/api/v1/query?%s" % (base, urllib.parse.urlencode({"query": expr})))
    assert d["status"] == "success", d
    res = d["data"]["result"]
    return float(res[0]["value"][1]) if res else None


def start_prometheus(procs, tmp_path, port, jobs):
    """A real Prometheus server on 127.0.0.1:port (it prints no bound port for
    port 0: a reserved one, conftest), scraping every 200 ms the targets of
    `jobs` ({job name: [H:P, ...]}), once it reports every target up: its base
    URL and its process."""
    conf = tmp_path / "prometheus.yml"
    conf.write_text("global:\n  scrape_interval: 200ms\n  scrape_timeout: 150ms\n"
                    "scrape_configs:\n" + "".join(
                        "  - job_name: %s\n    static_configs:\n      - targets: [%s]\n"
                        % (job, ", ".join('"%s"' % a for a in targets))
                        for job, targets in jobs.items()))
    log = open(tmp_path / "prometheus.log", "wb")
    prom = procs.spawn([PROMETHEUS, "--config.file", str(conf),
                        "--web.listen-address", "127.0.0.1:%d" % port,
                        "--storage.tsdb.path", str(tmp_path / "tsdb")],
                       stdout=log, stderr=log)
    base = "http://127.0.0.1:%d" % port
    n = sum(len(t) for t in jobs.values())

    def targets_up():
        if prom.poll() is not None:
            pytest.fail("prometheus exited with %d:\n%s" % (
                prom.returncode, (tmp_path / "prometheus.log").read_text()))
        try:
            d = http_json(base + "/api/v1/targets")
        except OSError:
            return False
        active = d["data"]["activeTargets"]
        return len(active) == n and all(t["health"] == "up" for t in active)
    wait_until(targets_up, 30, "prometheus to scrape its %d targets" % n, interval=0.2)
    return base, prom


@pytest.mark.skipif(PROMETHEUS is None, reason="the prometheus binary (Debian package "
                    "'prometheus', installed by `make deps`) is not on PATH")
def test_a_prometheus_server_scrapes_a_cluster(bt, tmp_path):
    c, addrs, ms, words = cluster_counts(bt)
    n_words = sum(len(w) for w in words)
    base, prom = start_prometheus(bt.procs, tmp_path, bt.reserve_port(), {"bettong": addrs})
    got = wait_until(lambda: prom_query(base, "sum(bettong_source_messages_total)"), 15,
                     "a query result", interval=0.2)
    assert got == len(LINES)
    assert prom_query(base, 'sum(bettong_step_messages_in_total{step="1"})') == n_words
    assert prom_query(base, "sum(bettong_sink_messages_total)") == n_words
    assert prom_query(base, "sum(bettong_slots)") == 4096
    assert prom_query(base, 'count(bettong_worker_info{job="bettong"})') == 2
    prom.terminate()
    prom.wait(15)
    c.stop()
