"""`bettong top`: a terminal view of the metrics endpoints. With --once (or
stdout not a terminal) it prints one snapshot: the totals summed over the
workers are exact, rates come from two scrapes --interval apart, an address
that does not answer or answers garbage is named with the reason and makes
the exit code 1, never a crash."""

import json
import re
import socket
import subprocess
import threading
import urllib.request

from conftest import BIN, Cluster, example_path, wait_until
from test_metrics import (LINES, metrics_addrs, parse, scrape, split_words, total, value,
                          worker_name)


def top(*args, timeout=20):
    p = subprocess.run([BIN, "top"] + [str(a) for a in args], capture_output=True,
                       timeout=timeout)
    return p.returncode, p.stdout.decode(), p.stderr.decode()


def row(out, pattern):
    """The fields of the one output line matching `pattern` (a regex, from
    the line's start after the indent)."""
    found = [line.split() for line in out.splitlines() if re.match(r"\s*" + pattern, line)]
    assert len(found) == 1, "%r in:\n%s" % (pattern, out)
    return found[0]


def check_totals(out, n_lines, n_words):
    pipe = "Split and Count"
    assert row(out, re.escape(pipe) + r" +\d")[3] == str(n_lines), out
    # "0 computation 'split into words'  in  out  in/s  p50  p99"
    step0 = row(out, r"0 computation 'split into words' ")
    assert step0[5:7] == [str(n_lines), str(n_words)], out
    step1 = row(out, r"1 computation 'count word' ")
    assert step1[4:6] == [str(n_words), str(n_words)], out
    assert re.search(r"^\s+127\.0\.0\.1:\d+ \(%s\) +%d " % (pipe, n_words), out, re.M), out
    assert "failed messages 0 " in out and "no user errors" in out, out


def feed_word_count(bt, extra=()):
    recv = bt.receiver()
    eng = bt.engine(example_path("word_count"), ins=[0], outs=[recv.port],
                    extra=["--metrics-listen", "127.0.0.1:0"] + list(extra))
    [addr] = metrics_addrs(eng, 1)
    words = split_words()
    n_words = sum(len(w) for w in words)
    bt.send_payloads(eng.in_ports[0], [line.encode() for line in LINES])
    wait_until(lambda: total(parse(scrape(addr)), "bettong_sink_messages_total") == n_words,
               10, "every output counted")
    return eng, addr, n_words


def test_once_one_worker_exact_totals(bt):
    eng, addr, n_words = feed_word_count(bt)
    rc, out, err = top("--once", "--interval", "0", addr)
    assert rc == 0, err
    assert "1 of 1 endpoints up  one scrape, no rates" in out, out
    assert re.search(r"^  %s +worker initializer " % re.escape(addr), out, re.M), out
    check_totals(out, len(LINES), n_words)
    assert row(out, r"initializer ")[5:7] == ["4096", "27"], out  # slots, keys
    # The families the summary shows are listed only with --all.
    assert "bettong_step_messages_in_total" not in out, out
    rc, out_all, err = top("--once", "--interval", "0", "--all", addr)
    assert rc == 0, err
    assert row(out_all, r"bettong_sink_messages_total\{")[-2] == str(n_words), out_all
    groups = [line for line in out_all.splitlines() if re.match(r"^[a-z]", line)]
    assert len(groups) == len(set(groups)), out_all  # each group once
    assert row(out_all, r"bettong_slots ")[1] == "4096", out_all
    # Not a terminal: one snapshot, no screen clearing.
    rc, out2, err = top(addr, "--interval", "0.1")
    assert rc == 0 and "\033[" not in out2, out2
    check_totals(out2, len(LINES), n_words)
    rc, err = eng.stop()
    assert rc == 0, err


def test_rate_between_two_scrapes(bt):
    """Lines sent at 400/s while top takes its two scrapes give a rate near
    that; when the sender is done, the totals are exact again."""
    eng, addr, n_words = feed_word_count(bt)
    sender = bt.send_async(eng.in_ports[0], bt.framed_file([line.encode() for line in LINES]),
                           extra=["--rate", "400", "--repeat", "10"])  # 1500 lines, 3.75 s
    wait_until(lambda: total(parse(scrape(addr)), "bettong_source_messages_total") > len(LINES),
               10, "the sender's lines arrive")
    rc, out, err = top("--once", "--interval", "0.5", addr)
    assert rc == 0, err
    assert sender.poll() is None, "the sender finished before the second scrape"
    assert re.search(r"rates over 0\.5\d s", out), out
    src = row(out, r"Split and Count +\d")
    assert 200 <= float(src[4]) <= 600, out  # lines/s: about 400
    bt.wait_senders([sender])
    n = len(LINES) * 11
    wait_until(lambda: total(parse(scrape(addr)), "bettong_source_messages_total") == n, 10,
               "every line counted")
    rc, out, err = top("--once", "--interval", "0", addr)
    assert row(out, r"Split and Count +\d")[3] == str(n), out
    rc, err = eng.stop()
    assert rc == 0, err


