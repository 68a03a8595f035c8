"""A real headless Chromium for the desk console's tests: Debian's ``chromium`` and
``chromium-driver`` (installed by ``make deps``), driven by selenium.

Nothing is downloaded: selenium is given both binaries, so Selenium Manager never runs, and
Chromium starts with a fresh profile and its background networking switched off.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def chromium(width: int = 1280, height: int = 800, profile: Path | None = None) -> webdriver.Chrome:
    """A headless Chromium whose viewport is exactly ``width`` × ``height`` CSS pixels."""
    profile = profile or Path(tempfile.mkdtemp(prefix="keel-chromium-"))
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600},
    )
    return driver


AXE_VERSION = "4.14.1"
AXE_CACHE = Path.home() / ".cache" / "keel" / f"axe-core-{AXE_VERSION}"


def axe_script() -> str:
    """axe-core's ``axe.min.js`` (the accessibility engine, from its npm package), fetched
    once into ~/.cache/keel with the machine's npm, as the Kafka jars are."""
    script = AXE_CACHE / "axe.min.js"
    if not script.exists():
        import shutil
        import subprocess
        import tarfile

        npm = shutil.which("npm")
        if npm is None:
            raise RuntimeError("npm is needed once to fetch axe-core for the accessibility check")
        AXE_CACHE.mkdir(parents=True, exist_ok=True)
        subprocess.run([npm, "pack", f"axe-core@{AXE_VERSION}", "--silent"], cwd=AXE_CACHE,
                       check=True, capture_output=True, timeout=300)  # fmt: skip
        with tarfile.open(AXE_CACHE / f"axe-core-{AXE_VERSION}.tgz") as tar:
            member = tar.extractfile("package/axe.min.js")
            assert member is not None
            (AXE_CACHE / "axe.min.js.part").write_bytes(member.read())
        (AXE_CACHE / "axe.min.js.part").rename(script)
    return script.read_text()
