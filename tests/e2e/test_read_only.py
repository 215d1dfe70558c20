"""Read-only mode in Debian's chromium: the sidebar's badge on every page, and a real
`streamlit run` (with its background lag samplers) that creates nothing on a fresh install.

AppTest shows the sidebar only on the first page (tests/integration/test_read_only.py checks it
there, and that nothing is written); a browser shows what a user sees after each page switch.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
import pytest
from confluent_kafka.admin import AdminClient
from elasticsearch import Elasticsearch
from playwright.sync_api import Browser, Page, expect

from pipeline.core.settings import Settings
from testkit.processes import (
    AppNames,
    answers_health,
    app_names,
    free_port,
    log_tail,
    start_worker,
)
from testkit.waiting import wait_until
from tests.e2e.conftest import ARTIFACTS, RunningApp, fresh_page
from tests.e2e.test_browser import go_to, open_app

BADGE = "Read-only mode"
STARTUP_TIMEOUT = 60.0


@dataclass(frozen=True)
class ReadOnlyApp:
    app: RunningApp
    names: AppNames


@pytest.fixture(scope="module")
def read_only_app(settings: Settings) -> Iterator[ReadOnlyApp]:
    """`streamlit run app.py` with TASKSTREAM_READ_ONLY=true on names nothing exists under."""
    names = app_names(settings, "test-e2e-ro")
    env = {**names.env, "TASKSTREAM_READ_ONLY": "true"}
    port = free_port()
    serve = [sys.executable, "-m", "streamlit", "run", "app.py",
             "--server.address", "127.0.0.1", "--server.port", str(port),
             "--server.headless", "true", "--browser.gatherUsageStats", "false"]  # fmt: skip
    worker = start_worker("streamlit-read-only", serve, env, ARTIFACTS / "logs")
    try:
        if not wait_until(lambda: answers_health(port), STARTUP_TIMEOUT):
            pytest.fail(
                f"streamlit did not answer on 127.0.0.1:{port} within {STARTUP_TIMEOUT:.0f} s; "
                f"its log:\n{log_tail(worker.log_path)}",
                pytrace=False,
            )
        yield ReadOnlyApp(RunningApp(f"http://127.0.0.1:{port}", names.settings, 0), names)
    finally:
        worker.stop()


@pytest.fixture
def read_only_page(browser: Browser, read_only_app: ReadOnlyApp) -> Iterator[Page]:
    with fresh_page(browser) as page:
        yield page


def test_the_read_only_badge_is_on_every_page_and_nothing_is_created(
    read_only_page: Page,
    read_only_app: ReadOnlyApp,
    admin: AdminClient,
    es: Elasticsearch,
    pg: psycopg.Connection,
) -> None:
    page = read_only_page
    entries = open_app(page, read_only_app.app)
    assert len(entries) == 8 and entries[-1].label == "Lab", entries
    sidebar = page.locator('[data-testid="stSidebar"]')
    for entry in entries:
        go_to(page, entry)
        expect(sidebar).to_contain_text(BADGE)
        expect(sidebar).to_contain_text("every write is refused")

    # Nothing the app would create exists: no topic, index, group or schema.
    names = read_only_app.names
    topics = admin.list_topics(timeout=15).topics
    assert names.name not in topics and names.dlq not in topics
    assert not es.indices.exists(index=names.name)
    listed = admin.list_consumer_groups(request_timeout=15).result(timeout=30).valid
    assert names.group not in {g.group_id for g in listed}
    schemas = pg.execute("SELECT count(*) FROM pg_namespace WHERE nspname = %s", (names.schema,))
    assert schemas.fetchone() == (0,)
