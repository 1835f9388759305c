"""The live dashboard of `bettong run`, `bettong pool` and `bettong store` (/
of the --metrics-listen endpoint): the files built into the binary,
/topology.json made from the application, /metrics readable by a page of
another worker (CORS), and the page itself in a real browser: headless
Chromium (Debian's `chromium`) driven through ChromeDriver (`chromium-driver`)
by Debian's python3-selenium, all installed by `make deps`, against a running
two-worker word count, a pool with calls in flight and a store under calls.

The browser tests save a screenshot of the page (dashboard.png, pool.png,
store.png) in their tmp dir (pytest keeps the last three runs' under
/tmp/pytest-of-$USER/); set BETTONG_DASHBOARD_SCREENSHOT=FILE to have the
stream's copied there as well (and the pool's and the store's next to it,
FILE with -pool, -store before its extension)."""

import json
import os
import shutil
import urllib.request

import pytest

from conftest import Cluster, example_path, wait_until
from test_metrics import (LINES, METRICS_RE, metrics_addrs, parse, scrape, split_words, total,
                          value)
import test_service_metrics as tsm

try:
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
except ImportError:
    webdriver = None

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
WEB = os.path.join(os.path.dirname(__file__), "..", "..", "web", "dashboard")


def get(addr, path):
    with urllib.request.urlopen("http://%s%s" % (addr, path), timeout=10) as r:
        return r.status, r.headers, r.read()


def test_the_page_and_topology_are_served(bt):
    recv = bt.receiver()
    eng = bt.engine(example_path("word_count"), ins=[0], outs=[recv.port],
                    extra=["--metrics-listen", "127.0.0.1:0"])
    [addr] = metrics_addrs(eng, 1)
    eng.wait_log(r"dashboard at http://%s/" % addr)
    # The files are the repository's, byte for byte, built in.
    for path, name, ctype in (("/", "index.html", "text/html; charset=utf-8"),
                              ("/index.html", "index.html", "text/html; charset=utf-8"),
                              ("/app.js", "app.js", "text/javascript; charset=utf-8"),
                              ("/services.js", "services.js", "text/javascript; charset=utf-8"),
                              ("/style.css", "style.css", "text/css; charset=utf-8")):
        status, headers, body = get(addr, path)
        assert status == 200 and headers["Content-Type"] == ctype, (path, headers)
        with open(os.path.join(WEB, name), "rb") as f:
            assert body == f.read(), path
        assert headers.get("Access-Control-Allow-Origin") is None, path
    status, headers, body = get(addr, "/topology.json")
    assert headers["Content-Type"] == "application/json"
    assert headers["Access-Control-Allow-Origin"] == "*"
    topo = json.loads(body)
    assert topo == {
        "service": "stream", "application": "Word Count Application",
        "worker": "initializer", "cluster": False, "slots": 4096,
        "pipelines": [{
            "name": "Split and Count",
            "source": {"kind": "tcp", "addr": "127.0.0.1:%d" % eng.in_ports[0]},
            "steps": [{"index": 0, "name": "computation 'split into words'", "kind": "stateless"},
                      {"index": 1, "name": "computation 'count word'",
                       "kind": "state_partition"}],
            "sinks": ["127.0.0.1:%d" % recv.port]}]}, topo
    # /metrics: readable by a dashboard served by another worker.
    status, headers, _ = get(addr, "/metrics")
    assert headers["Access-Control-Allow-Origin"] == "*"
    rc, err = eng.stop()
    assert rc == 0, err


def chrome():
    opts = Options()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--window-size=1300,2000", "--no-first-run", "--disable-extensions"):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)


NO_BROWSER = None if webdriver and CHROMIUM and CHROMEDRIVER else (
    "needs Debian's chromium, chromium-driver and python3-selenium (installed by `make deps`)")


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium for the module's tests (each loads its own page)."""
    if NO_BROWSER:
        pytest.skip(NO_BROWSER)
    driver = chrome()
    try:
        yield driver
    finally:
        driver.quit()


