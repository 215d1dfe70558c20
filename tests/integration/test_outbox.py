"""PostgreSQL: migrations, tasks and their outbox rows in one transaction, claiming outbox batches."""

from __future__ import annotations

import threading
import uuid

import psycopg
import pytest
from psycopg import sql

from pipeline.core.domain import Priority, apply_changes, new_task
from pipeline.core.events import (
    CONTENT_TYPE,
    TASK_CREATED,
    TASK_DELETED,
    TASK_UPDATED,
    created_event,
    decode_event,
    deleted_event,
    loads,
    updated_event,
)
from pipeline.core.partitioner import partition_for_key
from pipeline.core.seed import generate_tasks
from pipeline.postgres.pool import postgres_pool
from pipeline.postgres.store import (
    MIGRATIONS,
    OutboxStore,
    PostgresTaskRepository,
    SchemaTooNew,
    migrate,
)
from pipeline.service.tasks import TaskService


@pytest.fixture
def repo(pool) -> PostgresTaskRepository:
    return PostgresTaskRepository(pool)


@pytest.fixture
def service(repo, settings) -> TaskService:
    return TaskService(repo, settings)


def fetch(pg, schema: str, query: str, params=()) -> list[tuple]:
    """Rows of a query run in the test's schema, from outside the code under test."""
    with pg.cursor() as cur:
        cur.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
        try:
            return cur.execute(query, params).fetchall()
        finally:
            cur.execute("RESET search_path")


def test_migrations_are_versioned_idempotent_and_safe_to_run_concurrently(settings, pg, pg_schema):
    barrier = threading.Barrier(4)
    results: list[list[int]] = []
    errors: list[BaseException] = []

    def start() -> None:
        try:
            with psycopg.connect(settings.database_url) as conn:
                barrier.wait()
                results.append(migrate(conn, schema=pg_schema))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    every_version = list(range(1, len(MIGRATIONS) + 1))
    # Exactly one starter applied the migrations; the others found them applied.
    assert sorted(results) == [[], [], [], every_version]
    assert fetch(pg, pg_schema, "SELECT version FROM schema_migrations ORDER BY version") == [
        (v,) for v in every_version
    ]
    tables = fetch(
        pg,
        pg_schema,
        "SELECT table_name FROM information_schema.tables WHERE table_schema = %s ORDER BY 1",
        (pg_schema,),
    )
    assert tables == [("outbox",), ("replays",), ("schema_migrations",), ("tasks",)]
    [(definition,)] = fetch(
        pg,
        pg_schema,
        "SELECT indexdef FROM pg_indexes WHERE schemaname = %s AND indexname = 'outbox_unpublished'",
        (pg_schema,),
    )
    assert "WHERE (published_at IS NULL)" in definition

    with psycopg.connect(settings.database_url) as conn:
        assert migrate(conn, schema=pg_schema) == []
        conn.execute(
            sql.SQL("INSERT INTO {}.schema_migrations (version) VALUES (%s)").format(
                sql.Identifier(pg_schema)
            ),
            (len(MIGRATIONS) + 1,),
        )
        conn.commit()
        with pytest.raises(SchemaTooNew, match="upgrade taskstream"):
            migrate(conn, schema=pg_schema)


