"""The service-desk console as a desk agent uses it: a real Chromium on the real stack.

Events go in as Avro records on the input topics (as the departments send them); what is
checked is what the page shows, and what a client of the live stream receives.
"""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

from tests.builders import contact, order, shipment, unique
from tests.integration.browser import chromium
from tests.integration.harness import (
    Cluster,
    Departments,
    Worker,
    bearer,
    customer_when,
    partition_of,
    split_partitions,
    token,
    wait_for,
)

pytestmark = pytest.mark.integration

MINUTE = 60_000
HAPPY = "Where is my Kindle? I am happy to wait a couple of days, but please tell me when."
SECOND = "Second call. Read the first note: carrier confirms delivery tomorrow, 10 % voucher given."


def now_ms() -> int:
    return int(time.time() * 1000)



class EventStream:
    """A plain HTTP client reading a text/event-stream, one event at a time."""

    def __init__(
        self, url: str, timeout: float = 20.0, headers: dict[str, str] | None = None
    ) -> None:
        """``headers``: the read token's Authorization unless given (e.g. a Cookie instead)."""
        parts = urlsplit(url)
        self.conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
        sent = {"Accept": "text/event-stream", **(bearer("read") if headers is None else headers)}
        self.conn.request("GET", parts.path, headers=sent)
        self.response = self.conn.getresponse()

    def next(self) -> dict[str, str]:
        """The next event's fields (``event``, ``data``, ``id``, ``retry``)."""
        fields: dict[str, str] = {}
        while True:
            line = self.response.readline()
            if not line:
                raise AssertionError(f"the stream ended; had {fields!r}")
            text = line.decode().rstrip("\r\n")
            if not text:
                if fields:
                    return fields
                continue
            name, _, value = text.partition(":")
            fields[name] = value.removeprefix(" ")

    def next_state(self, timeout: float = 20.0) -> dict:
        """The next ``state`` event's CustomerState (pings in between are skipped)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            event = self.next()
            if event.get("event") == "state":
                return json.loads(event["data"])
        raise AssertionError(f"no new state within {timeout} s")

    def ended(self, timeout: float = 30.0) -> bool:
        """True once the server ended the stream (events until then are skipped)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.response.readline():
                return True
        return False

    def close(self) -> None:
        self.conn.close()


@pytest.fixture
def stream(worker: Worker) -> Iterator[Any]:
    opened: list[EventStream] = []

    def open_stream(customer_id: str) -> EventStream:
        s = EventStream(f"{worker.url}/desk/customers/{customer_id}/events")
        opened.append(s)
        return s

    yield open_stream
    for s in opened:
        s.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[webdriver.Chrome]:
    driver = chromium(1280, 800, tmp_path_factory.mktemp("chromium-profile"))
    try:
        yield driver
    finally:
        driver.quit()


def open_desk(
    driver: webdriver.Chrome, base_url: str, query: str = "", role: str = "agent"
) -> None:
    """The console signed in as a desk agent would: the token once, in the URL's fragment."""
    driver.get("about:blank")  # a new document: a change of the fragment alone would not reload
    driver.get(f"{base_url}/desk/{query}#token={token(role)}")


def _until(driver: webdriver.Chrome, what: str, check: Any, timeout: float = 20) -> Any:
    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(check, message=what)


# The page re-renders a customer on every new state: read what it shows in one script, so an
# element cannot go stale between finding it and reading it.


def texts(driver: webdriver.Chrome, selector: str) -> list[str]:
    script = "return [...document.querySelectorAll(arguments[0])].map(e => e.textContent)"
    return list(driver.execute_script(script, selector))


def notes_shown(driver: webdriver.Chrome, contact_id: str) -> list[str]:
    return texts(driver, f'[data-contact-id="{contact_id}"] .note .said')


def live_text(driver: webdriver.Chrome) -> str:
    return "".join(texts(driver, "#live-text"))


def shown_customer(driver: webdriver.Chrome) -> str | None:
    found = texts(driver, '#customer:not([hidden]) [data-field="customer_id"]')
    return found[0] if found else None


def section_text(driver: webdriver.Chrome, section_id: str) -> str:
    return "".join(texts(driver, f"#{section_id}"))


