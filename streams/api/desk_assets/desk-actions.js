// keel service desk (see desk.js): acting on the customer — cancel an order, note on or
// resolve a contact, and what became of it — and the unmatched contacts. Loaded after
// desk.js; its functions are called from there.
"use strict";

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