def test_migrate_creates_a_missing_schema_and_the_pool_works_in_it(settings, pg):
    schema = f"test_created_{uuid.uuid4().hex[:8]}"
    try:
        with postgres_pool(settings, schema=schema, max_size=2) as pool:
            assert migrate(pool, schema=schema) == list(range(1, len(MIGRATIONS) + 1))
            with pool.connection() as conn:
                assert conn.execute("SELECT current_schema()").fetchone() == (schema,)
            TaskService(PostgresTaskRepository(pool), settings).create("In its own schema")
        assert fetch(pg, schema, "SELECT description FROM tasks") == [("In its own schema",)]
    finally:
        pg.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def test_service_changes_write_the_task_row_and_its_outbox_row(service, pg, pg_schema):
    created = service.create("Write the report", "high", start="2026-05-01", due="2026-05-03")
    task_id = created.task.id
    assert fetch(pg, pg_schema, "SELECT description, priority, is_done FROM tasks") == [
        ("Write the report", "high", False)
    ]
    updated = service.update(task_id, is_done=True, priority="low")
    assert fetch(
        pg, pg_schema, "SELECT priority, is_done FROM tasks WHERE id = %s", (task_id,)
    ) == [("low", True)]
    deleted = service.delete(task_id)
    assert fetch(pg, pg_schema, "SELECT count(*) FROM tasks") == [(0,)]

    rows = fetch(
        pg,
        pg_schema,
        "SELECT event_id, aggregate_id, type, payload, headers, occurred_at, published_at,"
        " attempts FROM outbox ORDER BY id",
    )
    changes = [created, updated, deleted]
    assert [r[0] for r in rows] == [c.event.event_id for c in changes]
    assert [r[2] for r in rows] == [TASK_CREATED, TASK_UPDATED, TASK_DELETED]
    assert {r[1] for r in rows} == {task_id}
    for (event_id, _, kind, payload, headers, occurred_at, published_at, attempts), change in zip(
        rows, changes, strict=True
    ):
        assert published_at is None and attempts == 0
        assert occurred_at == change.event.occurred_at
        assert [name for name, _ in headers] == ["event_id", "occurred_at", "content-type"]
        assert dict(headers)["content-type"] == CONTENT_TYPE
        decoded = decode_event(
            str(task_id).encode(), bytes(payload), [(n, v.encode()) for n, v in headers]
        )
        assert (decoded.type, decoded.task_id, decoded.event_id) == (kind, task_id, event_id)
        assert change.event.partition == partition_for_key(str(task_id).encode(), 6)
    assert loads(bytes(rows[1][3]))["value"]["is_done"] is True
    assert loads(bytes(rows[2][3])) == {"type": TASK_DELETED, "value": {"id": str(task_id)}}


def test_a_failing_outbox_insert_leaves_the_task_unchanged(repo, pg, pg_schema):
    first = new_task("First")
    taken = created_event(first)
    repo.create(first, taken)

    def same_event_id(event):
        return type(event)(
            taken.event_id, event.type, event.task_id, event.value, event.occurred_at
        )

    # A second create whose event id is already in the outbox: the task row must roll back too.
    second = new_task("Second")
    with pytest.raises(psycopg.errors.UniqueViolation):
        repo.create(second, same_event_id(created_event(second)))
    assert repo.get(second.id) is None

    with pytest.raises(psycopg.errors.UniqueViolation):
        repo.update(
            first.id,
            lambda task: (
                apply_changes(task, description="Changed"),
                same_event_id(updated_event(apply_changes(task, description="Changed"))),
            ),
        )
    assert repo.get(first.id) == first

    with pytest.raises(psycopg.errors.UniqueViolation):
        repo.delete(first.id, lambda task: same_event_id(deleted_event(task.id)))
    assert repo.get(first.id) == first

    batch = [new_task(f"Batch {i}") for i in range(5)]
    items = [(task, created_event(task)) for task in batch]
    items[3] = (batch[3], same_event_id(items[3][1]))
    with pytest.raises(psycopg.errors.UniqueViolation):
        repo.create_many(items)

    assert fetch(pg, pg_schema, "SELECT id, description FROM tasks") == [(first.id, "First")]
    assert fetch(pg, pg_schema, "SELECT event_id FROM outbox") == [(taken.event_id,)]


def test_create_many_stores_every_task_and_event_in_input_order(service, pg, pg_schema):
    tasks = list(generate_tasks(2_000, seed=7))
    changes = service.create_many(tasks)
    assert len(changes) == len(tasks)
    stored = fetch(
        pg, pg_schema, "SELECT id, description, priority, start_at, due_at, is_done FROM tasks"
    )
    by_id = {row[0]: row for row in stored}
    assert len(by_id) == len(tasks)
    for task in tasks[::97]:
        assert by_id[task.id] == (
            task.id,
            task.description,
            task.priority.value,
            task.dates.start,
            task.dates.due,
            task.is_done,
        )
    outbox = fetch(pg, pg_schema, "SELECT aggregate_id, event_id, type FROM outbox ORDER BY id")
    assert [row[0] for row in outbox] == [task.id for task in tasks]
    assert [row[1] for row in outbox] == [c.event.event_id for c in changes]
    assert {row[2] for row in outbox} == {TASK_CREATED}