# -- the live stream, with a plain HTTP client ------------------------------------------------


def test_event_stream_sends_the_new_state_after_an_event(
    worker: Worker, departments: Departments, stream: Any
) -> None:
    cid, oid, kid = unique("c"), unique("o"), unique("k")
    at = now_ms()
    departments.send([order(cid, oid, at=at - MINUTE)])
    customer_when(worker, cid, lambda s: bool(s["orders"]))

    events = stream(cid)
    assert events.response.status == 200
    assert events.response.getheader("Content-Type", "").startswith("text/event-stream")
    assert events.next() == {"retry": "1000"}
    first = events.next_state()
    assert first["customer_id"] == cid and first["contacts"] == []

    departments.send([contact(kid, at=at, customer_id=cid, order_id=oid, note=HAPPY)])
    second = events.next_state()

    assert second["version"] > first["version"]
    assert [n["text"] for n in second["contacts"][0]["notes"]] == [HAPPY]
    assert second == worker.get(f"/customers/{cid}")[1]


def test_event_stream_of_an_unknown_customer_says_so_then_sends_it_once_known(
    worker: Worker, departments: Departments, stream: Any
) -> None:
    cid = unique("c")
    events = stream(cid)
    events.next()  # retry
    absent = events.next()
    assert absent["event"] == "absent" and json.loads(absent["data"]) == {"customer_id": cid}

    departments.send([order(cid, unique("o"), at=now_ms())])

    assert events.next_state()["customer_id"] == cid


# -- the page, in Chromium ---------------------------------------------------------------------


def test_amazon_story_the_second_agent_sees_the_first_note_and_the_next_one_live(
    worker: Worker, departments: Departments, browser: webdriver.Chrome
) -> None:
    """The second agent must see what the customer already told the first, and the page must
    follow the conversation without a reload."""
    cid, oid, kid = unique("c"), unique("o"), unique("k")
    at = now_ms()
    departments.send(
        [
            order(cid, oid, at=at - 30 * MINUTE, name="Jo Reed", email=f"jo.{cid}@example.com"),
            shipment(oid, unique("s"), "IN_TRANSIT", at - 20 * MINUTE),
            contact(kid, at=at - MINUTE, customer_id=cid, order_id=oid, channel="CHAT",
                    topic="where is my parcel", agent="priya", note=HAPPY),
        ]
    )  # fmt: skip
    customer_when(worker, cid, lambda s: bool(s["contacts"]) and bool(s["orders"][0]["shipments"]))

    open_desk(browser, worker.url, f"?customer={cid}")
    _until(browser, "the first agent's note", lambda d: notes_shown(d, kid) == [HAPPY])
    _until(browser, "the live indicator", lambda d: live_text(d) == "live")
    assert "happy to wait" in section_text(browser, "contacts")
    assert "held by priya" in section_text(browser, "contacts")
    assert "IN TRANSIT" in section_text(browser, "orders")
    # as of: the shop and the carrier last spoke about this customer 20-30 min ago (stale at
    # the default KEEL_DESK_STALE_S of 5 min), the contact centre a minute ago
    stale = texts(browser, ".source.stale")
    assert sorted(t.split(":")[0] for t in stale) == ["carrier-dhl", "webshop"], stale
    assert [t.split(":")[0] for t in texts(browser, ".source:not(.stale)")] == ["callcenter"]
    browser.execute_script("window.__sameDocument = 'still here';")

    sent = time.monotonic()
    departments.send(
        [contact(kid, "NOTE_ADDED", at=now_ms(), customer_id=cid, agent="marco", note=SECOND)]
    )
    _until(browser, "the second note, live", lambda d: notes_shown(d, kid) == [HAPPY, SECOND])
    seen = time.monotonic() - sent

    assert browser.execute_script("return window.__sameDocument") == "still here", "reloaded"
    assert live_text(browser) == "live"
    assert "held by marco" in section_text(browser, "contacts")
    print(f"second note on the page {seen:.2f} s after it was produced")


