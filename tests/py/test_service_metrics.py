"""Prometheus metrics of `bettong pool` and `bettong store` (--metrics-listen):
each serves /metrics from its own event loop. A pool given known calls (some
raising) counts them exactly by outcome and times every call that ran; a store
given known requests counts them exactly by kind, with its objects, loads and
commits; bad HTTP requests are answered and closed without harm; and a real
Prometheus server (Debian's `prometheus`) scrapes a pool and a store and
answers queries with the same numbers."""

import os
import random
import re
import socket
import subprocess
import sys

import cloudpickle
import pytest

from conftest import BIN, REPO, wait_until
from executor_helpers import RESULT_TIMEOUT, LineReader, TcpPool, sub_env
from test_metrics import (PROMETHEUS, http_raw, parse, prom_query, scrape, service_kinds,
                          start_prometheus, value)

import bettong  # noqa: E402,F401

cloudpickle.register_pickle_by_value(sys.modules[__name__])

T = RESULT_TIMEOUT
SECRET = "bt-test-secret-" + "%08x" % random.getrandbits(32)
METRICS_RE = re.compile(r"metrics listening on (127\.0\.0\.1:\d+)")


def square(x):
    return x * x


def fails_on_odd(x):
    if x % 2:
        raise ValueError("odd %d" % x)
    return x


def metrics_pool(procs, workers=1):
    pool = TcpPool(procs, SECRET, workers=workers,
                   extra=["--metrics-listen", "127.0.0.1:0"])
    m = pool.out.wait_for(METRICS_RE, 15)
    assert m, pool.out.text()
    return pool, m.group(1)


def pool_done(s):
    return sum(v for (n, _), v in s.items() if n == "bettong_pool_calls_done_total")


# ------------------------------------------------------------------ pool

def run_known_calls(c):
    """10 calls of square, then 6 of fails_on_odd (3 raise): 16 calls."""
    assert c.get_result(c.map(square, range(10)), timeout=T) == [x * x for x in range(10)]
    fs = c.map(fails_on_odd, range(6))
    for f in fs:
        try:
            f.result(timeout=T)
        except ValueError:
            pass
    return 16


def test_pool_counts_calls_exactly(procs, executors):
    pool, addr = metrics_pool(procs)
    s = parse(scrape(addr))
    assert value(s, "bettong_pool_calls_submitted_total") == 0
    assert pool_done(s) == 0
    c = executors(pool.address)
    n = run_known_calls(c)
    s = wait_until(lambda: (lambda s: s if pool_done(s) == n else None)(parse(scrape(addr))),
                   10, "the pool to count every call")
    assert value(s, "bettong_pool_calls_submitted_total") == n
    assert value(s, "bettong_pool_calls_done_total", outcome="ok") == 13
    assert value(s, "bettong_pool_calls_done_total", outcome="raised") == 3
    for o in ("worker_died", "timeout", "cancelled", "error"):
        assert value(s, "bettong_pool_calls_done_total", outcome=o) == 0
    assert value(s, "bettong_pool_calls_failed_total") == 3
    assert value(s, "bettong_pool_calls_queued") == 0
    assert value(s, "bettong_pool_calls_running") == 0
    assert value(s, "bettong_pool_call_run_seconds_count") == n
    assert value(s, "bettong_pool_call_overhead_seconds_count") == n
    assert value(s, "bettong_pool_call_run_seconds_bucket", le="+Inf") == n
    assert value(s, "bettong_pool_call_run_seconds_sum") > 0
    assert value(s, "bettong_pool_workers") == 1
    assert value(s, "bettong_pool_local_workers_running") == 1
    assert value(s, "bettong_pool_call_args_bytes_total") > 0
    assert value(s, "bettong_pool_call_results_bytes_total") > 0
    assert pool.alive()


def always_raises(x):
    raise KeyError(x)


def sleeps(seconds):
    import time
    time.sleep(seconds)
    return seconds


def waits_for(path, x):
    """Returns x once the file path exists: a call kept in flight until then."""
    import os
    import time
    while not os.path.exists(path):
        time.sleep(0.005)
    return x


def per_worker(s, name, **labels):
    """{worker: value} of a per-worker family's series matching labels."""
    want = set(labels.items())
    return {dict(ls)["worker"]: v for (n, ls), v in s.items()
            if n == name and want <= set(ls)}