def test_list_pages_through_everything_and_filters(service):
    specs = [
        ("Pay 100% of the invoice", "high", True),
        ("pay the rent", "low", False),
        ("Book_train", "none", False),
        ("Booking review", "medium", True),
    ] + [(f"Filler task {i}", "none", i % 2 == 0) for i in range(21)]
    for description, priority, done in specs:
        service.create(description, priority, is_done=done)

    seen = []
    offset = 0
    while True:
        page = service.list(limit=7, offset=offset)
        assert page.total == len(specs)
        if not page.tasks:
            break
        seen.extend(page.tasks)
        offset += 7
    assert len(seen) == len({t.id for t in seen}) == len(specs)
    # Newest first.
    assert seen[0].description == "Filler task 20"

    def descriptions(**filters):
        page = service.list(limit=100, **filters)
        assert page.total == len(page.tasks)
        return sorted(t.description for t in page.tasks)

    assert descriptions(text="PAY") == ["Pay 100% of the invoice", "pay the rent"]
    # % and _ are literal characters, not wildcards.
    assert descriptions(text="100%") == ["Pay 100% of the invoice"]
    assert descriptions(text="k_t") == ["Book_train"]
    assert descriptions(text="book", done=True) == ["Booking review"]
    assert descriptions(priority=Priority.HIGH) == ["Pay 100% of the invoice"]
    assert len(descriptions(done=True)) == 2 + 11


def test_claims_skip_rows_another_relay_holds(repo, pool):
    for i in range(10):
        repo.create(*_created(f"Task {i}"))
    store = OutboxStore(pool)
    # Two open claims at once, as two relays would hold them.
    with store.claim_batch(4) as first, store.claim_batch(100) as second:
        first_ids = [r.id for r in first.rows]
        second_ids = [r.id for r in second.rows]
    assert len(first_ids) == 4 and len(second_ids) == 6
    assert set(first_ids).isdisjoint(second_ids)
    assert first_ids == sorted(first_ids) and second_ids == sorted(second_ids)
    assert max(first_ids) < min(second_ids)


def test_claims_defer_a_tasks_later_events_while_another_relay_holds_an_earlier_one(
    repo, service, pool
):
    task_x = service.create("X").task
    task_y = service.create("Y").task
    service.update(task_x.id, is_done=True)
    store = OutboxStore(pool)
    with store.claim_batch(1) as first:
        [x_created] = first.rows
        with store.claim_batch(100) as second:
            assert [(r.aggregate_id, r.type) for r in second.rows] == [(task_y.id, TASK_CREATED)]
            assert [(r.aggregate_id, r.type) for r in second.deferred] == [
                (task_x.id, TASK_UPDATED)
            ]
        first.mark_published([(x_created.id, 0, 0)])
    # Once the earlier event is published the update is free to go.
    with store.claim_batch(100) as third:
        assert [(r.aggregate_id, r.type) for r in third.rows] == [
            (task_y.id, TASK_CREATED),
            (task_x.id, TASK_UPDATED),
        ]
        assert third.deferred == []


def test_marking_rows_published_or_failed_and_reading_their_status(service, pool):
    changes = [service.create(f"Task {i}") for i in range(3)]
    store = OutboxStore(pool)
    assert store.pending_count() == 3

    with pytest.raises(RuntimeError), store.claim_batch(10) as batch:
        batch.mark_published([(row.id, 1, 42) for row in batch.rows])
        raise RuntimeError("publisher crashed")
    # Rolled back: still pending and untouched.
    assert store.pending_count() == 3
    assert store.publish_status(changes[0].event.event_id).attempts == 0

    with store.claim_batch(10) as batch:
        first, second, third = batch.rows
        batch.mark_published([(first.id, 4, 17), (third.id, 2, 3)])
        batch.record_failure([second.id], "Local: Message timed out")
    assert store.pending_count() == 1

    published = service.publish_status(changes[0].event.event_id)
    assert published.published and (published.partition, published.offset) == (4, 17)
    assert published.attempts == 1 and published.last_error is None
    assert published.task_id == changes[0].task.id and published.type == TASK_CREATED
    failed = store.publish_status(changes[1].event.event_id)
    assert not failed.published and failed.partition is None and failed.offset is None
    assert (failed.attempts, failed.last_error) == (1, "Local: Message timed out")
    assert store.publish_status(uuid.uuid4()) is None

    with store.claim_batch(10) as batch:
        assert [r.event_id for r in batch.rows] == [changes[1].event.event_id]
        assert batch.rows[0].attempts == 1


def _created(description: str):
    task = new_task(description)
    return task, created_event(task)
