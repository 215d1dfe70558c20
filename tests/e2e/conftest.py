"""The app in a real browser: Debian's chromium driven by Playwright against a real `streamlit run`.

One running app per module, started the way `make run` starts it (the Streamlit server plus
`python -m pipeline relay` and `indexer` as their own processes), on its own PostgreSQL schema,
topic, dead-letter topic, index and indexer group, so it never sees another test's data. Its
logs and the screenshots land in tests/e2e/artifacts/.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO
from urllib.parse import quote, urlsplit

import psycopg
import pytest
from confluent_kafka.admin import AdminClient, NewTopic
from elasticsearch import Elasticsearch
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, Route, sync_playwright
from psycopg import sql

from pipeline.bootstrap import open_task_service
from pipeline.seed import generate_tasks
from pipeline.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
CHROMIUM = Path("/usr/bin/chromium")
INSTALL_HINT = "run `make chromium` (as root: `apt-get install -y chromium`)"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
VIEWPORT = {"width": 1400, "height": 900}
SEEDED_TASKS = 240
STARTUP_TIMEOUT = 60.0
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

    def check_alive(self) -> None:
        code = self.process.poll()
        if code is not None:
            pytest.fail(
                f"`{self.name}` exited with code {code} while the app was starting; "
                f"its log ({self.log_path}):\n{log_tail(self.log_path)}",
                pytrace=False,
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


def start_worker(name: str, argv: list[str], env: dict[str, str]) -> Worker:
    log_path = ARTIFACTS / "logs" / f"{name}.log"
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
class RunningApp:
    """The app under test: its URL and the names it works on."""

    url: str
    settings: Settings
    seeded: int

    @property
    def topic(self) -> str:
        return self.settings.kafka_topic

    @property
    def index(self) -> str:
        return self.settings.elasticsearch_index


def index_count(es: Elasticsearch, index: str) -> int:
    if not es.indices.exists(index=index):
        return 0
    es.indices.refresh(index=index)
    return int(es.count(index=index)["count"])


@pytest.fixture(scope="module")
def chromium() -> Path:
    """Debian's chromium; its absence fails the test with the command that installs it."""
    if not (CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)):
        pytest.fail(
            f"Debian's chromium is not installed ({CHROMIUM} is missing); the browser tests "
            f"never download a browser: {INSTALL_HINT}",
            pytrace=False,
        )
    return CHROMIUM


@pytest.fixture(scope="module")
def app(
    settings: Settings, admin: AdminClient, es: Elasticsearch, pg: psycopg.Connection
) -> Iterator[RunningApp]:
    """`streamlit run app.py` with the relay and indexer beside it, on names of its own, seeded
    with tasks that are already indexed when the tests start; everything is stopped and dropped
    afterwards."""
    suffix = uuid.uuid4().hex[:8]
    name = f"test-e2e-{suffix}"
    schema = f"test_e2e_{suffix}"
    group = f"{name}-indexer"
    dlq = f"{name}.dlq"
    url = f"{settings.database_url}{'&' if '?' in settings.database_url else '?'}"
    url += f"options={quote('-c search_path=' + schema)}"
    own = settings.model_copy(
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
    port = free_port()
    (ARTIFACTS / "logs").mkdir(parents=True, exist_ok=True)

    pg.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    admin.create_topics([NewTopic(name, num_partitions=own.kafka_topic_partitions)])[name].result(
        timeout=30
    )
    workers: list[Worker] = []
    try:
        # Tasks first, so the Topic, Consumer groups and Search pages have something to show.
        with open_task_service(own) as service:
            service.create_many(generate_tasks(SEEDED_TASKS, seed=4))
        py = sys.executable
        workers.append(start_worker("relay", [py, "-m", "pipeline", "relay"], env))
        workers.append(start_worker("indexer", [py, "-m", "pipeline", "indexer"], env))
        serve = [py, "-m", "streamlit", "run", "app.py",
                 "--server.address", "127.0.0.1", "--server.port", str(port),
                 "--server.headless", "true", "--browser.gatherUsageStats", "false"]  # fmt: skip
        workers.append(start_worker("streamlit", serve, env))

        def healthy() -> bool:
            for worker in workers:
                worker.check_alive()
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{port}/_stcore/health", timeout=2
                ) as response:
                    return response.read() == b"ok"
            except OSError:
                return False

        if not wait_until(healthy, STARTUP_TIMEOUT):
            pytest.fail(
                f"streamlit did not answer on 127.0.0.1:{port}/_stcore/health within "
                f"{STARTUP_TIMEOUT:.0f} s; its log:\n{log_tail(workers[-1].log_path)}",
                pytrace=False,
            )

        def indexed() -> bool:
            for worker in workers:
                worker.check_alive()
            return index_count(es, name) >= SEEDED_TASKS

        if not wait_until(indexed, STARTUP_TIMEOUT):
            pytest.fail(
                f"the relay and indexer did not index the {SEEDED_TASKS} seeded tasks into "
                f"'{name}' within {STARTUP_TIMEOUT:.0f} s (found {index_count(es, name)}); "
                f"relay log:\n{log_tail(workers[0].log_path)}\n"
                f"indexer log:\n{log_tail(workers[1].log_path)}",
                pytrace=False,
            )
        yield RunningApp(f"http://127.0.0.1:{port}", own, SEEDED_TASKS)
    finally:
        for worker in reversed(workers):
            worker.stop()
        admin.delete_consumer_groups([group])  # futures: a group never created is fine
        for future in admin.delete_topics([name, dlq]).values():
            # The dead-letter topic exists only if something malformed reached the indexer.
            with contextlib.suppress(Exception):
                future.result(timeout=30)
        es.indices.delete(index=name, ignore_unavailable=True)
        pg.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture(scope="module")
def browser(chromium: Path) -> Iterator[Browser]:
    """Headless Debian chromium under Playwright (its bundled driver; no browser download)."""
    playwright: Playwright = sync_playwright().start()
    try:
        browser = playwright.chromium.launch(
            executable_path=str(chromium), headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()
    finally:
        playwright.stop()


@pytest.fixture
def page(browser: Browser, app: RunningApp) -> Iterator[Page]:
    """A fresh browser context (so a fresh Streamlit session) that reaches loopback only."""
    context: BrowserContext = browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(20_000)

    def loopback_only(route: Route) -> None:
        host = urlsplit(route.request.url).hostname or ""
        if route.request.url.startswith(("data:", "blob:")) or host in LOOPBACK:
            route.continue_()
        else:
            route.abort()

    context.route("**/*", loopback_only)
    page = context.new_page()
    try:
        yield page
    finally:
        context.close()
