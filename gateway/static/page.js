// The built-in page: polls /ui/data and draws it. No framework; Chart.js (served beside this file) draws the charts.
"use strict";

const POLL_MS = 5000;
const KEY = "cascade.adminKey";
const charts = {};

const fmt = {
  count: (x) => (x == null ? "–" : Math.round(x).toLocaleString("en-US")),
  share: (x) => (x == null ? "–" : (100 * x).toFixed(1) + "%"),
  usd: (x) => {
    if (x == null) return "–";
    const sign = x < 0 ? "-" : "";
    const a = Math.abs(x);
    return sign + "$" + (a === 0 ? "0" : a >= 1 ? a.toFixed(2) : a.toPrecision(3));
  },
  seconds: (x) => (x == null ? "–" : x.toPrecision(3)),
  time: (t) => new Date(t * 1000).toLocaleTimeString("en-GB", { hour: "2-digit", minute: "2-digit", second: "2-digit" }),
};

const TILES = [
  ["requests", "requests", fmt.count],
  ["teacher_share", "teacher share", fmt.share],
  ["cost_usd", "cost", fmt.usd],
  ["teacher_only_cost_usd", "teacher-only cost", fmt.usd],
  ["savings_usd", "saved", fmt.usd],
  ["savings_share", "saved share", fmt.share],
];

function headers() {
  const key = sessionStorage.getItem(KEY);
  return key ? { Authorization: "Bearer " + key } : {};
}

function el(tag, attrs = {}, text) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

function get(data, path) {
  return path.split(".").reduce((value, part) => (value == null ? value : value[part]), data);
}

function showGate(why, askKey) {
  document.getElementById("gate").hidden = false;
  document.getElementById("gate-form").hidden = !askKey;
  document.getElementById("content").hidden = true;
  document.getElementById("gate-why").textContent = why;
}

function renderWindows(data) {
  for (const [name, figures] of Object.entries(data.windows)) {
    const box = document.querySelector(`[data-window="${name}"]`);
    box.replaceChildren(
      ...TILES.map(([field, label, format]) => {
        const tile = el("div", { class: "tile" });
        tile.append(el("div", { class: "label" }, label));
        const value = figures[field];
        tile.append(el("div", { class: "value", "data-figure": `windows.${name}.${field}`, "data-value": String(value) }, format(value)));
        return tile;
      }),
    );
    document.querySelector(`[data-since="${name}"]`).textContent = "since " + fmt.time(figures.since);
  }
}

function renderLatency(data) {
  const rows = [];
  for (const [name, figures] of Object.entries(data.windows)) {
    for (const [tier, q] of Object.entries(figures.latency_s)) {
      const row = el("tr");
      row.append(el("td", {}, name), el("td", {}, tier));
      for (const p of ["p50", "p95", "p99"]) {
        row.append(el("td", { "data-figure": `windows.${name}.latency_s.${tier}.${p}` }, fmt.seconds(q[p])));
      }
      rows.push(row);
    }
  }
  document.querySelector("#latency tbody").replaceChildren(...rows);
}

function renderCycles(data) {
  const rows = data.cycles.map((cycle) => {
    const row = el("tr", { "data-run": cycle.run_id });
    const decision = el("td");
    decision.append(el("span", { class: `decision ${cycle.decision}` }, cycle.decision));
    const agreement = `${fmt.share(cycle.heldout_candidate)} / ${fmt.share(cycle.heldout_serving)}`;
    const report = el("td");
    if (cycle.report) {
      const link = el("a", { href: cycle.report, target: "_blank", rel: "noopener" }, "report");
      link.addEventListener("click", (event) => openReport(event, cycle.report));
      report.append(link);
    }
    row.append(
      el("td", {}, cycle.finished ? new Date(cycle.finished).toLocaleString("en-GB") : "–"),
      el("td", {}, cycle.run_id),
      decision,
      el("td", {}, agreement),
      el("td", {}, fmt.count(cycle.examples)),
      el("td", {}, cycle.reasons.join("; ")),
      report,
    );
    return row;
  });
  document.querySelector("#cycles tbody").replaceChildren(...rows);
  document.getElementById("no-cycles").hidden = rows.length > 0;
}

