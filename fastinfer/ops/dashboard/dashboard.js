// fastinfer dashboard: polls GET /admin/stats every second, keeps the last minutes of
// snapshots in memory, draws them, and offers the admin API's actions. No framework, no
// build step. The admin key comes from the URL fragment (#token=...) or the form and is
// kept in this tab's sessionStorage only. Every value from the server is set as text,
// never as markup.
"use strict";

(() => {
  const POLL_MS = 1000;
  const HISTORY_S = 300;          // the charts' span
  const WINDOW_S = 5;             // each chart point: rates and quantiles over this many seconds
  const TILE_WINDOW_S = 10;       // the tiles: a steadier window
  const TOKEN_KEY = "fastinfer.adminKey";
  const THEME_KEY = "fastinfer.theme";
  const STALE_AFTER_MS = 5000;
  const RESTART_SHOWN_S = 60;     // a worker slot restarted this recently is marked
  const COLORS = ["#1f77d0", "#e8890c", "#13a36e", "#c4489d", "#5ab4e6", "#d9480f", "#8a63d2", "#7f8c8d"];
  const SVG_NS = "http://www.w3.org/2000/svg";

  const $ = (selector, root = document) => root.querySelector(selector);
  const $$ = (selector, root = document) => Array.from(root.querySelectorAll(selector));

  const app = {
    token: null,
    snapshots: [],          // {t, byName: {name: {total, errors, hist: {...}, tokens}}}
    layoutKey: "",          // deployment and replica names the cards were built for
    colors: new Map(),      // deployment name -> colour, stable while the page lives
    timer: null,
    lastOk: 0,
    latest: null,
    restarts: new Map(),    // worker slot -> {count: its restarts, at: when this tab saw them go up}
  };

  // ------------------------------------------------------------------ formatting

  const intFormat = new Intl.NumberFormat("en-US");
  const fmtInt = (n) => (n == null ? "–" : intFormat.format(Math.round(n)));
  function fmtRate(x) {
    if (x == null || !isFinite(x)) return "–";
    if (x >= 100) return intFormat.format(Math.round(x));
    if (x >= 10) return x.toFixed(1);
    return x.toFixed(2);
  }
  function fmtPct(x) {
    if (x == null || !isFinite(x)) return "–";
    return (x >= 10 ? x.toFixed(0) : x.toFixed(1)) + "%";
  }
  function fmtSeconds(s) {
    if (s == null || !isFinite(s)) return "–";
    if (s < 0.001) return (s * 1000).toFixed(2) + " ms";
    if (s < 1) return (s * 1000).toFixed(s < 0.01 ? 1 : 0) + " ms";
    if (s < 60) return s.toFixed(s < 10 ? 2 : 1) + " s";
    return (s / 60).toFixed(1) + " min";
  }
  function fmtUsd(x) {
    if (x == null) return "–";
    return "$" + (x >= 100 ? x.toFixed(2) : x >= 1 ? x.toFixed(3) : x.toFixed(4));
  }
  function fmtCompact(n) {
    if (n == null) return "–";
    if (n >= 1e9) return (n / 1e9).toFixed(2) + "G";
    if (n >= 1e6) return (n / 1e6).toFixed(2) + "M";
    if (n >= 1e4) return (n / 1e3).toFixed(1) + "k";
    return fmtInt(n);
  }
  const pair = (a, b) => a + " · " + b;
  // two durations, the unit said once when they share it: "39 · 237 ms"
  function secondsPair(a, b) {
    if (a == null && b == null) return "–";
    const [x, y] = [fmtSeconds(a), fmtSeconds(b)];
    const unit = (text) => text.split(" ")[1];
    return unit(x) && unit(x) === unit(y) ? `${x.split(" ")[0]} · ${y}` : pair(x, y);
  }
  const axisNumber = (v) => String(+v.toPrecision(3));
  const axisSeconds = (v) => (v === 0 ? "0" : fmtSeconds(v));

  // ------------------------------------------------------------------ DOM helpers

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs)) {
      if (value == null) continue;
      if (name === "text") node.textContent = value;
      else if (name === "class") node.className = value;
      else node.setAttribute(name, value);
    }
    for (const child of children) if (child != null) node.append(child);
    return node;
  }
  function svg(tag, attrs = {}) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
    return node;
  }
  function setText(node, text) {
    if (node && node.textContent !== text) node.textContent = text;
  }
  function setBar(bar, used, capacity) {
    const share = capacity > 0 ? Math.min(1, used / capacity) : 0;
    bar.firstElementChild.style.width = (share * 100).toFixed(1) + "%";
    bar.dataset.level = share >= 0.9 ? "bad" : share >= 0.7 ? "warn" : "ok";
  }

  let toastTimer = null;
  function toast(message, kind = "info") {
    const node = $("#toast");
    node.textContent = message;
    node.dataset.kind = kind;
    node.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { node.hidden = true; }, kind === "error" ? 7000 : 3500);
  }

  // ------------------------------------------------------------------ theme

  function applyTheme(theme) {
    document.documentElement.dataset.theme = theme;
    setText($("#theme"), theme === "dark" ? "Light" : "Dark");
  }
  function initTheme() {
    const media = window.matchMedia("(prefers-color-scheme: dark)");
    const chosen = localStorage.getItem(THEME_KEY);
    applyTheme(chosen || (media.matches ? "dark" : "light"));
    media.addEventListener("change", (e) => {
      if (!localStorage.getItem(THEME_KEY)) applyTheme(e.matches ? "dark" : "light");
    });
    $("#theme").addEventListener("click", () => {
      const next = document.documentElement.dataset.theme === "dark" ? "light" : "dark";
      localStorage.setItem(THEME_KEY, next);
      applyTheme(next);
      if (app.latest) drawCharts();
    });
  }

  // ------------------------------------------------------------------ the admin key

  function takeTokenFromFragment() {
    const match = /(?:^#|&)token=([^&]*)/.exec(location.hash);
    if (match) {
      const token = decodeURIComponent(match[1]);
      if (token) sessionStorage.setItem(TOKEN_KEY, token);
      // the key must not stay in the address bar, the history or a screenshot
      history.replaceState(null, "", location.pathname + location.search);
    }
    return sessionStorage.getItem(TOKEN_KEY);
  }

  function showLogin(message) {
    stopPolling();
    $("#board").hidden = true;
    $("#login").hidden = false;
    const error = $("#login-error");
    error.hidden = !message;
    error.textContent = message || "";
    setStatus("idle", "signed out");
    $("#token").focus();
  }

  function showBoard() {
    $("#login").hidden = true;
    $("#board").hidden = false;
  }

  function forgetToken(message) {
    sessionStorage.removeItem(TOKEN_KEY);
    app.token = null;
    showLogin(message);
  }

  // ------------------------------------------------------------------ the admin API

  class ApiError extends Error {
    constructor(status, message, retryAfter) {
      super(message);
      this.status = status;
      this.retryAfter = retryAfter;
    }
  }

  async function api(method, path, body) {
    const headers = { Authorization: "Bearer " + app.token };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(path, {
      method, headers, cache: "no-store", credentials: "omit",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    let data = null;
    try { data = await response.json(); } catch (_) { data = null; }
    if (!response.ok) {
      const message = (data && data.error && data.error.message) || response.statusText || "request failed";
      throw new ApiError(response.status, message, response.headers.get("retry-after"));
    }
    return data;
  }

  function authProblem(error) {
    if (error.status === 401) {
      forgetToken("That admin key was refused.");
      return true;
    }
    if (error.status === 429) {
      showLogin(`Too many failed attempts from this address; try again in ${error.retryAfter || "a few"} s.`);
      return true;
    }
    if (error.status === 404 && /admin API is disabled/.test(error.message)) {
      showLogin(error.message);
      return true;
    }
    return false;
  }

  // ------------------------------------------------------------------ polling

  function setStatus(kind, text) {
    const pill = $("#live");
    pill.dataset.status = kind;
    setText(pill, text);
  }

  function stopPolling() {
    clearTimeout(app.timer);
    app.timer = null;
  }

  function schedule(delay = POLL_MS) {
    clearTimeout(app.timer);
    app.timer = setTimeout(poll, delay);
  }

  async function poll() {
    if (!app.token) return;
    try {
      const stats = await api("GET", "/admin/stats");
      app.lastOk = Date.now();
      showBoard();
      record(stats);
      render(stats);
      setStatus("live", "live");
    } catch (error) {
      if (error instanceof ApiError && authProblem(error)) return;
      const age = Date.now() - app.lastOk;
      setStatus(app.lastOk && age < STALE_AFTER_MS ? "stale" : "down",
                error instanceof ApiError ? `error ${error.status}` : "gateway unreachable");
    }
    schedule();
  }

  // ------------------------------------------------------------------ history

  function summarize(stats) {
    const byName = {};
    for (const d of stats.deployments) {
      let errors = 0;
      for (const [code, n] of Object.entries(d.requests.by_code)) if (code.startsWith("5")) errors += n;
      byName[d.name] = {
        total: d.requests.total,
        errors,
        tokensIn: d.tokens.input,
        tokensOut: d.tokens.output,
        hist: {
          latency: d.histograms.request_duration_seconds,
          ttft: d.histograms.ttft_seconds,
        },
      };
    }
    return { t: stats.ts, byName };
  }

  function record(stats) {
    const snap = summarize(stats);
    const last = app.snapshots[app.snapshots.length - 1];
    if (last) {
      // counters that went down: the gateway restarted; the old history means nothing now
      const restarted = Object.keys(snap.byName).some(
        (name) => last.byName[name] && snap.byName[name].total < last.byName[name].total);
      if (restarted || snap.t <= last.t) app.snapshots = [];
    }
    app.snapshots.push(snap);
    const oldest = snap.t - HISTORY_S - WINDOW_S - 2;
    while (app.snapshots.length && app.snapshots[0].t < oldest) app.snapshots.shift();
    app.latest = stats;
  }

  // the snapshot at least `seconds` older than snapshots[i] (or the oldest there is)
  function baseOf(i, seconds) {
    const t = app.snapshots[i].t - seconds;
    let j = i - 1;
    while (j > 0 && app.snapshots[j].t > t) j -= 1;
    return j >= 0 ? j : null;
  }

  // linear interpolation inside the bucket, as Prometheus' histogram_quantile does
  function quantile(q, bounds, now, before) {
    if (!now) return null;
    const counts = now.cumulative.map((c, k) => c - (before ? before.cumulative[k] : 0));
    const total = counts[counts.length - 1];
    if (!(total > 0)) return null;
    const rank = q * total;
    for (let k = 0; k < counts.length; k += 1) {
      if (counts[k] >= rank) {
        if (k >= bounds.length) return bounds[bounds.length - 1];   // +Inf: the highest bound is all we know
        const lower = k === 0 ? 0 : bounds[k - 1];
        const below = k === 0 ? 0 : counts[k - 1];
        const inBucket = counts[k] - below;
        return lower + (bounds[k] - lower) * (inBucket > 0 ? (rank - below) / inBucket : 1);
      }
    }
    return null;
  }

  // rates and quantiles between two summaries `a` (older) and `b`, `dt` seconds apart
  function between(a, b, dt) {
    if (!a || !b || !(dt > 0)) return null;
    const requests = b.total - a.total;
    const bounds = app.latest.buckets;
    return {
      rate: requests / dt,
      errorPct: requests > 0 ? (100 * (b.errors - a.errors)) / requests : null,
      errors: b.errors - a.errors,
      requests,
      tokensIn: (b.tokensIn - a.tokensIn) / dt,
      tokensOut: (b.tokensOut - a.tokensOut) / dt,
      p50: quantile(0.5, bounds, b.hist.latency, a.hist.latency),
      p99: quantile(0.99, bounds, b.hist.latency, a.hist.latency),
      ttft50: quantile(0.5, bounds, b.hist.ttft, a.hist.ttft),
      ttft99: quantile(0.99, bounds, b.hist.ttft, a.hist.ttft),
    };
  }

  // deployment `name` between snapshots j and i
  function windowStats(name, j, i) {
    const [older, newer] = [app.snapshots[j], app.snapshots[i]];
    return between(older.byName[name], newer.byName[name], newer.t - older.t);
  }

  // the whole host as one deployment: counters and histograms summed
  function hostOf(snapshot) {
    const out = { total: 0, errors: 0, tokensIn: 0, tokensOut: 0, hist: { latency: null, ttft: null } };
    for (const d of Object.values(snapshot.byName)) {
      out.total += d.total; out.errors += d.errors; out.tokensIn += d.tokensIn; out.tokensOut += d.tokensOut;
      for (const key of ["latency", "ttft"]) {
        const h = d.hist[key];
        if (!h) continue;
        if (!out.hist[key]) out.hist[key] = { cumulative: h.cumulative.slice() };
        else h.cumulative.forEach((c, k) => { out.hist[key].cumulative[k] += c; });
      }
    }
    return out;
  }

  function hostWindow(j, i) {
    const [older, newer] = [app.snapshots[j], app.snapshots[i]];
    return between(hostOf(older), hostOf(newer), newer.t - older.t);
  }

  // ------------------------------------------------------------------ rendering

  function colorOf(name) {
    if (!app.colors.has(name)) app.colors.set(name, COLORS[app.colors.size % COLORS.length]);
    return app.colors.get(name);
  }

  function render(stats) {
    const key = JSON.stringify(stats.deployments.map((d) => [d.name, d.replicas.map((r) => r.name)]));
    if (key !== app.layoutKey) {
      buildDeployments(stats);
      app.layoutKey = key;
    }
    const i = app.snapshots.length - 1;
    for (const d of stats.deployments) updateDeployment(d, i);
    renderTiles(stats, i);
    renderKeys(stats.keys || []);
    renderWorkers(stats.workers || [], stats.ts);
    renderUnrouted(stats.unrouted || {});
    drawCharts();
    setText($("#updated"), "updated " + new Date(stats.ts * 1000).toLocaleTimeString());
  }

  function renderTiles(stats, i) {
    const j = i > 0 ? baseOf(i, TILE_WINDOW_S) : null;
    const w = j == null ? null : hostWindow(j, i);
    const tile = (name) => $(`[data-tile="${name}"]`);
    const put = (name, value, sub, level) => {
      const node = tile(name);
      setText($(".value", node), value);
      setText($(".sub", node), sub || "");
      if (level) node.dataset.level = level; else delete node.dataset.level;
    };
    const span = w ? `last ${Math.round(app.snapshots[i].t - app.snapshots[j].t)} s` : "waiting for a second sample";
    put("rate", w ? fmtRate(w.rate) : "–", span);
    put("errors", w ? fmtPct(w.errorPct) : "–", w ? `${fmtInt(w.errors)} of ${fmtInt(w.requests)}` : "",
        w && w.errorPct >= 5 ? "bad" : w && w.errorPct >= 1 ? "warn" : null);
    put("latency", w ? secondsPair(w.p50, w.p99) : "–", span);
    put("ttft", w ? secondsPair(w.ttft50, w.ttft99) : "–", "streams only");
    let inFlight = 0, queued = 0, capacity = 0, cost = 0;
    for (const d of stats.deployments) {
      inFlight += d.in_flight; queued += d.queue_depth; capacity += d.max_concurrency;
      cost += d.cost_usd;
    }
    put("in_flight", pair(fmtInt(inFlight), fmtInt(queued)), `of ${fmtInt(capacity)} slots`);
    put("tokens", w ? pair(fmtCompact(w.tokensIn), fmtCompact(w.tokensOut)) : "–",
        `${fmtUsd(cost)} spent since start`);
  }

  function buildDeployments(stats) {
    const root = $("#deployments");
    root.replaceChildren();
    if (!stats.deployments.length) {
      root.append(el("p", { class: "none", text: "No deployments configured." }));
      return;
    }
    for (const d of stats.deployments) root.append(deploymentCard(d));
  }

  function metric(name, label, withBar = false) {
    return el("div", {},
      el("dt", { text: label }),
      el("dd", { "data-metric": name, text: "–" }),
      withBar ? el("div", { class: "bar", "data-bar": name }, el("span")) : null);
  }

  function deploymentCard(d) {
    const swatch = el("span", { class: "swatch" });
    swatch.style.background = colorOf(d.name);
    const rebuild = el("button", { type: "button", "data-action": "rebuild_sessions",
      title: "Re-read this deployment's credentials and rebuild its upstream connections in every worker",
      text: "Rebuild sessions" });
    const head = el("header", {},
      el("h3", {}, swatch, d.name),
      el("span", { class: "tag", text: [d.provider, d.model, d.routing].join(" · ") }),
      rebuild);
    const kv = el("dl", { class: "kv" },
      metric("requests", "Requests"),
      metric("rate", "Requests / s"),
      metric("errors", "Errors (5xx)"),
      metric("latency", "p50 · p99"),
      metric("ttft", "TTFT p50 · p99"),
      metric("in_flight", "In flight", true),
      metric("queue_depth", "Queued", true),
      metric("tokens", "Tokens in · out"),
      metric("cost_usd", "Cost"),
      metric("retries", "Retries"),
      metric("rejected", "Rejected"),
      metric("fallbacks", "Fell back"));
    const rows = d.replicas.map((r) => el("tr", { "data-replica": r.name, "data-state": "closed" },
      el("td", {}, el("strong", { text: r.name }), el("small", { class: "url", text: r.base_url, title: r.base_url })),
      el("td", {}, el("span", { class: "state", "data-field": "state", text: "closed" }),
        el("small", { "data-field": "circuit-detail" })),
      el("td", { "data-field": "health", text: "–" }),
      el("td", { "data-field": "in_flight", text: "–" }),
      el("td", { "data-field": "upstream", text: "–" }),
      el("td", { class: "actions" },
        el("button", { type: "button", class: "danger", "data-action": "force_open",
          title: "Send this replica no traffic for the force-open duration", text: "Force open" }),
        el("button", { type: "button", "data-action": "reset", title: "Close the circuit now", text: "Reset" }))));
    const table = el("div", { class: "table-wrap" }, el("table", {},
      el("thead", {}, el("tr", {},
        ...["Replica", "Circuit", "Health", "In flight", "Attempts ok · failed", ""].map((h) => el("th", { text: h })))),
      el("tbody", {}, ...rows)));
    const limits = el("div", { class: "limits", "data-field": "limits" });
    return el("article", { class: "card deployment", "data-deployment": d.name }, head, kv, table, limits);
  }

  function updateDeployment(d, i) {
    const card = $(`[data-deployment="${CSS.escape(d.name)}"]`);
    if (!card) return;
    const j = i > 0 ? baseOf(i, TILE_WINDOW_S) : null;
    const w = j == null ? null : windowStats(d.name, j, i);
    const put = (name, text, title) => {
      const node = $(`[data-metric="${name}"]`, card);
      setText(node, text);
      if (title !== undefined) node.title = title;
    };
    put("requests", fmtInt(d.requests.total),
        Object.entries(d.requests.by_code).map(([c, n]) => `${c}: ${n}`).join(", ") || "none yet");
    put("rate", w ? fmtRate(w.rate) : "–");
    put("errors", w ? fmtPct(w.errorPct) : "–");
    put("latency", w ? secondsPair(w.p50, w.p99) : "–");
    put("ttft", w ? secondsPair(w.ttft50, w.ttft99) : "–");
    put("in_flight", `${fmtInt(d.in_flight)} / ${fmtInt(d.max_concurrency)}`);
    setBar($('[data-bar="in_flight"]', card), d.in_flight, d.max_concurrency);
    put("queue_depth", `${fmtInt(d.queue_depth)} / ${fmtInt(d.queue_capacity)}`);
    setBar($('[data-bar="queue_depth"]', card), d.queue_depth, d.queue_capacity);
    put("tokens", pair(fmtCompact(d.tokens.input), fmtCompact(d.tokens.output)),
        `cached input: ${fmtInt(d.tokens.cached)}; estimated usage: ${fmtInt(d.usage_estimated)} requests`);
    put("cost_usd", fmtUsd(d.cost_usd));
    put("retries", fmtInt(d.retries));
    const sum = (o) => Object.values(o).reduce((a, b) => a + b, 0);
    put("rejected", fmtInt(sum(d.rejected)),
        Object.entries(d.rejected).map(([r, n]) => `${r}: ${n}`).join(", ") || "none");
    put("fallbacks", fmtInt(sum(d.fallbacks_taken)),
        Object.entries(d.fallbacks_taken).map(([to, n]) => `to ${to}: ${n}`).join(", ") || "no fallbacks configured");
    for (const r of d.replicas) updateReplica(card, r);
    renderLimits($('[data-field="limits"]', card), d.limits || []);
  }

  function updateReplica(card, r) {
    const row = $(`[data-replica="${CSS.escape(r.name)}"]`, card);
    if (!row) return;
    const circuit = r.circuit || { state: "closed", retry_after_s: 0, consecutive_failures: 0 };
    row.dataset.state = circuit.state;
    setText($('[data-field="state"]', row), circuit.state.replace("_", "-"));
    const detail = circuit.state === "closed"
      ? (circuit.consecutive_failures ? `${circuit.consecutive_failures} failures in a row` : "")
      : `probe in ${fmtSeconds(circuit.retry_after_s)}`;
    setText($('[data-field="circuit-detail"]', row), detail);
    const health = r.healthy == null ? "–" : r.healthy ? "healthy" : "unhealthy";
    const healthCell = $('[data-field="health"]', row);
    setText(healthCell, health);
    healthCell.title = r.healthy == null ? "no health check configured" : "";
    const flight = $('[data-field="in_flight"]', row);
    setText(flight, r.in_flight == null ? "–" : fmtInt(r.in_flight));
    flight.title = r.in_flight == null ? "counted per deployment (above)" : "";
    const outcomes = r.upstream || {};
    const ok = outcomes.success || 0;
    const failed = Object.entries(outcomes).filter(([o]) => o !== "success").reduce((a, [, n]) => a + n, 0);
    const cell = $('[data-field="upstream"]', row);
    setText(cell, pair(fmtInt(ok), fmtInt(failed)));
    cell.title = Object.entries(outcomes).map(([o, n]) => `${o}: ${n}`).join(", ") || "no attempts yet";
  }

  // limits: [{name, kind, limit, remaining}] from whoever enforces them; none yet is said so
  function renderLimits(node, limits) {
    if (!limits.length) {
      if (node.dataset.empty !== "1") {
        node.replaceChildren(el("span", { class: "muted", text: "Limits: " }),
          el("span", { class: "none", text: "none configured" }));
        node.dataset.empty = "1";
      }
      return;
    }
    node.dataset.empty = "0";
    const list = el("ul");
    for (const limit of limits) {
      const bar = el("div", { class: "bar" }, el("span"));
      const left = limit.remaining == null ? "–" : fmtInt(limit.remaining);
      list.append(el("li", {},
        el("span", { text: `${limit.name || limit.kind}: ${left} left of ${fmtInt(limit.limit)}` }), bar));
      if (limit.limit > 0 && limit.remaining != null) setBar(bar, limit.limit - limit.remaining, limit.limit);
    }
    node.replaceChildren(el("span", { class: "muted", text: "Limits left" }), list);
  }

  // keys: [{name, requests: {total, by_code}, tokens: {input, output}, cost_usd, limits: [...], budget}]
  function renderKeys(keys) {
    const root = $("#keys");
    if (!keys.length) {
      if (root.dataset.empty !== "1") {
        root.replaceChildren(el("p", { class: "none",
          text: "No gateway keys configured: the gateway serves anyone who can reach it." }));
        root.dataset.empty = "1";
      }
      return;
    }
    root.dataset.empty = "0";
    const rows = keys.map((k) => {
      const limits = (k.limits || []).map((l) => `${l.name || l.kind}: ${fmtInt(l.remaining)} / ${fmtInt(l.limit)}`);
      const budget = k.budget ? `${fmtUsd(k.budget.remaining_usd)} of ${fmtUsd(k.budget.usd)} (${k.budget.period})` : "–";
      return el("tr", { "data-key": k.name },
        el("td", {}, el("strong", { text: k.name })),
        el("td", { text: fmtInt(k.requests ? k.requests.total : null) }),
        el("td", { text: k.tokens ? pair(fmtCompact(k.tokens.input), fmtCompact(k.tokens.output)) : "–" }),
        el("td", { text: fmtUsd(k.cost_usd) }),
        el("td", { text: limits.join(", ") || "none" }),
        el("td", { text: budget }));
    });
    root.replaceChildren(el("div", { class: "table-wrap" }, el("table", {},
      el("thead", {}, el("tr", {},
        ...["Key", "Requests", "Tokens in · out", "Cost", "Limits left", "Budget left"].map((h) => el("th", { text: h })))),
      el("tbody", {}, ...rows))));
  }

  // workers: [{worker, serving, requests, connections, connections_rebalanced, resident_memory_bytes,
  //            open_fds, event_loop_lag_seconds, restarts: {died, failed_to_start}}]: one row per slot,
  //            the requests' split over them, its connections open and those it let go because it
  //            held more than its share; a slot not serving, or restarted in the last
  //            RESTART_SHOWN_S this tab has seen, is marked (restarts from before are only counted)
  function renderWorkers(workers, now) {
    const total = workers.reduce((sum, w) => sum + w.requests, 0);
    const rows = workers.map((w) => {
      const restarts = w.restarts || {};
      const count = (restarts.died || 0) + (restarts.failed_to_start || 0);
      const seen = app.restarts.get(w.worker);
      if (!seen || count !== seen.count) {
        app.restarts.set(w.worker, { count, at: seen && count > seen.count ? now : -Infinity });
      }
      const recent = now - app.restarts.get(w.worker).at < RESTART_SHOWN_S;
      const state = !w.serving ? "down" : recent ? "restarted" : "serving";
      return el("tr", { "data-worker": w.worker, "data-state": state },
        el("td", {}, el("strong", { text: w.worker })),
        el("td", {}, el("span", { class: "state", text: w.serving ? state : "not serving" })),
        el("td", { text: `${fmtInt(w.requests)} (${fmtPct(total ? (100 * w.requests) / total : null)})` }),
        el("td", { "data-metric": "connections",
                   text: pair(fmtInt(w.connections), fmtInt(w.connections_rebalanced)) }),
        el("td", { text: fmtCompact(w.resident_memory_bytes / 1048576) + " MiB" }),
        el("td", { text: fmtSeconds(w.event_loop_lag_seconds) }),
        el("td", { "data-metric": "restarts",
                   text: pair(fmtInt(restarts.died), fmtInt(restarts.failed_to_start)) }));
    });
    $("#workers").replaceChildren(el("div", { class: "table-wrap" }, el("table", {},
      el("thead", {}, el("tr", {},
        ...["Worker", "State", "Requests (share)", "Connections: open · let go", "Memory", "Loop lag",
            "Restarts: died · failed to start"].map((h) => el("th", { text: h })))),
      el("tbody", {}, ...rows))));
  }

  function renderUnrouted(unrouted) {
    const parts = Object.entries(unrouted).map(([code, n]) => `${n} × ${code}`);
    setText($("#unrouted"), parts.length ? `Requests that named no deployment: ${parts.join(", ")}.` : "");
  }

  // ------------------------------------------------------------------ charts

  function series(pick) {
    const out = new Map();
    const n = app.snapshots.length;
    for (let i = 1; i < n; i += 1) {
      const j = baseOf(i, WINDOW_S);
      if (j == null) continue;
      for (const name of Object.keys(app.snapshots[i].byName)) {
        const w = windowStats(name, j, i);
        if (!out.has(name)) out.set(name, []);
        out.get(name).push([app.snapshots[i].t, w ? pick(w) : null]);
      }
    }
    return out;
  }

  function niceMax(value) {
    if (!(value > 0)) return 1;
    const power = Math.pow(10, Math.floor(Math.log10(value)));
    for (const step of [1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10]) if (value <= step * power) return step * power;
    return 10 * power;
  }

  function drawCharts() {
    if (!app.latest) return;
    const now = app.snapshots.length ? app.snapshots[app.snapshots.length - 1].t : 0;
    const lines = (pick, dashed) => [...series(pick)].map(([name, points]) => ({ name, points, dashed }));
    drawChart("rate", lines((w) => w.rate), now, axisNumber);
    drawChart("errors", lines((w) => w.errorPct), now, (v) => axisNumber(v) + "%");
    drawChart("latency", [...lines((w) => w.p99, false), ...lines((w) => w.p50, true)], now, axisSeconds);
    drawChart("ttft", [...lines((w) => w.ttft99, false), ...lines((w) => w.ttft50, true)], now, axisSeconds);
  }

  function drawChart(name, lines, now, format) {
    const figure = $(`[data-chart="${name}"]`);
    const canvas = $("svg", figure);
    const width = Math.max(240, canvas.clientWidth || 480);
    const height = Math.max(120, canvas.clientHeight || 180);
    const pad = { left: 56, right: 10, top: 8, bottom: 22 };
    canvas.setAttribute("viewBox", `0 0 ${width} ${height}`);
    const plotW = width - pad.left - pad.right;
    const plotH = height - pad.top - pad.bottom;
    const start = now - HISTORY_S;
    let max = 0;
    for (const line of lines) for (const [, v] of line.points) if (v != null && v > max) max = v;
    const top = niceMax(max * 1.08);   // headroom: a line at the top edge reads as clipped
    const x = (t) => pad.left + ((t - start) / HISTORY_S) * plotW;
    const y = (v) => pad.top + plotH - (v / top) * plotH;
    const nodes = [];
    for (let k = 0; k <= 4; k += 1) {
      const v = (top * k) / 4;
      nodes.push(svg("line", { class: "grid", x1: pad.left, x2: width - pad.right, y1: y(v), y2: y(v) }));
      const label = svg("text", { class: "axis", x: pad.left - 6, y: y(v) + 4, "text-anchor": "end" });
      label.textContent = format(v);
      nodes.push(label);
    }
    const minutes = HISTORY_S / 60;
    const every = plotW < 420 ? 2 : 1;            // narrow charts: fewer labels, none overlapping
    for (let m = 0; m <= minutes; m += every) {
      const label = svg("text", { class: "axis", x: x(now - m * 60), y: height - 4,
        "text-anchor": m === 0 ? "end" : m === minutes ? "start" : "middle" });
      label.textContent = m === 0 ? "now" : `−${m} min`;
      nodes.push(label);
    }
    let drawn = 0;
    for (const line of lines) {
      let d = "";
      let pen = false;
      for (const [t, v] of line.points) {
        if (v == null || t < start) { pen = false; continue; }
        d += `${pen ? "L" : "M"}${x(t).toFixed(1)},${y(v).toFixed(1)}`;
        pen = true;
      }
      if (!d) continue;
      drawn += 1;
      nodes.push(svg("path", { class: "series" + (line.dashed ? " dashed" : ""), d, stroke: colorOf(line.name),
        "data-series": line.name }));
    }
    if (!drawn) {
      const empty = svg("text", { class: "empty", x: pad.left + plotW / 2, y: pad.top + plotH / 2, "text-anchor": "middle" });
      empty.textContent = app.snapshots.length < 2 ? "collecting…" : "no traffic in the last minutes";
      nodes.push(empty);
    }
    canvas.replaceChildren(...nodes);
    const names = [...new Set(lines.map((l) => l.name))];
    const legend = $(".legend", figure);
    const legendKey = names.join("\u0000");
    if (legend.dataset.key !== legendKey) {
      legend.replaceChildren(...names.map((n) => {
        const swatch = el("span", { class: "swatch" });
        swatch.style.background = colorOf(n);
        return el("span", {}, swatch, n);
      }));
      legend.dataset.key = legendKey;
    }
  }

  // ------------------------------------------------------------------ actions

  async function act(button, label, method, path, body) {
    button.disabled = true;
    try {
      const answer = await api(method, path, body);
      toast(label + (answer && answer.state ? `: ${answer.state.replace("_", "-")}` : ": done"));
      return answer;
    } catch (error) {
      if (error instanceof ApiError && (error.status === 401 || error.status === 429)) authProblem(error);
      else toast(`${label} failed: ${error.message}`, "error");
      return null;
    } finally {
      button.disabled = false;
      schedule(50);   // show the consequence now, not in a second
    }
  }

  function onClick(event) {
    const button = event.target.closest("button[data-action]");
    if (!button) return;
    const action = button.dataset.action;
    if (action === "reload") {
      act(button, "Config reload", "POST", "/admin/reload");
      return;
    }
    const card = button.closest("[data-deployment]");
    if (!card) return;
    const deployment = card.dataset.deployment;
    const path = encodeURIComponent(deployment);
    if (action === "rebuild_sessions") {
      act(button, `Rebuild sessions of ${deployment}`, "POST", `/admin/sessions/${path}/rebuild`);
      return;
    }
    const row = button.closest("[data-replica]");
    if (!row) return;
    const replica = row.dataset.replica;
    const target = `/admin/circuits/${path}/${encodeURIComponent(replica)}`;
    let body = { action: "reset" };
    if (action === "force_open") {
      const seconds = Number($("#force-duration").value);
      if (!(seconds > 0 && seconds < 1e9)) {
        toast("The force-open duration must be a positive number of seconds.", "error");
        return;
      }
      body = { action: "force_open", duration_s: seconds };
    }
    act(button, `${deployment}/${replica}`, "POST", target, body).then((answer) => {
      if (answer && answer.state) row.dataset.state = answer.state;
    });
  }

  // ------------------------------------------------------------------ start

  function start() {
    initTheme();
    setText($("#where"), location.host);
    document.addEventListener("click", onClick);
    $("#forget").addEventListener("click", () => forgetToken(""));
    $("#login-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const token = $("#token").value.trim();
      if (!token) return;
      sessionStorage.setItem(TOKEN_KEY, token);
      $("#token").value = "";
      app.token = token;
      setStatus("idle", "connecting");
      poll();
    });
    window.addEventListener("resize", () => drawCharts());
    app.token = takeTokenFromFragment();
    if (app.token) poll();
    else showLogin("");
  }

  start();
})();
