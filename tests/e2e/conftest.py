"""The app in a real browser: Debian's chromium driven by Playwright against a real `streamlit run`.

One running app per module, started the way `make run` starts it (the Streamlit server plus
`python -m pipeline relay` and `indexer` as their own processes), on its own PostgreSQL schema,
topic, dead-letter topic, index and indexer group, so it never sees another test's data. Its
logs and the screenshots land in tests/e2e/artifacts/.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from confluent_kafka.admin import AdminClient
from elasticsearch import Elasticsearch
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, sync_playwright
from psycopg import sql

from pipeline.bootstrap import open_task_service
from pipeline.core.seed import generate_tasks
from pipeline.core.settings import Settings
from testkit.browser import CHROMIUM, CHROMIUM_ARGS, VIEWPORT, loopback_only
from testkit.processes import (
    ROOT,
    Worker,
    answers_health,
    app_names,
    free_port,
    log_tail,
    start_worker,
)
from testkit.topics import create_topic
from testkit.waiting import wait_until

__all__ = ["ARTIFACTS", "ROOT", "VIEWPORT", "RunningApp"]

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
INSTALL_HINT = "run `make chromium` (as root: `apt-get install -y chromium`)"
SEEDED_TASKS = 240
STARTUP_TIMEOUT = 60.0


def check_alive(worker: Worker) -> None:
    """Fail the test, with the worker's log, if it has exited."""
    message = worker.exit_message()
    if message is not None:
        pytest.fail(message, pytrace=False)


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
    names = app_names(settings, "test-e2e")
    name, schema, group, dlq, own = names.name, names.schema, names.group, names.dlq, names.settings
    env = names.env
    port = free_port()
    logs = ARTIFACTS / "logs"

    pg.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    create_topic(admin, name, own.kafka_topic_partitions)
    workers: list[Worker] = []
    try:
        # Tasks first, so the Topic, Consumer groups and Search pages have something to show.
        with open_task_service(own) as service:
            service.create_many(generate_tasks(SEEDED_TASKS, seed=4))
        py = sys.executable
        workers.append(start_worker("relay", [py, "-m", "pipeline", "relay"], env, logs))
        workers.append(start_worker("indexer", [py, "-m", "pipeline", "indexer"], env, logs))
        # As `make run` serves it: pipeline.serve, which restarts a crashed server.
        serve = [py, "-m", "pipeline.serve"]
        serve_env = {**env, "APP_ADDRESS": "127.0.0.1", "APP_PORT": str(port)}
        workers.append(start_worker("streamlit", serve, serve_env, logs))

        def healthy() -> bool:
            for worker in workers:
                check_alive(worker)
            return answers_health(port)

        if not wait_until(healthy, STARTUP_TIMEOUT):
            pytest.fail(
                f"streamlit did not answer on 127.0.0.1:{port}/_stcore/health within "
                f"{STARTUP_TIMEOUT:.0f} s; its log:\n{log_tail(workers[-1].log_path)}",
                pytrace=False,
            )

        def indexed() -> bool:
            for worker in workers:
                check_alive(worker)
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


@contextlib.contextmanager
def fresh_page(browser: Browser) -> Iterator[Page]:
    """A page in a fresh browser context (so a fresh Streamlit session) reaching loopback only."""
    context: BrowserContext = browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(20_000)
    loopback_only(context)
    try:
        yield context.new_page()
    finally:
        context.close()


@pytest.fixture
def page(browser: Browser, app: RunningApp) -> Iterator[Page]:
    """A fresh page on the running app's browser."""
    with fresh_page(browser) as page:
        yield page
