// weir's live dashboard. Every second it reads the admin listener's JSON endpoints and
// its Prometheus text, and redraws the page from them. Rates and percentiles are
// computed from the difference between two scrapes, as Prometheus' rate() and
// histogram_quantile() would. Text that came from clients (paths, addresses) is only
// ever set as textContent, never parsed as HTML. After each poll the document receives
// a `weir:polled` event.
"use strict";

const PERIOD_MS = 1000;
const DURATION = "http_server_request_duration_seconds";

// The last scrape's cumulative counters, to difference against: null before the first.
let previous = null;

// ---- Prometheus text --------------------------------------------------------------

// One sample per line: name, labels and value. Label values may hold braces (route
// templates), so the label set is everything between the first `{` and the last `}`.
function parseMetrics(text) {
  const samples = [];
  const line = /^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\S+)?$/;
  const label = /([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"/g;
  for (const raw of text.split("\n")) {
    if (raw === "" || raw.startsWith("#")) continue;
    const match = line.exec(raw);
    if (!match) continue;
    const labels = {};
    for (const [, name, value] of (match[2] || "").matchAll(label)) {
      labels[name] = value.replace(/\\(.)/g, (_, c) => (c === "n" ? "\n" : c));
    }
    samples.push({ name: match[1], labels, value: Number(match[3]) });
  }
  return samples;
}

// Sums `samples` named `name` by the key `keyOf(labels)` returns.
function sumBy(samples, name, keyOf) {
  const sums = new Map();
  for (const s of samples) {
    if (s.name !== name) continue;
    const key = keyOf(s.labels);
    sums.set(key, (sums.get(key) || 0) + s.value);
  }
  return sums;
}

// What this dashboard keeps of one scrape: cumulative counts per route, duration
// buckets per route, refusals per mount and reason.
function digest(samples) {
  const routeKey = (l) => `${l.method} ${l.route}`;
  const buckets = new Map();
  for (const s of samples) {
    if (s.name !== `${DURATION}_bucket` || !s.labels.route) continue;
    const key = routeKey(s.labels);
    if (!buckets.has(key)) buckets.set(key, new Map());
    const byBound = buckets.get(key);
    const bound = s.labels.le === "+Inf" ? Infinity : Number(s.labels.le);
    byBound.set(bound, (byBound.get(bound) || 0) + s.value);
  }
  const single = (name) => sumBy(samples, name, () => "").get("") || 0;
  return {
    time: performance.now(),
    counts: sumBy(samples, `${DURATION}_count`, routeKey),
    total: single(`${DURATION}_count`),
    buckets,
    refusals: sumBy(samples, "weir_refusals_total", (l) => `${l.mount}\u0000${l.reason}`),
    active: single("http_server_active_requests"),
    websockets: sumBy(samples, "weir_websocket_sessions", (l) => l.mount || ""),
    budgetReserved: single("weir_budget_reserved_bytes"),
    budgetLimit: single("weir_budget_limit_bytes"),
  };
}

// The q-quantile of the observations between two cumulative bucket sets, interpolated
// linearly inside its bucket; null when nothing was observed.
function quantile(q, now, before) {
  if (!now) return null;
  const bounds = [...now.keys()].sort((a, b) => a - b);
  const delta = (b) => now.get(b) - ((before && before.get(b)) || 0);
  const total = delta(Infinity);
  if (!(total > 0)) return null;
  const rank = q * total;
  let lower = 0;
  let below = 0;
  for (const bound of bounds) {
    const count = delta(bound);
    if (count >= rank) {
      if (bound === Infinity) return lower;
      return lower + (bound - lower) * ((rank - below) / Math.max(count - below, 1e-9));
    }
    lower = bound;
    below = count;
  }
  return lower;
}

// ---- formatting -------------------------------------------------------------------

function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i += 1;
  }
  return `${i === 0 ? n : n.toFixed(1)} ${units[i]}`;
}