def shown(driver, card):
    """A summary card's exact number (its data-value), or None. Read by a
    script, at once: the page redraws its panels every second."""
    v = driver.execute_script(
        "const e = document.getElementById(arguments[0]);"
        "return e ? e.getAttribute('data-value') : '';", card)
    return float(v) if v else None


def panel_text(driver, panel):
    return driver.execute_script("return document.getElementById(arguments[0]).innerText;",
                                 panel)


def test_the_dashboard_in_a_browser(bt, tmp_path, browser):
    recv = bt.receiver()
    c = Cluster(bt, example_path("word_count"), 2, "workers", outs=[recv.port],
                extra=["--metrics-listen", "127.0.0.1:0"])
    addrs = metrics_addrs(c.engines[0], 2)
    c.wait_formed()
    driver = browser
    try:
        # The first worker's page, told where the second's endpoint is, and
        # of an address where nothing answers (shown as down; the others go on).
        dead = "127.0.0.1:%d" % bt.reserve_port()
        driver.get("http://%s/?workers=%s,%s" % (addrs[0], addrs[1], dead))
        wait_until(lambda: shown(driver, "workers-up") == 2, 10, "both workers answering")
        wait_until(lambda: "down: " in panel_text(driver, "workers"), 5, "the dead one down")
        wait_until(lambda: shown(driver, "total-in") == 0, 5, "nothing in yet")
        topo = panel_text(driver, "topology")
        for want in ("Split and Count", "computation 'split into words'", "computation 'count word'",
                     "127.0.0.1:%d" % recv.port):
            assert want in topo, topo
        workers = panel_text(driver, "workers")
        assert "worker1" in workers and "worker2" in workers, workers

        # The numbers move as data comes: the first half of the lines...
        words = split_words()
        half = len(LINES) // 2
        bt.send_payloads(c.ports[0][0], [line.encode() for line in LINES[:half]])
        wait_until(lambda: shown(driver, "total-in") == half, 10, "the first lines shown")
        assert shown(driver, "rate-in") > 0
        # ... then the rest; once every output is counted, the page's total
        # is the sum of the two workers' /metrics.
        bt.send_payloads(c.ports[0][0], [line.encode() for line in LINES[half:]])
        n_words = sum(len(w) for w in words)
        wait_until(lambda: sum(total(parse(scrape(a)), "bettong_sink_messages_total")
                               for a in addrs) == n_words, 15, "every output counted")
        wait_until(lambda: shown(driver, "total-out") == n_words, 5, "the page's total")
        assert shown(driver, "total-in") == len(LINES)
        assert shown(driver, "total-failed") == 0
        assert panel_text(driver, "errors") == "none"
        slots = panel_text(driver, "slots")
        assert slots.count(" slots, ") == 2, slots
        steps = panel_text(driver, "steps")
        assert steps.count("Split and Count") == 4, steps  # 2 steps x 2 workers

        shot = str(tmp_path / "dashboard.png")
        assert driver.save_screenshot(shot)
        with open(shot, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
        keep = os.environ.get("BETTONG_DASHBOARD_SCREENSHOT")
        if keep:
            shutil.copyfile(shot, keep)
        # The page's own code raised nothing.
        errors = [e for e in driver.get_log("browser")
                  if e["level"] == "SEVERE" and dead not in e["message"]]
        assert errors == [], errors
    finally:
        driver.get("about:blank")  # no more polls of workers about to stop
    c.stop()


def test_the_dashboard_shows_a_rebalance(bt, browser):
    """The page of one worker, told of no other, polls every member of its
    cluster (their metrics addresses come with the member list); a worker
    joins the running cluster: the page finds it and lists the slots each
    worker gave up."""
    recv = bt.receiver()
    c = Cluster(bt, example_path("word_count"), 2, "flags", outs=[recv.port],
                extra=["--metrics-listen", "127.0.0.1:0"])
    c.wait_formed(2)
    addrs = [metrics_addrs(e, 1)[0] for e in c.engines]
    driver = browser
    try:
        driver.get("http://%s/" % addrs[0])
        wait_until(lambda: panel_text(driver, "slots").count("2048 slots") == 2, 10,
                   "two workers of 2048 slots each, the second found by the page")
        assert panel_text(driver, "rebalances") == ""
        w3 = c.add_worker(join=True, name="w3")
        [addr3] = metrics_addrs(w3, 1)
        c.wait_formed(3)
        st = c.workers()
        want = sorted("%s %d → %d slots" % (w, 2048, st[w][1]) for w in ("w1", "w2"))

        def listed():
            lines = panel_text(driver, "rebalances").splitlines()
            got = sorted(line.split(": ", 1)[1] for line in lines if ": " in line)
            return got == want
        wait_until(listed, 10, "both workers' slots moving shown: %s" % want)
        wait_until(lambda: shown(driver, "workers-up") == 3, 15, "w3 found and polled")
        workers = panel_text(driver, "workers")
        assert "w3" in workers and addr3 in workers, workers
        assert panel_text(driver, "workers-hint") == ""
    finally:
        driver.get("about:blank")  # no more polls of workers about to stop
    c.stop()


class FakeService:
    """An endpoint of another kind (as a pool's or a store's): /metrics with
    families the stream panels do not know, readable across origins, and no
    /topology.json. Its counter grows by 3 per scrape."""

    def __init__(self):
        import http.server
        import threading
        svc = self
        self.scrapes = 0

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                if self.path != "/metrics":
                    self.send_error(404)
                    return
                svc.scrapes += 1
                n = svc.scrapes
                body = ("# HELP bettong_fake_calls_total Calls.\n"
                        "# TYPE bettong_fake_calls_total counter\n"
                        'bettong_fake_calls_total{kind="get"} %d\n'
                        "# HELP bettong_fake_objects Objects.\n"
                        "# TYPE bettong_fake_objects gauge\n"
                        "bettong_fake_objects 42\n"
                        "# HELP bettong_fake_call_seconds Call time.\n"
                        "# TYPE bettong_fake_call_seconds histogram\n"
                        'bettong_fake_call_seconds_bucket{le="0.001"} %d\n'
                        'bettong_fake_call_seconds_bucket{le="+Inf"} %d\n'
                        "bettong_fake_call_seconds_sum 0.5\n"
                        "bettong_fake_call_seconds_count %d\n"
                        % (3 * n, 5 * n, 7 * n, 7 * n)).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Access-Control-Allow-Origin", "*")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.addr = "127.0.0.1:%d" % self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_the_dashboard_shows_families_it_does_not_know(bt, browser):
    """Families of another service are shown as they come: a counter's value
    and rate, a gauge, a histogram's count and quantiles."""
    recv = bt.receiver()
    eng = bt.engine(example_path("word_count"), ins=[0], outs=[recv.port],
                    extra=["--metrics-listen", "127.0.0.1:0"])
    [addr] = metrics_addrs(eng, 1)
    fake = FakeService()
    driver = browser
    try:
        driver.get("http://%s/?workers=%s" % (addr, fake.addr))
        wait_until(lambda: shown(driver, "workers-up") == 2, 10, "both answering")

        def row(name):
            for line in panel_text(driver, "other").splitlines():
                if name in line:
                    return line.split("\t")
            return None
        # 3 a scrape, a scrape a second or a little more: a rate just under 3/s.
        calls = wait_until(lambda: (lambda r: r if r and r[4] not in ("", "–/s") else None)(
            row("bettong_fake_calls_total")), 10, "the counter's rate")
        assert 2.0 <= float(calls[4][:-2]) <= 3.0, calls
        assert calls[0] == fake.addr and calls[2] == "kind=get", calls
        assert int(calls[3]) % 3 == 0 and int(calls[3]) >= 6, calls
        assert row("bettong_fake_objects")[3] == "42"
        hist = row("bettong_fake_call_seconds")
        assert int(hist[3]) % 7 == 0 and hist[5] == "1.0 ms / > max", hist
        # The stream worker's own panels are there too.
        assert "Split and Count" in panel_text(driver, "topology")
    finally:
        driver.get("about:blank")
        fake.close()
    rc, err = eng.stop()
    assert rc == 0, err


def displayed(driver, panel):
    return driver.execute_script(
        "return document.getElementById(arguments[0]).getClientRects().length > 0;",
        panel)


def screenshot(driver, tmp_path, name):
    """Saves the page as tmp_path/NAME.png (and copies it next to
    BETTONG_DASHBOARD_SCREENSHOT, FILE-NAME.png, when set)."""
    shot = str(tmp_path / (name + ".png"))
    assert driver.save_screenshot(shot)
    with open(shot, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    keep = os.environ.get("BETTONG_DASHBOARD_SCREENSHOT")
    if keep:
        base, ext = os.path.splitext(keep)
        shutil.copyfile(shot, "%s-%s%s" % (base, name, ext or ".png"))


def no_page_errors(driver):
    errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == [], errors


def pool_rows(driver):
    """The pool workers panel: {worker: (pid, in flight, runs ok, raised)}."""
    rows = driver.execute_script(
        "return Array.from(document.querySelectorAll('#pool-worker-list tbody tr')).map(tr =>"
        " [tr.cells[1].innerText, tr.cells[2].innerText,"
        "  tr.cells[3].querySelector('.inflight').getAttribute('data-value'),"
        "  tr.cells[4].innerText, tr.cells[5].innerText]);")
    return {r[0]: (r[1], float(r[2]), r[3], r[4]) for r in rows}


def metrics_rows(s):
    """The same figures, from a pool's /metrics."""
    out = {}
    for (n, ls), v in s.items():
        if n == "bettong_pool_worker_calls_in_flight":
            w = dict(ls)["worker"]
            out[w] = (dict(ls)["pid"], v,
                      "%d" % value(s, "bettong_pool_worker_runs_total", worker=w, outcome="ok"),
                      "%d" % value(s, "bettong_pool_worker_runs_total", worker=w,
                                   outcome="raised"))
    return out


def test_the_dashboard_of_a_pool(procs, executors, tmp_path, browser):
    """A pool's page: its workers, each one's calls in flight (held at a
    gate), then the calls done, as /metrics has them."""
    pool, addr = tsm.metrics_pool(procs, workers=2)
    wait_until(lambda: value(parse(scrape(addr)), "bettong_pool_workers") == 2, 15,
               "both workers connected")
    driver = browser
    driver.get_log("browser")  # (what earlier tests' pages logged)
    try:
        driver.get("http://%s/" % addr)
        wait_until(lambda: shown(driver, "pool-workers") == 2, 10, "two workers shown")
        assert displayed(driver, "pool-panel") and displayed(driver, "store-panel") is False
        assert not displayed(driver, "topology-panel")
        assert not displayed(driver, "chart-throughput")
        idle = metrics_rows(parse(scrape(addr)))
        assert len(idle) == 2
        wait_until(lambda: pool_rows(driver) == idle, 5, "the idle workers as /metrics has them")
        assert shown(driver, "pool-done") == 0

        c = executors(pool.address, secret=tsm.SECRET)
        gate = str(tmp_path / "gate")
        fs = [c.call_async(tsm.waits_for, (gate, i)) for i in range(5)]
        # One call at each worker (nothing sent ahead behind a call of
        # unknown length), three queued: the page shows what /metrics says.
        wait_until(lambda: shown(driver, "pool-running") == 2 and
                   shown(driver, "pool-queued") == 3, 10, "two calls running, three queued")
        assert shown(driver, "pool-in-flight") == 2
        busy = metrics_rows(parse(scrape(addr)))
        assert sorted(v[1] for v in busy.values()) == [1, 1], busy
        wait_until(lambda: pool_rows(driver) == busy, 5, "one call in flight at each worker")
        assert shown(driver, "pool-done") == 0

        open(gate, "w").close()
        assert [f.result(timeout=tsm.T) for f in fs] == list(range(5))
        with pytest.raises(KeyError):
            c.call_async(tsm.always_raises, 1, retries=1).result(timeout=tsm.T)
        s = wait_until(lambda: (lambda s: s if tsm.pool_done(s) == 6 else None)(
            parse(scrape(addr))), 10, "every call counted")
        wait_until(lambda: shown(driver, "pool-done") == 6, 5, "the page's count")
        assert shown(driver, "pool-done-rate") > 0
        assert shown(driver, "pool-failed") == value(s, "bettong_pool_calls_failed_total") == 1
        assert shown(driver, "pool-running") == 0 and shown(driver, "pool-queued") == 0
        done = metrics_rows(s)
        assert sum(int(v[2]) for v in done.values()) == 5
        assert sum(int(v[3]) for v in done.values()) == 2  # 1 run and 1 retry
        wait_until(lambda: pool_rows(driver) == done, 5, "each worker's runs")
        assert "pool calls raised" in panel_text(driver, "errors")
        # The run times of the last 30 s: a p50 for the pool.
        [row] = panel_text(driver, "pool-latency").splitlines()[1:]
        assert row.split("\t")[2] not in ("", "–"), row
        screenshot(driver, tmp_path, "pool")
        no_page_errors(driver)
    finally:
        driver.get("about:blank")


def test_the_dashboard_of_a_store(stores, tmp_path, browser):
    """A store's page: requests by kind, objects, cache and commits, moving
    as calls come, as /metrics has them."""
    from bettong import objects
    st, addr = tsm.metrics_store(stores)
    driver = browser
    driver.get_log("browser")  # (what earlier tests' pages logged)
    try:
        driver.get("http://%s/" % addr)
        wait_until(lambda: shown(driver, "store-requests") == 0, 10, "the store shown")
        assert displayed(driver, "store-panel") and not displayed(driver, "pool-panel")
        assert not displayed(driver, "topology-panel")
        assert panel_text(driver, "store-kind-list") == "no request yet"
        objects.connect(st.address)
        c2 = tsm.store_known_requests()
        s = wait_until(lambda: tsm.latencies_counted(addr), 10, "every request counted")
        n = sum(tsm.STORE_KINDS.values())
        wait_until(lambda: shown(driver, "store-requests") == n, 5, "the page's count")
        assert shown(driver, "store-objects") == value(s, "bettong_store_objects") == 3
        assert shown(driver, "store-cached") == value(s, "bettong_store_cached_objects")
        assert shown(driver, "store-commits") == value(s, "bettong_store_commits_total")
        assert shown(driver, "store-disk") == value(s, "bettong_store_disk_bytes")
        assert shown(driver, "store-hit-ratio") == 3 / 5  # 3 hits, 2 loads
        assert shown(driver, "store-rate") > 0
        kinds = {line.split("\t")[1]: line.split("\t")[2]
                 for line in panel_text(driver, "store-kind-list").splitlines()[1:]}
        assert kinds == {k: str(v) for k, v in tsm.STORE_KINDS.items()}, kinds
        # More calls: the numbers move.
        for _ in range(10):
            c2.incr()
        wait_until(lambda: tsm.kinds(parse(scrape(addr)))["call"] == 15, 10, "10 calls more")
        wait_until(lambda: shown(driver, "store-requests") == n + 10, 5, "the page's count")
        kinds = {line.split("\t")[1]: line.split("\t")[2]
                 for line in panel_text(driver, "store-kind-list").splitlines()[1:]}
        assert kinds["call"] == "15", kinds
        commits = panel_text(driver, "store-commit-list").splitlines()[1].split("\t")
        s = parse(scrape(addr))
        assert commits[1] == "%d" % value(s, "bettong_store_commits_total"), commits
        screenshot(driver, tmp_path, "store")
        no_page_errors(driver)
    finally:
        driver.get("about:blank")
        objects.disconnect()
    assert st.stop() == 0
