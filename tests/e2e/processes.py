"""Running the real app outside a test: its processes, its own names, and Debian's chromium.

Shared by the browser tests' fixtures (tests/e2e/conftest.py) and the app's memory benchmark
(bench/app_memory.py), so both start the app the same way. Nothing here imports pytest.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO
from urllib.parse import quote, urlsplit

from playwright.sync_api import BrowserContext, Page, Route, expect
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from pipeline.core.settings import Settings

__all__ = [
    "APP",
    "CHROMIUM",
    "CHROMIUM_ARGS",
    "LOOPBACK",
    "ROOT",
    "STOP_TIMEOUT",
    "VIEWPORT",
    "AppNames",
    "SelectboxTimeout",
    "Worker",
    "answers_health",
    "app_names",
    "choose",
    "free_port",
    "log_tail",
    "loopback_only",
    "start_worker",
    "wait_for_run",
    "wait_until",
]

ROOT = Path(__file__).resolve().parents[2]
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
STOP_TIMEOUT = 15.0
LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def log_tail(path: Path, lines: int = 30) -> str:
    if not path.exists():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def wait_until(condition: Callable[[], bool], timeout: float, interval: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return condition()


@dataclass
class Worker:
    """One OS process of the running app, in its own process group, logging to a file."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    log: IO[bytes]

    def exit_message(self) -> str | None:
        """Why the process is gone (with its log's tail), or None while it runs."""
        code = self.process.poll()
        if code is None:
            return None
        return (
            f"`{self.name}` exited with code {code} while the app was starting; "
            f"its log ({self.log_path}):\n{log_tail(self.log_path)}"
        )

    def stop(self) -> None:
        """SIGTERM to the whole group (a graceful stop), SIGKILL if it does not exit in time."""
        for sig, wait in ((signal.SIGTERM, STOP_TIMEOUT), (signal.SIGKILL, 5.0)):
            if self.process.poll() is not None:
                break
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.process.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                continue
        self.log.close()


def start_worker(name: str, argv: list[str], env: dict[str, str], log_dir: Path) -> Worker:
    """`argv` started from the repository root in a process group of its own, logging to
    `log_dir/<name>.log`."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    log = log_path.open("wb")
    process = subprocess.Popen(
        argv,
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group, so teardown reaches every child
    )
    return Worker(name, process, log_path, log)


@dataclass(frozen=True)
class AppNames:
    """The schema, topic, dead-letter topic, index and indexer group one running app owns."""

    name: str  # the topic's and the index's name
    schema: str
    group: str
    dlq: str
    settings: Settings  # the base settings pointed at these names
    env: dict[str, str]  # the environment for the app's processes


def app_names(base: Settings, prefix: str) -> AppNames:
    """Fresh names `<prefix>-<uuid>` for one app, and its settings and environment over them."""
    suffix = uuid.uuid4().hex[:8]
    name = f"{prefix}-{suffix}"
    schema = f"{prefix.replace('-', '_')}_{suffix}"
    group = f"{name}-indexer"
    url = f"{base.database_url}{'&' if '?' in base.database_url else '?'}"
    url += f"options={quote('-c search_path=' + schema)}"
    own = base.model_copy(
        update={"database_url": url, "kafka_topic": name, "elasticsearch_index": name,
                "indexer_group": group, "read_only": False}
    )  # fmt: skip
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "KAFKA_TOPIC": name,
        "ELASTICSEARCH_INDEX": name,
        "INDEXER_GROUP": group,
        "TASKSTREAM_READ_ONLY": "false",
        "PYTHONUNBUFFERED": "1",
    }
    return AppNames(name, schema, group, f"{name}.dlq", own, env)


def answers_health(port: int) -> bool:
    """True when Streamlit on 127.0.0.1:`port` answers its health check."""
    try:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{port}/_stcore/health", timeout=2
        ) as response:
            return response.read() == b"ok"
    except OSError:
        return False


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
