// The mesh dashboard: polls /api/overview every two seconds and redraws without reloading.
// Data older than STALE_MS (or a failed read) is shown as stale, never as live.
"use strict";

const POLL_MS = 2000;
const STALE_MS = 6000;
const state = { overview: null, lastOk: 0, error: null, updates: 0, detail: null, detailFor: null };

const $ = (id) => document.getElementById(id);
const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
const pct = (r) => (r == null ? "-" : (r * 100).toFixed(2) + "%");
const ms = (v) => (v == null ? "-" : v.toFixed(1) + "ms");
const rps = (v) => (v == null ? "-" : v.toFixed(1) + "/s");

function health(row) {
  if (!row || !row.requests) return "idle";
  if (row.success_rate >= 0.995) return "healthy";
  if (row.success_rate >= 0.95) return "degraded";
  return "failing";
}

async function poll() {
  const window = $("window").value;
  try {
    const rsp = await fetch(`/api/overview?window=${window}`, { cache: "no-store" });
    if (!rsp.ok) throw new Error(`dashboard answered ${rsp.status}`);
    const data = await rsp.json();
    if (data.error) throw new Error(data.error);
    state.overview = data;
    state.lastOk = Date.now();
    state.error = null;
    state.updates += 1;
    document.body.dataset.updates = state.updates;
    render();
  } catch (e) {
    state.error = e.message;
  }
  freshness();
}

// Says how old the data is; past STALE_MS the page turns grey and a banner says why.
function freshness() {
  const age = state.lastOk ? Date.now() - state.lastOk : Infinity;
  const stale = age > STALE_MS || (state.error && !state.lastOk);
  document.body.classList.toggle("stale", stale);
  document.body.dataset.stale = stale ? "true" : "false";
  const banner = $("stale-banner");
  if (stale) {
    banner.hidden = false;
    const when = state.lastOk ? `last update ${Math.round(age / 1000)}s ago` : "no data yet";
    banner.textContent = `Stale: ${when}${state.error ? " — " + state.error : ""}. The numbers below are not live.`;
  } else {
    banner.hidden = true;
  }
  $("freshness").textContent = state.lastOk
    ? `updated ${new Date(state.lastOk).toLocaleTimeString()} · window ${$("window").value}s`
    : "waiting for the mesh…";
}

