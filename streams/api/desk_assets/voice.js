// keel Voice of the Customer board (/desk/voice): the topics of every contact in the window as
// a tag cloud (size by volume, green/red/orange by what most of them are, an arrow against the
// window before), live: GET /desk/voice/events sends the body of GET /voice after every change.
// Clicking a topic lists the customers behind it with their own words, and lets an agent tell
// everyone who complained what is being done (POST /voice/announcements).
// Plain JavaScript, no framework; everything shown is built with textContent, never innerHTML.
// The stream is read with fetch (it sends the token as a header, which an EventSource cannot).
"use strict";

const board = {
  window: "7d",
  data: null,          // the last body of GET /voice shown
  renders: 0,
  lastEventAt: 0,      // Date.now() when the stream last said anything
  counts: {},          // topic -> count shown, to highlight what moved
  topic: null,         // the topic open below the cloud
  controller: null,    // aborts the stream
  retryMs: 1000,
  liveHistory: [],
  announcements: [],   // answers of POST /voice/announcements, for the tests and the curious
};
window.keelVoice = board;

const TOKEN_KEY = "keel.token";
const AGENT_KEY = "keel.agent";
const KIND_WORD = { COMPLAINT: "complaints", COMPLIMENT: "compliments", IDEA: "ideas",
                    QUESTION: "questions", REQUEST: "requests" };

function $(id) { return document.getElementById(id); }

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function token() { return sessionStorage.getItem(TOKEN_KEY) || ""; }
function authHeaders(extra) {
  const t = token();
  return t ? { ...extra, Authorization: `Bearer ${t}` } : { ...extra };
}
function say(text) { $("message").textContent = text || ""; $("message").hidden = !text; }

function setLive(mode) {
  if (board.liveHistory[board.liveHistory.length - 1] !== mode) board.liveHistory.push(mode);
  const live = $("live");
  live.className = `live ${mode}`;
  $("live-text").textContent = { on: "live", reconnecting: "reconnecting…", idle: "not connected" }[mode];
}

function askForToken(text) {
  $("signin-why").textContent = text;
  $("signin").hidden = false;
  $("token").focus();
}

function pct(change) {
  if (change === null || change === undefined) return "none before";
  const p = Math.round(change * 100);
  return `${p > 0 ? "+" : ""}${p}%`;
}

function duration(s) {
  if (s === null || s === undefined) return "–";
  if (s < 3600) return `${Math.round(s / 60)} min`;
  if (s < 172800) return `${(s / 3600).toFixed(1)} h`;
  return `${(s / 86400).toFixed(1)} d`;
}

// -- drawing -----------------------------------------------------------------------------------

