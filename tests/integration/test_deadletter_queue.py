"""Dead letters as a queue an operator works through (#24): filters, a letter's bytes, a replay
that fails again linked to its original, letters marked handled — with ``keel deadletters``
and on the console's page (admin role), against the real broker and worker."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.builders import unique
from tests.integration.browser import chromium
from tests.integration.harness import ROOT, Departments, Worker, token, wait_for

pytestmark = pytest.mark.integration


def keel(worker: Worker, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "streams", *args], cwd=ROOT, env=worker.env,
                          capture_output=True, text=True, check=check, timeout=120)  # fmt: skip


def listed(worker: Worker, key: str, *filters: str) -> list[dict[str, Any]]:
    out = keel(worker, "deadletters", "list", "--json", *filters)
    return [d for d in json.loads(out.stdout) if d["key"] == key]


def a_broken_order(departments: Departments) -> tuple[str, bytes]:
    key = unique("c")
    value = json.dumps({"customer_id": key, "note": "JSON where Avro belongs"}).encode()
    departments.send_raw("orders.v1", key.encode(), value)
    return key, value


def test_a_replay_that_fails_again_is_linked_to_its_original_and_letters_can_be_handled(
    worker: Worker, departments: Departments
) -> None:
    key, value = a_broken_order(departments)
    [letter] = wait_for("the letter", lambda: listed(worker, key, "--topic", "orders.v1") or None)
    assert letter["status"] == "open" and letter["replay_of"] is None
    assert listed(worker, key, "--topic", "contacts.v1") == []  # filters: topic
    assert listed(worker, key, "--reason", "NOT AVRO")  # a part of the reason, any case
    assert listed(worker, key, "--reason", "something else entirely") == []
    assert listed(worker, key, "--since", "1h")
    assert listed(worker, key, "--since", "2099-01-01") == []

    shown = json.loads(keel(worker, "deadletters", "show", letter["position"], "--json").stdout)
    assert shown["json"] == json.loads(value)  # the value as JSON
    assert value[:16].hex(" ") in shown["hex"].splitlines()[0]  # and its bytes
    assert shown["headers"]["x-source-topic"] == "orders.v1"
    plain = keel(worker, "deadletters", "show", letter["position"]).stdout
    assert "x-error: not Avro" in plain and "value as JSON:" in plain

    keel(worker, "deadletters", "replay", letter["position"], "--by", "ops-ann")

    def failed_again() -> list[dict[str, Any]] | None:
        found = listed(worker, key, "--status", "all")
        return found if len(found) == 2 and found[0]["replays"] else None

    original, again = wait_for("the replay's own dead letter", failed_again)
    assert (original["position"], original["status"], original["by"]) == (
        letter["position"], "replayed", "ops-ann")  # fmt: skip
    assert original["replays"] == [again["position"]]
    assert again["replay_of"] == letter["position"] and again["status"] == "open"
    assert [d["position"] for d in listed(worker, key)] == [again["position"]]  # open only

    handled = keel(worker, "deadletters", "handle", again["position"], "--by", "ops-ann",
                   "--note", "test data from the shop's staging")  # fmt: skip
    assert f"marked {again['position']} handled" in handled.stdout
    assert listed(worker, key) == []
    [done] = listed(worker, key, "--status", "handled")
    assert done["note"] == "test data from the shop's staging" and done["by"] == "ops-ann"

    no_note = keel(worker, "deadletters", "handle", letter["position"], "--note", " ",
                   check=False)  # fmt: skip
    assert no_note.returncode == 2 and "say why" in no_note.stderr
    bad_since = keel(worker, "deadletters", "list", "--since", "last tuesday", check=False)
    assert bad_since.returncode == 2 and "since" in bad_since.stderr


def test_the_cli_takes_the_broker_as_a_flag_and_says_plain_help(worker: Worker) -> None:
    help_text = keel(worker, "--help").stdout
    assert "``" not in help_text and "keel deadletters list" in help_text
    env_without = {k: v for k, v in worker.env.items() if k != "KAFKA_BOOTSTRAP"}
    out = subprocess.run(
        [sys.executable, "-m", "streams", "deadletters", "list", "--json",
         "--bootstrap", worker.env["KAFKA_BOOTSTRAP"], "--status", "all"],
        cwd=ROOT, env=env_without, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert isinstance(json.loads(out.stdout), list)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[webdriver.Chrome]:
    driver = chromium(1280, 800, tmp_path_factory.mktemp("chromium-deadletters"))
    try:
        yield driver
    finally:
        driver.quit()


def test_the_console_page_lists_shows_and_marks_a_letter_handled(
    worker: Worker, departments: Departments, browser: webdriver.Chrome
) -> None:
    key, value = a_broken_order(departments)
    [letter] = wait_for("the letter", lambda: listed(worker, key) or None)
    position = letter["position"]

    browser.get("about:blank")
    browser.get(f"{worker.url}/desk/deadletters#token={token('agent')}")  # not an operator
    wait = WebDriverWait(browser, 30, poll_frequency=0.1)
    wait.until(lambda d: d.find_element(By.ID, "signin").is_displayed())
    assert "admin" in browser.find_element(By.ID, "signin-why").text

    browser.get("about:blank")
    browser.get(f"{worker.url}/desk/deadletters#token={token('admin')}")
    browser.find_element(By.ID, "agent").send_keys("ops-ann")
    browser.find_element(By.ID, "f-reason").send_keys("not avro")
    browser.find_element(By.CSS_SELECTOR, "#filters button").click()
    row = f'tr[data-position="{position}"]'
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, row))
    browser.execute_script("document.querySelector(arguments[0]).click()", f"{row} button")
    wait.until(lambda d: d.find_element(By.ID, "letter").is_displayed())
    assert json.loads(browser.find_element(By.ID, "as-json").text) == json.loads(value)
    assert "x-source-topic" in browser.find_element(By.ID, "headers").text

    browser.find_element(By.ID, "note").send_keys("duplicate of a fixed record")
    browser.find_element(By.ID, "handled").click()
    wait.until(lambda d: not d.find_elements(By.CSS_SELECTOR, row))  # gone from the open ones
    [done] = listed(worker, key, "--status", "handled")
    assert done["by"] == "ops-ann" and done["note"] == "duplicate of a fixed record"