function seconds(s) {
  if (s === null) return "–";
  if (s < 0.001) return `${(s * 1e6).toFixed(0)} µs`;
  if (s < 1) return `${(s * 1000).toFixed(s < 0.01 ? 2 : 1)} ms`;
  return `${s.toFixed(2)} s`;
}

function rate(r) {
  if (r === null) return "–";
  return r >= 100 ? r.toFixed(0) : r.toFixed(1);
}

// An element `tag` with `text`, and the class `className` when given.
function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  if (className) node.className = className;
  return node;
}

function row(cells) {
  const tr = document.createElement("tr");
  for (const cell of cells) tr.append(cell instanceof Node ? cell : el("td", String(cell)));
  return tr;
}

function num(text) {
  return el("td", text, "num");
}

// Replaces the rows of `table`'s body; shows `emptyId`'s note when there are none.
function fill(tableId, emptyId, rows) {
  document.querySelector(`#${tableId} tbody`).replaceChildren(...rows);
  document.getElementById(emptyId).hidden = rows.length > 0;
}

// ---- panels -----------------------------------------------------------------------

function instancesCell(instances) {
  const td = el("td");
  if (instances.length === 0) td.append(el("span", "none", "health-none"));
  for (const i of instances) {
    const item = el("div", "", "instance");
    item.append(el("span", i.health, `health-${i.health}`));
    item.append(` ${i.instance_id} v${i.version}`);
    if (i.region) item.append(` (${i.region})`);
    item.append(el("span", ` ${i.in_flight} in flight`, "muted"));
    td.append(item);
  }
  return td;
}

function drawRoutes(routes, now, interval) {
  const rows = routes.map((r) => {
    const key = `${r.method} ${r.template}`;
    const count = now.counts.get(key) || 0;
    const before = previous && previous.counts.get(key);
    const perSecond = previous ? (count - (before || 0)) / interval : null;
    const buckets = now.buckets.get(key);
    const earlier = previous && previous.buckets.get(key);
    const tr = row([
      el("td", r.method, "method"),
      el("td", r.template, "route"),
      r.service,
      instancesCell(r.instances),
      num(rate(perSecond)),
      num(seconds(quantile(0.5, buckets, earlier))),
      num(seconds(quantile(0.99, buckets, earlier))),
      el("td", String(count), "num count"),
    ]);
    tr.dataset.route = key;
    tr.dataset.count = String(count);
    return tr;
  });
  fill("routes", "routes-empty", rows);
}

function drawRefusals(now, interval) {
  const rows = [];
  for (const [key, total] of [...now.refusals].sort()) {
    if (total === 0) continue;
    const [mount, reason] = key.split("\u0000");
    const before = previous ? previous.refusals.get(key) || 0 : null;
    const tr = row([mount, el("td", reason, "reason"), num(rate(before === null ? null : (total - before) / interval)), num(String(total))]);
    tr.dataset.reason = reason;
    rows.push(tr);
  }
  fill("refusals", "refusals-empty", rows);
}

function drawBudget(budget, now) {
  const reserved = budget.aggregate_bytes;
  const limit = now.budgetLimit;
  const meter = document.getElementById("budget-meter");
  meter.max = limit > 0 ? limit : 1;
  meter.low = meter.max * 0.5;
  meter.high = meter.max * 0.8;
  meter.value = reserved;
  const share = limit > 0 ? ` (${((100 * reserved) / limit).toFixed(1)}%)` : "";
  document.getElementById("budget-reserved").textContent = bytes(reserved) + share;
  document.getElementById("budget-limit").textContent = limit > 0 ? bytes(limit) : "–";
  document.getElementById("budget-reservations").textContent = String(budget.reservations);
  const mounts = Object.entries(budget.per_mount_bytes || {}).map(([m, b]) => `${m}: ${bytes(b)}`);
  document.getElementById("budget-mounts").textContent = mounts.length ? `· ${mounts.join(", ")}` : "";
}

