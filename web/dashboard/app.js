/* Bettong's live dashboard. Plain JS, no library: it polls /metrics (the
 * Prometheus text format) of this endpoint and of the workers named in the
 * URL (?workers=H:P,H:P) every second, keeps the last minutes of samples in
 * memory, and redraws. Each endpoint says which kind of service it is in
 * bettong_service_info{service="stream"|"pool"|"store"}; /topology.json gives
 * a stream application's shape. This file draws the common and the stream
 * panels; services.js the pool's and the store's, through window.BettongDashboard.
 * Every text from the server goes into the page as text, never as HTML. */
"use strict";

(function () {
  const POLL_MS = 1000;
  const WINDOW_S = 300;      /* the history kept, and the charts' width */
  const RATE_S = 5;          /* rates: over the last few seconds */
  const LATENCY_S = 30;      /* latency quantiles: histogram deltas over this */
  const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
                  "#e377c2", "#17becf", "#7f7f7f", "#bcbd22"];

  /* ---------------------------------------------------------------- DOM */

  function el(tag, attrs, children) {
    const e = document.createElement(tag);
    for (const k in attrs || {}) {
      if (k === "text") e.textContent = attrs[k];
      else e.setAttribute(k, attrs[k]);
    }
    for (const c of children || [])
      e.appendChild(typeof c === "string" || typeof c === "number" ? document.createTextNode(String(c)) : c);
    return e;
  }

  function replace(id, node) {
    const box = document.getElementById(id);
    box.textContent = "";
    if (node) box.appendChild(node);
  }

  function table(head, rows) {
    return el("table", {}, [
      el("thead", {}, [el("tr", {}, head.map(h => el("th", {text: h})))]),
      el("tbody", {}, rows.map(r => el("tr", {}, r.map(c =>
        c instanceof Node ? el("td", {}, [c]) : el("td", {text: c === undefined ? "" : c})))))
    ]);
  }

  function fmt(v) {
    if (v === null || v === undefined || Number.isNaN(v)) return "–";
    const a = Math.abs(v);
    if (a >= 1e9) return (v / 1e9).toFixed(2) + "G";
    if (a >= 1e6) return (v / 1e6).toFixed(2) + "M";
    if (a >= 1e4) return (v / 1e3).toFixed(1) + "k";
    if (Number.isInteger(v)) return String(v);
    return a >= 100 ? v.toFixed(0) : a >= 1 ? v.toFixed(1) : v.toPrecision(2);
  }

  function fmtSeconds(s) {
    if (s === null || s === undefined || Number.isNaN(s)) return "–";
    if (s === Infinity) return "> max";
    if (s < 1e-6) return (s * 1e9).toFixed(0) + " ns";
    if (s < 1e-3) return (s * 1e6).toFixed(0) + " µs";
    if (s < 1) return (s * 1e3).toFixed(1) + " ms";
    return s.toFixed(2) + " s";
  }

  function fmtBytes(b) {
    if (b === null || b === undefined) return "–";
    if (b >= 1 << 20) return (b / (1 << 20)).toFixed(1) + " MiB";
    if (b >= 1 << 10) return (b / (1 << 10)).toFixed(1) + " KiB";
    return Math.round(b) + " B";
  }

  /* ---------------------------------------------------- the text format */

  function unescapeLabel(s) {
    return s.replace(/\\(.)/g, (m, c) => c === "n" ? "\n" : c);
  }

  /* {families: {name: {type, help}}, samples: [{name, labels, value}]} */
  function parseMetrics(text) {
    const families = {}, samples = [];
    for (const line of text.split("\n")) {
      if (line.startsWith("# TYPE ")) {
        const [, , name, type] = line.split(" ");
        (families[name] = families[name] || {}).type = type;
        continue;
      }
      if (line.startsWith("# HELP ")) {
        const rest = line.slice(7), sp = rest.indexOf(" ");
        (families[rest.slice(0, sp)] = families[rest.slice(0, sp)] || {}).help = rest.slice(sp + 1);
        continue;
      }
      if (!line || line[0] === "#") continue;
      const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
      if (!m) continue;
      const labels = {};
      const re = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;
      let l;
      while ((l = re.exec(m[2] || "")) !== null) labels[l[1]] = unescapeLabel(l[2]);
      samples.push({name: m[1], labels: labels, value: parseFloat(m[3])});
    }
    return {families: families, samples: samples};
  }

  function matches(s, name, want) {
    if (s.name !== name) return false;
    for (const k in want || {}) if (s.labels[k] !== want[k]) return false;
    return true;
  }

  function sum(snap, name, want) {
    let t = 0, found = false;
    for (const s of snap.samples) if (matches(s, name, want)) { t += s.value; found = true; }
    return found ? t : null;
  }

  function series(snap, name, want) {
    return snap.samples.filter(s => matches(s, name, want));
  }

  /* The distinct values of a label among a family's series. */
  function labelValues(snap, name, label) {
    const seen = [];
    for (const s of snap.samples)
      if (s.name === name && s.labels[label] !== undefined && !seen.includes(s.labels[label]))
        seen.push(s.labels[label]);
    return seen;
  }

  /* ------------------------------------------------------------ workers */

  function ownAddress() { return location.host; }

  function workerAddresses() {
    const list = [ownAddress()];
    for (const a of (new URLSearchParams(location.search).get("workers") || "").split(","))
      if (a.trim() && !list.includes(a.trim())) list.push(a.trim());
    return list;
  }

  /* "H:P", or a URL ("https://H:P") as given. */
  function newWorker(addr) {
    return {
      addr: addr, base: addr === ownAddress() ? "" : /^https?:\/\//.test(addr) ? addr.replace(/\/+$/, "") : "http://" + addr,
      name: addr, up: false, error: "not polled yet", history: [], topology: null, slots: null
    };
  }
  const workers = workerAddresses().map(newWorker);

  /* A cluster worker's topology lists the members it knows with their
   * metrics addresses: the page polls every one of them without being told
   * (a worker that joins later is found at the next refresh). */
  const MEMBERS_EVERY = 5; /* polls between two reads of the own topology */
  function addMembers(topo) {
    for (const m of (topo && topo.members) || []) {
      if (!m.metrics || m.state === "left" || m.state === "LOST") continue;
      if (workers.some(w => w.addr === m.metrics || (w.name === m.name && w.up))) continue;
      workers.push(newWorker(m.metrics));
    }
  }

  async function refreshMembers() {
    const own = workers[0];
    if (own.service !== "stream" || !own.topology || !own.topology.cluster) return;
    try {
      const topo = JSON.parse(await fetchText("/topology.json"));
      own.topology = topo;
      addMembers(topo);
    } catch (e) { /* the next poll shows the worker's state */ }
  }
  const rebalances = [];

  function latest(w) { return w.history.length ? w.history[w.history.length - 1] : null; }

  /* The sample at or before `ago` seconds before the latest one. */
  function before(w, ago) {
    const h = w.history, last = h[h.length - 1];
    for (let i = h.length - 2; i >= 0; i--)
      if (last.t - h[i].t >= ago * 1000) return h[i];
    return h.length > 1 ? h[0] : null;
  }

  function rate(w, name, want, over) {
    const now = latest(w), then = now && before(w, over || RATE_S);
    if (!then) return null;
    const a = sum(now.snap, name, want), b = sum(then.snap, name, want);
    if (a === null || b === null || now.t === then.t) return null;
    return Math.max(0, a - b) / ((now.t - then.t) / 1000);
  }

  /* A histogram's q-quantile over the samples of the last `over` seconds:
   * the upper bound of the bucket where it falls (Wallaroo's bins are powers
   * of two, so this is within a factor of two). */
  function quantile(w, name, want, q, over) {
    const now = latest(w), then = now && before(w, over);
    if (!now) return null;
    const cum = snap => {
      const by = new Map();
      for (const s of series(snap, name + "_bucket", want)) {
        const le = s.labels.le === "+Inf" ? Infinity : parseFloat(s.labels.le);
        by.set(le, (by.get(le) || 0) + s.value);
      }
      return by;
    };
    const a = cum(now.snap), b = then ? cum(then.snap) : new Map();
    const les = Array.from(a.keys()).sort((x, y) => x - y);
    const total = (a.get(Infinity) || 0) - (b.get(Infinity) || 0);
    if (total <= 0) return null;
    for (const le of les)
      if ((a.get(le) || 0) - (b.get(le) || 0) >= q * total) return le;
    return Infinity;
  }

  /* Histograms whose p50 and p99 are kept with each poll's sample (for the
   * charts): [key, family]; services.js adds its own. */
  const tracked = [["e2e", "bettong_end_to_end_latency_seconds"]];

  /* The kind of service of a snapshot's endpoint, as it names itself; null
   * for an endpoint that does not (an older one, another program). */
  function serviceOf(snap) {
    const info = series(snap, "bettong_service_info")[0];
    return info ? info.labels.service : null;
  }

  /* A worker that does not answer must not hold up the others' polls. */
  const FETCH_TIMEOUT_MS = 2000;

  async function fetchText(url) {
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), FETCH_TIMEOUT_MS);
    try {
      const r = await fetch(url, {cache: "no-store", signal: ctl.signal});
      if (!r.ok) throw new Error(url + ": HTTP " + r.status);
      return await r.text();
    } catch (e) {
      throw e.name === "AbortError" ? new Error(url + ": no answer in " + FETCH_TIMEOUT_MS / 1000 + " s") : e;
    } finally {
      clearTimeout(timer);
    }
  }

  async function poll(w) {
    try {
      const snap = parseMetrics(await fetchText(w.base + "/metrics"));
      const named = serviceOf(snap);
      if (!w.topology && (named === "stream" || named === null)) {
        /* An endpoint that does not name itself is a stream worker if it has
         * a topology; without one (404) it is shown as "other". */
        try {
          w.topology = JSON.parse(await fetchText(w.base + "/topology.json"));
          if (w === workers[0]) addMembers(w.topology);
        }
        catch (e) { if (/HTTP 404/.test(String(e.message))) w.topology = {service: "other"}; }
      }
      w.service = named || (w.topology && w.topology.service === "stream" ? "stream" : "other");
      const t = Date.now();
      w.history.push({t: t, snap: snap});
      /* The quantiles of this moment (over the last 10 s), kept for the charts. */
      const lat = w.history[w.history.length - 1].lat = {};
      for (const [key, family] of tracked) {
        if (!snap.families[family]) continue;
        const p99 = quantile(w, family, {}, 0.99, 10);
        lat[key] = {p50: quantile(w, family, {}, 0.5, 10), p99: p99 === Infinity ? null : p99};
      }
      while (w.history.length && t - w.history[0].t > WINDOW_S * 1000) w.history.shift();
      const info = series(snap, "bettong_worker_info")[0];
      if (info) w.name = info.labels.worker;
      else if (w.topology && w.topology.worker) w.name = w.topology.worker;
      const slots = sum(snap, "bettong_slots");
      if (slots !== null && w.slots !== null && slots !== w.slots)
        rebalances.unshift({t: t, worker: w.name, from: w.slots, to: slots});
      if (rebalances.length > 50) rebalances.length = 50;
      w.slots = slots;
      w.up = true;
      w.error = "";
    } catch (e) {
      w.up = false;
      w.error = String(e.message || e);
    }
  }

  /* -------------------------------------------------------------- charts */

  /* lines: [{label, points: [[t ms, value]]}] over the last WINDOW_S. */
  function drawChart(id, legendId, lines, format) {
    const c = document.getElementById(id), g = c.getContext("2d");
    const W = c.width, H = c.height, L = 56, B = 18, now = Date.now();
    g.clearRect(0, 0, W, H);
    let max = 0;
    for (const l of lines) for (const p of l.points) if (isFinite(p[1])) max = Math.max(max, p[1]);
    max = max > 0 ? max * 1.1 : 1;
    g.strokeStyle = "#ccc"; g.fillStyle = "#555"; g.font = "11px sans-serif"; g.lineWidth = 1;
    for (let i = 0; i <= 4; i++) {
      const y = 4 + (H - B - 4) * i / 4;
      g.beginPath(); g.moveTo(L, y); g.lineTo(W, y); g.stroke();
      g.fillText(format(max * (4 - i) / 4), 2, y + 4);
    }
    for (let m = 0; m <= WINDOW_S / 60; m++) {
      const x = W - (W - L) * m * 60 / WINDOW_S;
      g.fillText(m ? "-" + m + "m" : "now", Math.min(x, W - 24), H - 4);
    }
    lines.forEach((l, i) => {
      g.strokeStyle = COLORS[i % COLORS.length]; g.lineWidth = 1.5; g.beginPath();
      let started = false;
      for (const [t, v] of l.points) {
        if (!isFinite(v)) { started = false; continue; }
        const x = W - (W - L) * (now - t) / (WINDOW_S * 1000);
        const y = 4 + (H - B - 4) * (1 - v / max);
        if (x < L) continue;
        started ? g.lineTo(x, y) : g.moveTo(x, y);
        started = true;
      }
      g.stroke();
    });
    replace(legendId, el("span", {}, lines.map((l, i) =>
      el("span", {class: "key", style: "color:" + COLORS[i % COLORS.length]}, ["■ " + l.label + " "]))));
  }

  /* Per consecutive pair of samples: the rate of a counter, or f(w, i). */
  function rateLine(w, name, want) {
    const pts = [];
    for (let i = 1; i < w.history.length; i++) {
      const a = sum(w.history[i].snap, name, want), b = sum(w.history[i - 1].snap, name, want);
      if (a === null || b === null) continue;
      pts.push([w.history[i].t, Math.max(0, a - b) / ((w.history[i].t - w.history[i - 1].t) / 1000)]);
    }
    return pts;
  }

  /* A tracked histogram's quantile q ("p50", "p99") at each sample. */
  function quantileLine(w, key, q) {
    return w.history.map(h => [h.t, h.lat && h.lat[key] && h.lat[key][q] !== null
                                      ? h.lat[key][q] : NaN]);
  }

  /* The same rate summed over every worker, aligned on the latest worker's
   * clock by rounding to the second. */
  function sumLines(lines) {
    const by = new Map();
    for (const l of lines) for (const [t, v] of l) {
      const k = Math.round(t / 1000) * 1000;
      by.set(k, (by.get(k) || 0) + v);
    }
    return Array.from(by.entries()).sort((a, b) => a[0] - b[0]);
  }

  /* ------------------------------------------------------------- panels */

  function upWorkers() { return workers.filter(w => w.up && latest(w)); }

  function totalOf(name, want) {
    let t = null;
    for (const w of upWorkers()) {
      const v = sum(latest(w).snap, name, want);
      if (v !== null) t = (t || 0) + v;
    }
    return t;
  }

  function rateOf(name, want) {
    let t = null;
    for (const w of upWorkers()) {
      const v = rate(w, name, want);
      if (v !== null) t = (t || 0) + v;
    }
    return t;
  }

  function card(id, label, value, text) {
    return el("div", {class: "card", id: id, "data-value": value === null ? "" : String(value)},
              [el("div", {class: "value", text: text !== undefined ? text : fmt(value)}),
               el("div", {class: "label", text: label})]);
  }

  /* The endpoints answering of one kind of service. */
  function upOf(service) { return upWorkers().filter(w => w.service === service); }

  /* Stream panels when a polled worker runs a stream application. */
  function hasStream() { return upOf("stream").length > 0; }

  function renderSummary() {
    const cards = [card("workers-up", upWorkers().every(w => w.service === "stream")
                          ? "workers answering" : "endpoints answering", upWorkers().length,
                        upWorkers().length + " / " + workers.length)];
    if (hasStream()) {
      cards.push(card("total-in", "messages in (sources)", totalOf("bettong_source_messages_total")),
                 card("rate-in", "in per second", rateOf("bettong_source_messages_total")),
                 card("total-out", "messages out (sinks)", totalOf("bettong_sink_messages_total")),
                 card("rate-out", "out per second", rateOf("bettong_sink_messages_total")),
                 card("total-failed", "failed messages", totalOf("bettong_messages_failed_total")));
    }
    for (const f of extraCards) cards.push(...f());
    replace("summary", el("div", {class: "cards"}, cards));
  }

  /* Every polled endpoint; the stream's columns when a worker runs one. */
  function renderWorkers() {
    const stream = hasStream();
    document.getElementById("workers-title").textContent =
      upWorkers().every(w => w.service === "stream") ? "Workers" : "Endpoints";
    const rows = workers.map(w => {
      const s = latest(w) ? latest(w).snap : null;
      const v = (name) => s && w.up ? sum(s, name) : null;
      const row = [w.name, w.addr, w.service || "", w.up ? "up" : "down: " + w.error];
      if (stream && w.service === "stream")
        row.push(fmt(w.up ? rate(w, "bettong_source_messages_total") : null),
                 fmt(w.up ? rate(w, "bettong_sink_messages_total") : null),
                 fmt(w.up ? rate(w, "bettong_forwarded_messages_total") : null),
                 fmt(v("bettong_slots")), fmt(v("bettong_state_keys")),
                 v("bettong_source_paused") ? "paused" : "",
                 fmt(v("bettong_messages_failed_total")));
      else if (stream)
        row.push("", "", "", "", "", "", "");
      return row;
    });
    replace("workers", table([stream ? "worker" : "endpoint", "metrics address", "service", "state"].concat(
      stream ? ["in/s", "out/s", "forwarded/s", "slots", "keys", "sources", "failed"] : []), rows));
    /* Peers this page does not poll: a worker without a metrics endpoint, or
     * one the members list does not give yet. */
    const names = workers.map(w => w.name), unseen = [];
    for (const w of upWorkers())
      for (const p of labelValues(latest(w).snap, "bettong_link_backlog_bytes", "peer"))
        if (!names.includes(p) && !unseen.includes(p)) unseen.push(p);
    document.getElementById("workers-hint").textContent = unseen.length
      ? "Peers not shown (no metrics address known; add it to ?workers=): " + unseen.join(", ") : "";
  }

  function topology() {
    for (const w of workers) if (w.topology && w.topology.pipelines) return w.topology;
    return null;
  }

  function renderTopology() {
    const topo = topology();
    if (!topo) { replace("topology", null); return; }
    document.getElementById("app-name").textContent = "— " + topo.application;
    const node = (cls, title, sub, total, r) => el("div", {class: "node " + cls}, [
      el("div", {class: "title", text: title}), el("div", {class: "sub", text: sub}),
      el("div", {class: "num", text: fmt(r) + "/s"}), el("div", {class: "sub", text: fmt(total) + " in all"})]);
    const arrow = () => el("div", {class: "arrow", text: "→"});
    const pipes = topo.pipelines.map(p => {
      const want = {pipeline: p.name};
      const parts = [node("source", "source", p.source.kind === "tcp" ? p.source.addr : p.source.kind,
                          totalOf("bettong_source_messages_total", want),
                          rateOf("bettong_source_messages_total", want))];
      for (const s of p.steps) {
        const ws = {pipeline: p.name, step: String(s.index)};
        parts.push(arrow(), node("step", s.name || s.kind, s.kind,
                                 totalOf("bettong_step_messages_in_total", ws),
                                 rateOf("bettong_step_messages_in_total", ws)));
      }
      for (const k of p.sinks) {
        const ws = {pipeline: p.name, sink: k};
        parts.push(arrow(), node("sink", "sink", k, totalOf("bettong_sink_messages_total", ws),
                                 rateOf("bettong_sink_messages_total", ws)));
      }
      return el("div", {class: "pipeline"}, [el("h3", {text: p.name}), el("div", {class: "flow"}, parts)]);
    });
    replace("topology", el("div", {}, pipes));
  }

  function renderSteps() {
    const topo = topology(), rows = [];
    if (!topo) { replace("steps", null); return; }
    for (const p of topo.pipelines) for (const s of p.steps) for (const w of upWorkers()) {
      const want = {pipeline: p.name, step: String(s.index)};
      rows.push([p.name, s.index + ": " + (s.name || s.kind), w.name,
                 fmt(rate(w, "bettong_step_messages_in_total", want)),
                 fmt(rate(w, "bettong_step_messages_out_total", want)),
                 fmt(sum(latest(w).snap, "bettong_step_messages_in_total", want)),
                 fmtSeconds(quantile(w, "bettong_step_latency_seconds", want, 0.5, LATENCY_S)),
                 fmtSeconds(quantile(w, "bettong_step_latency_seconds", want, 0.99, LATENCY_S))]);
    }
    replace("steps", table(["pipeline", "step", "worker", "in/s", "out/s", "in (all)",
                            "p50 latency", "p99 latency"], rows));
  }

  function renderSlots() {
    const total = (topology() || {}).slots || 4096;
    const bars = upWorkers().filter(w => w.slots !== null).map((w, i) => {
      const share = w.slots / total;
      return el("div", {class: "slotrow"}, [
        el("span", {class: "who", text: w.name}),
        el("span", {class: "bar"}, [el("span", {class: "fill",
          style: "width:" + (100 * share).toFixed(1) + "%;background:" + COLORS[i % COLORS.length]})]),
        el("span", {class: "what", text: w.slots + " slots, " + fmt(sum(latest(w).snap, "bettong_state_keys")) + " keys"})]);
    });
    replace("slots", el("div", {}, bars));
    const log = document.getElementById("rebalances");
    log.textContent = "";
    for (const r of rebalances)
      log.appendChild(el("li", {text: new Date(r.t).toLocaleTimeString() + ": " + r.worker +
                                      " " + r.from + " → " + r.to + " slots"}));
  }

  function renderBacklogs() {
    const rows = [];
    for (const w of upWorkers()) {
      const snap = latest(w).snap;
      for (const s of series(snap, "bettong_sink_backlog_bytes"))
        rows.push([w.name, "sink " + s.labels.sink, fmtBytes(s.value)]);
      for (const s of series(snap, "bettong_link_backlog_bytes"))
        rows.push([w.name, "link to " + s.labels.peer, fmtBytes(s.value)]);
      for (const s of series(snap, "bettong_source_paused"))
        if (s.value) rows.push([w.name, "source of " + s.labels.pipeline, "paused"]);
    }
    replace("backlogs", table(["worker", "to", "waiting"], rows));
  }

  function renderErrors() {
    const rows = [];
    const kinds = [["bettong_user_errors_total", s => "user code: " + s.labels.where],
                   ["bettong_source_decode_errors_total", s => "decoder of " + s.labels.pipeline],
                   ["bettong_forward_dropped_messages_total", s => "dropped for peer " + s.labels.peer],
                   ["bettong_messages_failed_total", () => "failed messages"],
                   ["bettong_pool_calls_done_total", s => /^(ok|cancelled)$/.test(s.labels.outcome)
                     ? null : "pool calls " + s.labels.outcome],
                   ["bettong_store_bad_requests_total", () => "store requests refused"],
                   ["bettong_store_commit_failures_total", () => "store commits failed"]];
    for (const w of upWorkers())
      for (const [name, what] of kinds)
        for (const s of series(latest(w).snap, name))
          if (s.value > 0 && what(s)) rows.push([w.name, what(s), fmt(s.value),
                                      fmt(rate(w, name, s.labels, 60)) + "/s"]);
    replace("errors", rows.length ? table(["worker", "what", "count", "last minute"], rows)
                                  : el("p", {class: "ok", text: "none"}));
  }

  /* Families the panels do not show (the checkpoints', another program's):
   * counters as totals and rates, gauges as values, histograms as counts and
   * quantiles. A pool's and a store's are all in their panels (services.js). */
  const SHOWN = /^bettong_(service_info|worker_info|source_|step_|sink_|end_to_end|messages_failed|user_errors|slots$|state_keys|forward|link_backlog|pool_|store_)/;

  function renderOther() {
    const rows = [];
    for (const w of upWorkers()) {
      const snap = latest(w).snap;
      for (const name of Object.keys(snap.families).sort()) {
        if (SHOWN.test(name)) continue;
        const type = snap.families[name].type;
        if (type === "histogram") {
          rows.push([w.name, name, "", fmt(sum(snap, name + "_count")),
                     fmt(rate(w, name + "_count")) + "/s",
                     fmtSeconds(quantile(w, name, {}, 0.5, LATENCY_S)) + " / " +
                     fmtSeconds(quantile(w, name, {}, 0.99, LATENCY_S))]);
          continue;
        }
        for (const s of series(snap, name)) {
          const labels = Object.keys(s.labels).map(k => k + "=" + s.labels[k]).join(", ");
          rows.push([w.name, name, labels, fmt(s.value),
                     type === "counter" ? fmt(rate(w, name, s.labels)) + "/s" : "", ""]);
        }
      }
    }
    replace("other", rows.length ? table(["worker", "metric", "labels", "value", "rate",
                                          "p50 / p99"], rows)
                                 : el("p", {class: "hint", text: "none beyond the panels above"}));
  }

  function renderCharts() {
    document.getElementById("window-minutes").textContent = String(WINDOW_S / 60);
    const up = upWorkers().filter(w => w.service === "stream" || w.service === "other");
    const stream = hasStream();
    const counter = stream ? "bettong_sink_messages_total" : null;
    const tput = [];
    if (counter) {
      for (const w of up) tput.push({label: w.name + " out", points: rateLine(w, counter)});
    } else {
      /* Not a stream: each counter family's rate (not bytes), over every
       * worker, the first ten. */
      const names = [];
      for (const w of up)
        for (const n of Object.keys(latest(w).snap.families))
          if (latest(w).snap.families[n].type === "counter" && !/bytes/.test(n) && !names.includes(n))
            names.push(n);
      for (const n of names.sort().slice(0, 10))
        tput.push({label: n.replace(/^bettong_/, ""), points: sumLines(up.map(w => rateLine(w, n)))});
    }
    drawChart("chart-throughput", "legend-throughput", tput, fmt);
    if (!stream) return;
    const lat = [];
    for (const w of upOf("stream"))
      for (const q of ["p50", "p99"])
        lat.push({label: w.name + " " + q, points: quantileLine(w, "e2e", q)});
    drawChart("chart-latency", "legend-latency", lat, fmtSeconds);
    const topo = topology(), steps = [];
    if (topo) for (const p of topo.pipelines) for (const s of p.steps) {
      const want = {pipeline: p.name, step: String(s.index)};
      steps.push({label: s.index + ": " + (s.name || s.kind),
                  points: sumLines(up.map(w => rateLine(w, "bettong_step_messages_in_total", want)))});
    }
    drawChart("chart-steps", "legend-steps", steps, fmt);
  }

  /* What services.js adds: summary cards (functions returning cards) and
   * renderers of its panels. */
  const extraCards = [], extraRenderers = [];

  function render() {
    document.body.classList.toggle("no-stream", !hasStream());
    document.body.classList.toggle("has-pool", upOf("pool").length > 0);
    document.body.classList.toggle("has-store", upOf("store").length > 0);
    /* The generic throughput chart: for stream workers and unknown endpoints. */
    document.body.classList.toggle("no-generic", !upWorkers().some(
      w => w.service === "stream" || w.service === "other"));
    const up = upWorkers().length;
    const status = document.getElementById("status");
    const what = upWorkers().every(w => w.service === "stream") ? " worker(s)" : " endpoint(s)";
    status.textContent = up + " of " + workers.length + what + " answering; updated " +
      new Date().toLocaleTimeString();
    status.className = up === workers.length ? "ok" : "bad";
    for (const f of [renderSummary, renderWorkers, renderTopology, renderCharts, renderSteps,
                     renderSlots, renderBacklogs, renderErrors, renderOther].concat(extraRenderers)) {
      try { f(); } catch (e) { console.error(f.name, e); }
    }
    document.body.setAttribute("data-polls", String(++polls));
  }

  let polls = 0;
  async function tick() {
    if (polls % MEMBERS_EVERY === 0) await refreshMembers();
    await Promise.all(workers.map(poll));
    render();
    setTimeout(tick, POLL_MS);
  }

  /* For services.js (loaded after this file, before the first poll). */
  window.BettongDashboard = {
    el: el, replace: replace, table: table, fmt: fmt, fmtSeconds: fmtSeconds,
    fmtBytes: fmtBytes, sum: sum, series: series, labelValues: labelValues, latest: latest,
    rate: rate, quantile: quantile, rateLine: rateLine, sumLines: sumLines,
    quantileLine: quantileLine, drawChart: drawChart, card: card, upOf: upOf,
    tracked: tracked, extraCards: extraCards, extraRenderers: extraRenderers,
    LATENCY_S: LATENCY_S, COLORS: COLORS
  };
  document.addEventListener("DOMContentLoaded", tick);
})();
