// The admin view (an admin key): tenants and their keys, each tenant's safety config with its
// versions, a diff, activation and rollback with the expected version, its policy, the audit log,
// and usage over time. The server checks the admin key on every call; this page only says what it
// answered.

import { call } from "./api.js";
import { $, el, fill, say, table } from "./dom.js";
import { usageOverTime } from "./charts.js";
import { configLines, diffLines } from "./diff.js";

let tenant = null;
let versions = { active: null, versions: [] };
let policyVersion = null;

// A stored time (ISO 8601, UTC) to the minute, the whole of it on hover.
const moment = (at) => el("td", { title: at ?? "" }, at ? `${at.slice(0, 16).replace("T", " ")} UTC` : "");

const tenantPath = (name) => `v1/admin/tenants/${encodeURIComponent(name)}`;

export function initAdmin() {
  $("#create-key").addEventListener("submit", (event) => {
    event.preventDefault();
    createKey();
  });
  $("#hide-new-key").addEventListener("click", () => {
    $("#new-key-text").textContent = "";
    $("#new-key").hidden = true;
  });
  $("#tenant-form").addEventListener("submit", (event) => {
    event.preventDefault();
    openTenant($("#tenant-name").value.trim());
  });
  for (const select of ["#diff-a", "#diff-b"]) $(select).addEventListener("change", showDiff);
  $("#usage-tenant").addEventListener("change", showUsage);
  $("#put-config").addEventListener("click", putConfig);
  $("#put-policy").addEventListener("click", putPolicy);
}

export async function openAdmin() {
  const state = $("#admin-state");
  try {
    const { keys } = await call("GET", "v1/admin/keys");
    $("#admin-body").hidden = false;
    say(state, "Signed in with an admin key.", "good");
    showKeys(keys);
    showUsage();
  } catch (error) {
    $("#admin-body").hidden = true;
    const why =
      error.status === 403
        ? "This key is not an admin key: the server refuses the admin view."
        : error.status === 401
          ? "The server does not accept this key."
          : "The admin view could not be loaded.";
    say(state, `${why} (${error.message})`, "bad");
  }
}

function showKeys(keys) {
  const names = [...new Set(keys.map((k) => k.tenant))].sort();
  fill($("#tenant-names"), names.map((name) => el("option", { value: name })));
  // The tenant picked for the chart stays picked, keys or none (one opened before it had a key, one whose
  // keys were all revoked), so the select always names what the chart shows.
  const usageTenant = $("#usage-tenant");
  const picked = usageTenant.value;
  const choices = picked && !names.includes(picked) ? [...names, picked].sort() : names;
  fill(usageTenant, el("option", { value: "" }, "all tenants"), choices.map((name) => el("option", { value: name }, name)));
  usageTenant.value = picked;
  table(
    $("#keys"),
    ["id", "tenant", "admin", "created", "revoked", ""],
    keys.map((k) =>
      el(
        "tr",
        { dataset: { key: k.id } },
        el("td", {}, el("code", {}, k.id)),
        el("td", {}, k.tenant),
        el("td", {}, k.admin ? "admin" : ""),
        moment(k.created_at),
        moment(k.revoked_at),
        el("td", {}, el("button", { type: "button", disabled: Boolean(k.revoked_at), onclick: () => revoke(k) }, "Revoke")),
      ),
    ),
  );
}

async function refreshKeys() {
  showKeys((await call("GET", "v1/admin/keys")).keys);
}

async function createKey() {
  try {
    const created = await call("POST", "v1/admin/keys", { tenant: $("#new-tenant").value.trim(), admin: $("#new-admin").checked });
    $("#new-key-text").textContent = created.key;
    $("#new-key").hidden = false;
    say($("#admin-state"), `Created ${created.id} for ${created.tenant}.`, "good");
    await refreshKeys();
  } catch (error) {
    say($("#admin-state"), error.message, "bad");
  }
}

async function revoke({ id, tenant: owner, admin }) {
  const what = `${admin ? "the admin key" : "the key"} ${id} of tenant ${owner}`;
  // The browser's own dialog: no text of the page can answer it, and a stray click revokes nothing.
  if (!window.confirm(`Revoke ${what}? Every request with it is refused within a second. This cannot be undone.`)) {
    say($("#admin-state"), `Kept ${id}.`);
    return;
  }
  try {
    await call("DELETE", `v1/admin/keys/${encodeURIComponent(id)}`);
    say($("#admin-state"), `Revoked ${id}: refused everywhere within a second.`, "good");
    await refreshKeys();
  } catch (error) {
    say($("#admin-state"), error.message, "bad");
  }
}