def test_pool_counts_calls_in_flight_per_worker(procs, executors, tmp_path):
    pool, addr = metrics_pool(procs, workers=2)
    wait_until(lambda: value(parse(scrape(addr)), "bettong_pool_workers") == 2, 15,
               "both workers connected")
    s = parse(scrape(addr))
    assert service_kinds(s) == ["pool"]
    assert per_worker(s, "bettong_pool_worker_calls_in_flight") == {
        w: 0 for w in per_worker(s, "bettong_pool_worker_calls_in_flight")}
    workers = sorted(per_worker(s, "bettong_pool_worker_calls_in_flight"))
    assert len(workers) == 2
    # Each worker's pid label is one of the pool's running worker processes.
    pids = {dict(ls)["pid"] for (n, ls) in s if n == "bettong_pool_worker_calls_in_flight"}
    assert len(pids) == 2
    for pid in pids:
        os.kill(int(pid), 0)
    c = executors(pool.address)
    # 5 calls of a function never seen to finish: one goes to each worker
    # (nothing is sent ahead behind a call of unknown length), 3 wait.
    gate = str(tmp_path / "gate")
    fs = [c.call_async(waits_for, (gate, i)) for i in range(5)]

    def all_sent(s):
        return (value(s, "bettong_pool_calls_running") == 2 and
                value(s, "bettong_pool_calls_queued") == 3)
    s = wait_until(lambda: (lambda s: s if all_sent(s) else None)(parse(scrape(addr))), 10,
                   "two calls running and three queued")
    assert per_worker(s, "bettong_pool_worker_calls_in_flight") == {w: 1 for w in workers}
    assert per_worker(s, "bettong_pool_worker_runs_total") == {w: 0 for w in workers}
    open(gate, "w").close()
    assert [f.result(timeout=T) for f in fs] == list(range(5))
    # A call retried twice raises on each run: 3 runs, each counted where it ran.
    with pytest.raises(KeyError):
        c.call_async(always_raises, 1, retries=2).result(timeout=T)
    s = wait_until(lambda: (lambda s: s if pool_done(s) == 6 else None)(parse(scrape(addr))),
                   10, "every call counted")
    assert per_worker(s, "bettong_pool_worker_calls_in_flight") == {w: 0 for w in workers}
    ok = per_worker(s, "bettong_pool_worker_runs_total", outcome="ok")
    raised = per_worker(s, "bettong_pool_worker_runs_total", outcome="raised")
    assert sorted(ok) == workers and sorted(raised) == workers
    assert sum(ok.values()) == 5 and sum(raised.values()) == 3
    assert all(v >= 1 for v in ok.values()), ok  # both ran one of the first two
    assert per_worker(s, "bettong_pool_worker_runs_total", outcome="error") == {
        w: 0 for w in workers}


def test_pool_counts_retries_once_and_timeouts(procs, executors):
    pool, addr = metrics_pool(procs)
    c = executors(pool.address)
    # Run 3 times (2 retries), counted once, with its last outcome and run.
    with pytest.raises(KeyError):
        c.call_async(always_raises, 7, retries=2).result(timeout=T)
    with pytest.raises(TimeoutError):
        c.call_async(sleeps, 30, timeout=0.3).result(timeout=T)
    s = wait_until(lambda: (lambda s: s if pool_done(s) == 2 else None)(parse(scrape(addr))),
                   10, "both outcomes counted")
    assert value(s, "bettong_pool_calls_submitted_total") == 2
    assert value(s, "bettong_pool_calls_done_total", outcome="raised") == 1
    assert value(s, "bettong_pool_calls_done_total", outcome="timeout") == 1
    assert value(s, "bettong_pool_calls_failed_total") == 2
    assert value(s, "bettong_pool_call_run_seconds_count") == 1
    # The worker killed for the timeout is started again.
    wait_until(lambda: value(parse(scrape(addr)), "bettong_pool_workers") == 1, 15,
               "the worker to be back")
    assert c.call_async(sleeps, 0, timeout=5).result(timeout=T) == 0
    s = parse(scrape(addr))
    assert value(s, "bettong_pool_calls_done_total", outcome="ok") == 1
    assert value(s, "bettong_pool_local_workers_running") == 1