def test_two_workers_totals(bt):
    recv = bt.receiver()
    c = Cluster(bt, example_path("word_count"), 2, "workers", outs=[recv.port],
                extra=["--metrics-listen", "127.0.0.1:0"])
    addrs = metrics_addrs(c.engines[0], 2)
    c.wait_formed()
    words = split_words()
    n_words = sum(len(w) for w in words)
    bt.send_payloads(c.ports[0][0], [line.encode() for line in LINES])
    wait_until(lambda: sum(total(parse(scrape(a)), "bettong_sink_messages_total")
                           for a in addrs) == n_words, 15, "every output counted")
    ms = [parse(scrape(a)) for a in addrs]
    rc, out, err = top("--once", "--interval", "0.2", *addrs)
    assert rc == 0, err
    assert "2 of 2 endpoints up  rates over 0.2" in out, out
    check_totals(out, len(LINES), n_words)
    # A line per worker with its own slots and keys (as its endpoint says).
    for m in ms:
        fields = row(out, r"%s " % worker_name(m))
        assert fields[5:7] == ["%d" % value(m, "bettong_slots"),
                               "%d" % value(m, "bettong_state_keys")], out
    assert sum(int(row(out, r"worker%d " % i)[5]) for i in (1, 2)) == 4096, out
    c.stop()


def test_one_worker_address_finds_the_cluster(bt):
    """Workers tell each other their metrics addresses (in the JOIN, through
    the coordinator's member list): each one's /topology.json lists both,
    `bettong cluster status` shows them, and top given one address shows
    the two workers with the cluster's exact totals."""
    recv = bt.receiver()
    c = Cluster(bt, example_path("word_count"), 2, "workers", outs=[recv.port],
                extra=["--metrics-listen", "127.0.0.1:0"])
    addrs = metrics_addrs(c.engines[0], 2)
    c.wait_formed()

    def members(addr):
        with urllib.request.urlopen("http://%s/topology.json" % addr, timeout=5) as r:
            return json.load(r)["members"]
    for a in addrs:
        ms = wait_until(lambda: (lambda m: m if len(m) == 2 else None)(members(a)), 10,
                        "both members on " + a)
        assert sorted(m["metrics"] for m in ms) == sorted(addrs), ms
        assert sorted(m["name"] for m in ms) == ["worker1", "worker2"], ms
        assert {m["state"] for m in ms} == {"active"}, ms
    status = c.status().stdout
    assert all(re.search(r" %s +127\.0\.0\.1:\d+$" % re.escape(a), status, re.M)
               for a in addrs), status
    words = split_words()
    n_words = sum(len(w) for w in words)
    bt.send_payloads(c.ports[0][0], [line.encode() for line in LINES])
    wait_until(lambda: sum(total(parse(scrape(a)), "bettong_sink_messages_total")
                           for a in addrs) == n_words, 15, "every output counted")
    for given in addrs:
        rc, out, err = top("--once", "--interval", "0", given)
        assert rc == 0, err
        assert "2 of 2 endpoints up" in out, out
        check_totals(out, len(LINES), n_words)
    c.stop()


def test_unreachable_address_is_named(bt):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: refused
        rc, out, err = top("--once", "--interval", "0", "127.0.0.1:%d" % port)
    assert rc == 1, (out, err)
    msg = "127.0.0.1:%d: cannot connect: Connection refused" % port
    assert ("bettong top: " + msg) in err, err
    assert "DOWN: cannot connect: Connection refused" in out, out
    rc, out, err = top("--once", "nonsense")
    assert rc == 1 and "nonsense: bad address" in err, err
    rc, out, err = top("--once")
    assert rc == 2 and "no metrics address given" in err, err
    rc, out, err = top("--control", "127.0.0.1:1")
    assert rc == 2 and "--control: give the metrics address of any worker instead" in err, err
    rc, out, err = top("--interval", "x", "127.0.0.1:1")
    assert rc == 2 and "--interval wants seconds" in err, err


class GarbageServer:
    """Answers every connection with `reply` and closes (or, reply=None,
    accepts and never answers)."""

    def __init__(self, reply):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.addr = "127.0.0.1:%d" % self.sock.getsockname()[1]
        self.reply = reply
        self.held = []
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            if self.reply is None:
                self.held.append(conn)
                continue
            try:
                conn.recv(65536)
                conn.sendall(self.reply)
            except OSError:
                pass
            conn.close()

    def close(self):
        self.sock.close()
        for c in self.held:
            c.close()


OK_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n"