function render(data) {
  board.data = data;
  board.renders += 1;
  const t = data.total;
  $("summary").replaceChildren(
    el("div", { class: "stat" }, el("b", { text: t.count }), `contacts (${pct(t.change)})`),
    ...["COMPLAINT", "COMPLIMENT", "IDEA"].map((k) => el("div", { class: `stat k-${k}` },
      el("b", { text: data.kinds[k].count }), KIND_WORD[k])),
    el("div", { class: "stat k-COMPLAINT" }, el("b", { text: t.open_complaints }), "open complaints"),
    el("div", { class: "stat" }, el("b", { text: duration(t.median_resolve_s) }), "median time to resolve"),
  );
  const max = Math.max(1, ...data.topics.map((r) => r.count));
  const items = data.topics.filter((r) => r.count > 0 || r.previous > 0).map((r) => {
    const size = 0.9 + 2.6 * Math.sqrt(r.count / max);
    const fresh = board.counts[r.topic] !== undefined && board.counts[r.topic] !== r.count;
    // The visible words lead the accessible name (axe: label-content-name-mismatch); the rest
    // is read out from a visually hidden span, and shown as the tooltip.
    const more = ` contacts, ${r.kinds.COMPLAINT} complaints, ${r.kinds.COMPLIMENT} compliments, ` +
      `${r.kinds.IDEA} ideas; ${pct(r.change)} against the window before`;
    const button = el("button", {
      type: "button", class: `k-${r.kind} trend-${r.trend}${fresh ? " fresh" : ""}`,
      style: `font-size:${size.toFixed(2)}em`, "data-topic": r.topic, "data-count": r.count,
      title: `${r.topic}: ${r.count}${more}`,
    }, r.topic, el("span", { class: "n", text: r.count }), el("span", { class: "sr-only", text: more }));
    button.addEventListener("click", () => openTopic(r.topic));
    return el("li", {}, button);
  });
  const open = board.topic && data.topics.find((r) => r.topic === board.topic);
  const openMoved = board.topic && (open ? open.count : 0) !== (board.counts[board.topic] ?? 0);
  board.counts = Object.fromEntries(data.topics.map((r) => [r.topic, r.count]));
  $("cloud").replaceChildren(...(items.length ? items : [el("li", { class: "muted", text: "no contacts in this window yet" })]));
  const list = (rows) => rows.slice(0, 8).map((r) => el("li", { class: `k-${dominant(r)}` },
    el("span", { text: r.name }), el("span", { text: `${r.count} (${pct(r.change)})` })));
  $("products").replaceChildren(...list(data.products));
  $("channels").replaceChildren(...list(data.channels));
  if (board.topic) showTopicStats();
  if (openMoved) loadVoices(board.topic);  // the open topic's list follows the board live
}

function dominant(r) {
  return Object.entries(r.kinds).sort((a, b) => b[1] - a[1])[0][0];
}

function showTopicStats() {
  const r = (board.data?.topics || []).find((x) => x.topic === board.topic);
  $("topic-stats").textContent = r
    ? `${r.count} contacts in the window (${pct(r.change)}): ${r.kinds.COMPLAINT} complaints ` +
      `(${r.open_complaints} open), ${r.kinds.COMPLIMENT} compliments, ${r.kinds.IDEA} ideas, ` +
      `${r.kinds.QUESTION + r.kinds.REQUEST} questions and requests; median time to resolve ${duration(r.median_resolve_s)}.`
    : "no contacts in this window";
}

async function openTopic(topic) {
  board.topic = topic;
  $("topic").hidden = false;
  $("topic-h").textContent = topic;
  $("announce-result").textContent = "";
  showTopicStats();
  await loadVoices(topic);
  $("topic").scrollIntoView({ block: "nearest" });
}

// The customers behind ``topic`` with their own words (GET /voice/customers).
async function loadVoices(topic) {
  const q = `topic=${encodeURIComponent(topic)}&window=${board.window}`;
  const resp = await fetch(`/voice/customers?${q}`, { headers: authHeaders() });
  if (!resp.ok) { say(`the customers behind ${topic}: ${resp.status}`); return; }
  const body = await resp.json();
  if (board.topic !== topic) return;
  const rows = body.customers.flatMap((c) => c.contacts.map((k) => el("li", { class: `k-${k.kind}`, "data-customer": c.customer_id },
    el("q", { text: k.words || "(no words)" }),
    el("div", { class: "meta" },
      el("a", { href: `/desk/?customer=${encodeURIComponent(c.customer_id)}`, text: c.customer_id }),
      ` · ${k.kind.toLowerCase()} · ${k.channel.toLowerCase()} · ${new Date(k.opened_at).toISOString().slice(0, 16).replace("T", " ")} UTC`,
      k.open ? " · open" : " · resolved",
      k.tagged ? " · topic from its words" : "",
      k.skus.length ? ` · ${k.skus.join(", ")}` : "",
      c.reachable ? "" : " · no e-mail or phone"))));
  $("voices").replaceChildren(...rows);
  board.voicesLoaded = (board.voicesLoaded || 0) + 1;
}

