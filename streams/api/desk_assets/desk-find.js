// keel service desk (see desk.js): finding customers the way callers name them —
// the directory typeahead (GET /directory), the recent customers — and the keyboard and
// screen-reader support. Loaded after desk.js; its functions are called from there.
"use strict";

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
