/* The dashboard's pool and store views: summary cards, panels and charts for
 * the endpoints that name themselves bettong_service_info{service="pool"} or
 * {service="store"}. Loaded after app.js, whose helpers it uses through
 * window.BettongDashboard (D); every number is read from the /metrics
 * samples app.js polled. Plain JS, nothing fetched here. */
"use strict";

(function () {
  const D = window.BettongDashboard;
  const {el, replace, table, fmt, fmtSeconds, fmtBytes, sum, series, latest, rate, quantile,
         card} = D;

  D.tracked.push(["run", "bettong_pool_call_run_seconds"],
                 ["overhead", "bettong_pool_call_overhead_seconds"],
                 ["request", "bettong_store_request_seconds"],
                 ["commit", "bettong_store_commit_seconds"]);

  /* The sum of a family over the endpoints of a kind (null if none has it). */
  function totalOf(service, name, want) {
    let t = null;
    for (const w of D.upOf(service)) {
      const v = sum(latest(w).snap, name, want);
      if (v !== null) t = (t || 0) + v;
    }
    return t;
  }

  function rateOf(service, name, want) {
    let t = null;
    for (const w of D.upOf(service)) {
      const v = rate(w, name, want);
      if (v !== null) t = (t || 0) + v;
    }
    return t;
  }

  const pct = v => v === null || Number.isNaN(v) ? "–" : (100 * v).toFixed(1) + " %";
  const secs = (w, family, want, q) => fmtSeconds(quantile(w, family, want || {}, q, D.LATENCY_S));

  /* A histogram's mean over its whole life: _sum / _count. */
  function mean(w, family, want) {
    const s = sum(latest(w).snap, family + "_sum", want), c = sum(latest(w).snap, family + "_count", want);
    return s !== null && c ? s / c : null;
  }

  /* ---------------------------------------------------------------- pool */

  const POOL = "bettong_pool_";

  function poolCards() {
    if (!D.upOf("pool").length) return [];
    const done = totalOf("pool", POOL + "calls_done_total");
    return [card("pool-workers", "pool workers alive", totalOf("pool", POOL + "workers")),
            card("pool-queued", "calls queued", totalOf("pool", POOL + "calls_queued")),
            card("pool-running", "calls running (incl. sent ahead)", totalOf("pool", POOL + "calls_running")),
            card("pool-in-flight", "in flight at workers", totalOf("pool", POOL + "worker_calls_in_flight")),
            card("pool-done", "calls done", done),
            card("pool-done-rate", "done per second", rateOf("pool", POOL + "calls_done_total")),
            card("pool-failed", "calls failed", totalOf("pool", POOL + "calls_failed_total")),
            card("pool-args-rate", "argument bytes in per second",
                 rateOf("pool", POOL + "call_args_bytes_total"),
                 fmtBytes(rateOf("pool", POOL + "call_args_bytes_total")) + "/s"),
            card("pool-results-rate", "result bytes out per second",
                 rateOf("pool", POOL + "call_results_bytes_total"),
                 fmtBytes(rateOf("pool", POOL + "call_results_bytes_total")) + "/s")];
  }

  /* One row per worker of each pool: its calls in flight (a bar of the
   * busiest's), its runs by outcome and their rate. */
  function renderPoolWorkers() {
    const rows = [];
    for (const p of D.upOf("pool")) {
      const snap = latest(p).snap;
      const inflight = series(snap, POOL + "worker_calls_in_flight")
        .sort((a, b) => Number(a.labels.worker) - Number(b.labels.worker));
      const most = Math.max(1, ...inflight.map(s => s.value));
      for (const s of inflight) {
        const who = {worker: s.labels.worker};
        const runs = o => sum(snap, POOL + "worker_runs_total", {worker: s.labels.worker, outcome: o});
        rows.push([p.name, s.labels.worker, s.labels.pid,
                   el("span", {class: "inflight", "data-value": String(s.value)}, [
                     el("span", {class: "bar"}, [el("span", {class: "fill",
                       style: "width:" + (100 * s.value / most).toFixed(0) + "%"})]),
                     " " + fmt(s.value)]),
                   fmt(runs("ok")), fmt(runs("raised")), fmt(runs("error")),
                   fmt(rate(p, POOL + "worker_runs_total", who))]);
      }
    }
    replace("pool-worker-list", rows.length
      ? table(["pool", "worker", "pid", "calls in flight", "runs ok", "raised", "error", "runs/s"], rows)
      : el("p", {class: "hint", text: "no worker connected"}));
  }

  function renderPoolLatency() {
    const rows = D.upOf("pool").map(p => {
      const run = POOL + "call_run_seconds", over = POOL + "call_overhead_seconds";
      return [p.name, fmt(rate(p, run + "_count", {}, D.LATENCY_S)),
              secs(p, run, {}, 0.5), secs(p, run, {}, 0.9), secs(p, run, {}, 0.99),
              fmtSeconds(mean(p, run)),
              secs(p, over, {}, 0.5), secs(p, over, {}, 0.9), secs(p, over, {}, 0.99),
              fmtSeconds(mean(p, over))];
    });
    replace("pool-latency", table(["pool", "calls/s", "run p50", "run p90", "run p99",
                                   "run mean (all)", "overhead p50", "overhead p90",
                                   "overhead p99", "overhead mean (all)"], rows));
  }

  function renderPoolCharts() {
    const pools = D.upOf("pool");
    if (!pools.length) return;
    const calls = [];
    for (const [label, name, want] of [["submitted", POOL + "calls_submitted_total"],
                                       ["done", POOL + "calls_done_total"],
                                       ["failed", POOL + "calls_failed_total"]])
      calls.push({label: label, points: D.sumLines(pools.map(p => D.rateLine(p, name, want)))});
    D.drawChart("chart-pool-calls", "legend-pool-calls", calls, fmt);
    /* A line per worker seen in the window (a worker that left ends). */
    const byWorker = new Map();
    for (const p of pools) for (const h of p.history)
      for (const s of series(h.snap, POOL + "worker_calls_in_flight")) {
        const key = (pools.length > 1 ? p.name + " " : "") + "worker " + s.labels.worker;
        if (!byWorker.has(key)) byWorker.set(key, []);
        byWorker.get(key).push([h.t, s.value]);
      }
    D.drawChart("chart-pool-inflight", "legend-pool-inflight",
                Array.from(byWorker.entries()).slice(0, 10).map(([k, v]) => ({label: k, points: v})), fmt);
    const lat = [];
    for (const p of pools) for (const key of ["run", "overhead"]) for (const q of ["p50", "p99"])
      lat.push({label: (pools.length > 1 ? p.name + " " : "") + key + " " + q,
                points: D.quantileLine(p, key, q)});
    D.drawChart("chart-pool-latency", "legend-pool-latency", lat, fmtSeconds);
  }

  /* --------------------------------------------------------------- store */

  const STORE = "bettong_store_";

  function storeCards() {
    if (!D.upOf("store").length) return [];
    const hits = totalOf("store", STORE + "cache_hits_total");
    const loads = totalOf("store", STORE + "cache_loads_total");
    const ratio = hits !== null && loads !== null && hits + loads > 0 ? hits / (hits + loads) : null;
    const disk = totalOf("store", STORE + "disk_bytes");
    return [card("store-requests", "store requests", totalOf("store", STORE + "requests_total")),
            card("store-rate", "requests per second", rateOf("store", STORE + "requests_total")),
            card("store-objects", "objects stored", totalOf("store", STORE + "objects")),
            card("store-cached", "objects in memory", totalOf("store", STORE + "cached_objects")),
            card("store-hit-ratio", "cache hits (of lookups)", ratio, pct(ratio)),
            card("store-commits", "commits", totalOf("store", STORE + "commits_total")),
            card("store-disk", "on disk", disk, fmtBytes(disk))];
  }

  /* Kinds of request seen (a non-zero count), per store. */
  function renderStoreKinds() {
    const rows = [];
    for (const st of D.upOf("store")) {
      const snap = latest(st).snap;
      for (const s of series(snap, STORE + "requests_total")) {
        if (!s.value) continue;
        const want = {kind: s.labels.kind}, fam = STORE + "request_seconds";
        rows.push([st.name, s.labels.kind, fmt(s.value), fmt(rate(st, STORE + "requests_total", want)),
                   secs(st, fam, want, 0.5), secs(st, fam, want, 0.99), fmtSeconds(mean(st, fam, want))]);
      }
    }
    replace("store-kind-list", rows.length
      ? table(["store", "kind", "requests", "per second", "p50", "p99", "mean (all)"], rows)
      : el("p", {class: "hint", text: "no request yet"}));
  }

  function renderStoreCommits() {
    const rows = D.upOf("store").map(st => {
      const snap = latest(st).snap, v = name => sum(snap, STORE + name);
      const hits = v("cache_hits_total"), loads = v("cache_loads_total");
      const batch = STORE + "commit_batch_units";
      const q = (fam, p) => quantile(st, fam, {}, p, D.LATENCY_S);
      return [st.name, fmt(v("commits_total")), fmt(rate(st, STORE + "commits_total")),
              fmt(q(batch, 0.5)) + " / " + fmt(q(batch, 0.99)),
              fmt(mean(st, batch)),
              secs(st, STORE + "commit_seconds", {}, 0.5) + " / " + secs(st, STORE + "commit_seconds", {}, 0.99),
              fmt(v("commit_failures_total")),
              fmt(hits), fmt(loads), pct(hits + loads > 0 ? hits / (hits + loads) : null),
              fmt(v("cached_objects")), fmt(v("objects")), fmtBytes(v("lmdb_used_bytes")),
              fmtBytes(v("disk_bytes"))];
    });
    replace("store-commit-list", table(["store", "commits", "per second", "units per commit p50 / p99",
                                    "units per commit (all)", "commit + fsync p50 / p99", "failed",
                                    "cache hits", "loads", "hit ratio", "in memory", "objects",
                                    "LMDB used", "disk"], rows));
  }

  function renderStoreCharts() {
    const stores = D.upOf("store");
    if (!stores.length) return;
    /* The kinds seen, busiest first (at most ten lines). */
    const totals = new Map();
    for (const st of stores)
      for (const s of series(latest(st).snap, STORE + "requests_total"))
        if (s.value) totals.set(s.labels.kind, (totals.get(s.labels.kind) || 0) + s.value);
    const kinds = Array.from(totals.keys()).sort((a, b) => totals.get(b) - totals.get(a)).slice(0, 10);
    D.drawChart("chart-store-requests", "legend-store-requests", kinds.map(k => ({
      label: k, points: D.sumLines(stores.map(st => D.rateLine(st, STORE + "requests_total", {kind: k})))
    })), fmt);
    const lines = key => {
      const out = [];
      for (const st of stores) for (const q of ["p50", "p99"])
        out.push({label: (stores.length > 1 ? st.name + " " : "") + q, points: D.quantileLine(st, key, q)});
      return out;
    };
    D.drawChart("chart-store-latency", "legend-store-latency", lines("request"), fmtSeconds);
    D.drawChart("chart-store-commit", "legend-store-commit", lines("commit"), fmtSeconds);
  }

  D.extraCards.push(poolCards, storeCards);
  D.extraRenderers.push(renderPoolWorkers, renderPoolLatency, renderPoolCharts,
                        renderStoreKinds, renderStoreCommits, renderStoreCharts);
})();