def test_pool_bad_http_requests_are_harmless(procs, executors):
    pool, addr = metrics_pool(procs)
    cases = [
        (b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n", b"HTTP/1.1 405 "),
        (b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\r\n\r\n", b"HTTP/1.1 400 "),
        (b"GET /nothing-here HTTP/1.1\r\n\r\n", b"HTTP/1.1 404 "),
        (b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 9000 + b"\r\n\r\n", b"HTTP/1.1 431 "),
    ]
    for req, status in cases:
        assert http_raw(addr, req).startswith(status), req[:40]
    host, port = addr.rsplit(":", 1)
    with socket.create_connection((host, int(port))) as s:
        s.sendall(b"GET /met")
    # The pool still runs calls and counts them.
    c = executors(pool.address)
    assert c.get_result(c.map(square, range(4)), timeout=T) == [0, 1, 4, 9]
    wait_until(lambda: pool_done(parse(scrape(addr))) == 4, 10, "the pool still counts")
    assert pool.alive()


def test_pool_and_store_serve_the_dashboard(procs, stores):
    """The dashboard's page and files come from a pool's and a store's
    endpoint too, and their /metrics is readable from the page's origin."""
    pool, paddr = metrics_pool(procs)
    st, saddr = metrics_store(stores)
    page = (REPO / "web" / "dashboard" / "index.html").read_bytes()
    for addr in (paddr, saddr):
        got = http_raw(addr, b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
        head, _, body = got.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 "), head
        assert body == page
        got = http_raw(addr, b"GET /metrics HTTP/1.1\r\nConnection: close\r\n\r\n")
        assert b"\r\nAccess-Control-Allow-Origin: *\r\n" in got.partition(b"\r\n\r\n")[0]


@pytest.mark.parametrize("service", [["pool", "--listen", "127.0.0.1:0", "--workers", "0"],
                                     ["store", "--listen", "127.0.0.1:0", "--dir", "DIR"]])
def test_metrics_port_in_use_is_refused(service, tmp_path):
    argv = [str(BIN)] + [str(tmp_path / "store") if a == "DIR" else a for a in service]
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        p = subprocess.run(argv + ["--metrics-listen", "127.0.0.1:%d" % port],
                           capture_output=True, text=True, timeout=30, env=sub_env())
    assert p.returncode == 2, p
    assert "metrics: cannot listen on 127.0.0.1:%d" % port in p.stderr, p.stderr


@pytest.mark.parametrize("service", ["pool", "store"])
def test_help_names_the_flag(service):
    p = subprocess.run([str(BIN), service, "--help"], capture_output=True, text=True,
                       timeout=10)
    assert p.returncode == 0
    assert "--metrics-listen H:P  serve Prometheus metrics at http://H:P/metrics" in p.stdout


# ------------------------------------------------------------------ store

STORE_METRICS_RE = re.compile(r"metrics listening on (127\.0\.0\.1:\d+)")


def metrics_store(stores):
    st = stores(extra=["--metrics-listen", "127.0.0.1:0"])
    m = wait_until(lambda: STORE_METRICS_RE.search(st.log()), 10, "the metrics address")
    return st, m.group(1)


def kinds(s):
    return {dict(ls)["kind"]: v for (n, ls), v in s.items()
            if n == "bettong_store_requests_total" and v}


def store_known_requests():
    """3 counters made persistent (the class once), 5 calls, 1 lookup by alias."""
    from bettong import objects
    import store_models as m
    cs = [m.Counter(i) for i in range(3)]
    for i, c in enumerate(cs):
        c.make_persistent(alias="c%d" % i)
    for _ in range(4):
        cs[0].incr()
    assert cs[1].get() == 1
    c2 = m.Counter.get_by_alias("c2")
    return c2


STORE_KINDS = {"class": 1, "persist": 3, "call": 5, "lookup_alias": 1, "backends": 1}


def check_store(s):
    assert kinds(s) == STORE_KINDS
    assert value(s, "bettong_store_bad_requests_total") == 0
    assert value(s, "bettong_store_objects") == 3
    # Every request above but the 5th call (get: no change) is a unit; the
    # client waits for each answer, so each is its own commit.
    units = 10
    assert value(s, "bettong_store_committed_units_total") == units
    assert value(s, "bettong_store_commit_batch_units_sum") == units
    commits = value(s, "bettong_store_commits_total")
    assert 1 <= commits <= units
    assert value(s, "bettong_store_commit_batch_units_count") == commits
    assert value(s, "bettong_store_commit_seconds_count") == commits
    assert value(s, "bettong_store_commit_failures_total") == 0
    # The calls touch c0 (4 times) and c1 (once): each loaded once, then hit.
    assert value(s, "bettong_store_cache_loads_total") == 2
    assert value(s, "bettong_store_cache_hits_total") == 3
    assert value(s, "bettong_store_cached_objects") == 2
    assert value(s, "bettong_store_disk_bytes") > 0
    assert value(s, "bettong_store_lmdb_used_bytes") > 0


def latencies_counted(addr):
    s = parse(scrape(addr))
    counts = {dict(ls)["kind"]: v for (n, ls), v in s.items()
              if n == "bettong_store_request_seconds_count" and v}
    return s if counts == STORE_KINDS else None


def test_store_counts_requests_exactly(stores):
    from bettong import objects
    st, addr = metrics_store(stores)
    s = parse(scrape(addr))
    assert kinds(s) == {}
    assert service_kinds(s) == ["store"]
    assert value(s, "bettong_store_objects") == 0
    assert value(s, "bettong_store_commits_total") == 0
    objects.connect(st.address)
    store_known_requests()
    s = wait_until(lambda: latencies_counted(addr), 10, "every request's latency")
    check_store(s)
    assert value(s, "bettong_store_request_seconds_bucket", kind="call", le="+Inf") == 5
    assert value(s, "bettong_store_request_seconds_sum", kind="call") > 0
    # Bad HTTP requests: answered and closed; the store still serves.
    assert http_raw(addr, b"GET /nothing HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 404 ")
    assert http_raw(addr, b"BREW /metrics HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 405 ")
    host, port = addr.rsplit(":", 1)
    with socket.create_connection((host, int(port))) as sk:
        sk.sendall(b"GET /met")
    import store_models as m
    assert m.Counter.get_by_alias("c0").get() == 4
    wait_until(lambda: kinds(parse(scrape(addr)))["call"] == 6, 10, "one more call counted")
    objects.disconnect()
    assert st.stop() == 0


# ------------------------------------------------------------------ Prometheus

@pytest.mark.skipif(PROMETHEUS is None, reason="the prometheus binary (Debian package "
                    "'prometheus', installed by `make deps`) is not on PATH")
def test_a_prometheus_server_scrapes_a_pool_and_a_store(procs, executors, stores, tmp_path,
                                                        reserve_port):
    from bettong import objects
    pool, paddr = metrics_pool(procs)
    st, saddr = metrics_store(stores)
    n = run_known_calls(executors(pool.address))
    objects.connect(st.address)
    store_known_requests()
    wait_until(lambda: pool_done(parse(scrape(paddr))) == n, 10, "the pool's count")
    wait_until(lambda: latencies_counted(saddr), 10, "the store's count")
    base, prom = start_prometheus(procs, tmp_path, reserve_port(),
                                  {"pool": [paddr], "store": [saddr]})
    got = wait_until(lambda: prom_query(base, "sum(bettong_pool_calls_submitted_total)"), 15,
                     "a query result", interval=0.2)
    assert got == n
    assert prom_query(base, 'bettong_pool_calls_done_total{job="pool",outcome="raised"}') == 3
    assert prom_query(base, "bettong_pool_calls_failed_total") == 3
    assert prom_query(base, "bettong_pool_call_run_seconds_count") == n
    assert prom_query(base, "bettong_pool_workers") == 1
    assert prom_query(base, "sum(bettong_pool_worker_runs_total)") == n
    assert prom_query(base, "sum(bettong_pool_worker_calls_in_flight)") == 0
    assert prom_query(base, 'bettong_service_info{job="store"}') == 1
    assert prom_query(base, 'bettong_store_requests_total{job="store",kind="call"}') == 5
    assert prom_query(base, "sum(bettong_store_requests_total)") == sum(STORE_KINDS.values())
    assert prom_query(base, "bettong_store_objects") == 3
    assert prom_query(base, "bettong_store_committed_units_total") == 10
    assert prom_query(base, "bettong_store_cache_loads_total") == 2
    prom.terminate()
    prom.wait(15)
    objects.disconnect()