let usageLoads = 0; // the latest showUsage call: an older one's answer is dropped

// Generated tokens per hour over the last 48 hours: of the tenant picked above the chart, or of all.
async function showUsage() {
  const load = ++usageLoads;
  const since = new Date(Date.now() - 48 * 3600 * 1000).toISOString().slice(0, 16);
  const picked = $("#usage-tenant").value;
  const query = `since=${encodeURIComponent(since)}` + (picked ? `&tenant=${encodeURIComponent(picked)}` : "");
  try {
    const usage = await call("GET", `v1/admin/usage?${query}`);
    if (load !== usageLoads) return;
    usageOverTime($("#usage-over-time"), usage.hours, picked || null);
  } catch (error) {
    if (load === usageLoads) say($("#admin-state"), `Usage: ${error.message}`, "bad");
  }
}

let loads = 0; // the latest openTenant call: an older one's answers are dropped

// Every read of tenant `name` first; only then does the view (and every action's target) switch to it,
// so no action can send one tenant's text to another, whatever order the answers come in. True when the
// view shows `name` at the end (false: a later call superseded this one, or a read failed).
async function openTenant(name) {
  const load = ++loads;
  const status = $("#tenant-status");
  $("#tenant-view").hidden = true;
  try {
    const path = tenantPath(name);
    const [safety, policy, safetyAudit, policyAudit] = await Promise.all([
      call("GET", `${path}/safety-config/versions`),
      call("GET", `${path}/policy/versions`),
      call("GET", `v1/admin/audit?tenant=${encodeURIComponent(name)}`),
      call("GET", `${path}/policy/audit`),
    ]);
    if (load !== loads) return false;
    tenant = name;
    versions = safety;
    showPolicy(policy);
    showAudit(safetyAudit.entries, policyAudit.entries);
    showVersions();
    $("#tenant-view").dataset.tenant = name;
    $("#tenant-view").hidden = false;
    const usageTenant = $("#usage-tenant");
    if (![...usageTenant.options].some((option) => option.value === name)) usageTenant.append(el("option", { value: name }, name));
    if (usageTenant.value !== name) {
      usageTenant.value = name;
      showUsage();
    }
    say(status, `Tenant ${name}.`);
    return true;
  } catch (error) {
    if (load !== loads) return false;
    tenant = null;
    say(status, error.message, "bad");
    return false;
  }
}

function showVersions() {
  const active = versions.active;
  const list = versions.versions;
  table(
    $("#versions"),
    ["version", "created", "by", "content", ""],
    list.map((v) =>
      el(
        "tr",
        { class: v.version === active ? "chosen" : "", dataset: { version: v.version } },
        el("td", { class: "num" }, v.version, v.version === active ? " (active)" : ""),
        moment(v.created_at),
        el("td", {}, v.created_by ?? ""),
        el("td", {}, el("code", {}, v.content_hash.slice(0, 12))),
        el(
          "td",
          {},
          v.version === active
            ? ""
            : el("button", { type: "button", onclick: () => activate(v.version) }, versionAction(v.version, active)),
        ),
      ),
    ),
  );
  for (const [select, offset] of [["#diff-a", 2], ["#diff-b", 1]]) {
    fill($(select), list.map((v) => el("option", { value: v.version }, `v${v.version}`)));
    const pick = list[Math.max(0, list.length - offset)];
    if (pick) $(select).value = pick.version;
  }
  const current = list.find((v) => v.version === active);
  $("#config-text").value = JSON.stringify(current?.config ?? { text: "", thresholds: {}, action: "refuse" }, null, 2);
  showDiff();
}

function showDiff() {
  const find = (select) => versions.versions.find((v) => String(v.version) === $(select).value);
  const [a, b] = [find("#diff-a"), find("#diff-b")];
  const node = $("#diff");
  if (!a || !b) {
    fill(node, "No versions to compare.");
    return;
  }
  const lines = diffLines(configLines(a.config), configLines(b.config));
  fill(node, lines.map(([mark, line]) => el("span", { class: { "+": "add", "-": "del", " ": "" }[mark] }, `${mark} ${line}\n`)));
  node.dataset.changes = lines.filter(([mark]) => mark !== " ").length;
}