def test_garbage_endpoints_are_reported(bt):
    cases = [
        (b"\x00\x01\x02 not http at all", "not an HTTP answer"),
        (b"HTTP/1.1 404 Not Found\r\nConnection: close\r\n\r\n", "answered 'HTTP/1.1 404 Not Found' (not 200)"),
        (OK_HEAD + b"# TYPE x counter\nx 1\nthis is { not a metric\n",
         "not the Prometheus text format: line 3: "),
        (OK_HEAD + b"x{a=\"1} 2\n", "not the Prometheus text format: line 1: label a"),
        (OK_HEAD + b"x 1 2 3\n", "line 1: x: text after the value and timestamp"),
        (b"HTTP/1.1 200 OK\r\nConte", "an HTTP answer without the end of its head"),
    ]
    for reply, want in cases:
        srv = GarbageServer(reply)
        try:
            rc, out, err = top("--once", "--interval", "0", srv.addr)
        finally:
            srv.close()
        assert rc == 1, (reply, out, err)
        assert ("bettong top: %s: " % srv.addr) in err and want in err, (want, err)
    silent = GarbageServer(None)
    try:
        rc, out, err = top("--once", "--interval", "0", "--timeout", "0.3", silent.addr)
    finally:
        silent.close()
    assert rc == 1 and "no complete answer in time (read 0 bytes)" in err, err


POOL_BODY = (b"# TYPE bettong_pool_calls_queued gauge\n"
             b"bettong_pool_calls_queued 3\n"
             b"# TYPE bettong_pool_calls_running gauge\n"
             b"bettong_pool_calls_running 2\n"
             b"# TYPE bettong_pool_calls_done_total counter\n"
             b"bettong_pool_calls_done_total{outcome=\"ok\"} 12\n"
             b"bettong_pool_calls_done_total{outcome=\"raised\"} 1\n"
             b"# TYPE bettong_pool_calls_failed_total counter\n"
             b"bettong_pool_calls_failed_total 1\n"
             b"# TYPE bettong_pool_workers gauge\n"
             b"bettong_pool_workers 4\n"
             b"# TYPE bettong_pool_call_run_seconds histogram\n"
             b"bettong_pool_call_run_seconds_bucket{le=\"0.001\"} 4\n"
             b"bettong_pool_call_run_seconds_bucket{le=\"0.002\"} 8\n"
             b"bettong_pool_call_run_seconds_bucket{le=\"+Inf\"} 8\n"
             b"bettong_pool_call_run_seconds_sum 0.01\n"
             b"bettong_pool_call_run_seconds_count 8\n")
STORE_BODY = (b"# TYPE bettong_store_requests_total counter\n"
              b"bettong_store_requests_total{kind=\"get\"} 100\n"
              b"bettong_store_requests_total{kind=\"persist\"} 7\n"
              b"# TYPE bettong_store_request_seconds histogram\n"
              b"bettong_store_request_seconds_bucket{kind=\"get\",le=\"0.001\"} 50\n"
              b"bettong_store_request_seconds_bucket{kind=\"get\",le=\"0.002\"} 100\n"
              b"bettong_store_request_seconds_bucket{kind=\"get\",le=\"+Inf\"} 100\n"
              b"bettong_store_request_seconds_sum{kind=\"get\"} 0.1\n"
              b"bettong_store_request_seconds_count{kind=\"get\"} 100\n"
              b"# TYPE bettong_store_objects gauge\n"
              b"bettong_store_objects 5\n"
              b"# TYPE bettong_store_commit_seconds histogram\n"
              b"bettong_store_commit_seconds_bucket{le=\"0.004\"} 2\n"
              b"bettong_store_commit_seconds_bucket{le=\"+Inf\"} 2\n"
              b"bettong_store_commit_seconds_sum 0.004\n"
              b"bettong_store_commit_seconds_count 2\n")


