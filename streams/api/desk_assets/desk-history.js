// keel service desk (see desk.js): one history per customer, newest first (orders, parcels,
// contacts and notes, commands, signals raised and cleared). Loaded after desk.js; its
// functions are called from there.
"use strict";

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
