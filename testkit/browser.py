"""Driving the real app in Debian's chromium with Playwright.

Shared by the browser tests (tests/e2e) and the app's memory benchmark (bench/app_memory.py),
so both drive the app the same way. Nothing here imports pytest.
"""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import urlsplit

from playwright.sync_api import BrowserContext, Page, Route, expect
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

__all__ = [
    "APP",
    "CHROMIUM",
    "CHROMIUM_ARGS",
    "LOOPBACK",
    "VIEWPORT",
    "SelectboxTimeout",
    "choose",
    "loopback_only",
    "wait_for_run",
]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
VIEWPORT = {"width": 1400, "height": 900}
APP = '[data-testid="stApp"]'  # Streamlit's root element: its attributes tell the session's state
LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}


def loopback_only(context: BrowserContext) -> None:
    """Let the browser context reach loopback only (and data:/blob: URLs)."""

    def route(route: Route) -> None:
        host = urlsplit(route.request.url).hostname or ""
        if route.request.url.startswith(("data:", "blob:")) or host in LOOPBACK:
            route.continue_()
        else:
            route.abort()

    context.route("**/*", route)


class SelectboxTimeout(TimeoutError):
    """A selectbox never offered the option asked for."""


def wait_for_run(page: Page, timeout: float = 60_000) -> None:
    """Until the session is connected and no script run is in flight."""
    expect(page.locator(f'{APP}[data-test-connection-state="CONNECTED"]')).to_be_attached(
        timeout=timeout
    )
    expect(page.locator(f'{APP}[data-test-script-state="notRunning"]')).to_be_attached(
        timeout=timeout
    )


def choose(page: Page, label: str, option: str, timeout: float = 90.0) -> None:
    """Pick `option` in the selectbox labelled `label`, as a user would; an option that is not
    offered yet (the indexer's group before its first commit) is looked for again until
    `timeout` seconds have passed."""
    box = page.locator('[data-testid="stSelectbox"]').filter(has_text=label).first
    choice = page.get_by_role("option", name=option, exact=True)
    deadline = time.monotonic() + timeout
    while True:
        box.click()
        try:
            choice.click(timeout=3_000)
            break
        except PlaywrightTimeoutError:
            if time.monotonic() > deadline:
                raise SelectboxTimeout(
                    f"the {label!r} selectbox never offered {option!r}"
                ) from None
            page.keyboard.press("Escape")
            page.wait_for_timeout(2_000)
    expect(box.get_by_role("combobox")).to_have_value(option)
    wait_for_run(page)