// A report is behind the same key as the figures; a link cannot send it, so fetch it and open what came back.
async function openReport(event, url) {
  if (!sessionStorage.getItem(KEY)) return;
  event.preventDefault();
  const response = await fetch(url, { headers: headers() });
  if (!response.ok) {
    const body = await response.json().catch(() => ({}));
    document.getElementById("updated").textContent = "report: " + (body.error ? body.error.message : `HTTP ${response.status}`);
    return;
  }
  const blobUrl = URL.createObjectURL(new Blob([await response.text()], { type: "text/html" }));
  window.open(blobUrl, "_blank");
  setTimeout(() => URL.revokeObjectURL(blobUrl), 60000);
}

function drawChart(id, datasets, series, money) {
  const labels = series.map((point) => fmt.time(point.t));
  if (charts[id]) {
    charts[id].data.labels = labels;
    charts[id].data.datasets.forEach((set, i) => (set.data = datasets[i].data));
    charts[id].update("none");
    return;
  }
  charts[id] = new Chart(document.getElementById(id), {
    type: "line",
    data: { labels, datasets },
    options: {
      animation: false,
      maintainAspectRatio: false,
      interaction: { mode: "index", intersect: false },
      elements: { point: { radius: series.length > 40 ? 0 : 3 } },
      scales: { y: { beginAtZero: true, ticks: money ? { callback: (v) => fmt.usd(v) } : {} } },
    },
  });
}

function renderCharts(data) {
  const s = data.series;
  drawChart(
    "chart-answers",
    [
      { label: "student", data: s.map((p) => p.student_per_min), borderColor: "#2e7d32", backgroundColor: "#2e7d3240", fill: true },
      { label: "teacher", data: s.map((p) => p.teacher_per_min), borderColor: "#c62828", backgroundColor: "#c6282840", fill: true },
    ],
    s,
    false,
  );
  drawChart(
    "chart-cost",
    [
      { label: "Cascade", data: s.map((p) => p.cost_usd), borderColor: "#1565c0", backgroundColor: "#1565c040", fill: true },
      { label: "teacher-only", data: s.map((p) => p.teacher_only_cost_usd), borderColor: "#6d4c41", borderDash: [6, 4] },
    ],
    s,
    true,
  );
}

function render(data) {
  document.getElementById("gate").hidden = true;
  document.getElementById("content").hidden = false;
  for (const node of document.querySelectorAll("[data-figure]")) {
    const path = node.getAttribute("data-figure");
    if (path.startsWith("windows.")) continue;
    const value = get(data, path);
    node.textContent = value == null ? "–" : String(value);
  }
  for (const node of document.querySelectorAll("[data-state]")) {
    const state = get(data, `tiers.${node.getAttribute("data-state")}.state`) || "unknown";
    node.textContent = state.replace("_", " ");
    node.className = `state ${state}`;
  }
  renderWindows(data);
  renderLatency(data);
  renderCycles(data);
  renderCharts(data);
  document.getElementById("updated").textContent = "updated " + fmt.time(data.now);
  document.body.setAttribute("data-loaded", String(data.now));
}

async function poll() {
  try {
    const response = await fetch("/ui/data", { headers: headers() });
    const body = await response.json();
    if (response.ok) render(body);
    else if (response.status === 401) showGate("This page is behind the admin key (server.admin_key).", true);
    else showGate(body.error ? body.error.message : `HTTP ${response.status}`, false);
  } catch (error) {
    document.getElementById("updated").textContent = "gateway unreachable: " + error;
  }
}

document.getElementById("gate-form").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem(KEY, document.getElementById("gate-key").value);
  poll();
});

poll();
setInterval(poll, POLL_MS);
