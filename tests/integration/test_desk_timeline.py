"""The desk's one history per customer and its signals that help instead of shout (#23 §3),
in a real Chromium on the real stack."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

from tests.builders import contact, order, shipment, unique
from tests.integration.browser import chromium
from tests.integration.harness import Departments, Worker, bearer, token, wait_for

pytestmark = pytest.mark.integration

MINUTE = 60_000
LAMP = [{"sku": "desk-lamp", "quantity": 1, "unit_price_cents": 4900}]


def now_ms() -> int:
    return int(time.time() * 1000)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[webdriver.Chrome]:
    driver = chromium(1280, 800, tmp_path_factory.mktemp("chromium-timeline"))
    try:
        yield driver
    finally:
        driver.quit()


def until(driver: webdriver.Chrome, what: str, check: Any, timeout: float = 30) -> Any:
    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(check, message=what)


def customer(worker: Worker, cid: str, ready: Any = bool) -> dict:
    def check() -> dict | None:
        status, body = worker.get(f"/customers/{cid}")
        return body if status == 200 and ready(body) else None

    return wait_for(f"state of {cid}", check, 60)


def open_customer(driver: webdriver.Chrome, worker: Worker, cid: str, agent: str) -> None:
    driver.get("about:blank")
    driver.get(f"{worker.url}/desk/?customer={cid}#token={token('agent')}")
    field = driver.find_element(By.ID, "agent")
    field.clear()
    field.send_keys(agent)
    until(driver, f"customer {cid}", lambda d: d.execute_script(
        "const e = document.querySelector('#customer:not([hidden]) [data-field=customer_id]');"
        "return e && e.textContent;") == cid)  # fmt: skip


def timeline(driver: webdriver.Chrome) -> list[tuple[str, str, str]]:
    rows = driver.execute_script(
        "return [...document.querySelectorAll('#timeline li[data-at]')]"
        ".map(li => [li.dataset.at, li.children[1].textContent, li.children[2].textContent])"
    )
    return [tuple(r) for r in rows]


def post_command(worker: Worker, cid: str, body: dict, agent: str) -> int:
    request = urllib.request.Request(
        f"{worker.url}/customers/{cid}/commands", data=json.dumps(body).encode(), method="POST",
        headers={"Content-Type": "application/json", "X-Keel-Agent": agent, **bearer("agent")},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=30) as resp:
        return int(resp.status)


def test_one_history_newest_first_with_each_department_and_time(
    worker: Worker, departments: Departments, browser: webdriver.Chrome
) -> None:
    cid, first, second, sid, kid = unique("c"), unique("o"), unique("o"), unique("s"), unique("k")
    at = now_ms()
    departments.send(
        [
            order(cid, first, at=at - 30 * MINUTE, lines=LAMP),
            shipment(first, sid, "IN_TRANSIT", at - 20 * MINUTE),
            order(cid, second, at=at - 10 * MINUTE, lines=LAMP),
            contact(kid, at=at - MINUTE, customer_id=cid, note="Two lamps arrived?", agent="priya"),
        ]
    )
    customer(worker, cid, lambda s: bool(s["contacts"]) and bool(s["signals"])
             and any(o["shipments"] for o in s["orders"]))  # fmt: skip
    open_customer(browser, worker, cid, "rep-7")
    until(browser, "the history", lambda d: len(timeline(d)) >= 5)
    rows = timeline(browser)
    times = [r[0] for r in rows]
    assert times == sorted(times, reverse=True), rows  # newest first
    text = [(dept, what) for _, dept, what in rows]
    assert ("contact centre", "Note on " + kid + " by priya: Two lamps arrived?") in text, text
    assert any(d == "DHL" and sid in w and "in transit" in w for d, w in text), text  # its carrier
    assert any(d == "web shop" and w.startswith(f"Order {first} placed") for d, w in text), text
    assert any(d == "keel" and w.startswith("Signal raised: DUPLICATE ORDER") for d, w in text)
    assert text[0][1].startswith("Note on") or text[0][1].startswith("Contact"), text


def test_signals_of_a_type_are_one_row_and_an_own_pending_command_is_not_an_alarm(
    worker: Worker, departments: Departments, browser: webdriver.Chrome
) -> None:
    cid = unique("c")
    orders = [unique("o") for _ in range(4)]
    at = now_ms()
    departments.send([order(cid, o, at=at - (5 - n) * MINUTE, lines=LAMP)
                      for n, o in enumerate(orders)])  # fmt: skip
    state = customer(worker, cid, lambda s: len(s["signals"]) >= 3)
    duplicates = [g for g in state["signals"] if g["type"] == "DUPLICATE_ORDER"]
    assert len(duplicates) >= 2

    open_customer(browser, worker, cid, "rep-7")
    rows = browser.find_elements(By.CSS_SELECTOR, '#signal-list > [data-signal="DUPLICATE_ORDER"]')
    assert len(rows) == 1
    assert rows[0].get_attribute("data-count") == str(len(duplicates))
    assert rows[0].text.startswith(f"{len(duplicates)} × DUPLICATE ORDER")
    assert browser.find_element(By.CSS_SELECTOR, f'[data-order-id="{orders[0]}"]').is_displayed()

    # a cancel of my own: "on its way", not an alarm; one of a colleague: the usual signal
    card = f'[data-order-id="{orders[-1]}"]'
    browser.find_element(By.CSS_SELECTOR, f'{card} [data-action="cancel"]').click()
    browser.find_element(By.CSS_SELECTOR, f"{card} input[name=reason]").send_keys(
        "duplicate", Keys.ENTER
    )
    other = {"command_id": unique("cmd"), "type": "CANCEL_ORDER", "order_id": orders[-2],
             "reason": "duplicate"}  # fmt: skip
    assert post_command(worker, cid, other, "rep-8") == 202
    customer(worker, cid, lambda s: sum(g["type"] == "COMMAND_PENDING" for g in s["signals"]) == 2)
    until(browser, "the pending commands", lambda d: len(d.find_elements(
        By.CSS_SELECTOR, '[data-signal="COMMAND_PENDING"]')) == 2)  # fmt: skip
    mine = browser.find_elements(By.CSS_SELECTOR, '[data-signal="COMMAND_PENDING"][data-mine]')
    assert len(mine) == 1 and "colleague" not in mine[0].text and "on its way" in mine[0].text
    [theirs] = browser.find_elements(
        By.CSS_SELECTOR, '[data-signal="COMMAND_PENDING"]:not([data-mine])'
    )
    assert "rep-8" in theirs.text


def test_a_quiet_department_is_explained_not_shouted_and_the_desk_links_the_board(
    worker: Worker, departments: Departments, browser: webdriver.Chrome
) -> None:
    cid = unique("c")
    departments.send([order(cid, unique("o"), at=now_ms() - 40 * MINUTE)])
    customer(worker, cid)
    open_customer(browser, worker, cid, "rep-7")
    until(browser, "the quiet pill", lambda d: d.find_elements(By.CSS_SELECTOR, ".source.stale"))
    colours = browser.execute_script(
        "const probe = document.createElement('span'); probe.style.color = 'var(--bad)';"
        "document.body.append(probe); const bad = getComputedStyle(probe).color; probe.remove();"
        "const pill = document.querySelector('.source.stale');"
        "return [bad, getComputedStyle(pill).color, pill.title, pill.textContent];"
    )
    bad, pill, title, text = colours
    assert pill != bad, "a quiet customer's department is shown in the alarm colour"
    assert "about this customer" in title and "quiet" in text and "stale" not in text
    assert "not an outage" in browser.find_element(By.CSS_SELECTOR, ".freshness .hint").text
    link = browser.find_element(By.CSS_SELECTOR, 'a[href="/desk/voice"]')
    assert link.text == "Voice board"