def test_pool_and_store_families(bt):
    """A pool's and a store's families (as the endpoints of `bettong pool` and
    `bettong store` name them) get summary lines; every family is listed by
    group, summed over the endpoints, counters with a rate, histograms with
    percentiles."""
    servers = [GarbageServer(OK_HEAD + POOL_BODY), GarbageServer(OK_HEAD + POOL_BODY),
               GarbageServer(OK_HEAD + STORE_BODY)]
    try:
        rc, out, err = top("--once", "--interval", "0", *[s.addr for s in servers])
    finally:
        for s in servers:
            s.close()
    assert rc == 0, err
    assert "calls queued 6 running 4 done 26 (-/s) failed 2 (-/s) workers 8" in out, out
    # 16 runs, half <= 1 ms: p50 = 1 ms; p99 = 1 + 1 * (15.84 - 8) / 8 ms.
    assert "call run p50 1.0ms p99 2.0ms; overhead -" in out, out
    assert row(out, r"get ")[1:] == ["100", "-", "1.0ms", "2.0ms"], out
    assert row(out, r"persist ")[1:] == ["7", "-", "-", "-"], out
    lines = out.splitlines()
    assert "pool" in lines and "store" in lines, out
    assert row(out, r'bettong_pool_calls_done_total\{outcome=ok\}')[1:] == ["24", "-/s"], out
    assert row(out, r"bettong_pool_calls_queued ")[1] == "6", out
    assert row(out, r"bettong_store_objects ")[1] == "5", out
    # 2 commits <= 4 ms: p50 = 2 ms (linear from 0), p99 = 3.96 ms.
    assert row(out, r"bettong_store_commit_seconds ")[1:] == \
        ["count", "2", "(-/s)", "p50", "2.0ms", "p99", "4.0ms"], out
    # The requests by kind are in the store summary, not listed again.
    assert "bettong_store_requests_total" not in out, out


def test_help():
    rc, out, err = top("--help")
    assert rc == 0 and out.startswith("usage: bettong top [options] H:P [H:P...]"), out


def test_terminal_redraws_until_interrupted(bt):
    """On a terminal (a pty here) top clears and redraws every --interval
    until it is interrupted; --interval 0 (one scrape) is refused there."""
    import os
    import pty
    import select
    import signal
    eng, addr, n_words = feed_word_count(bt)
    master, slave = pty.openpty()
    p = subprocess.Popen([BIN, "top", "--interval", "0.1", addr], stdout=slave,
                         stderr=subprocess.PIPE)
    os.close(slave)
    seen = b""
    try:
        def two_screens():
            nonlocal seen
            if select.select([master], [], [], 0.1)[0]:
                seen += os.read(master, 65536)
            return seen.count(b"\033[H\033[2J") >= 2
        wait_until(two_screens, 10, "two screens")
        assert p.poll() is None
    finally:
        p.send_signal(signal.SIGINT)
        p.wait(10)
        os.close(master)
    screen = seen.split(b"\033[H\033[2J")[2].decode().replace("\r\n", "\n")
    assert "rates over 0.1" in screen, screen
    master, slave = pty.openpty()
    p = subprocess.run([BIN, "top", "--interval", "0", addr], stdout=slave,
                       stderr=subprocess.PIPE, timeout=10)
    os.close(slave)
    os.close(master)
    assert p.returncode == 2 and b"--interval 0 takes one scrape: only with --once" in p.stderr
    rc, err = eng.stop()
    assert rc == 0, err


def test_a_pool_s_calls_in_flight_per_worker(procs, executors, tmp_path):
    """A running pool: one line per worker, its calls in flight (two held at
    a gate), then its runs by outcome, as /metrics has them; the per-worker
    families are not listed again below."""
    import test_service_metrics as tsm
    pool, addr = tsm.metrics_pool(procs, workers=2)
    wait_until(lambda: value(parse(scrape(addr)), "bettong_pool_workers") == 2, 15,
               "both workers connected")
    c = executors(pool.address, secret=tsm.SECRET)
    gate = str(tmp_path / "gate")
    fs = [c.call_async(tsm.waits_for, (gate, i)) for i in range(3)]
    wait_until(lambda: value(parse(scrape(addr)), "bettong_pool_calls_running") == 2, 10,
               "a call at each worker")
    s = parse(scrape(addr))
    workers = {dict(ls)["worker"]: dict(ls)["pid"] for (n, ls) in s
               if n == "bettong_pool_worker_calls_in_flight"}
    rc, out, err = top("--once", "--interval", "0", addr)
    assert rc == 0, err
    assert row(out, r"worker +pid +in flight")[-1] == "runs/s", out
    assert row(out, re.escape(addr))[1] == "pool", out  # the kind it names itself
    for w, pid in workers.items():
        assert row(out, r"%s +%s " % (w, pid))[2:] == ["1", "0", "0", "0", "-"], out
    assert "bettong_pool_worker_" not in out, out
    open(gate, "w").close()
    assert [f.result(timeout=tsm.T) for f in fs] == [0, 1, 2]
    wait_until(lambda: tsm.pool_done(parse(scrape(addr))) == 3, 10, "the calls counted")
    rc, out, err = top("--once", "--interval", "0.2", addr)
    assert rc == 0, err
    s = parse(scrape(addr))
    for w, pid in workers.items():
        ok = value(s, "bettong_pool_worker_runs_total", worker=w, outcome="ok")
        assert row(out, r"%s +%s " % (w, pid))[2:] == ["0", "%d" % ok, "0", "0", "0.0"], out
    rc, out, err = top("--once", "--interval", "0", "--all", addr)
    assert "bettong_pool_worker_calls_in_flight" in out, out
