// The playground: a conversation, a direction (one slider per objective), a search, checks and a
// budget; the answer streams in, then its scores, verdict, candidates, a scatter plot and the usage.

import { ApiError, call, publicJson, root, stream } from "./api.js";
import { $, el, fill, number, say, table } from "./dom.js";
import { scatter, usageBar } from "./charts.js";
import { snippet } from "./snippets.js";

let objectives = [];
let strategies = {};
let lastResponse = null;
let lastVector = null;
let controller = null;
let snippetKind = "curl";

export async function initPlayground() {
  strategies = await publicJson("console/strategies.json");
  fill($("#strategy"), Object.keys(strategies).map((name) => el("option", { value: name }, name)));
  $("#strategy").addEventListener("change", () => {
    renderParams();
    showSnippet();
  });
  renderParams();
  $("#request-form").addEventListener("submit", (event) => {
    event.preventDefault();
    send();
  });
  $("#request-form").addEventListener("input", showSnippet);
  $("#stop").addEventListener("click", () => controller?.abort());
  for (const axis of ["#axis-x", "#axis-y"]) $(axis).addEventListener("change", redrawScatter);
  for (const button of document.querySelectorAll(".snippet")) {
    button.addEventListener("click", () => {
      snippetKind = button.dataset.snippet;
      showSnippet();
    });
  }
  $("#copy").addEventListener("click", copySnippet);
  showSnippet();
}

// Needs a key: the objectives are the served ones.
export async function loadObjectives() {
  ({ objectives } = await call("GET", "v1/objectives"));
  fill(
    $("#sliders"),
    objectives.map((objective) => {
      const output = el("output", {}, "0.00");
      const input = el("input", {
        type: "range", min: -1, max: 1, step: 0.05, value: 0,
        "aria-label": objective.name, dataset: { objective: objective.name },
      });
      input.addEventListener("input", () => {
        output.textContent = Number(input.value).toFixed(2);
        showVector();
      });
      return el("div", { class: "slider", title: objective.description }, el("span", {}, objective.name), input, output);
    }),
  );
  const names = objectives.map((o) => o.name);
  for (const [axis, index] of [["#axis-x", 0], ["#axis-y", 1]]) {
    fill($(axis), names.map((name) => el("option", { value: name }, name)));
    $(axis).value = names[Math.min(index, names.length - 1)] ?? "";
  }
  showVector();
}

function renderParams() {
  const params = strategies[$("#strategy").value] || {};
  fill(
    $("#strategy-params"),
    Object.entries(params).map(([name, spec]) => {
      const title = spec.description || "";
      if (spec.type === "boolean") {
        const checked = spec.default === true;
        return el("label", { title }, el("input", { type: "checkbox", dataset: { param: name, default: checked }, checked }), ` ${name}`);
      }
      const step = spec.type === "integer" ? 1 : "any";
      // min and max are inclusive in a form; an exclusive bound (temperature > 0) is checked when sent.
      const bounds = { min: spec.minimum, max: spec.maximum };
      return el("label", { title }, `${name} `, el("input", { type: "number", step, ...bounds, placeholder: String(spec.default ?? ""), dataset: { param: name } }));
    }),
  );
}

// The unit vector the sliders make (null: every slider at 0), rounded as it is sent.
function direction() {
  const weights = [...document.querySelectorAll("#sliders input")]
    .map((input) => [input.dataset.objective, Number(input.value)])
    .filter(([, w]) => w !== 0);
  const norm = Math.hypot(...weights.map(([, w]) => w));
  if (!norm) return null;
  return Object.fromEntries(weights.map(([name, w]) => [name, Math.round((w / norm) * 1e4) / 1e4]));
}

function showVector() {
  const vector = direction();
  $("#vector").textContent = vector ? JSON.stringify(vector) : "no preference_vector";
  showSnippet();
}

function numberField(id) {
  const text = $(id).value.trim();
  return text === "" ? undefined : Number(text);
}