async function sendAnnouncement(event) {
  event.preventDefault();
  const agent = $("agent").value.trim();
  if (!agent) { $("agent").focus(); $("announce-result").textContent = "who are you? (Agent, top right)"; return; }
  sessionStorage.setItem(AGENT_KEY, agent);
  const text = $("announce-text").value.trim();
  const body = { announcement_id: crypto.randomUUID(), topic: board.topic, window: board.window,
                 kind: "COMPLAINT", text };
  const resp = await fetch("/voice/announcements", {
    method: "POST", body: JSON.stringify(body),
    headers: authHeaders({ "Content-Type": "application/json", "X-Keel-Agent": agent }),
  });
  const answer = await resp.json();
  board.announcements.push({ status: resp.status, ...answer });
  $("announce-result").textContent = resp.status === 202
    ? `sent to ${answer.sent} customer(s) (${resp.status})` +
      (answer.skipped.no_contact_identifier ? `; ${answer.skipped.no_contact_identifier} skipped: no e-mail or phone` : "")
    : `not sent (${resp.status}): ${answer.error}`;
  if (resp.status === 202) $("announce-text").value = "";
}

// -- the live stream ---------------------------------------------------------------------------

async function connect() {
  if (board.controller) board.controller.abort();
  const controller = new AbortController();
  board.controller = controller;
  let resp;
  try {
    resp = await fetch(`/desk/voice/events?window=${board.window}`,
                       { headers: authHeaders(), signal: controller.signal });
  } catch (e) { return retryLater(controller); }
  if (resp.status === 401 || resp.status === 403) {
    setLive("idle");
    return askForToken(resp.status === 401 ? "keel needs an access token to show the board." : "this token may not read the board.");
  }
  if (!resp.ok) return retryLater(controller);
  const reader = resp.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  setLive("on");
  board.retryMs = 1000;
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const chunk = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        board.lastEventAt = Date.now();
        let name = "message", data = "";
        for (const line of chunk.split("\n")) {
          if (line.startsWith("event: ")) name = line.slice(7);
          else if (line.startsWith("data: ")) data += line.slice(6);
        }
        if (name === "voice") render(JSON.parse(data));
      }
    }
  } catch (e) { /* aborted or dropped */ }
  retryLater(controller);
}

function retryLater(controller) {
  if (board.controller !== controller || controller.signal.aborted) return;
  setLive("reconnecting");
  setTimeout(() => { if (board.controller === controller) connect(); }, board.retryMs);
  board.retryMs = Math.min(board.retryMs * 2, 10000);
}

// -- start -------------------------------------------------------------------------------------

function start() {
  const hash = new URLSearchParams(location.hash.slice(1));
  if (hash.get("token")) {
    sessionStorage.setItem(TOKEN_KEY, hash.get("token"));
    history.replaceState(null, "", location.pathname + location.search);
  }
  const params = new URLSearchParams(location.search);
  if (params.get("window")) board.window = params.get("window");
  for (const b of document.querySelectorAll("[data-window]")) {
    b.setAttribute("aria-pressed", String(b.dataset.window === board.window));
    b.addEventListener("click", () => {
      board.window = b.dataset.window;
      for (const o of document.querySelectorAll("[data-window]")) o.setAttribute("aria-pressed", String(o === b));
      board.counts = {};
      connect();
      if (board.topic) openTopic(board.topic);
    });
  }
  $("agent").value = sessionStorage.getItem(AGENT_KEY) || "";
  $("agent-form").addEventListener("submit", (e) => e.preventDefault());
  $("signin-form").addEventListener("submit", (e) => {
    e.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("token").value.trim());
    $("token").value = "";
    $("signin").hidden = true;
    connect();
  });
  $("topic-close").addEventListener("click", () => { board.topic = null; $("topic").hidden = true; });
  $("announce").addEventListener("submit", sendAnnouncement);
  if (!token()) askForToken("keel needs an access token to show the board.");
  else connect();
}

start();
