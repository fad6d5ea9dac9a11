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

// `hours`: GET /v1/admin/usage's entries (tenant, hour, generated_tokens, …).
export function usageOverTime(canvas, hours) {
  const labels = [...new Set(hours.map((h) => h.hour))].sort();
  const tenants = [...new Set(hours.map((h) => h.tenant))].sort();
  const datasets = tenants.map((tenant, i) => ({
    label: tenant,
    backgroundColor: COLOURS[i % COLOURS.length],
    data: labels.map((hour) => hours.find((h) => h.tenant === tenant && h.hour === hour)?.generated_tokens ?? 0),
  }));
  canvas.dataset.tenants = tenants.join(",");
  canvas.dataset.hours = labels.length;
  return draw(canvas, {
    type: "bar",
    data: { labels: labels.map((h) => h.slice(0, 13).replace("T", " ") + "h"), datasets },
    options: {
      scales: { x: { stacked: true }, y: { stacked: true, title: { display: true, text: "generated tokens" } } },
      plugins: { legend: { position: "bottom" } },
    },
  });
}