def test_signals_are_at_the_top_with_what_they_mean_and_what_to_do(
    worker: Worker, departments: Departments, browser: webdriver.Chrome
) -> None:
    from streams.api.desk import SIGNAL_HELP

    cid, first, second = unique("c"), unique("o"), unique("o")
    lamp = [{"sku": "desk-lamp", "quantity": 1, "unit_price_cents": 4900}]
    at = now_ms()
    departments.send(
        [
            order(cid, first, at=at - 2 * MINUTE, lines=lamp),
            order(cid, second, at=at - MINUTE, lines=lamp),
        ]
    )
    customer_when(worker, cid, lambda s: bool(s["signals"]))

    open_desk(browser, worker.url, f"?customer={cid}")
    _until(browser, "the signal", lambda d: texts(d, "[data-signal] .explain"))
    [signal] = texts(browser, "[data-signal]")
    assert signal.startswith("DUPLICATE ORDER") and f"order {second}" in signal
    assert texts(browser, "[data-signal] .explain") == [SIGNAL_HELP["DUPLICATE_ORDER"]]
    sections = texts(browser, "#customer > section, #customer > div")
    assert sections[0].strip().startswith("Needs attention"), sections  # above the rest


def test_search_by_email_order_id_and_phone_finds_the_customer(
    worker: Worker, departments: Departments, browser: webdriver.Chrome
) -> None:
    cid, oid = unique("c"), unique("o")
    email = f"Grace.{cid}@Example.com"
    digits = str(now_ms())[-7:]
    departments.send([order(cid, oid, at=now_ms(), email=email, phone=f"+44 20 {digits}")])
    customer_when(worker, cid, lambda s: bool(s["orders"]))
    for lookup in (f"order_id={oid}", f"phone=%2B4420{digits}"):
        wait_for(lookup, lambda: worker.get(f"/customers?{lookup}")[0] == 200)  # noqa: B023

    open_desk(browser, worker.url)
    box = browser.find_element(By.ID, "q")
    clear_page = "keelDesk.shown = null; document.getElementById('customer').hidden = true;"
    for query in (email.upper(), oid, f"+44 (20) {digits}"):
        browser.execute_script(clear_page)
        box.clear()
        box.send_keys(query, Keys.ENTER)
        _until(browser, f"the customer found by {query!r}", lambda d: shown_customer(d) == cid)

    box.clear()
    box.send_keys(f"nobody-{cid}@example.com", Keys.ENTER)
    message = browser.find_element(By.ID, "message")
    _until(browser, "a not-found message", lambda d: "No customer found" in message.text)


def test_page_is_plain_local_html_with_labels(worker: Worker, browser: webdriver.Chrome) -> None:
    open_desk(browser, worker.url)
    resources = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)"
    )
    assert resources and all(r.startswith(worker.url) for r in resources), resources
    for control in browser.find_elements(By.CSS_SELECTOR, "input, select, button"):
        name = control.get_attribute("id")
        labelled = (
            browser.find_elements(By.CSS_SELECTOR, f'label[for="{name}"]')
            or control.text
            or control.get_attribute("aria-label")  # e.g. the sign-in button, hidden here
        )
        assert labelled, f"{control.tag_name} {name!r} has no label"
    assert browser.find_element(By.ID, "live").get_attribute("role") == "status"