function route() {
  const m = location.hash.match(/^#\/service\/([a-z0-9-]+)$/);
  return m ? { page: "service", name: m[1] } : { page: "graph" };
}

function render() {
  const r = route();
  if (!state.overview) return;
  if (r.page === "service") renderService(r.name);
  else renderGraph();
}

// === the graph ===

// Layers by longest path from the services nobody calls; within a layer, by the mean place of
// its callers (fewer crossings), then by name. Boxes are as wide as the longest name, and the
// SVG grows and scrolls: fifty services stay apart and readable.
function layout(names, edges) {
  const depth = Object.fromEntries(names.map((n) => [n, 0]));
  for (let i = 0; i < names.length; i++) {
    let changed = false;
    for (const e of edges) {
      if (e.source in depth && e.destination in depth && e.source !== e.destination && depth[e.destination] < depth[e.source] + 1) {
        depth[e.destination] = depth[e.source] + 1;
        changed = true;
      }
    }
    if (!changed) break;
  }
  const layers = [];
  for (const n of [...names].sort()) (layers[depth[n]] ??= []).push(n);
  const place = {};
  layers.forEach((layer, x) => {
    if (x > 0) {
      const mean = (n) => {
        const ys = edges.filter((e) => e.destination === n && depth[e.source] < x && e.source in place).map((e) => place[e.source]);
        return ys.length ? ys.reduce((a, b) => a + b, 0) / ys.length : Infinity;
      };
      const key = Object.fromEntries(layer.map((n) => [n, mean(n)]));
      layer.sort((a, b) => key[a] - key[b] || (a < b ? -1 : 1));
    }
    layer.forEach((n, y) => (place[n] = y));
  });
  const longest = Math.max(0, ...names.map((n) => n.length));
  const W = Math.max(170, 24 + 8 * longest), H = 58, GX = 250, GY = 40;
  // Each layer centred on the tallest, so edges between short and tall layers stay short.
  const tallest = Math.max(0, ...layers.map((l) => l.length));
  const pos = {};
  layers.forEach((layer, x) => {
    const top = 60 + ((tallest - layer.length) * (H + GY)) / 2;
    layer.forEach((n, y) => (pos[n] = { x: 20 + x * (W + GX), y: top + y * (H + GY), w: W, h: H }));
  });
  const width = 40 + layers.length * (W + GX) - GX;
  const height = 60 + tallest * (H + GY);
  return { pos, width, height, depth };
}

// The edges to draw: those with traffic in the window, and each declared `calls` edge without
// traffic as idle, so the graph has its shape before any load.
function graphEdges(o) {
  const live = o.stat.edges;
  const seen = new Set(live.map((e) => `${e.source}\n${e.destination}`));
  const declared = [];
  for (const [source, callees] of Object.entries(o.calls || {})) {
    for (const destination of callees) {
      if (seen.has(`${source}\n${destination}`)) continue;
      declared.push({ source, destination, rps: 0, requests: 0, success_rate: null, p99_ms: null, retries: 0, declared: true });
    }
  }
  return [...live, ...declared];
}

function renderGraph() {
  const o = state.overview;
  const services = o.stat.services;
  const byName = Object.fromEntries(services.map((s) => [s.destination, s]));
  const status = (o.status && o.status.services) || {};
  const names = [...new Set([...Object.keys(status), ...services.map((s) => s.destination)])];
  const edges = graphEdges(o);
  const { pos, width, height, depth } = layout(names, edges);
  let svg = `<svg id="graph" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}">`;
  svg += `<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="10" markerHeight="10" markerUnits="userSpaceOnUse" orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#56627a"/></marker></defs>`;
  for (const e of edges) {
    const a = pos[e.source], b = pos[e.destination];
    if (!a || !b) continue;
    const x1 = a.x + a.w, y1 = a.y + a.h / 2, x2 = b.x, y2 = b.y + b.h / 2;
    const mx = (x1 + x2) / 2;
    // An edge that skips a layer arcs over the nodes between.
    const skip = (depth[e.destination] ?? 0) - (depth[e.source] ?? 0) > 1;
    const lift = skip ? Math.max(8, Math.min(y1, y2) - 30 - a.h) : null;
    const label = `${rps(e.rps)} · ${pct(e.success_rate)} · p99 ${ms(e.p99_ms)}`;
    svg += `<g class="edge ${health(e)}" data-source="${esc(e.source)}" data-destination="${esc(e.destination)}" data-rps="${e.rps}" data-success-rate="${e.success_rate ?? ""}" data-p99-ms="${e.p99_ms ?? ""}"${e.declared ? ` data-declared="true"` : ""}>`;
    svg += `<title>${esc(e.source)} → ${esc(e.destination)}: ${e.declared ? "declared, no calls in the window" : `${esc(label)}, ${e.retries} retries`}</title>`;
    const d = skip
      ? `M ${x1} ${y1} C ${x1 + 60} ${lift}, ${x2 - 60} ${lift}, ${x2 - 2} ${y2}`
      : `M ${x1} ${y1} C ${mx} ${y1}, ${mx} ${y2}, ${x2 - 2} ${y2}`;
    svg += `<path d="${d}" marker-end="url(#arrow)"/>`;
    // The label sits near the callee's end, where edges into one node are apart; an idle
    // declared edge has no numbers to show.
    if (!e.declared) {
      const lx = skip ? mx : x2 - 8, ly = skip ? lift + 20 : y2 - 7;
      svg += `<text x="${lx}" y="${ly}" text-anchor="${skip ? "middle" : "end"}">${esc(label)}</text>`;
    }
    svg += `</g>`;
  }
  for (const n of names) {
    const p = pos[n];
    const s = byName[n];
    const instances = (status[n] && status[n].instances) || [];
    const sub = s && s.requests ? `${rps(s.rps)} in · ${pct(s.success_rate)}` : `${instances.length} instance${instances.length === 1 ? "" : "s"}`;
    svg += `<a href="#/service/${esc(n)}"><g class="node" data-service="${esc(n)}"><rect x="${p.x}" y="${p.y}" width="${p.w}" height="${p.h}"/>`;
    svg += `<text class="name" x="${p.x + 10}" y="${p.y + 22}">${esc(n)}</text>`;
    svg += `<text class="sub" x="${p.x + 10}" y="${p.y + 42}">${esc(sub)}</text></g></a>`;
  }
  svg += `</svg>`;
  $("view").innerHTML = `<h1>Services</h1>
    <p class="legend"><span><i style="background:#2e8b57"></i>≥ 99.5 % success</span><span><i style="background:#d98e04"></i>≥ 95 %</span><span><i style="background:#c62828"></i>below</span><span><i style="background:#b8bfcc"></i>declared, no calls</span> Edge labels: rate · success rate · p99, over the window, as callers see them.</p>
    <div class="graph">${svg}</div>
    <h2>Edges</h2>${edgeTable(o.stat.edges)}`;
  measureNodes();
}

// Each node's box and name as the browser laid them out, as data attributes: what a check of
// the page (overlaps, clipped names) reads without running a script of its own.
function measureNodes() {
  for (const g of document.querySelectorAll("#graph .node")) {
    const box = g.querySelector("rect").getBBox();
    const name = g.querySelector("text.name");
    g.dataset.box = [box.x, box.y, box.width, box.height].map((v) => v.toFixed(1)).join(",");
    g.dataset.labelWidth = name.getComputedTextLength().toFixed(1);
  }
}

function edgeTable(edges) {
  if (!edges.length) return `<p>No calls in the window.</p>`;
  const rows = edges.map((e) => `<tr class="edge-row" data-source="${esc(e.source)}" data-destination="${esc(e.destination)}"><td>${esc(e.source)} → <a href="#/service/${esc(e.destination)}">${esc(e.destination)}</a></td><td class="num">${rps(e.rps)}</td><td class="num ${health(e) === "failing" ? "bad" : health(e) === "degraded" ? "warn" : ""}">${pct(e.success_rate)}</td><td class="num">${ms(e.p50_ms)}</td><td class="num">${ms(e.p95_ms)}</td><td class="num">${ms(e.p99_ms)}</td><td class="num">${e.retries}</td><td>${esc(e.ejected.join(", ") || "-")}</td></tr>`);
  return `<table><tr><th>Edge</th><th>Rate</th><th>Success</th><th>p50</th><th>p95</th><th>p99</th><th>Retries</th><th>Ejected</th></tr>${rows.join("")}</table>`;
}

// === a service ===

function expiry(unix) {
  if (!unix) return "-";
  const s = unix - Date.now() / 1000;
  if (s <= 0) return `<span class="bad">expired</span>`;
  const text = s < 7200 ? `${Math.round(s / 60)}m` : s < 172800 ? `${Math.round(s / 3600)}h` : `${Math.round(s / 86400)}d`;
  return s < 600 ? `<span class="warn">${text}</span>` : text;
}

async function loadDetail(name) {
  try {
    const rsp = await fetch(`/api/service/${name}`, { cache: "no-store" });
    state.detail = await rsp.json();
    state.detailFor = name;
    if (route().name === name) render();
  } catch (e) {
    state.detail = { error: e.message };
  }
}

function renderService(name) {
  const o = state.overview;
  const svc = (o.status.services || {})[name];
  if (!svc) {
    $("view").innerHTML = `<h1>${esc(name)}</h1><p class="bad">No service ${esc(name)} in the mesh.</p><p><a href="#/">All services</a></p>`;
    return;
  }
  const row = o.stat.services.find((s) => s.destination === name);
  const names = {};
  for (const s of Object.values(o.status.services)) for (const i of s.instances || []) names[i.address] = i.instance_id;
  const instances = (svc.instances || []).map((i) => `<tr class="instance"><td>${esc(i.instance_id)}</td><td>${esc(i.address)}</td><td>${esc(i.version || "v1")}</td><td>${expiry(i.certificate_not_after_unix)}</td><td>${esc((i.ejected_endpoints || []).map((e) => names[e.split("/")[1]] || e).join(", ") || "-")}</td><td>${i.app_down ? `<span class="bad">down: ${esc(i.app_down)}</span>` : "up"}</td></tr>`);
  const d = state.detailFor === name ? state.detail : null;
  const jaeger = o.jaeger_url;
  let requests = `<p>Loading…</p>`;
  if (d && d.error) requests = `<p class="bad">${esc(d.error)}</p>`;
  else if (d) {
    requests = d.requests.length
      ? `<table><tr><th>Time</th><th>Instance</th><th>Direction</th><th>Caller</th><th>Callee</th><th>Request</th><th>Status</th><th>Latency</th><th>Trace</th></tr>${d.requests.slice(-30).reverse().map((r) => `<tr><td>${new Date(r.time_unix_ms).toLocaleTimeString()}</td><td>${esc(r.instance)}</td><td>${esc(r.direction)}</td><td>${esc(r.source)}</td><td>${esc(r.destination)}</td><td>${esc(r.method)} ${esc(r.path)}</td><td class="${r.status >= 500 ? "bad" : ""}">${r.status}</td><td class="num">${ms(r.latency_ms)}</td><td>${r.trace_id ? (jaeger ? `<a class="trace" href="${esc(jaeger)}/trace/${esc(r.trace_id)}" target="_blank">${esc(r.trace_id.slice(0, 16))}…</a>` : esc(r.trace_id.slice(0, 16))) : "-"}</td></tr>`).join("")}</table>`
      : `<p>No requests in the last second.</p>`;
  }
  const authz = d && d.authorization ? `<pre>${esc(JSON.stringify(d.authorization, null, 2))}</pre>` : `<p>-</p>`;
  const policy = d && d.policy ? `<pre>${esc(JSON.stringify(d.policy, null, 2))}</pre>` : `<p>No caller's sidecar has a policy for it.</p>`;
  const edges = o.stat.edges.filter((e) => e.source === name || e.destination === name);
  $("view").innerHTML = `<p><a href="#/">← all services</a></p><h1 id="service-name">${esc(name)}</h1>
    <p>${row && row.requests ? `${rps(row.rps)} answered · ${pct(row.success_rate)} success · p50 ${ms(row.p50_ms)} · p99 ${ms(row.p99_ms)}` : "No requests answered in the window."}
    ${jaeger ? ` · <a href="${esc(jaeger)}/search?service=${esc(name)}" target="_blank">traces in Jaeger</a>` : ""}</p>
    <h2>Instances</h2><table><tr><th>Instance</th><th>Address</th><th>Version</th><th>Certificate expires in</th><th>Has ejected</th><th>App</th></tr>${instances.join("")}</table>
    <h2>Edges</h2>${edgeTable(edges)}
    <h2>Who may call it</h2>${authz}
    <h2>Policy and routes (as callers apply them)</h2>${policy}
    <h2>Requests in the last second${jaeger ? " (trace IDs link to Jaeger)" : ""}</h2>${requests}`;
}

window.addEventListener("hashchange", () => {
  const r = route();
  if (r.page === "service") loadDetail(r.name);
  render();
});
$("window").addEventListener("change", poll);
setInterval(poll, POLL_MS);
setInterval(() => {
  const r = route();
  if (r.page === "service") loadDetail(r.name);
}, 5000);
setInterval(freshness, 1000);
if (route().page === "service") loadDetail(route().name);
poll();
