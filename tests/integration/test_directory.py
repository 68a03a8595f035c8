"""Finding a customer the way a caller names them, through the real directory: a worker, the
directory sink (connectors/sinks/directory.py) writing into a real PostgreSQL with pg_trgm,
``GET /directory`` and the desk's typeahead in a real Chromium."""

from __future__ import annotations

import json
import random
import string
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

from deploy.local.stack import Kafka, free_port
from tests.builders import order, unique
from tests.integration.browser import chromium
from tests.integration.connectors_harness import Processes, fresh_database
from tests.integration.harness import Departments, Worker, bearer, token, wait_for
from tests.integration.test_scale_out import own_topics

pytestmark = pytest.mark.integration


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class Directory:
    worker: Worker
    departments: Departments

    def search(self, q: str) -> tuple[int, Any]:
        return self.worker.get(f"/directory?q={urllib.parse.quote(q)}")

    def found(self, q: str, customer_id: str, timeout: float = 60) -> list[dict]:
        """The directory's answer to ``q`` once it lists ``customer_id``."""

        def check() -> list[dict] | None:
            status, body = self.search(q)
            ids = [c["customer_id"] for c in body["customers"]] if status == 200 else []
            return body["customers"] if customer_id in ids else None

        return wait_for(f"{customer_id} found by {q!r}", check, timeout)


@pytest.fixture(scope="module")
def directory(kafka: Kafka, departments: Departments, postgres_server: Any,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[Directory]:  # fmt: skip
    base: Path = tmp_path_factory.mktemp("directory")
    database = fresh_database(postgres_server)
    app_id = unique("keel-dir")
    topics = own_topics(app_id)
    env = {"KEEL_APP_ID": app_id, "KEEL_DIRECTORY_URL": database, "KEEL_PHONE_REGION": "DE",
           **topics}  # fmt: skip
    worker = Worker(kafka.bootstrap, base / "data", free_port(), base / "worker.log", **env)
    processes = Processes(kafka, base)
    saved = dict(departments.topics)
    departments.topics = {
        "order": topics["KEEL_TOPIC_ORDERS"],
        "shipment": topics["KEEL_TOPIC_SHIPMENTS"],
        "contact": topics["KEEL_TOPIC_CONTACTS"],
    }
    try:
        worker.start()
        processes.start("connectors.sinks.directory", "KEEL_DIRECTORY_SINK_PORT", "directory",
                        KEEL_DIRECTORY_SINK_GROUP=unique("dir"), **env)  # fmt: skip
        yield Directory(worker, departments)
    finally:
        departments.topics = saved
        processes.stop_all()
        worker.stop()


def a_caller() -> tuple[str, str, str, str, str]:
    """(customer id, order id, a name word of its own, the local phone, the e-mail)."""
    tag = "".join(random.choices(string.ascii_lowercase, k=6))
    digits = "".join(random.choices(string.digits, k=7))
    return unique("c"), unique("o").upper(), tag, f"030 {digits}", f"jose.{tag}@example.com"


def test_a_customer_is_found_by_name_partial_email_local_phone_and_any_case_order_id(
    directory: Directory,
) -> None:
    cid, oid, tag, local, email = a_caller()
    name = f"José {tag.capitalize()} Müller"
    phone = "+49 " + local.removeprefix("0")
    directory.departments.send([order(cid, oid, at=now_ms(), name=name, email=email,
                                      phone=phone)])  # fmt: skip

    [hit] = [c for c in directory.found(f"jose {tag} muller", cid) if c["customer_id"] == cid]
    assert hit["name"] == name and hit["phones"] == ["+4930" + local[4:]]
    assert directory.found(f"JOS {tag.upper()[:4]}", cid)  # partial words, any case
    assert directory.found(f"jose.{tag}@exa", cid)  # partial e-mail
    for said in (local, "0049 30 " + local[4:], "+49 30 " + local[4:], local[4:]):
        assert directory.found(said, cid), said  # local, international, digits only
    by_order = directory.found(oid.lower(), cid)
    assert by_order[0]["customer_id"] == cid and by_order[0]["matched"] == "exact"

    status, body = directory.search("x")
    assert status == 400 and "at least" in body["error"]


def test_an_erased_customer_is_not_found_any_more(directory: Directory) -> None:
    cid, oid, tag, local, email = a_caller()
    directory.departments.send([order(cid, oid, at=now_ms(), name=f"Ada {tag}", email=email)])
    directory.found(f"ada {tag}", cid)

    request = urllib.request.Request(
        f"{directory.worker.url}/customers/{cid}", method="DELETE",
        data=json.dumps({"reason": "data subject request"}).encode(),
        headers={"Content-Type": "application/json", **bearer("admin")},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=30) as resp:
        assert resp.status == 202

    def gone() -> bool:
        status, body = directory.search(f"ada {tag}")
        return status == 200 and cid not in [c["customer_id"] for c in body["customers"]]

    wait_for(f"{cid} gone from the directory", gone, 60)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[webdriver.Chrome]:
    driver = chromium(1280, 800, tmp_path_factory.mktemp("chromium-directory"))
    try:
        yield driver
    finally:
        driver.quit()


def test_the_desk_suggests_customers_as_the_agent_types_and_opens_the_one_picked(
    directory: Directory, browser: webdriver.Chrome
) -> None:
    first, second = a_caller(), a_caller()
    tag = first[2]
    for n, (cid, oid, _, local, email) in enumerate((first, second)):
        directory.departments.send([order(cid, oid, at=now_ms(), name=f"Zoë {tag} Brandt {n}",
                                          email=email, phone=local)])  # fmt: skip
        directory.found(f"zoe {tag}", cid)

    browser.get("about:blank")
    browser.get(f"{directory.worker.url}/desk/#token={token('agent')}")
    box = browser.find_element(By.ID, "q")
    box.send_keys(f"zoe {tag}")
    wait = WebDriverWait(browser, 20, poll_frequency=0.1)
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#suggest-list button")) == 2)
    shown = [b.get_attribute("data-customer")
             for b in browser.find_elements(By.CSS_SELECTOR, "#suggest-list button")]  # fmt: skip
    assert sorted(shown) == sorted([first[0], second[0]])

    box.send_keys(Keys.ARROW_DOWN, Keys.ARROW_DOWN)  # the keyboard walks the matches
    picked = browser.switch_to.active_element.get_attribute("data-customer")
    browser.switch_to.active_element.send_keys(Keys.ENTER)
    wait.until(lambda d: d.execute_script(
        "const e = document.querySelector('#customer:not([hidden]) [data-field=customer_id]');"
        "return e && e.textContent;") == picked)  # fmt: skip
    assert browser.find_element(By.ID, "suggest").get_attribute("hidden") is not None

    # Enter on a phone as the caller says it, with one match: that customer at once
    box.clear()
    box.send_keys("0049 30 " + second[3][4:], Keys.ENTER)
    wait.until(lambda d: d.execute_script(
        "const e = document.querySelector('#customer:not([hidden]) [data-field=customer_id]');"
        "return e && e.textContent;") == second[0])  # fmt: skip