def test_the_page_asks_for_a_token_keeps_it_for_the_tab_and_a_read_token_cannot_command(
    worker: Worker, departments: Departments, browser: webdriver.Chrome
) -> None:
    """A desk without a token asks for one; signed in with a read-only token it shows and
    follows the customer, and refuses to send a command (403) with the server's reason."""
    cid, oid = unique("c"), unique("o")
    departments.send([order(cid, oid, at=now_ms() - MINUTE)])
    customer_when(worker, cid, lambda s: bool(s["orders"]))

    open_desk(browser, worker.url, f"?customer={cid}", role="read")
    _until(browser, "the customer", lambda d: shown_customer(d) == cid)
    assert "#token" not in browser.current_url  # taken out of the address bar at once
    browser.find_element(By.ID, "signout").click()
    assert browser.execute_script("return sessionStorage.getItem('keel.token')") is None
    assert browser.find_element(By.ID, "signin").is_displayed()
    assert shown_customer(browser) is None

    browser.get("about:blank")
    browser.get(f"{worker.url}/desk/?customer={cid}")  # no token anywhere now
    _until(browser, "the sign-in form", lambda d: d.find_element(By.ID, "signin").is_displayed())
    assert shown_customer(browser) is None
    assert "access token" in section_text(browser, "signin")
    browser.find_element(By.ID, "token").send_keys(token("read"), Keys.ENTER)
    _until(browser, "the customer, after signing in", lambda d: shown_customer(d) == cid)
    _until(browser, "the live stream (the cookie)", lambda d: live_text(d) == "live")
    assert not browser.find_element(By.ID, "signin").is_displayed()

    card = f'[data-order-id="{oid}"]'
    browser.find_element(By.CSS_SELECTOR, f'{card} [data-action="cancel"]').click()
    agent = browser.find_element(By.ID, "agent")
    agent.clear()
    agent.send_keys("rep-7")
    reason = browser.find_element(By.CSS_SELECTOR, f"{card} input[name=reason]")
    reason.send_keys("customer asked", Keys.ENTER)
    _until(browser, "the refusal", lambda d: "Refused (403)" in section_text(d, "orders"))
    assert "agent role" in section_text(browser, "orders")
    browser.find_element(By.ID, "signout").click()  # the next test signs in afresh
    browser.execute_script("sessionStorage.removeItem('keel.agent');")  # and names its agent


# -- several workers -------------------------------------------------------------------------


def test_any_worker_streams_any_customer_and_the_page_follows_a_rebalance(
    cluster: Cluster, departments: Departments, browser: webdriver.Chrome
) -> None:
    """The stream is served by the customer's owner, through whichever worker the page asked;
    when the owner leaves, the page says "reconnecting", then follows the new owner."""
    front, owner = cluster(2, "keel-desk")
    _, owners_partitions = split_partitions([front, owner])
    cid = next(c for c in iter(lambda: unique("c"), None) if partition_of(c) in owners_partitions)
    kid = unique("k")
    departments.send([order(cid, unique("o"), at=now_ms() - MINUTE)])
    customer_when(front, cid, lambda s: bool(s["orders"]))

    forwarded = EventStream(f"{front.url}/desk/customers/{cid}/events")
    direct = EventStream(f"{owner.url}/desk/customers/{cid}/events")
    try:
        assert forwarded.next_state() == direct.next_state()
        open_desk(browser, front.url, f"?customer={cid}")
        _until(browser, "the live indicator", lambda d: live_text(d) == "live")

        departments.send([contact(kid, at=now_ms(), customer_id=cid, agent="priya", note=HAPPY)])
        via_front, at_owner = forwarded.next_state(), direct.next_state()
        assert via_front == at_owner and at_owner["contacts"][0]["notes"][0]["text"] == HAPPY
        _until(browser, "the note, through the front worker", lambda d: notes_shown(d, kid))

        browser.execute_script("keelDesk.liveHistory = []; window.__sameDocument = 1;")
        owner.stop()  # a clean stop: the group moves its partitions to the front worker
        assert forwarded.ended() and direct.ended()
        # Until then (a static member sends no LeaveGroup: its session has to end first) the
        # front answers a search from its standby copy, and the page says it may be behind.
        box = browser.find_element(By.ID, "q")
        box.clear()
        box.send_keys(cid, Keys.ENTER)
        _until(browser, "the copy's warning", lambda d: d.find_element(By.ID, "stale")
               .is_displayed() and "May be out of date" in section_text(d, "stale"))  # fmt: skip
        assert shown_customer(browser) == cid
        wait_for("the front worker to own everything", lambda: front.get("/readyz")[0] == 200)
        _until(browser, "live again", lambda d: live_text(d) == "live", timeout=60)
        _until(browser, "the warning gone with the owner's state",
               lambda d: not d.find_element(By.ID, "stale").is_displayed())  # fmt: skip
        history = browser.execute_script("return keelDesk.liveHistory")
        assert "reconnecting" in history and history[-1] == "on", history

        departments.send([contact(kid, "NOTE_ADDED", at=now_ms(), customer_id=cid, note=SECOND)])
        _until(browser, "a note after the rebalance", lambda d: len(notes_shown(d, kid)) == 2)
        assert browser.execute_script("return window.__sameDocument") == 1, "reloaded"
    finally:
        forwarded.close()
        direct.close()