function drawOverview(now, interval) {
  const total = previous ? (now.total - previous.total) / interval : null;
  document.getElementById("total-rate").textContent = rate(total);
  document.getElementById("active").textContent = String(now.active);
  const open = [...now.websockets.values()].reduce((a, b) => a + b, 0);
  document.getElementById("websockets").textContent = String(open);
  const byMount = [...now.websockets].filter(([, n]) => n > 0).map(([m, n]) => `${m}: ${n}`);
  document.getElementById("websockets-by-mount").textContent = byMount.join(", ");
}

function drawReadiness(readiness) {
  const badge = document.getElementById("readiness");
  const ready = readiness.status === "ready";
  badge.textContent = ready ? "ready" : "not ready";
  badge.className = `badge ${ready ? "ok" : "bad"}`;
  const missing = [];
  if (!readiness.listening) missing.push("public listener not accepting");
  for (const service of readiness.missing_services || []) missing.push(`no healthy ${service}`);
  badge.title = missing.join("; ");
}

async function cancel(id, button) {
  button.disabled = true;
  const response = await fetch(`/requests/${id}`, { method: "DELETE" });
  // 404: it finished meanwhile; either way it is gone.
  if (response.status === 204 || response.status === 404) {
    const tr = button.closest("tr");
    if (tr) tr.remove();
    document.getElementById("requests-empty").hidden = document.querySelector("#requests tbody tr") !== null;
  } else {
    button.disabled = false;
  }
}

// A request keeps its row (and its Cancel button) from poll to poll: only its figures
// change, so a click is never lost to a redraw.
function drawRequests(requests) {
  const shown = new Map();
  for (const tr of document.querySelectorAll("#requests tbody tr")) shown.set(tr.dataset.requestId, tr);
  const rows = [...requests].sort((a, b) => a.id - b.id).map((r) => {
    const tr = shown.get(String(r.id)) || requestRow(r);
    tr.querySelector(".elapsed").textContent = seconds(r.elapsed_ms / 1000);
    tr.querySelector(".traffic").textContent = `${bytes(r.bytes_in)} / ${bytes(r.bytes_out)}`;
    return tr;
  });
  fill("requests", "requests-empty", rows);
}

function requestRow(r) {
  const button = el("button", "Cancel", "cancel");
  button.type = "button";
  button.addEventListener("click", () => cancel(r.id, button));
  const action = el("td");
  action.append(button);
  const tr = row([
    num(String(r.id)),
    r.method,
    el("td", r.path, "path"),
    el("td", r.route, "route"),
    r.client,
    el("td", "", "num elapsed"),
    el("td", "", "num traffic"),
    action,
  ]);
  tr.dataset.requestId = String(r.id);
  tr.dataset.route = r.route;
  return tr;
}

// ---- polling ----------------------------------------------------------------------

async function fetchJson(path) {
  const response = await fetch(path, { cache: "no-store" });
  return response.json();
}

async function poll() {
  const [routes, requests, budget, readiness, metrics] = await Promise.all([
    fetchJson("/routes"),
    fetchJson("/requests"),
    fetchJson("/budget"),
    fetchJson("/readyz"),
    fetch("/metrics", { cache: "no-store" }).then((r) => r.text()),
  ]);
  const now = digest(parseMetrics(metrics));
  const elapsed = previous ? Math.max((now.time - previous.time) / 1000, 0.001) : 1;
  drawRoutes(routes, now, elapsed);
  drawRefusals(now, elapsed);
  drawBudget(budget, now);
  drawOverview(now, elapsed);
  drawReadiness(readiness);
  drawRequests(requests);
  previous = now;
}

async function loop() {
  const updated = document.getElementById("updated");
  try {
    await poll();
    updated.textContent = `updated ${new Date().toLocaleTimeString()}`;
    updated.classList.remove("bad-text");
  } catch (error) {
    updated.textContent = `admin listener unreachable: ${error.message}`;
    updated.classList.add("bad-text");
  }
  document.dispatchEvent(new CustomEvent("weir:polled"));
  setTimeout(loop, PERIOD_MS);
}

loop();
