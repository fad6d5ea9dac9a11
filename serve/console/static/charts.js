// Charts (Chart.js, vendored: vendor/VENDORED.md). Each canvas also records what it shows in its
// data attributes, so a reader without eyes (a test, a screen reader's inspector) can check it.

const charts = new Map();
const COLOURS = ["#2457c5", "#c5612f", "#2f9c6a", "#8a4fc5", "#c53f6a", "#4f8fc5", "#9c8a2f", "#5c6475"];

function draw(canvas, config) {
  charts.get(canvas)?.destroy();
  const chart = new window.Chart(canvas, {
    ...config,
    options: { animation: false, responsive: true, maintainAspectRatio: false, ...config.options },
  });
  charts.set(canvas, chart);
  return chart;
}

// Indices of the points no other point beats on both axes, where `signs` says which way is better
// (+1: higher, -1: lower) on each; sorted by x.
export function paretoFront(points, signs) {
  const better = (a, b) =>
    signs[0] * a.x >= signs[0] * b.x && signs[1] * a.y >= signs[1] * b.y && (a.x !== b.x || a.y !== b.y);
  return points
    .map((p, i) => i)
    .filter((i) => !points.some((q) => better(q, points[i])))
    .sort((a, b) => points[a].x - points[b].x);
}

export function scatter(canvas, candidates, xName, yName, vector, chosen) {
  const points = candidates
    .map((c, i) => ({ x: c.scores?.[xName], y: c.scores?.[yName], i }))
    .filter((p) => Number.isFinite(p.x) && Number.isFinite(p.y));
  const weight = (name) => (vector && vector[name]) || 0;
  const signs = [weight(xName) < 0 ? -1 : 1, weight(yName) < 0 ? -1 : 1];
  const front = paretoFront(points, signs).map((i) => points[i]);
  const picked = points.filter((p) => p.i === chosen);
  const datasets = [
    { label: "candidates", data: points, backgroundColor: COLOURS[0], pointRadius: 5 },
    { label: "Pareto front", data: front, showLine: true, borderColor: COLOURS[2], borderDash: [4, 3], pointRadius: 0 },
    { label: "chosen", data: picked, backgroundColor: "#c53f2f", pointStyle: "star", pointRadius: 12, borderColor: "#c53f2f" },
  ];
  const [dx, dy] = [weight(xName), weight(yName)];
  if (points.length && (dx || dy)) {
    // The direction, projected on the two axes, drawn from the candidates' centre.
    const span = (key) => Math.max(...points.map((p) => p[key])) - Math.min(...points.map((p) => p[key])) || 1;
    const cx = points.reduce((s, p) => s + p.x, 0) / points.length;
    const cy = points.reduce((s, p) => s + p.y, 0) / points.length;
    const length = 0.4 / Math.hypot(dx, dy);
    const tip = { x: cx + dx * length * span("x"), y: cy + dy * length * span("y") };
    const angle = (Math.atan2(dx, dy) * 180) / Math.PI; // the triangle points up at 0°
    datasets.push({
      label: "direction",
      data: [{ x: cx, y: cy }, tip],
      showLine: true,
      borderColor: COLOURS[1],
      pointStyle: ["circle", "triangle"],
      pointRadius: [0, 7],
      rotation: [0, angle],
      backgroundColor: COLOURS[1],
    });
  }
  Object.assign(canvas.dataset, {
    points: points.length,
    front: front.map((p) => p.i).join(","),
    chosen: picked.length ? chosen : "",
    direction: `${dx},${dy}`,
    axes: `${xName},${yName}`,
  });
  canvas.setAttribute("aria-label", `${points.length} candidates on ${xName} and ${yName}`);
  return draw(canvas, {
    type: "scatter",
    data: { datasets },
    options: {
      scales: { x: { title: { display: true, text: xName } }, y: { title: { display: true, text: yName } } },
      plugins: { legend: { position: "bottom" } },
    },
  });
}

export function usageBar(canvas, stageSeconds) {
  const stages = Object.entries(stageSeconds || {});
  canvas.dataset.stages = stages.map(([name, s]) => `${name}=${s.toFixed(3)}`).join(",");
  return draw(canvas, {
    type: "bar",
    data: {
      labels: ["seconds"],
      datasets: stages.map(([name, seconds], i) => ({ label: name, data: [seconds], backgroundColor: COLOURS[i] })),
    },
    options: {
      indexAxis: "y",
      scales: { x: { stacked: true, title: { display: true, text: "seconds per stage" } }, y: { stacked: true } },
      plugins: { legend: { position: "right" } },
    },
  });
}

const STACKED_TENANTS = 7; // the heaviest shown apart, the rest summed as "other tenants"

// `hours`: GET /v1/admin/usage's entries (tenant, hour, generated_tokens, …), of one tenant (`tenant`)
// or of every tenant (null): each hour's bar is stacked by tenant, the heaviest few apart.
export function usageOverTime(canvas, hours, tenant = null) {
  const labels = [...new Set(hours.map((h) => h.hour))].sort();
  const totals = new Map();
  for (const h of hours) totals.set(h.tenant, (totals.get(h.tenant) ?? 0) + h.generated_tokens);
  const ranked = [...totals.keys()].sort((a, b) => totals.get(b) - totals.get(a) || (a < b ? -1 : 1));
  const apart = ranked.length > STACKED_TENANTS + 1 ? ranked.slice(0, STACKED_TENANTS) : ranked;
  const series = new Map(apart.map((name) => [name, new Map()]));
  const rest = new Map();
  for (const h of hours) {
    const into = series.get(h.tenant) ?? rest;
    into.set(h.hour, (into.get(h.hour) ?? 0) + h.generated_tokens);
  }
  const named = [...apart].sort().map((name) => [name, series.get(name)]);
  if (rest.size) named.push(["other tenants", rest]);
  const datasets = named.map(([label, byHour], i) => ({
    label,
    backgroundColor: COLOURS[i % COLOURS.length],
    data: labels.map((hour) => byHour.get(hour) ?? 0),
  }));
  canvas.dataset.tenant = tenant ?? "";
  canvas.dataset.tenants = named.map(([label]) => label).join(",");
  canvas.dataset.hours = labels.length;
  canvas.dataset.tokens = hours.reduce((sum, h) => sum + h.generated_tokens, 0);
  return draw(canvas, {
    type: "bar",
    data: { labels: labels.map((h) => h.slice(0, 13).replace("T", " ") + "h"), datasets },
    options: {
      scales: { x: { stacked: true }, y: { stacked: true, title: { display: true, text: "generated tokens" } } },
      plugins: { legend: { position: "bottom" } },
    },
  });
}
