"""The Tasks page against the real services: forms, events, list, generate, read-only, outages.

Each test runs the app on its own PostgreSQL schema, topic and index name (set in the environment
before the app builds its settings), so tests never see each other's tasks.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, time
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest
from confluent_kafka.admin import AdminClient
from psycopg import sql
from psycopg_pool import ConnectionPool
from streamlit.testing.v1 import AppTest

from pipeline.core.partitioner import partition_for_key
from pipeline.core.settings import Settings
from pipeline.postgres.store import OutboxStore, PostgresTaskRepository
from pipeline.service.tasks import TaskService
from pipeline.workers.indexer import Indexer
from pipeline.workers.relay import OutboxRelay
from testkit.processes import free_port
from testkit.waiting import wait_for
from ui.resources import clear_caches, journey_tracker

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def app_env(
    monkeypatch: pytest.MonkeyPatch,
    settings: Settings,
    pg_schema: str,
    unique: str,
    admin: AdminClient,
    es: object,
) -> Iterator[str]:
    """The app's environment: this test's schema, topic and index; returns the schema."""
    separator = "&" if "?" in settings.database_url else "?"
    options = quote("-c search_path=" + pg_schema)
    monkeypatch.setenv("DATABASE_URL", f"{settings.database_url}{separator}options={options}")
    monkeypatch.setenv("KAFKA_TOPIC", f"test-{unique}")
    monkeypatch.setenv("ELASTICSEARCH_INDEX", f"test-{unique}")
    monkeypatch.setenv("TASKSTREAM_READ_ONLY", "false")
    clear_caches()
    yield pg_schema
    clear_caches()


def open_tasks_page() -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    at.switch_page("pages/tasks.py").run()
    assert not at.exception, at.exception
    assert at.title[0].value == "Tasks"
    return at


def rows(pg: psycopg.Connection, schema: str, query: str) -> list[tuple]:
    """Run `query` with {} standing for the schema."""
    return pg.execute(sql.SQL(query).format(sql.Identifier(schema))).fetchall()


def page_text(at: AppTest) -> str:
    return "\n".join(m.value for m in at.main.markdown)


def errors(at: AppTest) -> str:
    return "\n".join(e.value for e in at.error)


def set_moment(at: AppTest, prefix: str, label: str, day: date, clock: time) -> None:
    at.checkbox(key=f"{prefix}_{label}_none").uncheck()
    at.date_input(key=f"{prefix}_{label}_date").set_value(day)
    at.time_input(key=f"{prefix}_{label}_time").set_value(clock)


def submit_create(at: AppTest, description: str, priority: str = "none") -> AppTest:
    at.text_input(key="create_description").input(description)
    at.selectbox(key="create_priority").select(priority)
    return at.button(key="create_submit").click().run()


def test_create_task_through_the_form_shows_its_event_and_offset(
    app_env: str,
    pg: psycopg.Connection,
    settings: Settings,
    pool: ConnectionPool,
    admin: AdminClient,
    unique: str,
):
    at = open_tasks_page()
    at.text_input(key="create_description").input("Write the Tasks page test")
    at.selectbox(key="create_priority").select("high")
    set_moment(at, "create", "Start", date(2026, 12, 1), time(9, 0))
    set_moment(at, "create", "Due", date(2026, 12, 2), time(17, 30))
    at.button(key="create_submit").click().run()
    assert not at.exception, at.exception
    assert not at.error, errors(at)

    [(task_id, description, priority, start, due, done)] = rows(
        pg, app_env, "SELECT id, description, priority, start_at, due_at, is_done FROM {}.tasks"
    )
    assert (description, priority, done) == ("Write the Tasks page test", "high", False)
    assert start == datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    assert due == datetime(2026, 12, 2, 17, 30, tzinfo=UTC)
    [(event_type,)] = rows(pg, app_env, "SELECT type FROM {}.outbox")
    assert event_type == "tasks.event.created"

    key = str(task_id)
    expected_partition = partition_for_key(key.encode(), 6)
    shown = page_text(at)
    assert "Event type: `tasks.event.created`" in shown
    assert f"Key: `{key}`" in shown
    assert f"Partition: **{expected_partition}** of 6" in shown
    assert "Offset: waiting for the relay" in shown
    # The form is empty again, ready for the next task.
    assert at.text_input(key="create_description").value == ""

    # Publish with a relay on this test's schema and topic: the page then shows the offset.
    relay_settings = settings.replace(kafka_topic=f"test-{unique}")
    relay = OutboxRelay(relay_settings, OutboxStore(pool), admin=admin)
    try:
        assert relay.run_once() == 1
        [(partition, offset)] = rows(pg, app_env, "SELECT partition, kafka_offset FROM {}.outbox")
        assert partition == expected_partition
        event_id = uuid.UUID(rows(pg, app_env, "SELECT event_id::text FROM {}.outbox")[0][0])
        wait_for(lambda: journey_tracker().get(event_id).published, "the page to see it published")
        at.run()
        shown = page_text(at)
        assert f"Offset: {offset}" in shown
        assert "waiting for the relay" not in shown
        assert "Published; waiting for the indexer" in "\n".join(c.value for c in at.caption)

        # Index it: the page then shows how long each step of its way took.
        indexer = Indexer(
            relay_settings, group=f"test-group-{unique}", topic=relay_settings.kafka_topic,
            index=f"test-{unique}", dlq_topic=None, create_topics=False,
        )  # fmt: skip
        thread = threading.Thread(target=indexer.run, daemon=True)
        thread.start()
        try:
            wait_for(lambda: (j := journey_tracker().get(event_id)) and j.done, "the journey")
        finally:
            indexer.request_stop()
            thread.join(60)
    finally:
        relay.close()
        _delete_topics(admin, [relay_settings.kafka_topic, relay_settings.dlq_topic])
    at.run()
    steps = at.dataframe[0].value
    assert list(steps["step"]) == [
        "relay picks it up",
        "Kafka acknowledges, outbox marked",
        "indexer reads and writes it",
        "refresh makes it searchable",
    ]
    assert all(took.endswith(("ms", " s")) for took in steps["took"]), steps
    assert "Searchable" in "\n".join(c.value for c in at.caption)


def _delete_topics(admin: AdminClient, names: list[str]) -> None:
    existing = admin.list_topics(timeout=10).topics
    doomed = [name for name in names if name in existing]
    if doomed:
        for future in admin.delete_topics(doomed).values():
            future.result(timeout=30)


def test_invalid_input_shows_messages_next_to_the_fields_and_creates_nothing(
    app_env: str, pg: psycopg.Connection
):
    at = open_tasks_page()
    at.text_input(key="create_description").input("   ")
    set_moment(at, "create", "Start", date(2026, 12, 2), time(9, 0))
    set_moment(at, "create", "Due", date(2026, 12, 1), time(9, 0))
    at.button(key="create_submit").click().run()
    assert not at.exception, at.exception

    assert rows(pg, app_env, "SELECT count(*) FROM {}.tasks") == [(0,)]
    assert rows(pg, app_env, "SELECT count(*) FROM {}.outbox") == [(0,)]
    # Each message sits right under its own input inside the form.
    form = next(node for node in _walk(at.main) if getattr(node, "type", None) == "form")
    order = [_describe(node) for node in _walk(form) if _describe(node)]
    description_at = order.index("text_input:create_description")
    due_at = order.index("time_input:create_Due_time")
    assert "must not be empty" in order[description_at + 1]
    assert "must not be before dates.start" in order[due_at + 1]
    assert sum(1 for item in order if item.startswith("error:")) == 2
    assert "Event type:" not in page_text(at)


def _walk(node):
    yield node
    for child in getattr(node, "children", {}).values():
        yield from _walk(child)


def _describe(node) -> str | None:
    kind = getattr(node, "type", None)
    if kind == "error":
        return f"error:{node.value}"
    if kind in {"text_input", "selectbox", "checkbox", "date_input", "time_input"}:
        return f"{kind}:{node.key}"
    return None


def test_generate_creates_that_many_tasks(app_env: str, pg: psycopg.Connection):
    at = open_tasks_page()
    at.number_input(key="generate_count").set_value(50)
    at.button(key="generate_submit").click().run()
    assert not at.exception, at.exception

    assert rows(pg, app_env, "SELECT count(*) FROM {}.tasks") == [(50,)]
    assert rows(pg, app_env, "SELECT type, count(*) FROM {}.outbox GROUP BY type") == [
        ("tasks.event.created", 50)
    ]
    assert any("Generated 50 tasks" in s.value for s in at.success)
    # The list on the same run already shows them: 25 on the first page of 50.
    assert len(at.main.dataframe[-1].value) == 25
    assert any("of 50" in c.value for c in at.main.caption)


def test_edit_is_partial_then_mark_done_and_delete_with_confirmation(
    app_env: str, pg: psycopg.Connection
):
    at = submit_create(open_tasks_page(), "Book train tickets", "low")
    [(task_id,)] = rows(pg, app_env, "SELECT id FROM {}.tasks")
    key = str(task_id)

    at.selectbox(key="selected_task").select(key).run()
    assert at.text_input(key=f"edit_{key}_description").value == "Book train tickets"
    # Someone else changes the description meanwhile; this form changes only the priority,
    # so a partial update keeps their description.
    pg.execute(
        sql.SQL("UPDATE {}.tasks SET description = 'Book train tickets to Lyon'").format(
            sql.Identifier(app_env)
        )
    )
    at.selectbox(key=f"edit_{key}_priority").select("high")
    at.button(key="edit_submit").click().run()
    assert not at.exception, at.exception
    assert not at.error, errors(at)
    assert rows(pg, app_env, "SELECT description, priority FROM {}.tasks") == [
        ("Book train tickets to Lyon", "high")
    ]
    assert "Event type: `tasks.event.updated`" in page_text(at)

    at.button(key="toggle_done").click().run()
    assert rows(pg, app_env, "SELECT is_done FROM {}.tasks") == [(True,)]
    assert at.button(key="toggle_done").label == "Mark not done"

    at.button(key="delete").click().run()
    assert rows(pg, app_env, "SELECT count(*) FROM {}.tasks") == [(1,)]  # asked first
    assert any("cannot be undone" in w.value for w in at.warning)
    at.button(key="delete_confirm").click().run()
    assert not at.exception, at.exception
    assert rows(pg, app_env, "SELECT count(*) FROM {}.tasks") == [(0,)]
    assert rows(pg, app_env, "SELECT type FROM {}.outbox ORDER BY id") == [
        ("tasks.event.created",),
        ("tasks.event.updated",),
        ("tasks.event.updated",),
        ("tasks.event.deleted",),
    ]
    shown = page_text(at)
    assert "Event type: `tasks.event.deleted`" in shown
    assert f"Key: `{key}`" in shown
    assert f"Partition: **{partition_for_key(key.encode(), 6)}** of 6" in shown


def test_edit_with_due_before_start_is_refused_under_the_due_field(
    app_env: str, pg: psycopg.Connection
):
    at = submit_create(open_tasks_page(), "Plan the offsite")
    [(task_id,)] = rows(pg, app_env, "SELECT id FROM {}.tasks")
    prefix = f"edit_{task_id}"
    at.selectbox(key="selected_task").select(str(task_id)).run()
    set_moment(at, prefix, "Start", date(2026, 5, 2), time(9, 0))
    set_moment(at, prefix, "Due", date(2026, 5, 1), time(9, 0))
    at.button(key="edit_submit").click().run()
    assert "must not be before dates.start" in errors(at)
    assert rows(pg, app_env, "SELECT start_at, due_at FROM {}.tasks") == [(None, None)]
    assert rows(pg, app_env, "SELECT count(*) FROM {}.outbox") == [(1,)]


def test_read_only_mode_disables_every_write(
    app_env: str,
    pg: psycopg.Connection,
    pool: ConnectionPool,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
):
    # A task made before the switch to read-only (the pool fixture migrated the schema).
    task = TaskService(PostgresTaskRepository(pool), settings).create("Renew car insurance").task
    monkeypatch.setenv("TASKSTREAM_READ_ONLY", "true")
    at = open_tasks_page()

    assert any("TASKSTREAM_READ_ONLY=true" in i.value for i in at.info)
    assert at.button(key="create_submit").disabled
    assert at.text_input(key="create_description").disabled
    assert at.button(key="generate_submit").disabled
    assert list(at.main.dataframe[-1].value["description"]) == ["Renew car insurance"]
    at.selectbox(key="selected_task").select(str(task.id)).run()
    assert at.button(key="edit_submit").disabled
    assert at.button(key="toggle_done").disabled
    assert at.button(key="delete").disabled
    assert rows(pg, app_env, "SELECT count(*) FROM {}.outbox") == [(1,)]


def test_postgres_down_shows_a_banner_with_the_start_command(monkeypatch: pytest.MonkeyPatch):
    port = free_port()  # a loopback port nothing listens on
    monkeypatch.setenv("DATABASE_URL", f"postgresql://taskstream@127.0.0.1:{port}/taskstream")
    monkeypatch.setenv("KAFKA_TOPIC", f"test-down-{uuid.uuid4().hex[:8]}")
    clear_caches()
    try:
        at = open_tasks_page()
    finally:
        clear_caches()
    banner = errors(at)
    assert f"127.0.0.1:{port}" in banner
    assert "python -m devstack up" in banner
    assert not at.button  # no form to submit into a database that is not there