// An admin action on the tenant in view. Its name and the versions it expects are read before the call,
// so the answer is reported for that tenant whatever is opened meanwhile, and the view reloads only if no
// other tenant was asked for since (`loads`: the view may still show this one while the other loads); the
// view's buttons wait for the answer (a double click sends nothing twice).
async function onTenant(send) {
  const name = tenant;
  const opened = loads;
  const buttons = [...document.querySelectorAll("#tenant-view button")];
  for (const button of buttons) button.disabled = true;
  try {
    const done = await send(tenantPath(name), name);
    say($("#tenant-status"), done, "good");
    if (loads === opened) await openTenantKeepingStatus();
  } catch (error) {
    say($("#tenant-status"), `${name}: ${error.message}`, "bad"); // the edits stay in the box
  } finally {
    for (const button of buttons) button.disabled = false;
  }
}

function activate(version) {
  const expected_version = versions.active;
  return onTenant(async (path, name) => {
    await call("POST", `${path}/safety-config/activate`, { version, expected_version });
    return `Version ${version} of ${name}'s safety config is active (in force within a second).`;
  });
}

function putConfig() {
  let config;
  try {
    config = JSON.parse($("#config-text").value);
  } catch (error) {
    say($("#tenant-status"), `config: not JSON (${error.message})`, "bad");
    return;
  }
  const expected_version = versions.active;
  return onTenant(async (path, name) => {
    const stored = await call("PUT", `${path}/safety-config`, { config, expected_version });
    return `Stored and activated version ${stored.version} of ${name}'s safety config.`;
  });
}

function showPolicy({ active, versions: list }) {
  const current = list.find((v) => v.version === active);
  policyVersion = active;
  table(
    $("#policy-versions"),
    ["version", "created", "by", "content", ""],
    list.map((v) =>
      el(
        "tr",
        { class: v.version === active ? "chosen" : "", dataset: { version: v.version } },
        el("td", { class: "num" }, v.version, v.version === active ? " (active)" : ""),
        moment(v.created_at),
        el("td", {}, v.created_by ?? ""),
        el("td", {}, el("code", {}, v.content_hash.slice(0, 12))),
        el("td", {}, v.version === active ? "" : el("button", { type: "button", onclick: () => activatePolicy(v.version) }, versionAction(v.version, active))),
      ),
    ),
  );
  $("#policy-state").textContent = current
    ? `Policy version ${current.version} of ${list.length}, set ${current.created_at}.`
    : "No policy: the server's limits apply.";
  $("#policy-text").value = JSON.stringify(current?.policy ?? {}, null, 2);
}

const versionAction = (version, active) => (active !== null && version < active ? "Roll back to this" : "Activate");

function activatePolicy(version) {
  const expected_version = policyVersion;
  return onTenant(async (path, name) => {
    await call("POST", `${path}/policy/activate`, { version, expected_version });
    return `Version ${version} of ${name}'s policy is active (in force within a second).`;
  });
}

function putPolicy() {
  let policy;
  try {
    policy = JSON.parse($("#policy-text").value);
  } catch (error) {
    say($("#tenant-status"), `policy: not JSON (${error.message})`, "bad");
    return;
  }
  const expected_version = policyVersion;
  return onTenant(async (path, name) => {
    const stored = await call("PUT", `${path}/policy`, { policy, expected_version });
    return `Stored policy version ${stored.version} of ${name}.`;
  });
}

function showAudit(safety, policy) {
  const entries = [...safety.map((e) => ["safety config", e]), ...policy.map((e) => ["policy", e])].sort((a, b) =>
    a[1].at < b[1].at ? -1 : a[1].at > b[1].at ? 1 : 0,
  );
  table(
    $("#audit"),
    ["at", "what", "action", "from", "to", "by"],
    entries.map(([what, e]) =>
      el(
        "tr",
        { dataset: { action: e.action } },
        moment(e.at),
        el("td", {}, what),
        el("td", {}, e.action),
        el("td", { class: "num" }, e.old_version ?? ""),
        el("td", { class: "num" }, e.new_version ?? ""),
        el("td", {}, e.actor ?? ""),
      ),
    ),
  );
}

async function openTenantKeepingStatus() {
  const status = $("#tenant-status");
  const [text, kind] = [status.textContent, status.className];
  if (await openTenant(tenant)) say(status, text, kind);
}
