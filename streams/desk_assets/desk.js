// keel service desk: find a customer with the query API, then follow them live over
// Server-Sent Events (/desk/customers/{id}/events). Plain JavaScript, no framework, no
// downloads. Everything shown is built with textContent, never innerHTML.
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
};
window.keelDesk = desk;  // for the browser tests and for curious people in the console

const OPEN_ORDER = new Set(["PLACED", "AMENDED"]);
const GOOD = new Set(["DELIVERED", "COMPLETED", "RESOLVED"]);
const BAD = new Set(["LOST", "DELAYED", "CANCELLED", "RETURNED"]);

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
  const resp = await fetch(url, { headers: { Accept: "application/json" } });
  let body = null;
  try { body = await resp.json(); } catch (e) { /* not JSON: reported below */ }
  return { status: resp.status, body };
}

const KIND_NAME = { customer: "customer id", email: "e-mail", phone: "phone", order_id: "order id" };

async function search(kind, q) {
  q = q.trim();
  if (!q) return;
  say("Searching…");
  try {
    let tries = kind === "auto" ? [guessKind(q)].filter(Boolean) : [kind];
    if (!tries.length) tries = ["customer", "order_id"];
    let found = null;
    let last = null;
    for (const k of tries) {
      last = await lookup(k, q);
      if (last.status === 200) { found = last.body; break; }
      if (last.status !== 404) break;
    }
    if (found) {
      say("");
      show(found);
      follow(found.customer_id);
      history.replaceState(null, "", `?customer=${encodeURIComponent(found.customer_id)}`);
    } else if (last.status === 404) {
      say(`No customer found for ${tries.map((k) => KIND_NAME[k]).join(" or ")} “${q}”.`);
    } else if (last.status === 503) {
      say("keel is busy (a worker is starting or partitions are moving). Try again in a moment.");
    } else {
      say((last.body && last.body.error) || `The search failed (HTTP ${last.status}).`);
    }
  } catch (e) {
    say(`keel cannot be reached (${e.message}). Check the connection and try again.`);
  }
}

// -- the live stream -------------------------------------------------------------------------

function follow(customerId) {
  stopFollowing();
  desk.customerId = customerId;
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
    heard();
    desk.retryMs = 1000;
    setLive("on");
    say("");
    show(JSON.parse(e.data));
  });
  es.addEventListener("absent", () => {
    heard();
    setLive("on");
    say(`Customer “${id}” is not known (any more). This page shows them as soon as they are.`);
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
  if (fresh) desk.seenNotes = null;
  desk.shown = state;
  desk.version = state.version;
  desk.renders += 1;
  $("help").hidden = true;
  $("customer").hidden = false;
  renderWho(state);
  renderSignals(state);
  renderSources(state);
  renderOrders(state);
  renderContacts(state);
  tick();
}

function idRow(label, value) {
  return el("div", {}, el("dt", {}, label), el("dd", {}, value));
}

function renderWho(s) {
  $("c-name").textContent = s.name || s.customer_id;
  const ids = $("c-ids");
  ids.replaceChildren(
    idRow("Customer", el("span", { "data-field": "customer_id" }, s.customer_id)),
    s.emails.length ? idRow("E-mail", s.emails.join(", ")) : null,
    s.phones.length ? idRow("Phone", s.phones.join(", ")) : null,
    idRow("Open", `${s.open_orders} order${s.open_orders === 1 ? "" : "s"}, ` +
                  `${s.open_contacts} contact${s.open_contacts === 1 ? "" : "s"}`),
    idRow("Spent", s.orders.length ? money(s.total_spent_cents, s.orders[0].currency) : "—"),
    idRow("Changed", el("span", {}, when(s.updated_at), ` (v${s.version})`)),
  );
}

function renderSignals(s) {
  const list = $("signal-list");
  if (!s.signals.length) {
    list.replaceChildren(el("li", { class: "none" }, "Nothing needs attention."));
    return;
  }
  list.replaceChildren(...s.signals.map((g) => {
    const refs = [
      g.order_id && `order ${g.order_id}`,
      g.shipment_id && `parcel ${g.shipment_id}`,
      g.contact_id && `contact ${g.contact_id}`,
    ].filter(Boolean).join(" · ");
    const help = desk.config.signals[g.type] || "";
    return el("li", { class: "signal", "data-signal": g.type },
      el("strong", {}, g.type.replaceAll("_", " ")),
      el("span", { class: "refs" }, refs ? ` — ${refs} · raised ` : " — raised ", when(g.raised_at)),
      help ? el("p", { class: "explain" }, help) : null,
      g.detail ? el("p", { class: "refs" }, g.detail) : null);
  }));
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
        : el("p", { class: "meta" }, "no parcel yet"));
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
        : el("p", { class: "meta" }, "no notes"));
  }) : [el("li", { class: "empty" }, "no contacts")]));
  desk.seenNotes = seen;
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
    li.querySelector(".stale-word").textContent = stale ? " — stale" : "";
    li.title = stale
      ? `nothing from ${li.dataset.source} for longer than ${desk.config.stale_after_s} s`
      : `keel last heard from ${li.dataset.source} at ${new Date(li.dataset.at).toLocaleString()}`;
  }
  const silentMs = 3 * desk.config.heartbeat_s * 1000;
  if (desk.source && desk.source.readyState === EventSource.OPEN && now - desk.lastHeard > silentMs) {
    setLive("reconnecting");  // the connection died without closing: start a fresh one
    connect();
  }
}

// -- start -----------------------------------------------------------------------------------

async function start() {
  try {
    const resp = await fetch("/desk/config.json");
    if (resp.ok) desk.config = await resp.json();
  } catch (e) { /* keep the defaults */ }
  $("search").addEventListener("submit", (e) => {
    e.preventDefault();
    search($("q-kind").value, $("q").value);
  });
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
