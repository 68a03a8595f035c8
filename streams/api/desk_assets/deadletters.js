// keel dead letters (/desk/deadletters): the queue an operator works through. Lists the letters
// (GET /deadletters with filters), shows one (headers, the value as JSON and hex), replays it or
// marks it handled with a note (POST /deadletters/{p:o}/replay|handled). Admin role. Plain
// JavaScript; everything shown is built with textContent, never innerHTML.
"use strict";

const TOKEN_KEY = "keel.token";
const AGENT_KEY = "keel.agent";
const queue = { open: null, loads: 0 };
window.keelDeadLetters = queue;

function $(id) { return document.getElementById(id); }

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function token() { return sessionStorage.getItem(TOKEN_KEY) || ""; }
function headers(extra) {
  const t = token();
  const agent = $("agent").value.trim();
  return { ...extra, ...(t ? { Authorization: `Bearer ${t}` } : {}),
           ...(agent ? { "X-Keel-Agent": agent } : {}) };
}
function say(text) { $("message").textContent = text || ""; $("message").hidden = !text; }

function askForToken(why) {
  $("signin-why").textContent = why;
  $("signin").hidden = false;
  $("token").focus();
}

async function call(url, init) {
  const resp = await fetch(url, { ...init, headers: headers(init && init.headers) });
  if (resp.status === 401 || resp.status === 403) {
    askForToken(resp.status === 401 ? "The dead letters need an operator's (admin) token."
                                     : "This token may not work through dead letters: sign in with an admin token.");
    return null;
  }
  let body = null;
  try { body = await resp.json(); } catch (e) { /* reported below */ }
  if (!resp.ok) { say((body && body.error) || `HTTP ${resp.status}`); return null; }
  return body;
}

async function load() {
  const params = new URLSearchParams();
  for (const name of ["status", "topic", "reason", "since"]) {
    const value = $(`f-${name}`).value.trim();
    if (value) params.set(name, value);
  }
  $("count").textContent = "Reading the dead letters…";
  const body = await call(`/deadletters?${params}`);
  if (!body) { $("count").textContent = ""; return; }
  say("");
  $("rows").replaceChildren(...body.deadletters.map(row));
  $("count").textContent = `${body.deadletters.length} dead letter(s) (${params.get("status") || "open"}) in ${body.topic}.`;
  queue.loads += 1;
}

function statusText(d) {
  const parts = [d.status === "open" ? "open" : `${d.status} by ${d.by} ${d.at ? `at ${d.at}` : ""}`.trim()];
  if (d.note) parts.push(`“${d.note}”`);
  if (d.replay_of) parts.push(`replay of ${d.replay_of}`);
  if (d.replays.length) parts.push(`failed again as ${d.replays.join(", ")}`);
  return parts.join(" · ");
}

function row(d) {
  const open = el("button", { type: "button", class: "link", "data-position": d.position }, d.position);
  open.addEventListener("click", () => show(d.position));
  return el("tr", { "data-position": d.position, "data-status": d.status },
    el("td", {}, open), el("td", {}, d.source), el("td", {}, d.failed_at || ""),
    el("td", {}, d.reason), el("td", { class: "status" }, statusText(d)));
}

async function show(position) {
  const d = await call(`/deadletters/${encodeURIComponent(position)}`);
  if (!d) return;
  queue.open = position;
  $("letter").hidden = false;
  $("letter-h").textContent = `Letter ${d.position} from ${d.source}`;
  $("headers").replaceChildren(...Object.entries(d.headers).map(([k, v]) =>
    el("div", {}, el("dt", {}, k), el("dd", {}, v))),
    el("div", {}, el("dt", {}, "status"), el("dd", { id: "letter-status" }, statusText(d))));
  $("as-json").textContent = d.json === null ? "(not JSON, nor an Avro value of a known schema)"
                                             : JSON.stringify(d.json, null, 2);
  $("as-hex").textContent = d.hex || "(empty)";
  $("result").textContent = "";
  $("letter").scrollIntoView({ block: "nearest" });
}

async function act(action) {
  const position = queue.open;
  if (!position) return;
  if (!$("agent").value.trim()) { $("result").textContent = "Enter your name (Operator, top right) first."; $("agent").focus(); return; }
  const note = $("note").value.trim();
  if (action === "handled" && !note) { $("result").textContent = "Say why no replay is needed."; $("note").focus(); return; }
  const body = await call(`/deadletters/${encodeURIComponent(position)}/${action}`, {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ note }),
  });
  if (!body) return;
  $("result").textContent = action === "replay" ? `Replayed ${position} to ${body.to}.` : `Marked ${position} handled.`;
  await load();
}

function start() {
  const fragment = new URLSearchParams(location.hash.slice(1));
  if (fragment.get("token")) {
    sessionStorage.setItem(TOKEN_KEY, fragment.get("token"));
    history.replaceState(null, "", location.pathname + location.search);
  }
  $("agent").value = sessionStorage.getItem(AGENT_KEY) || "";
  $("agent").addEventListener("input", () => sessionStorage.setItem(AGENT_KEY, $("agent").value.trim()));
  $("agent-form").addEventListener("submit", (e) => e.preventDefault());
  $("signin-form").addEventListener("submit", (e) => {
    e.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("token").value.trim());
    $("token").value = "";
    $("signin").hidden = true;
    load();
  });
  $("filters").addEventListener("submit", (e) => { e.preventDefault(); load(); });
  $("replay").addEventListener("click", () => act("replay"));
  $("handled").addEventListener("click", () => act("handled"));
  if (!token()) askForToken("The dead letters need an operator's (admin) token.");
  else load();
}

document.addEventListener("DOMContentLoaded", start);