// A strategy parameter's number, checked against its schema's bounds: the server refuses it anyway
// (400 naming the field), but the form says so before anything is sent.
function paramValue(field, text, spec) {
  const value = Number(text);
  const fails = [
    [!Number.isFinite(value), "a number"],
    [spec.type === "integer" && !Number.isInteger(value), "an integer"],
    [spec.minimum !== undefined && value < spec.minimum, `at least ${spec.minimum}`],
    [spec.maximum !== undefined && value > spec.maximum, `at most ${spec.maximum}`],
    [spec.exclusiveMinimum !== undefined && value <= spec.exclusiveMinimum, `greater than ${spec.exclusiveMinimum}`],
    [spec.exclusiveMaximum !== undefined && value >= spec.exclusiveMaximum, `less than ${spec.exclusiveMaximum}`],
  ].filter(([failed]) => failed);
  if (fails.length) throw new Error(`${field} must be ${fails.map(([, what]) => what).join(" and ")}, got ${text.trim()}`);
  return value;
}

export function buildRequest() {
  const messages = [];
  const system = $("#system").value.trim();
  if (system) messages.push({ role: "system", content: system });
  messages.push({ role: "user", content: $("#user").value });
  const body = { messages, stream: true, return_candidates: true };
  const preferences = $("#preferences").value.trim();
  if (preferences) body.preferences = preferences;
  const vector = direction();
  if (vector) body.preference_vector = vector;
  const strategy = $("#strategy").value;
  const search = { strategy };
  for (const input of document.querySelectorAll("#strategy-params input")) {
    const name = input.dataset.param;
    if (input.type === "checkbox") {
      if (String(input.checked) !== input.dataset.default) search[name] = input.checked; // unchecked sends false
    } else if (input.value.trim() !== "") {
      search[name] = paramValue(`search.${name}`, input.value, strategies[strategy]?.[name] ?? {});
    }
  }
  body.search = search;
  const checks = $("#checks").value.trim();
  if (checks) {
    try {
      body.checks = JSON.parse(checks);
    } catch (error) {
      throw new Error(`checks: not JSON (${error.message})`);
    }
  }
  for (const field of ["max_tokens", "temperature", "seed"]) {
    const value = numberField(`#${field}`);
    if (value !== undefined) body[field] = value;
  }
  const budget = {};
  for (const field of ["max_candidate_tokens", "max_reward_calls", "deadline_ms"]) {
    const value = numberField(`#budget-${field}`);
    if (value !== undefined) budget[field] = value;
  }
  if (Object.keys(budget).length) body.budget = budget;
  return body;
}

async function send() {
  let body;
  try {
    body = buildRequest();
  } catch (error) {
    say($("#status"), error.message, "bad");
    return;
  }
  lastVector = body.preference_vector ?? null;
  controller = new AbortController();
  $("#send").disabled = true;
  $("#stop").disabled = false;
  fill($("#answer"));
  clearResult();
  say($("#status"), "Streaming…");
  const started = performance.now();
  try {
    let finished = false;
    for await (const { event, data } of stream("v1/generate", body, controller.signal)) {
      if (event === "delta" || event === "chunk") $("#answer").append(document.createTextNode(data.text));
      else if (event === "done") {
        finished = true;
        showResponse(data.response);
      } else if (event === "error") throw new ApiError("stream", data.error);
    }
    if (!finished) throw new Error("The stream closed before the answer was complete (no done event): the text above is partial.");
    say($("#status"), `Done in ${((performance.now() - started) / 1000).toFixed(1)} s`, "good");
  } catch (error) {
    say($("#status"), error.name === "AbortError" ? "Stopped: the server cancels the search." : error.message, error.name === "AbortError" ? "" : "bad");
  } finally {
    $("#send").disabled = false;
    $("#stop").disabled = true;
    controller = null;
  }
}

function clearResult() {
  lastResponse = null;
  for (const id of ["#verdict", "#scores", "#usage-numbers", "#candidates"]) fill($(id));
  delete $("#result").dataset.done;
}

function chosenIndex(response) {
  return (response.candidates || []).findIndex((c) => c.text === response.text);
}

