"""The desk and the Voice board as a keyboard and a screen reader use them, in real Chromium.

axe-core (from its npm package, tests/integration/browser.py ``axe_script``, run inside the
page) checks the desk with
a customer on screen, an open command form, the unmatched list, and the board: no violation
of impact "serious" or "critical". The keyboard: ``/`` focuses the search, Esc closes an open
form, arrow keys move through the recent customers; new signals and orders are announced
through a polite live region.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

from tests.builders import contact, order, unique
from tests.integration.browser import axe_script, chromium
from tests.integration.harness import Departments, Worker, token, wait_for

pytestmark = pytest.mark.integration

MINUTE = 60_000
GRAVE = {"serious", "critical"}


def now_ms() -> int:
    return int(time.time() * 1000)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[webdriver.Chrome]:
    driver = chromium(1280, 800, tmp_path_factory.mktemp("chromium-a11y"))
    try:
        yield driver
    finally:
        driver.quit()


def until(driver: webdriver.Chrome, what: str, check: Any, timeout: float = 30) -> Any:
    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(check, message=what)


def grave_violations(driver: webdriver.Chrome) -> list[str]:
    """axe-core's violations of impact serious or critical on the page as it is now."""
    driver.execute_script(axe_script())
    found = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "axe.run(document, {resultTypes: ['violations']})"
        "  .then(done, (e) => done({error: String(e)}));"
    )
    assert "error" not in found, found
    assert found["passes"], "axe ran no rule: not a real check"
    return [
        f"{v['id']} ({v['impact']}): {v['help']} at "
        + ", ".join(str(n["target"]) for n in v["nodes"][:5])
        for v in found["violations"]
        if v["impact"] in GRAVE
    ]


def no_form(driver: webdriver.Chrome) -> bool:
    return not driver.find_elements(By.CSS_SELECTOR, "form.command")


def loaded(driver: webdriver.Chrome) -> bool:
    return bool(driver.execute_script("return document.readyState") == "complete")


def customer(worker: Worker, cid: str, ready: Any = bool) -> dict:
    def check() -> dict | None:
        status, body = worker.get(f"/customers/{cid}")
        return body if status == 200 and ready(body) else None

    return wait_for(f"state of {cid}", check, 60)


def shown(driver: webdriver.Chrome) -> str | None:
    found = driver.execute_script(
        "const e = document.querySelector('#customer:not([hidden]) [data-field=customer_id]');"
        "return e && e.textContent;"
    )
    return str(found) if found else None


def open_desk(driver: webdriver.Chrome, worker: Worker, query: str = "") -> None:
    driver.get("about:blank")
    driver.get(f"{worker.url}/desk/{query}#token={token('agent')}")


def a_customer_with_a_signal(worker: Worker, departments: Departments) -> tuple[str, str]:
    cid, first, second = unique("c"), unique("o"), unique("o")
    lamp = [{"sku": "desk-lamp", "quantity": 1, "unit_price_cents": 4900}]
    at = now_ms()
    departments.send(
        [
            order(cid, first, at=at - 2 * MINUTE, lines=lamp, email=f"{cid}@example.com"),
            order(cid, second, at=at - MINUTE, lines=lamp),
            contact(unique("k"), at=at, customer_id=cid, note="Two lamps?", agent="priya"),
        ]
    )
    customer(worker, cid, lambda s: bool(s["signals"]) and bool(s["contacts"]))
    return cid, second


def test_the_desk_and_the_board_have_no_serious_accessibility_violation(
    worker: Worker, departments: Departments, browser: webdriver.Chrome
) -> None:
    cid, second = a_customer_with_a_signal(worker, departments)
    open_desk(browser, worker)
    until(browser, "the page", loaded)
    found = grave_violations(browser)
    assert found == [], "\n".join(found)  # the empty desk

    open_desk(browser, worker, f"?customer={cid}")
    until(browser, "the customer", lambda d: shown(d) == cid)
    assert grave_violations(browser) == []  # a customer with a signal, orders, a contact

    browser.execute_script(
        "document.querySelector(arguments[0]).click()", f'[data-order-id="{second}"] [data-action]'
    )
    until(browser, "the form", lambda d: d.find_elements(By.CSS_SELECTOR, "form.command"))
    browser.find_element(By.ID, "unmatched-load").click()
    assert grave_violations(browser) == []  # an open command form, the unmatched list

    browser.get(f"{worker.url}/desk/voice#token={token('agent')}")
    until(browser, "the board", loaded)
    time.sleep(1)  # its first data
    found = grave_violations(browser)
    assert found == [], "\n".join(found)


def test_the_keyboard_reaches_search_closes_forms_and_walks_recent_customers(
    worker: Worker, departments: Departments, browser: webdriver.Chrome
) -> None:
    first, _ = a_customer_with_a_signal(worker, departments)
    second, oid = a_customer_with_a_signal(worker, departments)
    open_desk(browser, worker, f"?customer={first}")
    until(browser, "the first customer", lambda d: shown(d) == first)
    body = browser.find_element(By.TAG_NAME, "body")

    body.send_keys("/")  # `/` anywhere but in a field: focus the search
    assert browser.switch_to.active_element.get_attribute("id") == "q"
    browser.switch_to.active_element.send_keys(second, Keys.ENTER)
    until(browser, "the second customer", lambda d: shown(d) == second)

    browser.execute_script(
        "document.querySelector(arguments[0]).click()", f'[data-order-id="{oid}"] [data-action]'
    )
    field = f'[data-order-id="{oid}"] input[name=reason]'
    reason = until(browser, "the reason field", lambda d: d.find_element(By.CSS_SELECTOR, field))
    reason.send_keys("typing", Keys.ESCAPE)
    until(browser, "the form closed", no_form)

    # the recent customers: newest first, ArrowDown from the search walks them, Enter opens
    box = browser.find_element(By.ID, "q")
    box.click()
    items = browser.find_elements(By.CSS_SELECTOR, "#recent [data-customer]")
    recent = [e.get_attribute("data-customer") for e in items]
    assert recent[:2] == [second, first], recent
    box.send_keys(Keys.ARROW_DOWN, Keys.ARROW_DOWN)
    active = browser.switch_to.active_element
    assert active.get_attribute("data-customer") == first
    active.send_keys(Keys.ARROW_UP)
    assert browser.switch_to.active_element.get_attribute("data-customer") == second
    browser.switch_to.active_element.send_keys(Keys.ARROW_DOWN, Keys.ENTER)
    until(browser, "the first customer again", lambda d: shown(d) == first)


def test_a_new_signal_and_a_new_order_are_announced_politely(
    worker: Worker, departments: Departments, browser: webdriver.Chrome
) -> None:
    cid, first = unique("c"), unique("o")
    lamp = [{"sku": "desk-lamp", "quantity": 1, "unit_price_cents": 4900}]
    departments.send([order(cid, first, at=now_ms() - 2 * MINUTE, lines=lamp)])
    customer(worker, cid)
    open_desk(browser, worker, f"?customer={cid}")
    until(browser, "the customer", lambda d: shown(d) == cid)
    region = browser.find_element(By.ID, "announce")
    assert region.get_attribute("aria-live") == "polite"

    second = unique("o")
    departments.send([order(cid, second, at=now_ms() - MINUTE, lines=lamp)])
    until(browser, "the announcement", lambda d: second in str(region.get_attribute("textContent")))
    said = region.get_attribute("textContent")
    assert "New order" in said and "DUPLICATE ORDER" in said, said
