"""docs/voice.md's screenshot of the Voice of the Customer board, from `make run`'s demo feed.

    .venv/bin/python -m tests.integration.voice_screenshots [docs/screenshots]

Starts a broker and a worker of its own (temporary directories, free ports), sends what the
demo feed of `make run` sends (``Feed(seed=7).history(300)``, its default), and saves the
board at 1280×800 with its busiest complaint topic opened.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from connectors.sources.demo_feed import Feed
from deploy.local.stack import Kafka, free_port
from tests.integration.browser import chromium
from tests.integration.harness import ROOT, Departments, Worker, ensure_tokens, token, wait_for

OPEN_TOPIC = """
const data = window.keelVoice.data;
const worst = data.topics.filter((t) => t.kind === 'COMPLAINT')[0] || data.topics[0];
[...document.querySelectorAll('#cloud button')]
  .find((b) => b.dataset.topic === worst.topic).click();
document.getElementById('agent').value = 'rep-7';
document.getElementById('announce-text').value =
  'We have changed carriers in your area: parcels arrive within two days again.';
"""


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    ensure_tokens()
    with tempfile.TemporaryDirectory(prefix="keel-shots-") as tmp:
        base = Path(tmp)
        kafka = Kafka(base / "kafka", port=free_port(), log_file=base / "kafka.log")
        kafka.start(timeout=120)
        worker = Worker(kafka.bootstrap, base / "data", free_port(), base / "worker.log")
        try:
            worker.start()
            items = Feed(seed=7).history(300)
            Departments(kafka.bootstrap).send(items)
            now = int(time.time() * 1000)  # the feed dates some contacts hours ahead
            contacts = len({e["contact_id"] for k, e in items if k == "contact"
                            and e["type"] == "OPENED" and e["occurred_at"] <= now})  # fmt: skip

            def counted() -> bool:
                status, body = worker.get("/voice?window=7d")
                return status == 200 and body["total"]["count"] == contacts

            wait_for("every demo contact on /voice", counted, 120)
            driver = chromium(1280, 800, base / "profile")
            try:
                driver.get(f"{worker.url}/desk/voice?window=7d#token={token('agent')}")
                wait_for("the board, live", lambda: driver.execute_script(
                    "return window.keelVoice.renders") > 0)  # fmt: skip
                driver.execute_script(OPEN_TOPIC)
                wait_for("the topic's customers",
                         lambda: driver.execute_script("return document.querySelectorAll("
                                                       "'#voices li').length") > 0)  # fmt: skip
                driver.execute_script("window.scrollTo(0, 0)")  # the cloud, then the topic
                time.sleep(1.0)
                path = out / "voice-1280x800.png"
                driver.save_screenshot(str(path))
                print(path, f"({contacts} contacts)")
            finally:
                driver.quit()
        finally:
            worker.stop()
            kafka.stop()


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "screenshots")
