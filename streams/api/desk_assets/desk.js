// keel service desk: find a customer with the query API, then follow them live over
// Server-Sent Events (/desk/customers/{id}/events). Plain JavaScript, no framework, no
// downloads. Everything shown is built with textContent, never innerHTML.
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

// -- for screen readers and the keyboard ------------------------------------------------------

// Signals the page saw go away while it followed the customer (the state keeps no history of them).
function noteCleared(before, after) {
  const now = new Set(after.signals.map(signalKey));
  for (const g of before.signals) {
    if (!now.has(signalKey(g))) {
      const refs = signalRefs(g);
      desk.cleared.push({ at: new Date().toISOString(),
                          text: `${g.type.replaceAll("_", " ")}${refs ? ` (${refs})` : ""}` });
    }
  }
}

function signalKey(g) { return [g.type, g.order_id, g.shipment_id, g.contact_id].join("|"); }

// New orders and signals of the customer on screen, said through the polite live region.
function announce(before, after) {
  const orders = new Set(before.orders.map((o) => o.order_id));
  const signals = new Set(before.signals.map(signalKey));
  const said = [
    ...after.orders.filter((o) => !orders.has(o.order_id)).map((o) => `New order ${o.order_id}.`),
    ...after.signals.filter((g) => !signals.has(signalKey(g))).map((g) =>
      `New signal: ${g.type.replaceAll("_", " ")}${g.order_id ? ` (order ${g.order_id})` : ""}.`),
  ];
  if (said.length) $("announce").textContent = said.join(" ");
}

const RECENT_KEY = "keel.recent";
const RECENT_MAX = 8;

function recentCustomers() {
  try { return JSON.parse(sessionStorage.getItem(RECENT_KEY) || "[]"); } catch (e) { return []; }
}

function remember(state) {
  const entry = { id: state.customer_id, name: state.name || "" };
  const list = [entry, ...recentCustomers().filter((r) => r.id !== entry.id)].slice(0, RECENT_MAX);
  sessionStorage.setItem(RECENT_KEY, JSON.stringify(list));
  renderRecent();
}

function renderRecent() {
  const list = recentCustomers();
  $("recent").hidden = !list.length;
  fill($("recent-list"), list.map((r) => {
    const b = el("button", { type: "button", "data-customer": r.id,
                             "aria-label": `${r.name || r.id} (${r.id})` }, r.name || r.id);
    b.addEventListener("click", () => {
      $("q").value = r.id;
      search("customer", r.id);
    });
    return el("li", {}, b);
  }));
}

// -- the directory: typeahead by name, partial e-mail, phone, order id (GET /directory) -------

async function directory(q) {
  if (q.replace(/\s/g, "").length < 2) return [];
  try {
    const resp = await fetch(`/directory?q=${encodeURIComponent(q)}&limit=8`,
                             { headers: authHeaders({ Accept: "application/json" }) });
    if (!resp.ok) return [];  // no directory configured (503), or not answering: search by id
    return (await resp.json()).customers || [];
  } catch (e) {
    return [];
  }
}

function showSuggestions(matches, q) {
  $("suggest").hidden = !matches.length;
  $("suggest-hint").textContent = matches.length ? `Matching “${q}”:` : "";
  fill($("suggest-list"), matches.map((c) => {
    const about = [c.customer_id, c.emails[0], c.phones[0]].filter(Boolean).join(" · ");
    const b = el("button", { type: "button", "data-customer": c.customer_id },
      el("strong", {}, c.name || c.customer_id), ` ${about}`);
    b.addEventListener("click", () => {
      $("q").value = c.customer_id;
      search("customer", c.customer_id);
    });
    return el("li", {}, b);
  }));
}

function hideSuggestions() {
  $("suggest").hidden = true;
  fill($("suggest-list"));
}

let typeaheadTimer = null;
let typeaheadSeq = 0;

