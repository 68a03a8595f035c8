// keel service desk: find a customer with the query API, then follow them live over
// Server-Sent Events (/desk/customers/{id}/events). Plain JavaScript, no framework, no
// downloads. Everything shown is built with textContent, never innerHTML. This file holds the
// page's state, search, live stream and the customer on screen; desk-find.js the directory
// typeahead, recent customers and keyboard, desk-history.js the history, desk-actions.js the
// commands and unmatched contacts (classic scripts, loaded in that order, sharing globals).
//
// Access token (streams/auth.py): asked once (the sign-in form, or /desk/#token=... — a URL
// fragment never reaches a server or its logs), kept in sessionStorage, sent as
// `Authorization: Bearer` on every lookup and command. An EventSource cannot send headers,
// so the token is also the cookie keel_token (Path=/desk/customers/, SameSite=Strict), which
// only the live stream accepts.
"use strict";

const desk = {
  config: { stale_after_s: 300, heartbeat_s: 15, signals: {} },
  source: null,        // the EventSource of the customer shown
  customerId: null,
  shown: null,         // the CustomerState on the screen
  version: null,
  seenNotes: null,     // note keys already shown (new ones are highlighted)
  lastHeard: 0,        // when the stream last said anything (state, absent or ping)
  retryMs: 1000,
  retryTimer: null,
  renders: 0,
  liveHistory: [],     // every change of the live indicator, oldest first
  actions: {},         // "order:o-1" / "contact:k-1" -> the command form's state (survives redraws)
  pending: null,       // [kind, q] of a search that waits for a sign-in
  cleared: [],         // signals seen going away while this customer was on screen
  searchSeq: 0,        // bumped by every search: an answer to an older one is dropped
  waitTimer: null,     // polls a lookup by e-mail/phone/order that found nobody yet
};
window.keelDesk = desk;  // for the browser tests and for curious people in the console

const OPEN_ORDER = new Set(["PLACED", "AMENDED"]);
const GOOD = new Set(["DELIVERED", "COMPLETED", "RESOLVED"]);
const BAD = new Set(["LOST", "DELAYED", "CANCELLED", "RETURNED"]);

function $(id) { return document.getElementById(id); }

// Children that are null, undefined or false are left out (never rendered as "null").
function present(children) {
  return children.flat().filter((c) => c !== null && c !== undefined && c !== false);
}

