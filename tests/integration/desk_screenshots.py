"""Screenshots of the desk console for the README and docs/desk.md, from a real broker,
worker and Chromium.

    .venv/bin/python -m tests.integration.desk_screenshots [docs/screenshots]

Starts a broker and a worker of its own (temporary directories, free ports), sends one
customer's story as the departments would (two identical orders, a late parcel, a second
contact about the same order), and saves the page at 1280×800 and at 400 px wide.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from deploy.local.stack import Kafka, free_port
from tests.builders import contact, order, shipment
from tests.integration.browser import chromium
from tests.integration.harness import ROOT, Departments, Worker, ensure_tokens, token, wait_for

MINUTE = 60_000
HOUR = 60 * MINUTE
CUSTOMER = "c-jo-reed"
# (file, width, height; height None: the whole page, what to do on the page first)
CANCEL_FORM = """
document.getElementById('agent').value = 'rep-7';
document.querySelector('[data-order-id="o-1188"] [data-action="cancel"]').click();
const reason = document.querySelector('[data-order-id="o-1188"] input[name=reason]');
reason.value = 'Duplicate of o-1187, customer confirmed on the phone';
reason.dispatchEvent(new Event('input'));
"""
SHOTS = (
    ("desk-1280x800.png", 1280, 800, None),
    ("desk-narrow-400.png", 400, 800, None),
    ("desk-narrow-400-full.png", 400, None, None),
    ("desk-cancel-1280x800.png", 1280, 800, CANCEL_FORM),
)


def story(now: int) -> list[tuple[str, dict]]:
    lamp = [{"sku": "desk-lamp-brass", "quantity": 1, "unit_price_cents": 4900}]
    kindle = [{"sku": "kindle-paperwhite", "quantity": 1, "unit_price_cents": 13999}]
    who = {"name": "Jo Reed", "email": "jo.reed@example.com", "phone": "+1 206 555 0147"}
    return [
        order(CUSTOMER, "o-1041", at=now - 30 * HOUR, lines=kindle, promised_by=now - 2 * HOUR,
              **who),
        shipment("o-1041", "s-881", "DISPATCHED", now - 26 * HOUR, expected_by=now - 3 * HOUR),
        shipment("o-1041", "s-881", "IN_TRANSIT", now - 20 * HOUR, expected_by=now - 3 * HOUR),
        order(CUSTOMER, "o-1187", at=now - 3 * MINUTE, lines=lamp, **who),
        order(CUSTOMER, "o-1188", at=now - 2 * MINUTE, lines=lamp, **who),
        contact("k-5520", at=now - 26 * HOUR, customer_id=CUSTOMER, order_id="o-1041",
                channel="CHAT", topic="where is my parcel", agent="priya",
                note="Kindle not here yet. I am happy to wait a couple of days, just tell me."),
        contact("k-5520", "RESOLVED", at=now - 25 * HOUR, customer_id=CUSTOMER, channel="CHAT",
                agent="priya", note="Told her the carrier expects delivery today."),
        contact("k-5611", at=now - 4 * MINUTE, customer_id=CUSTOMER, order_id="o-1041",
                channel="PHONE", kind="COMPLAINT", topic="parcel still missing", agent="marco",
                note="Calls again: still no Kindle, and she was charged twice for a lamp."),
        contact("k-5611", "NOTE_ADDED", at=now - 40_000, customer_id=CUSTOMER, channel="PHONE",
                kind="COMPLAINT", agent="marco",
                note="Read Priya's note. Carrier trace opened; asked web shop to cancel o-1188."),
    ]  # fmt: skip


LIVE = "return document.getElementById('live-text').textContent"


def shoot(
    url: str, path: Path, width: int, height: int | None, profile: Path, script: str | None
) -> None:
    """Save the page at ``url`` once it is live; ``height`` None: the whole page's height."""
    driver = chromium(width, height or 800, profile)
    try:
        driver.get(url)
        wait_for("the page, live", lambda: driver.execute_script(LIVE) == "live")
        if script:
            driver.execute_script(script)
        time.sleep(1.5)  # a tick of the relative clocks
        if height is None:
            full = driver.execute_script("return document.body.scrollHeight")
            metrics = {"width": width, "height": full, "deviceScaleFactor": 1, "mobile": True}
            driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
        driver.save_screenshot(str(path))
    finally:
        driver.quit()


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    ensure_tokens()  # the worker inherits them; the page gets the agent's in its URL fragment
    with tempfile.TemporaryDirectory(prefix="keel-shots-") as tmp:
        base = Path(tmp)
        kafka = Kafka(base / "kafka", port=free_port(), log_file=base / "kafka.log")
        kafka.start(timeout=120)
        worker = Worker(kafka.bootstrap, base / "data", free_port(), base / "worker.log")
        try:
            worker.start()
            Departments(kafka.bootstrap).send(story(int(time.time() * 1000)))

            def complete() -> bool:
                status, state = worker.get(f"/customers/{CUSTOMER}")
                return status == 200 and len(state["signals"]) >= 3 and len(state["orders"]) == 3

            wait_for("the story's state", complete)
            for name, width, height, script in SHOTS:
                url = f"{worker.url}/desk/?customer={CUSTOMER}#token={token('agent')}"
                shoot(url, out / name, width, height, base / f"profile-{name}", script)
                print(out / name)
        finally:
            worker.stop()
            kafka.stop()


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "screenshots")