function showResponse(response) {
  lastResponse = response;
  $("#answer").textContent = response.text;
  const safety = response.safety;
  say(
    $("#verdict"),
    `finish: ${response.finish_reason} · ` +
      (safety?.version ? `safety config v${safety.version}: ${safety.verdict ?? "no thresholds"}` : "no safety config"),
    safety?.verdict === "refused" || safety?.verdict === "flagged" ? "bad" : "",
  );
  const scoreRows = Object.entries(response.scores || {}).map(([name, value]) =>
    el("tr", {}, el("td", {}, name), el("td", { class: "num" }, number(value))),
  );
  if (response.combined_score !== null && response.combined_score !== undefined) {
    scoreRows.push(el("tr", {}, el("td", {}, "combined"), el("td", { class: "num" }, number(response.combined_score))));
  }
  if (response.feasible !== null && response.feasible !== undefined) {
    scoreRows.push(el("tr", {}, el("td", {}, "feasible"), el("td", {}, String(response.feasible))));
  }
  table($("#scores"), ["objective", "score"], scoreRows);
  const usage = response.usage;
  const count = (n, one, many) => `${n} ${n === 1 ? one : many}`;
  $("#usage-numbers").textContent =
    [
      count(usage.generated_tokens, "token generated", "tokens generated"),
      count(usage.reward_calls, "reward call", "reward calls"),
      count(usage.rounds, "round", "rounds"),
      count(usage.candidates, "candidate", "candidates"),
      `${usage.wall_time_s.toFixed(2)} s`,
    ].join(" · ") + (usage.stopped_by ? ` · stopped by ${usage.stopped_by}` : "");
  usageBar($("#usage-chart"), usage.stage_seconds);
  showCandidates(response);
  pickScoredAxes(response);
  redrawScatter();
  $("#result").dataset.done = "true";
}

function showCandidates(response) {
  const candidates = response.candidates || [];
  const names = [...new Set(candidates.flatMap((c) => Object.keys(c.scores || {})))];
  const chosen = chosenIndex(response);
  table(
    $("#candidates"),
    ["#", "chosen", "text", "tokens", "combined", ...names, "feasible", "checks"],
    candidates.map((c, i) =>
      el(
        "tr",
        { class: i === chosen ? "chosen" : "" },
        el("td", { class: "num" }, i + 1),
        el("td", {}, i === chosen ? "✓" : ""),
        el("td", {}, el("pre", {}, c.text)),
        el("td", { class: "num" }, c.tokens),
        el("td", { class: "num" }, number(c.combined_score)),
        names.map((name) => el("td", { class: "num" }, number(c.scores?.[name]))),
        el("td", {}, c.feasible === null || c.feasible === undefined ? "—" : String(c.feasible)),
        el("td", {}, c.checks ? `${c.checks.filter(Boolean).length}/${c.checks.length}` : "—"),
      ),
    ),
  );
}

// Axes on objectives the candidates were scored on (only the direction's and the constraints' are),
// unless the user's choice already is.
function pickScoredAxes(response) {
  const scored = [...new Set((response.candidates || []).flatMap((c) => Object.keys(c.scores || {})))];
  const axes = ["#axis-x", "#axis-y"];
  if (scored.length === 0 || axes.every((axis) => scored.includes($(axis).value))) return;
  axes.forEach((axis, i) => ($(axis).value = scored[Math.min(i, scored.length - 1)]));
}

function redrawScatter() {
  if (!lastResponse) return;
  scatter($("#scatter"), lastResponse.candidates || [], $("#axis-x").value, $("#axis-y").value, lastVector, chosenIndex(lastResponse));
}

function showSnippet() {
  let text;
  try {
    text = snippet(snippetKind, buildRequest(), location.origin + root);
  } catch (error) {
    text = error.message;
  }
  $("#snippet").textContent = text;
  $("#snippet").dataset.kind = snippetKind;
}

async function copySnippet() {
  const text = $("#snippet").textContent;
  try {
    await navigator.clipboard.writeText(text);
    say($("#status"), `Copied the ${snippetKind} request.`, "good");
  } catch {
    // No clipboard (a page not served over HTTPS or localhost): select it for Ctrl+C instead.
    getSelection().selectAllChildren($("#snippet"));
    say($("#status"), "Selected: press Ctrl+C to copy.");
  }
}
