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