# -- write-back: the Sears story, through the demo shop --------------------------------------


def test_sears_story_cancel_the_duplicate_on_the_page_and_see_it_cancelled_live(
    worker: Worker,
    departments: Departments,
    browser: webdriver.Chrome,
    postgres_server: Any,
    processes: Any,
) -> None:
    """The rep sees the duplicate lamp order, cancels the second one from the page; the shop
    (via the inbox) cancels it, and the page shows it cancelled and the signal gone, live."""
    from tests.integration.connectors_harness import fresh_database

    database = fresh_database(postgres_server)
    env = {"POSTGRES_URL": database, "KEEL_OUTBOX_POLL_MS": "100"}
    processes.start("connectors.sinks.postgres_inbox", "KEEL_INBOX_PORT", "inbox",
                    KEEL_INBOX_GROUP=unique("inbox"), **env)  # fmt: skip
    processes.start("connectors.sources.postgres_outbox", "KEEL_OUTBOX_PORT", "outbox", **env)
    processes.start("connectors.demo.shop", "KEEL_SHOP_PORT", "shop", **env)
    cid, first, second = unique("c"), unique("o"), unique("o")
    lamp = [{"sku": "desk-lamp", "quantity": 1, "unit_price_cents": 4900}]
    at = now_ms()
    departments.send(
        [
            order(cid, first, at=at - 2 * MINUTE, lines=lamp),
            order(cid, second, at=at - MINUTE, lines=lamp, channel="PHONE"),
        ]
    )
    customer_when(worker, cid, lambda s: bool(s["signals"]))

    open_desk(browser, worker.url, f"?customer={cid}")
    browser.execute_script("sessionStorage.removeItem('keel.agent');")
    _until(browser, "the duplicate signal", lambda d: texts(d, '[data-signal="DUPLICATE_ORDER"]'))
    browser.execute_script("window.__sameDocument = 'still here';")
    card = f'[data-order-id="{second}"]'
    browser.find_element(By.CSS_SELECTOR, f'{card} [data-action="cancel"]').click()
    reason = browser.find_element(By.CSS_SELECTOR, f"{card} input[name=reason]")
    reason.send_keys("duplicate of the web order, customer confirmed", Keys.ENTER)
    _until(browser, "a request for the agent's name",
           lambda d: "Enter your name" in section_text(d, "orders"))  # fmt: skip
    agent = browser.find_element(By.ID, "agent")
    assert browser.switch_to.active_element == agent
    agent.send_keys("rep-7")
    assert browser.execute_script("return sessionStorage.getItem('keel.agent')") == "rep-7"
    browser.find_element(By.CSS_SELECTOR, f'{card} button[type="submit"]').click()
    _until(browser, "the 202", lambda d: "Cancellation requested by rep-7 (202)"
           in "".join(texts(d, f"{card} .result")))  # fmt: skip

    _until(browser, "the order cancelled by the shop",
           lambda d: "CANCELLED" in "".join(texts(d, f"{card} .badge")), timeout=60)  # fmt: skip
    _until(browser, "the signal cleared", lambda d: not texts(d, "[data-signal]"))
    assert "Nothing needs attention" in section_text(browser, "signals")
    assert not browser.find_elements(By.CSS_SELECTOR, f'{card} [data-action="cancel"]')
    assert browser.find_elements(By.CSS_SELECTOR, f'[data-order-id="{first}"] [data-action]')
    assert browser.execute_script("return window.__sameDocument") == "still here", "reloaded"
    assert live_text(browser) == "live"

    # the same click on a stale page: keel refuses what is already cancelled
    status = browser.execute_script(
        """return fetch(`/customers/${arguments[0]}/commands`, {method: 'POST',
             headers: {'Content-Type': 'application/json', 'X-Keel-Agent': 'rep-7',
                       Authorization: 'Bearer ' + sessionStorage.getItem('keel.token')},
             body: JSON.stringify({command_id: 'again-' + Date.now(), type: 'CANCEL_ORDER',
                                   order_id: arguments[1], reason: 'again'})})
           .then(r => r.status)""",
        cid,
        second,
    )
    assert status == 409
