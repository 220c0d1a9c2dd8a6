// Warren dashboard: the traffic charts of a group's page (SVG, no library).
// Part of app.js; see core.js.

/* ------------------------------------------------------------------ traffic charts */

/**
 * Per-app traffic charts for the chosen range. History comes from the server
 * once per range; while the 1 h range is shown, the byte differences of the
 * live feed are added to the current step so the chart moves with the feed.
 */
function chartState(page, groupName, container, select) {
  let range = "1h";
  let step = 60;
  let apps = [];
  const series = new Map(); // app -> Map(stepStart -> [in, out])
  const figures = new Map(); // app -> { fig, ... }
  let loaded = false;

  async function load() {
    const wanted = range;
    loaded = false;
    container.replaceChildren(h("p", { class: "loading" }, "Loading traffic…"));
    figures.clear();
    try {
      const res = await api("GET", `/api/groups/${enc(groupName)}/history?range=${wanted}`);
      if (!page.alive || wanted !== range) return;
      step = res.stepSeconds || 60;
      series.clear();
      for (const a of res.apps ?? []) {
        const m = new Map();
        for (const [t, bytesIn, bytesOut] of a.points) m.set(Math.floor(t / step) * step, [bytesIn, bytesOut]);
        series.set(a.app, m);
      }
      loaded = true;
      container.replaceChildren();
      render();
    } catch (err) {
      if (page.alive && wanted === range) container.replaceChildren(errorBox(err));
    }
  }

  function addLive(app, dIn, dOut) {
    if (!loaded || range !== "1h" || (!dIn && !dOut)) return;
    const t = Math.floor(Date.now() / 1000 / step) * step;
    if (!series.has(app)) series.set(app, new Map());
    const point = series.get(app).get(t) ?? [0, 0];
    series.get(app).set(t, [point[0] + dIn, point[1] + dOut]);
  }

  function setApps(names) {
    apps = names;
    if (loaded) render();
  }

  function render() {
    const count = Math.round(RANGE_SECONDS[range] / step);
    const end = Math.floor(Date.now() / 1000 / step) * step;
    const start = end - (count - 1) * step;
    for (const app of apps) {
      const m = series.get(app) ?? new Map();
      for (const t of m.keys()) if (t < start) m.delete(t); // old live points fall off the left
      const points = [];
      for (let t = start; t <= end; t += step) points.push(m.get(t) ?? [0, 0]);
      let fig = figures.get(app);
      if (!fig) figures.set(app, (fig = chartFigure(app)));
      drawChart(fig, app, points, step, range);
    }
    const figs = apps.map((a) => figures.get(a).el);
    for (const key of figures.keys()) if (!apps.includes(key)) figures.delete(key);
    if (!figs.length) container.replaceChildren(h("p", { class: "empty" }, "No apps, so no traffic."));
    else if (figs.some((el, i) => container.children[i] !== el) || container.children.length !== figs.length) container.replaceChildren(...figs);
  }

  select.addEventListener("change", () => { range = select.value; load(); });
  return { load, addLive, setApps };
}

const CHART_W = 600;
const CHART_H = 120;

function chartFigure(app) {
  const inArea = svg("path", { class: "area-in" });
  const outArea = svg("path", { class: "area-out" });
  const inLine = svg("path", { class: "line-in" });
  const outLine = svg("path", { class: "line-out" });
  const grid = [0.25, 0.5, 0.75].map((f) => svg("line", { class: "grid", x1: 0, x2: CHART_W, y1: CHART_H * f, y2: CHART_H * f }));
  const chart = svg("svg", { viewBox: `0 0 ${CHART_W} ${CHART_H}`, preserveAspectRatio: "none", role: "img", class: "chart" }, grid, outArea, inArea, outLine, inLine);
  const caption = h("figcaption", {});
  const peak = h("span", { class: "chart-peak" });
  const from = h("span");
  const el = h("figure", { class: "chart-figure", dataset: { app } }, caption, h("div", { class: "chart-box" }, peak, chart), h("div", { class: "chart-axis" }, from, h("span", {}, "now")));
  return { el, chart, caption, peak, from, inArea, outArea, inLine, outLine };
}

/** Draws in (bottom) and out (stacked above it) bytes per step, scaled to the peak. */
function drawChart(fig, app, points, step, range) {
  let totalIn = 0;
  let totalOut = 0;
  let max = 0;
  for (const [i, o] of points) { totalIn += i; totalOut += o; max = Math.max(max, i + o); }
  const scale = max > 0 ? (CHART_H - 4) / max : 0;
  const dx = points.length > 1 ? CHART_W / (points.length - 1) : CHART_W;
  const x = (i) => (i * dx).toFixed(1);
  const y = (v) => (CHART_H - v * scale).toFixed(1);
  const line = (f) => points.map((p, i) => `${i ? "L" : "M"}${x(i)},${y(f(p))}`).join("");
  const area = (top, bottom) => `${line(top)}${points.map((p, i) => `L${x(points.length - 1 - i)},${y(bottom(points[points.length - 1 - i]))}`).join("")}Z`;
  fig.inArea.setAttribute("d", area((p) => p[0], () => 0));
  fig.outArea.setAttribute("d", area((p) => p[0] + p[1], (p) => p[0]));
  fig.inLine.setAttribute("d", line((p) => p[0]));
  fig.outLine.setAttribute("d", line((p) => p[0] + p[1]));
  const summary = `in ${formatBytes(totalIn)}, out ${formatBytes(totalOut)} in the ${RANGES[range]}`;
  fig.chart.setAttribute("aria-label", `Traffic of app ${app}: ${summary}`);
  fig.caption.replaceChildren(h("strong", {}, app), ` — ${summary}`);
  setText(fig.peak, max ? `peak ${formatRate(max / step)}` : "no traffic");
  setText(fig.from, range === "30d" ? "30 d ago" : range === "24h" ? "24 h ago" : "60 min ago");
}