function onType() {
  clearTimeout(typeaheadTimer);
  const q = $("q").value.trim();
  if ($("q-kind").value !== "auto" || q.length < 2) { hideSuggestions(); return; }
  typeaheadTimer = setTimeout(async () => {
    const seq = ++typeaheadSeq;
    const matches = await directory(q);
    if (seq === typeaheadSeq && $("q").value.trim() === q) showSuggestions(matches, q);
  }, 200);
}

// `/` jumps to the search; Esc closes the open command form; arrow keys walk the matches
// (or, with none, the recent customers).
function onKey(e) {
  const t = e.target;
  const typing = t instanceof HTMLInputElement || t instanceof HTMLTextAreaElement
    || t instanceof HTMLSelectElement;
  if (e.key === "/" && !typing) {
    e.preventDefault();
    $("q").focus();
    $("q").select();
  } else if (e.key === "Escape") {
    const form = (t.closest && t.closest("form.command")) || document.querySelector("form.command");
    const back = form && form.querySelector("button.back");
    if (back) { e.preventDefault(); back.click(); }
  } else if (e.key === "ArrowDown" || e.key === "ArrowUp") {
    const list = $("suggest").hidden ? "#recent-list" : "#suggest-list";
    const items = [...document.querySelectorAll(`${list} button`)];
    const at = items.indexOf(t);
    if (t === $("q") && e.key === "ArrowDown" && items.length) {
      e.preventDefault();
      items[0].focus();
    } else if (at >= 0) {
      e.preventDefault();
      const next = at + (e.key === "ArrowDown" ? 1 : -1);
      if (next < 0) $("q").focus();
      else items[Math.min(next, items.length - 1)].focus();
    }
  }
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

// -- one history, newest first ---------------------------------------------------------------

const TIMELINE_MAX = 100;

function stamp(iso) {
  const d = new Date(iso);
  return el("time", { datetime: iso, title: d.toLocaleString() },
    d.toLocaleString([], { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" }));
}

function timelineItems(s) {
  const items = [];
  const add = (at, dept, text) => { if (at) items.push([at, dept, text]); };
  for (const o of s.orders) {
    add(o.placed_at, "web shop", `Order ${o.order_id} placed by ${o.channel.toLowerCase()}, ` +
      money(o.total_cents, o.currency));
    if (o.status !== "PLACED" && o.updated_at !== o.placed_at) {
      add(o.updated_at, "web shop", `Order ${o.order_id} ${o.status.toLowerCase()}`);
    }
    for (const p of o.shipments) {
      add(p.updated_at, p.carrier || "carrier",
        `Parcel ${p.shipment_id} of ${o.order_id}: ${p.status.replaceAll("_", " ").toLowerCase()}`);
    }
  }
  for (const c of s.contacts) {
    add(c.opened_at, "contact centre", `Contact ${c.contact_id} opened: ${c.kind.toLowerCase()} ` +
      `by ${c.channel.toLowerCase()}${c.topic ? ` about “${c.topic}”` : ""}`);
    for (const n of c.notes) {
      add(n.at, "contact centre", `Note on ${c.contact_id}${n.agent ? ` by ${n.agent}` : ""}: ${n.text}`);
    }
    if (c.status === "RESOLVED" && c.updated_at !== c.opened_at) {
      add(c.updated_at, "contact centre", `Contact ${c.contact_id} resolved`);
    }
  }
  for (const g of s.signals) {
    const refs = signalRefs(g);
    add(g.raised_at, "keel", `Signal raised: ${g.type.replaceAll("_", " ")}${refs ? ` (${refs})` : ""}`);
  }
  for (const c of desk.cleared || []) add(c.at, "keel", `Signal cleared: ${c.text}`);
  for (const st of Object.values(desk.actions)) {
    if (st.sent) add(new Date(st.sent.at).toISOString(), "desk", sentResult(st.sent, s).text);
  }
  return items.sort((a, b) => Date.parse(b[0]) - Date.parse(a[0]));
}

function renderTimeline(s) {
  const items = timelineItems(s);
  const shown = items.slice(0, TIMELINE_MAX).map(([at, dept, text]) =>
    el("li", { "data-at": at }, stamp(at), el("span", { class: "dept" }, dept), el("span", {}, text)));
  const more = items.length > TIMELINE_MAX
    ? el("li", { class: "more" }, `… and ${items.length - TIMELINE_MAX} older entries`) : null;
  fill($("timeline"), shown.length ? shown : [el("li", { class: "more" }, "nothing yet")], more);
}

function renderSources(s) {
  const entries = Object.entries(s.last_event_at).sort((a, b) => a[0].localeCompare(b[0]));
  $("sources").replaceChildren(...(entries.length ? entries.map(([source, at]) =>
    el("li", { class: "source", "data-source": source, "data-at": at },
      `${source}: `, when(at), el("span", { class: "stale-word" }))) :
    [el("li", { class: "empty" }, "no department has reported yet")]));
}

function sortOpenFirst(items, isOpen, at) {
  return [...items].sort((a, b) => (isOpen(b) - isOpen(a)) || (Date.parse(at(b)) - Date.parse(at(a))));
}

function renderOrders(s) {
  const orders = sortOpenFirst(s.orders, (o) => OPEN_ORDER.has(o.status), (o) => o.placed_at);
  $("orders").replaceChildren(...(orders.length ? orders.map((o) => {
    const lines = o.items.map((i) => `${i.quantity}× ${i.sku}`).join(", ");
    const parcels = o.shipments.map((p) => el("li", { class: "parcel", "data-shipment-id": p.shipment_id },
      el("span", { class: "id" }, `parcel ${p.shipment_id}`), badge(p.status),
      el("span", { class: "meta" }, [p.carrier, p.tracking_number].filter(Boolean).join(" "),
        p.expected_by ? " · expected " : "", when(p.expected_by),
        p.replaces_shipment_id ? ` · replaces ${p.replaces_shipment_id}` : "",
        " · updated ", when(p.updated_at))));
    return el("li", { class: OPEN_ORDER.has(o.status) ? "card" : "card closed", "data-order-id": o.order_id },
      el("header", {}, el("span", { class: "id" }, o.order_id), badge(o.status),
        el("span", {}, money(o.total_cents, o.currency))),
      el("p", { class: "meta" }, `${o.channel.toLowerCase()} · placed `, when(o.placed_at),
        o.promised_by ? " · promised " : "", when(o.promised_by)),
      el("p", { class: "meta" }, lines),
      parcels.length ? el("ul", { class: "parcels", "aria-label": `parcels of ${o.order_id}` }, parcels)
        : el("p", { class: "meta" }, "no parcel yet"),
      commandArea(`order:${o.order_id}`, { order_id: o.order_id },
        OPEN_ORDER.has(o.status) ? [["cancel", "Cancel order", `Cancel order ${o.order_id}`, "danger"]] : []));
  }) : [el("li", { class: "empty" }, "no orders")]));
}

function renderContacts(s) {
  const contacts = sortOpenFirst(s.contacts, (c) => c.status === "OPEN", (c) => c.updated_at);
  const first = desk.seenNotes === null;
  const seen = desk.seenNotes || new Set();
  $("contacts").replaceChildren(...(contacts.length ? contacts.map((c) => {
    const notes = c.notes.map((n) => {
      const key = `${c.contact_id}|${n.at}|${n.text}`;
      const isNew = !first && !seen.has(key);
      seen.add(key);
      return el("li", { class: isNew ? "note fresh" : "note" },
        el("p", { class: "said" }, n.text),
        el("span", { class: "by" }, n.agent ? `${n.agent} · ` : "", when(n.at)));
    });
    const about = [c.kind.toLowerCase(), `by ${c.channel.toLowerCase()}`,
      c.topic && `“${c.topic}”`, c.order_id && `order ${c.order_id}`].filter(Boolean).join(" · ");
    return el("li", { class: c.status === "OPEN" ? "card" : "card closed", "data-contact-id": c.contact_id },
      el("header", {}, el("span", { class: "id" }, c.contact_id), badge(c.status),
        el("span", { class: "agent" }, c.agent ? `held by ${c.agent}` : "no agent yet")),
      el("p", { class: "meta" }, about, " · opened ", when(c.opened_at)),
      notes.length ? el("ol", { class: "notes", "aria-label": `notes of ${c.contact_id}, newest last` }, notes)
        : el("p", { class: "meta" }, "no notes"),
      commandArea(`contact:${c.contact_id}`, { contact_id: c.contact_id },
        c.status === "OPEN" ? [["note", "Add note", `Add note to ${c.contact_id}`, ""],
                               ["resolve", "Resolve", `Resolve ${c.contact_id}`, ""]] : []));
  }) : [el("li", { class: "empty" }, "no contacts")]));
  desk.seenNotes = seen;
}

// -- commands: cancel an order, note on / resolve a contact (POST /customers/{id}/commands) ----

const AGENT_KEY = "keel.agent";
const COMMANDS = {
  cancel: { type: "CANCEL_ORDER", send: "Send cancellation", done: "Cancellation requested",
            dept: "web shop", effect: "the web shop cancelled the order" },
  resolve: { type: "RESOLVE_CONTACT", send: "Send resolve", done: "Resolve requested",
             dept: "contact centre", effect: "the contact centre resolved the contact" },
  note: { type: "ADD_NOTE", send: "Send note", done: "Note sent",
          dept: "contact centre", effect: "the note is on the contact" },
};

function clock(ms) { return new Date(ms).toLocaleTimeString(); }

// What became of a command this page sent, read from the state on screen: "done" once a
// department's event shows its effect, "failed" when a COMMAND_FAILED signal names it (by its
// command id), else "pending" (with what the COMMAND_PENDING signal knows, e.g. delivered).
function commandOutcome(sent, s) {
  const tag = `(${sent.commandId})`;
  const mine = (type) => {  // what the signal says of this command: the text after its id
    const g = s.signals.find((x) => x.type === type && (x.detail || "").includes(tag));
    const part = g && g.detail.split("; ").find((p) => p.includes(tag));
    return part === undefined ? null : part.slice(part.indexOf(tag) + tag.length)
      .replace(/^:\s*/, "").replace(/\.$/, "");
  };
  const order = sent.order_id && s.orders.find((o) => o.order_id === sent.order_id);
  const contact = sent.contact_id && s.contacts.find((c) => c.contact_id === sent.contact_id);
  let done = false;
  if (sent.kind === "cancel") done = !order || order.status === "CANCELLED";
  else if (sent.kind === "resolve") done = !contact || contact.status === "RESOLVED";
  else if (sent.kind === "note") done = !contact || contact.notes.some((n) => n.text === sent.note);
  if (done) return { state: "done", text: COMMANDS[sent.kind].effect };
  const failed = mine("COMMAND_FAILED");
  if (failed !== null) return { state: "failed", text: failed || "refused" };
  const pending = mine("COMMAND_PENDING");
  return { state: "pending", text: pending || `waiting for the ${COMMANDS[sent.kind].dept}` };
}

// The card's line about a sent command: who asked, when, why, and how it ended.
function sentResult(sent, s) {
  const spec = COMMANDS[sent.kind];
  const outcome = commandOutcome(sent, s);
  const asked = `${spec.done} by ${sent.agent} (202) at ${clock(sent.at)}, reason “${sent.reason}”`;
  if (outcome.state === "done") return { ok: true, state: "done", text: `Done — ${asked}: ${outcome.text}.` };
  if (outcome.state === "failed") return { ok: false, state: "failed", text: `Not done — ${asked}: ${outcome.text}.` };
  return { ok: true, state: "pending", text: `${asked}: ${outcome.text}.` };
}

function uuid4() {  // crypto.randomUUID needs a secure context; getRandomValues does not
  const b = new Uint8Array(16);
  crypto.getRandomValues(b);
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

function actionState(key) {
  if (!desk.actions[key]) {
    desk.actions[key] = { form: null, reason: "", note: "", result: null, commandId: null, sent: null };
  }
  return desk.actions[key];
}

function slug(key) { return key.replace(/[^A-Za-z0-9_-]/g, "_"); }

function commandArea(key, target, buttons) {
  const st = actionState(key);
  const shown = st.result || (st.sent && desk.shown ? sentResult(st.sent, desk.shown) : null);
  const result = shown ? el("p", { class: `result ${shown.ok ? "ok" : "err"}`, role: "status",
                                   "data-outcome": shown.state || null }, shown.text) : null;
  if (st.form && !buttons.some(([kind]) => kind === st.form)) st.form = null;  // closed meanwhile
  if (!st.form) {
    if (!buttons.length) return result;
    return el("div", { class: "command-area" },
      el("div", { class: "actions" }, buttons.map(([kind, text, label, cls]) => {
        const b = el("button", { type: "button", class: cls || null, "data-action": kind,
                                 "aria-label": label }, text);
        b.addEventListener("click", () => {
          Object.assign(st, { form: kind, result: null, sent: null });
          redraw(`${slug(key)}-reason`);
        });
        return b;
      })), result);
  }
  const spec = COMMANDS[st.form];
  const id = slug(key);
  const reason = el("input", { id: `${id}-reason`, name: "reason", required: true, autocomplete: "off",
                               value: st.reason, maxlength: 4000 });
  reason.addEventListener("input", () => { st.reason = reason.value; });
  const fields = [];
  if (st.form === "note") {
    const note = el("textarea", { id: `${id}-note`, name: "note", rows: 2, required: true, maxlength: 4000 });
    note.value = st.note;
    note.addEventListener("input", () => { st.note = note.value; });
    fields.push(el("label", { for: `${id}-note` }, "Note (the customer's or your words)"), note);
  }
  const back = el("button", { type: "button", class: "back" }, "Back");
  back.addEventListener("click", () => { st.form = null; redraw(); });
  const form = el("form", { class: "command", "data-command": st.form, "aria-label": spec.send },
    ...fields,
    el("label", { for: `${id}-reason` }, "Reason (why)"), reason,
    el("div", { class: "row" }, el("button", { type: "submit" }, spec.send), back), result);
  form.addEventListener("submit", (e) => { e.preventDefault(); sendCommand(key, target); });
  return form;
}

async function sendCommand(key, target) {
  const st = actionState(key);
  const spec = COMMANDS[st.form];
  const agent = $("agent").value.trim();
  const customerId = desk.shown && desk.shown.customer_id;
  if (!agent) {
    st.result = { ok: false, text: "Enter your name in “Agent” (top right) first." };
    $("agent").classList.add("missing");
    redraw();
    $("agent").focus();
    return;
  }
  st.commandId = st.commandId || uuid4();  // a retry after "busy"/no answer keeps its id
  const body = { command_id: st.commandId, type: spec.type, reason: st.reason, ...target };
  if (st.form === "note") body.note = st.note;
  let status = 0;
  let answer = null;
  try {
    const resp = await fetch(`/customers/${encodeURIComponent(customerId)}/commands`, {
      method: "POST",
      headers: authHeaders({ "Content-Type": "application/json", "X-Keel-Agent": agent }),
      body: JSON.stringify(body),
    });
    status = resp.status;
    try { answer = await resp.json(); } catch (e) { /* reported below */ }
  } catch (e) {
    st.result = { ok: false, text: `keel cannot be reached (${e.message}); send again.` };
    redraw();
    return;
  }
  if (status === 202) {
    // Recorded under the server's answer: a personal token's holder, else the typed name.
    st.sent = { kind: st.form, agent: (answer && answer.agent) || agent, at: Date.now(),
                reason: st.reason, note: st.note, commandId: st.commandId, ...target };
    Object.assign(st, { form: null, reason: "", note: "", commandId: null, result: null });
  } else {
    const error = (answer && answer.error) || `HTTP ${status}`;
    st.result = { ok: false, status, text: status === 503 ? `keel is busy (${error}); send again.`
                                                         : `Refused (${status}): ${error}` };
    if (status !== 503) st.commandId = null;  // a corrected command is a new command
    if (status === 401) askForToken("Sign in again to send commands.");
  }
  desk.commandsSent = (desk.commandsSent || 0) + 1;
  redraw();
}

// -- unmatched contacts (GET /unmatched, POST /unmatched/{id}/assign) ------------------------

async function loadUnmatched() {
  const status = $("unmatched-status");
  const list = $("unmatched-list");
  let answer = null;
  try {
    const resp = await fetch("/unmatched?limit=100", { headers: authHeaders({ Accept: "application/json" }) });
    if (resp.status === 401) { askForToken("Sign in to see unmatched contacts."); return; }
    answer = await resp.json();
    if (!resp.ok) { status.textContent = `Not available (${resp.status}): ${answer.error || ""}`; return; }
  } catch (e) {
    status.textContent = `keel cannot be reached (${e.message}).`;
    return;
  }
  list.replaceChildren(...answer.unmatched.map(unmatchedItem));
  status.textContent = answer.unmatched.length ? `${answer.unmatched.length} waiting${answer.next ? " (more not shown)" : ""}.`
                                               : "None waiting.";
}

function unmatchedItem(u) {
  const why = u.why.map((w) => `${w.type} ${w.value}: ${w.guard === "SHARED" ? "shared by many customers" : "linked to " + w.candidates.join(", ")}`).join("; ");
  const key = slug(u.contact_id);
  const customer = el("input", { id: `assign-to-${key}`, type: "text", value: u.candidates[0] || "",
                                 placeholder: "customer id", "aria-label": `Customer for ${u.contact_id}` });
  const reason = el("input", { id: `assign-why-${key}`, type: "text", placeholder: "why (required)",
                               "aria-label": `Why ${u.contact_id} is theirs` });
  const result = el("p", { class: "result", role: "status" });
  const button = el("button", { type: "button" }, "Assign");
  button.addEventListener("click", () => assignContact(u.contact_id, customer.value.trim(), reason.value.trim(), result));
  return el("li", { class: "card" },
    el("p", {}, el("strong", {}, u.contact_id), ` · ${u.channel || "?"}`,
       u.opened_at ? ` · opened ${new Date(u.opened_at).toISOString().slice(0, 16).replace("T", " ")}` : ""),
    el("p", { class: "hint" }, why),
    customer, reason, button, result);
}

async function assignContact(contactId, customerId, reason, result) {
  const agent = $("agent").value.trim();
  if (!agent) { result.textContent = "Enter your name in “Agent” (top right) first."; $("agent").focus(); return; }
  if (!customerId || !reason) { result.textContent = "Say which customer, and why."; return; }
  const body = { command_id: uuid4(), customer_id: customerId, reason };
  try {
    const resp = await fetch(`/unmatched/${encodeURIComponent(contactId)}/assign`, {
      method: "POST",
      headers: authHeaders({ "Content-Type": "application/json", "X-Keel-Agent": agent }),
      body: JSON.stringify(body),
    });
    let answer = {};
    try { answer = await resp.json(); } catch (e) { /* reported below */ }
    result.textContent = resp.status === 202 ? `Assigned to ${customerId} by ${agent}.`
                                             : `Refused (${resp.status}): ${answer.error || ""}`;
    if (resp.status === 202) setTimeout(loadUnmatched, 1500);
  } catch (e) {
    result.textContent = `keel cannot be reached (${e.message}); send again.`;
  }
}

function redraw(focusId) {
  if (!desk.shown) return;
  const active = document.activeElement;
  const keep = focusId || (active && active.id);
  const range = active && "selectionStart" in active ? [active.selectionStart, active.selectionEnd] : null;
  renderOrders(desk.shown);
  renderContacts(desk.shown);
  renderSignals(desk.shown);  // whose commands are the agent's own can change with a command
  renderTimeline(desk.shown);
  tick();
  const target = keep && document.getElementById(keep);
  if (target && target !== document.activeElement) {
    target.focus();
    if (!focusId && range && target.setSelectionRange) {
      try { target.setSelectionRange(range[0], range[1]); } catch (e) { /* not a text field */ }
    }
  }
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
