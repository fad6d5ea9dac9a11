// The console's entry: the key (this tab's session storage only), the two views, and their start.

import { key } from "./api.js";
import { $, say } from "./dom.js";
import { initAdmin, openAdmin } from "./admin.js";
import { initPlayground, loadObjectives } from "./playground.js";

function showKeyState() {
  say($("#key-state"), key.get() ? "A key is set for this tab." : "No key: paste one.", key.get() ? "good" : "");
}

function currentTab() {
  return document.querySelector(".tab[aria-selected=true]").dataset.tab;
}

async function refresh() {
  showKeyState();
  if (!key.get()) return;
  if (currentTab() === "admin") await openAdmin();
  try {
    await loadObjectives();
  } catch (error) {
    say($("#status"), `Objectives: ${error.message}`, "bad");
  }
}

function showTab(name) {
  for (const tab of document.querySelectorAll(".tab")) tab.setAttribute("aria-selected", String(tab.dataset.tab === name));
  for (const view of document.querySelectorAll(".view")) view.hidden = view.id !== name;
  if (name === "admin" && key.get()) openAdmin();
}

async function start() {
  $("#key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    key.set($("#key").value.trim());
    $("#key").value = ""; // not left in the page
    refresh();
  });
  $("#forget-key").addEventListener("click", () => {
    key.set(null);
    $("#admin-body").hidden = true;
    $("#new-key-text").textContent = ""; // a created key is not left in the page either
    $("#new-key").hidden = true;
    showKeyState();
  });
  for (const tab of document.querySelectorAll(".tab")) tab.addEventListener("click", () => showTab(tab.dataset.tab));
  initAdmin();
  await initPlayground();
  await refresh();
  document.body.dataset.ready = "true";
}

start();