function fill(node, ...children) {
  node.replaceChildren(...present(children));
  return node;
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const child of present(children)) {
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

// -- time and money --------------------------------------------------------------------------

function ago(iso, now) {
  const ms = (now || Date.now()) - Date.parse(iso);
  const s = Math.round(Math.abs(ms) / 1000);
  let text;
  if (s < 60) text = `${s} s`;
  else if (s < 3600) text = `${Math.floor(s / 60)} min`;
  else if (s < 86400) text = `${Math.floor(s / 3600)} h`;
  else text = `${Math.floor(s / 86400)} d`;
  return ms >= 0 ? `${text} ago` : `in ${text}`;
}

function when(iso, extraClass) {
  if (!iso) return null;
  return el("time", { datetime: iso, "data-rel": "", class: extraClass,
                      title: new Date(iso).toLocaleString() }, ago(iso));
}

function money(cents, currency) {
  try {
    return new Intl.NumberFormat(undefined, { style: "currency", currency }).format(cents / 100);
  } catch (e) {
    return `${(cents / 100).toFixed(2)} ${currency}`;
  }
}

function badge(status) {
  const cls = GOOD.has(status) ? "badge good" : BAD.has(status) ? "badge bad"
    : (status === "OPEN" || OPEN_ORDER.has(status)) ? "badge open" : "badge";
  return el("span", { class: cls }, status.replaceAll("_", " "));
}

// -- the live indicator ----------------------------------------------------------------------

function setLive(mode) {
  if (desk.liveHistory[desk.liveHistory.length - 1] !== mode) desk.liveHistory.push(mode);
  const box = $("live");
  box.className = `live ${mode}`;
  $("live-text").textContent = { on: "live", reconnecting: "reconnecting…", idle: "not connected" }[mode];
}

// -- the access token ------------------------------------------------------------------------

const TOKEN_KEY = "keel.token";
const COOKIE = "keel_token";

function token() { return sessionStorage.getItem(TOKEN_KEY) || ""; }

function setToken(value) {
  value = (value || "").trim();
  const attrs = `; Path=/desk/customers/; SameSite=Strict${location.protocol === "https:" ? "; Secure" : ""}`;
  if (value) {
    sessionStorage.setItem(TOKEN_KEY, value);
    document.cookie = `${COOKIE}=${encodeURIComponent(value)}${attrs}`;
  } else {
    sessionStorage.removeItem(TOKEN_KEY);
    document.cookie = `${COOKIE}=${attrs}; Max-Age=0`;
  }
  $("signout").hidden = !value;
}

function authHeaders(extra) {
  const t = token();
  return t ? { ...extra, Authorization: `Bearer ${t}` } : { ...extra };
}

function askForToken(text) {
  $("signin-why").textContent = text;
  $("signin").hidden = false;
  $("token").focus();
}

function signIn(value) {
  setToken(value);
  $("token").value = "";
  $("signin").hidden = true;
  say("");
  const pending = desk.pending;
  desk.pending = null;
  if (pending) search(...pending);
  else if (desk.customerId) connect();
}

// -- search ----------------------------------------------------------------------------------

function say(text) {
  const m = $("message");
  m.textContent = text || "";
  m.hidden = !text;
}

function guessKind(q) {
  if (q.includes("@")) return "email";
  if (/^\+?[\d\s().\-/]+$/.test(q) && q.replace(/\D/g, "").length >= 6) return "phone";
  return null;  // a customer id, else an order id
}

async function lookup(kind, q) {
  const url = kind === "customer"
    ? `/customers/${encodeURIComponent(q)}`
    : `/customers?${kind}=${encodeURIComponent(q)}`;
  const resp = await fetch(url, { headers: authHeaders({ Accept: "application/json" }) });
  let body = null;
  try { body = await resp.json(); } catch (e) { /* not JSON: reported below */ }
  return { status: resp.status, body };
}

const KIND_NAME = { customer: "customer id", email: "e-mail", phone: "phone", order_id: "order id" };

// A new search first takes the previous customer off the screen and closes their live
// stream: after a failed search nothing of the last caller's customer may stay actionable.
function clearCustomer() {
  stopFollowing();
  hideSuggestions();
  clearTimeout(desk.waitTimer);
  desk.waitTimer = null;
  desk.shown = null;
  desk.version = null;
  desk.seenNotes = null;
  desk.actions = {};
  $("customer").hidden = true;
  for (const id of ["c-name", "c-ids", "signal-list", "sources", "orders", "contacts", "timeline"]) {
    fill($(id));
  }
  if (location.search) history.replaceState(null, "", location.pathname);
}

async function search(kind, q, waiting) {
  q = q.trim();
  if (!q) return;
  const seq = ++desk.searchSeq;
  if (!waiting) {
    clearCustomer();
    say("Searching…");
  }
  try {
    let tries = kind === "auto" ? [guessKind(q)].filter(Boolean) : [kind];
    if (!tries.length) tries = ["customer", "order_id"];
    let found = null;
    let last = null;
    for (const k of tries) {
      last = await lookup(k, q);
      if (seq !== desk.searchSeq) return;  // a newer search took over meanwhile
      if (last.status === 200) { found = last.body; break; }
      if (last.status !== 404) break;
    }
    if (found) {
      clearTimeout(desk.waitTimer);
      say("");
      show(found);
      follow(found.customer_id);
      history.replaceState(null, "", `?customer=${encodeURIComponent(found.customer_id)}`);
    } else if (last.status === 401) {
      say("");
      desk.pending = [kind, q];
      askForToken(token() ? "keel does not know this token (any more): sign in with another one."
                          : "keel needs an access token to show customers.");
    } else if (last.status === 403) {
      say("This token may not read customers (403): sign in with one that has the read or agent role.");
      desk.pending = [kind, q];
      askForToken("This token may not read customers.");
    } else if (last.status === 404) {
      const matches = kind === "auto" && !waiting ? await directory(q) : [];
      if (seq !== desk.searchSeq) return;
      if (matches.length === 1) {
        search("customer", matches[0].customer_id);
        return;
      }
      if (matches.length > 1) {
        say(`${matches.length} customers match “${q}”: choose one below.`);
        showSuggestions(matches, q);
        return;
      }
      waitFor(kind, q, tries, seq);
    } else if (last.status === 503) {
      say("keel is busy (a worker is starting or partitions are moving). Try again in a moment.");
    } else {
      say((last.body && last.body.error) || `The search failed (HTTP ${last.status}).`);
    }
  } catch (e) {
    if (seq === desk.searchSeq) say(`keel cannot be reached (${e.message}). Check the connection and try again.`);
  }
}

// Nobody found: keep watching, so the customer appears the moment their first event lands.
// A customer id is followed on the live stream (which says "absent" until then); an e-mail,
// phone or order id is looked up again every few seconds until found or a new search.
function waitFor(kind, q, tries, seq) {
  const what = `${tries.map((k) => KIND_NAME[k]).join(" or ")} “${q}”`;
  say(`No customer found for ${what}. Waiting: they appear here as soon as keel hears of them.`);
  if (tries.includes("customer") && desk.customerId !== q) follow(q, true);
  if (tries.some((k) => k !== "customer")) {
    desk.waitTimer = setTimeout(() => { if (seq === desk.searchSeq) search(kind, q, true); }, 3000);
  }
}

// -- the live stream -------------------------------------------------------------------------

function follow(customerId, waiting) {
  stopFollowing();
  desk.customerId = customerId;
  desk.waiting = Boolean(waiting);
  connect();
}

function stopFollowing() {
  if (desk.source) desk.source.close();
  clearTimeout(desk.retryTimer);
  desk.source = null;
  desk.customerId = null;
  setLive("idle");
}

function connect() {
  if (desk.source) desk.source.close();
  const id = desk.customerId;
  const es = new EventSource(`/desk/customers/${encodeURIComponent(id)}/events`);
  desk.source = es;
  desk.lastHeard = Date.now();
  setLive("reconnecting");
  const heard = () => { desk.lastHeard = Date.now(); };
  es.addEventListener("state", (e) => {
    if (desk.source !== es) return;  // a stream this page no longer follows
    heard();
    desk.retryMs = 1000;
    setLive("on");
    say("");
    desk.waiting = false;
    show(JSON.parse(e.data));
  });
  es.addEventListener("absent", () => {
    if (desk.source !== es) return;
    heard();
    setLive("on");
    if (!desk.waiting) {  // an erased customer: gone from the screen, not just hidden
      say(`Customer “${id}” is not known (any more). This page shows them as soon as they are.`);
    }
    desk.shown = null;
    $("customer").hidden = true;
  });
  es.addEventListener("ping", () => { heard(); setLive("on"); });
  es.addEventListener("error", () => {
    setLive("reconnecting");
    if (es.readyState === EventSource.CLOSED && desk.source === es) retryLater();
    // otherwise the browser reconnects by itself (the stream asked for `retry: 1000`)
  });
}

function retryLater() {
  clearTimeout(desk.retryTimer);
  desk.retryTimer = setTimeout(() => { if (desk.customerId) connect(); }, desk.retryMs);
  desk.retryMs = Math.min(desk.retryMs * 2, 10000);
}

// -- the customer on one screen --------------------------------------------------------------

function show(state) {
  const fresh = state.customer_id !== (desk.shown && desk.shown.customer_id);
  if (fresh) {
    desk.seenNotes = null;
    desk.cleared = [];
    remember(state);
  } else {
    announce(desk.shown, state);
    noteCleared(desk.shown, state);
  }
  desk.shown = state;
  desk.version = state.version;
  desk.renders += 1;
  $("help").hidden = true;
  $("customer").hidden = false;
  renderWho(state);
  renderStale(state);
  renderSources(state);
  if (fresh) desk.actions = {};
  redraw();
}

function idRow(label, value) {
  return el("div", {}, el("dt", {}, label), el("dd", {}, value));
}

function renderWho(s) {
  $("c-name").textContent = s.name || s.customer_id;
  fill($("c-ids"),
    idRow("Customer", el("span", { "data-field": "customer_id" }, s.customer_id)),
    s.emails.length ? idRow("E-mail", s.emails.join(", ")) : null,
    s.phones.length ? idRow("Phone", s.phones.join(", ")) : null,
    (s.linked || []).length ? idRow("Linked", el("ul", { class: "links" },
      s.linked.map((l) => el("li", { "data-link": l.customer_id },
        el("strong", {}, l.customer_id),
        ` via ${l.via.type === "EMAIL" ? "e-mail" : "phone"} ${l.via.value}, since `,
        when(l.since))))) : null,
    (s.identity_guards || []).length ? idRow("Not linked on", el("ul", { class: "links" },
      s.identity_guards.map((g) => el("li", { "data-guard": g.guard },
        `${g.via.value}: ${g.guard.toLowerCase()} — ${g.why}`)))) : null,
    idRow("Open", `${s.open_orders} order${s.open_orders === 1 ? "" : "s"}, ` +
                  `${s.open_contacts} contact${s.open_contacts === 1 ? "" : "s"}`),
    idRow("Spent", s.orders.length ? money(s.total_spent_cents, s.orders[0].currency) : "—"),
    idRow("Changed", el("span", {}, when(s.updated_at), ` (v${s.version})`)),
  );
}

// An answer from a copy (the customer's worker could not answer: partitions moving, a worker
// restarting): shown, with how old it may be; the live stream replaces it once the move is done.
function renderStale(s) {
  const box = $("stale");
  if (!s.stale) {
    box.hidden = true;
    fill(box);
    return;
  }
  fill(box, el("strong", {}, "May be out of date: "),
    "keel is moving this customer between its workers, so this is a copy holding every change " +
    "up to ", when(s.as_of), ". Changes since then may be missing; the page updates by itself " +
    "once the move is done.");
  box.hidden = false;
}

// A COMMAND_PENDING whose every command was asked by the agent at this desk: not an alarm.
function isMine(g) {
  const me = $("agent").value.trim();
  if (!me || g.type !== "COMMAND_PENDING" || !g.detail) return false;
  return g.detail.replace(/\.$/, "").split("; ").every((part) => part.includes(` asked by ${me} at `));
}

function signalRefs(g) {
  return [
    g.order_id && `order ${g.order_id}`,
    g.shipment_id && `parcel ${g.shipment_id}`,
    g.contact_id && `contact ${g.contact_id}`,
  ].filter(Boolean).join(" · ");
}

function signalItem(g) {
  if (isMine(g)) {
    return el("li", { class: "signal mine", "data-signal": g.type, "data-mine": "" },
      el("strong", {}, "Your request is on its way"),
      el("span", { class: "refs" }, " — asked ", when(g.raised_at)),
      el("p", { class: "explain" }, "You asked a department to act; its answer has not " +
        "arrived yet. Nothing to do but tell the customer it is requested."),
      el("p", { class: "refs" }, g.detail));
  }
  const refs = signalRefs(g);
  const help = desk.config.signals[g.type] || "";
  return el("li", { class: "signal", "data-signal": g.type },
    el("strong", {}, g.type.replaceAll("_", " ")),
    el("span", { class: "refs" }, refs ? ` — ${refs} · raised ` : " — raised ", when(g.raised_at)),
    help ? el("p", { class: "explain" }, help) : null,
    g.detail ? el("p", { class: "refs" }, g.detail) : null);
}

// Signals grouped by type: one row per type, several of a type folded into one collapsible
// row ("3 × DUPLICATE ORDER"), so twenty of them do not push the orders out of view.
function renderSignals(s) {
  const list = $("signal-list");
  if (!s.signals.length) {
    fill(list, el("li", { class: "none" }, "Nothing needs attention."));
    return;
  }
  const groups = new Map();
  for (const g of s.signals) {
    const key = isMine(g) ? "mine" : g.type;
    if (!groups.has(key)) groups.set(key, []);
    groups.get(key).push(g);
  }
  fill(list, [...groups.values()].map((gs) => {
    if (gs.length === 1) return signalItem(gs[0]);
    const type = gs[0].type;
    const help = desk.config.signals[type] || "";
    const newest = gs.map((g) => g.raised_at).sort().at(-1);
    return el("li", { class: isMine(gs[0]) ? "signal mine" : "signal", "data-signal": type,
                      "data-count": gs.length },
      el("details", {},
        el("summary", {}, el("strong", {}, `${gs.length} × ${type.replaceAll("_", " ")}`),
          el("span", { class: "refs" }, " — newest raised ", when(newest))),
        help ? el("p", { class: "explain" }, help) : null,
        el("ul", {}, gs.map((g) => el("li", { class: "refs" },
          signalRefs(g) || "this customer", " · raised ", when(g.raised_at),
          g.detail ? ` · ${g.detail}` : "")))));
  }));
}

// -- the clock: relative times and staleness (local only, nothing is fetched) ----------------

function tick() {
  const now = Date.now();
  for (const t of document.querySelectorAll("time[data-rel]")) {
    t.textContent = ago(t.getAttribute("datetime"), now);
  }
  const staleMs = desk.config.stale_after_s * 1000;
  for (const li of document.querySelectorAll(".source[data-at]")) {
    const stale = now - Date.parse(li.dataset.at) > staleMs;
    li.classList.toggle("stale", stale);
    li.querySelector(".stale-word").textContent = stale ? " — quiet" : "";
    li.title = `The newest event from ${li.dataset.source} about this customer, at ` +
      `${new Date(li.dataset.at).toLocaleString()}` + (stale ? `: nothing about them for longer ` +
      `than ${desk.config.stale_after_s} s, which for a customer is usually just quiet.` : ".");
  }
  const silentMs = 3 * desk.config.heartbeat_s * 1000;
  if (desk.source && desk.source.readyState === EventSource.OPEN && now - desk.lastHeard > silentMs) {
    setLive("reconnecting");  // the connection died without closing: start a fresh one
    connect();
  }
}

// -- start -----------------------------------------------------------------------------------

async function start() {
  const fragment = new URLSearchParams(location.hash.slice(1));
  if (fragment.get("token")) {  // /desk/#token=...: taken once, then out of the address bar
    setToken(fragment.get("token"));
    history.replaceState(null, "", location.pathname + location.search);
  } else {
    setToken(token());  // the cookie again, for this tab's token
  }
  $("signin-form").addEventListener("submit", (e) => {
    e.preventDefault();
    if ($("token").value.trim()) signIn($("token").value);
  });
  $("signout").addEventListener("click", () => {
    setToken("");
    stopFollowing();
    $("customer").hidden = true;
    desk.shown = null;
    askForToken("Signed out. Sign in with an access token to show customers.");
  });
  if (!token()) askForToken("keel needs an access token to show customers.");
  try {
    const resp = await fetch("/desk/config.json");
    if (resp.ok) desk.config = await resp.json();
  } catch (e) { /* keep the defaults */ }
  $("search").addEventListener("submit", (e) => {
    e.preventDefault();
    search($("q-kind").value, $("q").value);
  });
  const agent = $("agent");
  agent.value = sessionStorage.getItem(AGENT_KEY) || "";  // asked once per browser session
  agent.addEventListener("input", () => {
    sessionStorage.setItem(AGENT_KEY, agent.value.trim());
    agent.classList.toggle("missing", !agent.value.trim());
  });
  $("agent-form").addEventListener("submit", (e) => e.preventDefault());
  $("unmatched-load").addEventListener("click", loadUnmatched);
  document.addEventListener("keydown", onKey);
  $("q").addEventListener("input", onType);
  renderRecent();
  setInterval(tick, 1000);
  const params = new URLSearchParams(location.search);
  for (const [param, kind] of [["customer", "customer"], ["email", "email"], ["phone", "phone"],
                               ["order_id", "order_id"]]) {
    if (params.get(param)) {
      $("q").value = params.get(param);
      $("q-kind").value = kind;
      search(kind, params.get(param));
      break;
    }
  }
}

document.addEventListener("DOMContentLoaded", start);
