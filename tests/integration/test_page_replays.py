"""The Replays page against the real Kafka, Elasticsearch and PostgreSQL, headless with AppTest.

Each test points the app at its own topic, PostgreSQL schema and live index name. Workers the
page spawns inherit that environment; at the end every worker recorded in the test's `replays`
table is killed and its group and scratch index deleted.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from confluent_kafka.admin import AdminClient
from streamlit.testing.v1 import AppTest

from pipeline.core.domain import new_task
from pipeline.core.events import created_event, encode_event
from pipeline.core.ratelimit import Speed
from pipeline.kafka.clients import kafka_producer
from pipeline.postgres.pool import postgres_pool
from pipeline.postgres.store import migrate
from pipeline.replay.control import topic_watermarks
from pipeline.replay.spec import replay_names
from pipeline.replay.store import ReplayStore
from testkit.waiting import wait_for
from ui.resources import clear_caches

ROOT = Path(__file__).resolve().parents[2]
PARTITIONS = 6


@pytest.fixture
def page_env(app_env, monkeypatch, index_name) -> Iterator[str]:
    """app_env plus the test's own live index name, writes allowed."""
    monkeypatch.setenv("ELASTICSEARCH_INDEX", index_name)
    monkeypatch.setenv("TASKSTREAM_READ_ONLY", "false")
    clear_caches()
    yield app_env
    clear_caches()


@pytest.fixture
def replays_cleanup(pg: psycopg.Connection, pg_schema: str, admin: AdminClient, es) -> Iterator:
    """Kill every worker of the test's replays, delete their groups and scratch indices."""
    yield
    exists = pg.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = %s"
        " AND table_name = 'replays'",
        (pg_schema,),
    ).fetchone()[0]
    if not exists:
        return
    rows = pg.execute(f'SELECT name, pid, group_name, index_name FROM "{pg_schema}".replays')
    groups = []
    for name, pid, group_name, index_name in rows.fetchall():
        if pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        groups.append(group_name)
        assert index_name.startswith("scratch-"), name
        es.indices.delete(index=index_name, ignore_unavailable=True)
    if groups:
        threading.Event().wait(0.5)  # let the killed members' sessions go
        for future in admin.delete_consumer_groups(groups, request_timeout=30).values():
            future.exception(timeout=60)


def produce_tasks(settings, topic: str, count: int) -> None:
    producer = kafka_producer(settings)
    for i in range(count):
        message = encode_event(created_event(new_task(f"replay page task {i}", "low")))
        producer.produce(topic, key=message.key, value=message.value, headers=message.headers)
    assert producer.flush(30) == 0


def replay_row(pg: psycopg.Connection, schema: str, name: str) -> dict | None:
    cursor = pg.execute(f'SELECT * FROM "{schema}".replays WHERE name = %s', (name,))
    record = cursor.fetchone()
    if record is None:
        return None
    return dict(zip([c.name for c in cursor.description], record, strict=True))


def replay_count(pg: psycopg.Connection, schema: str) -> int:
    return pg.execute(f'SELECT count(*) FROM "{schema}".replays').fetchone()[0]


def open_page() -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    at.switch_page("pages/replays.py").run()
    assert not at.exception, at.exception
    return at


def start_through_form(at: AppTest, name: str, **fields: str) -> AppTest:
    at.text_input(key="replay_name").input(name)
    for field, value in fields.items():
        if field == "mapping":
            at.text_area(key="replay_mapping").input(value)
        else:
            at.text_input(key=f"replay_{field}").input(value)
    at.button(key="replay_start").click().run()
    assert not at.exception, at.exception
    return at


def metric(at: AppTest, label: str) -> str:
    values = [m.value for m in at.metric if m.label == label]
    assert values, f"no metric {label!r}"
    return values[0]


def progress_texts(at: AppTest) -> list[str]:
    return [p.proto.text for p in at.get("progress")]


def group_exists(admin: AdminClient, group: str) -> bool:
    listed = admin.list_consumer_groups(request_timeout=10).result(timeout=15)
    return group in {g.group_id for g in listed.valid}


def test_start_through_the_form_runs_to_finished_and_compares(
    settings, page_env, pg, pg_schema, es, admin, index_name, unique, replays_cleanup
):
    produce_tasks(settings, page_env, 40)
    name = f"r-{unique}"
    at = start_through_form(open_page(), name)  # defaults: earliest, end, 100 events/s
    assert not at.error, [e.value for e in at.error]
    assert any(f"Started replay `{name}`" in s.value for s in at.success)

    row = replay_row(pg, pg_schema, name)
    assert row is not None
    assert (row["speed"], row["start_spec"], row["until_spec"]) == ("100", "earliest", "end")
    assert sum(row["until_offsets"].values()) == 40 and row["pid"]
    done = wait_for(
        lambda: (r := replay_row(pg, pg_schema, name))["state"] in ("finished", "failed") and r,
        "the replay to finish",
    )
    assert done["state"] == "finished", done

    at.run()
    assert not at.exception, at.exception
    assert metric(at, "State") == "finished"
    assert metric(at, "Speed") == "100/s"
    assert any(text.startswith("40 of 40 events (100%)") for text in progress_texts(at))
    partitions = next(d.value for d in at.dataframe if "remaining" in d.value.columns)
    assert list(partitions["partition"]) == list(range(PARTITIONS))
    assert partitions["remaining"].sum() == 0 and partitions["done"].sum() == 40
    # Finished: pause and stop no longer apply, compare does.
    assert at.button(key=f"replay_pause_{name}").disabled
    assert at.button(key=f"replay_stop_{name}").disabled

    # A live index with the same documents (same mapping): the comparison finds them equal.
    scratch = f"scratch-{name}"
    es.indices.refresh(index=scratch)
    mappings = es.indices.get_mapping(index=scratch)[scratch]["mappings"]
    es.indices.create(index=index_name, mappings=mappings)
    # (No _reindex: the integ-test distribution ships without that module.)
    hits = es.search(index=scratch, size=100, query={"match_all": {}})["hits"]["hits"]
    assert len(hits) == 40
    operations = []
    for hit in hits:
        operations += [{"index": {"_index": index_name, "_id": hit["_id"]}}, hit["_source"]]
    assert not es.bulk(operations=operations, refresh=True)["errors"]
    at.button(key=f"replay_compare_{name}").click().run()
    assert not at.exception, at.exception
    assert metric(at, "Identical") == "40"
    assert any("The indices match" in s.value for s in at.success)


@pytest.mark.parametrize(
    ("name", "fields", "message"),
    [
        ("Bad-Name", {}, "lower-case"),
        ("ok", {"speed": "0"}, "speed must be"),
        ("ok", {"from": "yesterday"}, "ISO time"),
        ("ok", {"until": "soon"}, "ISO time"),
        ("ok", {"from": "0:999999"}, "outside partition 0's range"),
        ("ok", {"type": "created,moved"}, "'moved' is not an event type"),
        ("ok", {"partition": "0,9"}, "--partition 9: topic"),
        ("ok", {"mapping": "{oops"}, "is not valid JSON"),
        ("ok", {"mapping": '{"mappings": {"properties": {"id": {"type": "nope"}}}}'},
         "Elasticsearch refused the mapping"),
    ],
)  # fmt: skip
def test_invalid_input_is_refused_and_creates_nothing(
    settings, page_env, pg, pg_schema, es, admin, unique, replays_cleanup, name, fields, message
):
    produce_tasks(settings, page_env, 12)
    name = name if name != "ok" else f"g-{unique}"
    at = start_through_form(open_page(), name, **fields)
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and message in errors[0], errors
    assert not at.success
    # The form keeps what was typed, so it can be corrected.
    assert at.text_input(key="replay_name").value == name
    assert replay_count(pg, pg_schema) == 0
    names = replay_names(name.lower(), settings)
    assert not group_exists(admin, names.group)
    assert not es.indices.exists(index=names.index)


def test_pause_resume_and_stop_buttons_set_the_desired_state(
    settings, page_env, pg, pg_schema, unique, replays_cleanup
):
    produce_tasks(settings, page_env, 300)
    name = f"p-{unique}"
    at = start_through_form(open_page(), name, speed="10")
    assert not at.error, [e.value for e in at.error]
    wait_for(
        lambda: (
            (r := replay_row(pg, pg_schema, name))["state"] == "running" and r["events_done"] > 0
        ),
        "the worker to run",
    )

    at.run()
    assert metric(at, "State") == "running"
    assert at.button(key=f"replay_resume_{name}").disabled
    at.button(key=f"replay_pause_{name}").click().run()
    assert not at.exception, at.exception
    assert replay_row(pg, pg_schema, name)["desired_state"] == "paused"
    wait_for(lambda: replay_row(pg, pg_schema, name)["state"] == "paused", "state paused")

    at.run()
    assert metric(at, "State") == "paused"
    assert at.button(key=f"replay_pause_{name}").disabled
    at.button(key=f"replay_resume_{name}").click().run()
    assert not at.exception, at.exception
    assert replay_row(pg, pg_schema, name)["desired_state"] == "running"
    wait_for(lambda: replay_row(pg, pg_schema, name)["state"] == "running", "state running")

    # The speed control is `replay rate`: the stored speed changes, the worker keeps its pid.
    pid = replay_row(pg, pg_schema, name)["pid"]
    at.text_input(key=f"replay_speed_{name}").input("25")
    at.button(key=f"replay_apply_speed_{name}").click().run()
    assert not at.exception, at.exception
    assert replay_row(pg, pg_schema, name)["speed"] == "25"
    at.text_input(key=f"replay_speed_{name}").input("0")
    at.button(key=f"replay_apply_speed_{name}").click().run()
    assert any("speed must be" in e.value for e in at.error)
    assert replay_row(pg, pg_schema, name)["speed"] == "25"

    at.button(key=f"replay_stop_{name}").click().run()
    assert replay_row(pg, pg_schema, name)["desired_state"] == "stopped"
    stopped = wait_for(
        lambda: (r := replay_row(pg, pg_schema, name))["state"] == "stopped" and r, "stopped"
    )
    assert stopped["pid"] == pid

    at.checkbox(key=f"replay_drop_{name}").check()
    at.button(key=f"replay_delete_{name}").click().run()
    assert not at.exception, at.exception
    assert replay_row(pg, pg_schema, name) is None
    assert any(f"Deleted replay `{name}`" in s.value for s in at.success)


def test_read_only_disables_the_controls_and_still_shows_replays(
    settings, page_env, monkeypatch, pg_schema, unique
):
    pool = postgres_pool(settings, schema=pg_schema, max_size=2)
    try:
        migrate(pool)
        names = replay_names(f"ro-{unique}", settings)
        ReplayStore(pool).create(
            names,
            topic=page_env,
            speed=Speed("rate", 50),
            start_spec="earliest",
            until_spec="end",
            start_offsets={0: 0},
            until_offsets={0: 3},
        )
    finally:
        pool.close()
    monkeypatch.setenv("TASKSTREAM_READ_ONLY", "true")
    clear_caches()

    at = open_page()
    assert any("Read-only mode" in i.value for i in at.info)
    assert at.button(key="replay_start").disabled
    # The replay shows (no worker was ever started: dead after the pending grace time, or
    # pending), every write control is disabled.
    assert metric(at, "Speed") == "50/s"
    assert any(text.startswith("0 of 3 events") for text in progress_texts(at))
    for key in ("pause", "resume", "stop", "apply_speed", "delete"):
        assert at.button(key=f"replay_{key}_{names.name}").disabled, key
    assert at.text_input(key=f"replay_speed_{names.name}").disabled
    assert at.checkbox(key=f"replay_drop_{names.name}").disabled


def test_services_down_show_banners_not_tracebacks(monkeypatch):
    # Nothing listens on port 1 of the loopback interface.
    monkeypatch.setenv("DATABASE_URL", "postgresql://taskstream@127.0.0.1:1/taskstream")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    clear_caches()
    try:
        at = open_page()
        errors = [e.value for e in at.error]
        assert len(errors) == 2, errors
        assert "Kafka does not answer at `127.0.0.1:1`" in errors[0]
        assert "PostgreSQL does not answer at" in errors[1] and "python -m devstack up" in errors[1]
        assert not at.button  # no form, no card: nothing that would fail
    finally:
        clear_caches()


def test_a_dead_worker_shows_dead_and_restart_runs_it_to_the_end(
    settings, page_env, pg, pg_schema, admin, unique, replays_cleanup
):
    produce_tasks(settings, page_env, 30)
    at = open_page()  # migrates the schema
    names = replay_names(f"d-{unique}", settings)
    ends = {p: 0 for p in range(PARTITIONS)}
    for p, (_, high) in topic_watermarks(admin, page_env).items():
        ends[p] = high
    pool = postgres_pool(settings, schema=pg_schema, max_size=1)
    try:
        store = ReplayStore(pool)
        store.create(
            names,
            topic=page_env,
            speed=Speed("max"),
            start_spec="earliest",
            until_spec="end",
            start_offsets=dict.fromkeys(ends, 0),
            until_offsets=ends,
        )
        # A worker that was running and stopped heartbeating a minute ago.
        pg.execute(
            f'UPDATE "{pg_schema}".replays SET state = %s,'
            " heartbeat_at = now() - interval '1 minute' WHERE name = %s",
            ("running", names.name),
        )
    finally:
        pool.close()

    at.run()
    assert metric(at, "State") == "dead"
    assert any("stopped heartbeating" in w.value for w in at.warning)
    at.button(key=f"replay_restart_{names.name}").click().run()
    assert not at.exception, at.exception
    row = replay_row(pg, pg_schema, names.name)
    assert row["pid"] and row["desired_state"] == "running"
    done = wait_for(
        lambda: (
            (r := replay_row(pg, pg_schema, names.name))["state"] in ("finished", "failed") and r
        ),
        "the restarted replay to finish",
    )
    assert done["state"] == "finished", done
    at.run()
    assert metric(at, "State") == "finished"
    assert any(text.startswith("30 of 30 events (100%)") for text in progress_texts(at))


def test_a_following_slice_then_promote_and_rollback_through_the_buttons(
    settings, page_env, monkeypatch, pg, pg_schema, es, admin, index_name, group, unique,
    replays_cleanup, request,
):  # fmt: skip
    from pipeline.elasticsearch.index import TaskIndex

    monkeypatch.setenv("INDEXER_GROUP", group)  # a live group with no offsets: lag 0
    clear_caches()
    produce_tasks(settings, page_env, 60)
    TaskIndex(es, index_name).ensure_index()  # an existing install's concrete live index
    previous = f"{index_name}-000001"

    def drop_live() -> None:
        if es.indices.exists_alias(name=index_name):
            es.options(ignore_status=404).indices.delete_alias(index="_all", name=index_name)
        es.indices.delete(index=previous, ignore_unavailable=True)

    request.addfinalizer(drop_live)

    # A slice, following: the card counts what it skipped and shows the lag, not an ETA.
    sliced = f"s-{unique}"
    at = start_through_form(
        open_page(), sliced, until="follow", speed="max", type="created", partition="0"
    )
    assert not at.error, [e.value for e in at.error]
    row = wait_for(
        lambda: (
            (r := replay_row(pg, pg_schema, sliced))["state"] == "running"
            and r["events_done"] == 60
            and r
        ),
        "the sliced replay to read everything",
    )
    assert row["filter"] == {"types": ["tasks.event.created"], "partitions": [0]}
    assert 0 < row["filtered"] < 60
    at.run()
    assert not at.exception, at.exception
    assert metric(at, "ETA") == "following"
    assert metric(at, "Filtered") == f"{row['filtered']:,}"
    assert any(t.startswith("following: ") for t in progress_texts(at))
    # Compare works while following, on the slice; Promote waits for the confirmation.
    at.button(key=f"replay_compare_{sliced}").click().run()
    assert any("Compared on the replay's slice" in c.value for c in at.caption)
    assert any("Last comparison" in w.value for w in at.warning)
    assert at.button(key=f"replay_promote_{sliced}").disabled
    at.checkbox(key=f"replay_confirm_{sliced}").check().run()
    at.button(key=f"replay_promote_{sliced}").click().run()
    assert not at.exception, at.exception
    assert any("replays a slice" in e.value for e in at.error), [e.value for e in at.error]
    assert not es.indices.exists_alias(name=index_name)

    # Unfiltered and following: promoted, then rolled back.
    name = f"f-{unique}"
    at = start_through_form(at, name, until="follow", speed="max", type="", partition="")
    assert not at.error, [e.value for e in at.error]
    wait_for(
        lambda: (
            (r := replay_row(pg, pg_schema, name))["state"] == "running" and r["events_done"] == 60
        ),
        "the replay to catch up",
    )
    at.run()
    at.checkbox(key=f"replay_confirm_{name}").check().run()
    at.button(key=f"replay_promote_{name}").click().run()
    assert not at.exception, at.exception
    assert any(f"now points at `scratch-{name}`" in s.value for s in at.success), [
        e.value for e in at.error
    ]
    assert set(es.indices.get_alias(name=index_name).body) == {f"scratch-{name}"}
    assert any("Promoted" in i.value for i in at.info)
    # The tick was for Promote: Rollback asks for its own.
    assert not at.checkbox(key=f"replay_rollback_confirm_{name}").value
    assert at.button(key=f"replay_rollback_{name}").disabled
    # Deleting it now would delete the live index: refused.
    at.checkbox(key=f"replay_drop_{name}").check()
    at.button(key=f"replay_delete_{name}").click().run()
    assert any("is promoted" in e.value for e in at.error)
    assert replay_row(pg, pg_schema, name) is not None

    # A second promote: the first replay is live no more, but its index is the way back.
    second = f"g-{unique}"
    at = start_through_form(at, second, until="follow", speed="max")
    wait_for(
        lambda: (
            (r := replay_row(pg, pg_schema, second))["state"] == "running"
            and r["events_done"] == 60
        ),
        "the second replay to catch up",
    )
    at.run()
    at.checkbox(key=f"replay_confirm_{second}").check().run()
    at.button(key=f"replay_promote_{second}").click().run()
    assert set(es.indices.get_alias(name=index_name).body) == {f"scratch-{second}"}
    assert replay_row(pg, pg_schema, name)["promoted_at"] is None
    at.checkbox(key=f"replay_drop_{name}").check()
    at.button(key=f"replay_delete_{name}").click().run()
    assert any(f"`replay rollback {second}` returns to" in e.value for e in at.error)
    at.checkbox(key=f"replay_rollback_confirm_{second}").check().run()
    at.button(key=f"replay_rollback_{second}").click().run()
    assert set(es.indices.get_alias(name=index_name).body) == {f"scratch-{name}"}
    assert replay_row(pg, pg_schema, name)["promoted_at"] is not None

    at.checkbox(key=f"replay_rollback_confirm_{name}").check().run()
    at.button(key=f"replay_rollback_{name}").click().run()
    assert not at.exception, at.exception
    assert any(f"now points at `{previous}`" in s.value for s in at.success), [
        e.value for e in at.error
    ]
    assert set(es.indices.get_alias(name=index_name).body) == {previous}
    es.indices.refresh(index=previous)
    assert es.count(index=index_name)["count"] == 60  # caught up by the rollback


def test_the_workers_table_shows_each_worker_and_marks_a_dead_one(
    settings, page_env, pg, pg_schema, unique
):
    from pipeline.replay.store import WorkerReport

    at = open_page()  # migrates the schema
    names = replay_names(f"w-{unique}", settings)
    pool = postgres_pool(settings, schema=pg_schema, max_size=1)
    try:
        store = ReplayStore(pool)
        store.create(
            names,
            topic=page_env,
            speed=Speed("rate", 300),
            start_spec="earliest",
            until_spec="end",
            start_offsets=dict.fromkeys(range(PARTITIONS), 0),
            until_offsets=dict.fromkeys(range(PARTITIONS), 100),
        )
        # Two workers on another machine: one owned 0-2 and went silent, the other took over.
        for pid, owned, rate in ((100, (0, 1, 2), 150.0), (101, tuple(range(PARTITIONS)), 290.0)):
            store.report(
                names.name,
                WorkerReport(
                    worker=f"far:{pid}", host="far", pid=pid, state="running",
                    position={p: 50 for p in owned}, partitions=owned, events_done=150,
                    events_per_s=rate, speed_share=300.0 * len(owned) / PARTITIONS, done=150,
                ),
            )  # fmt: skip
            pg.execute(
                f'UPDATE "{pg_schema}".replay_workers'
                " SET heartbeat_at = now() - interval '1 minute' WHERE worker = 'far:100'"
            )
    finally:
        pool.close()

    at.run()
    assert not at.exception, at.exception
    [table] = [d.value for d in at.dataframe if "worker" in d.value.columns]
    shown = table.set_index("worker")
    assert shown.loc["far:100", "state"] == "dead"
    assert shown.loc["far:100", "partitions"] == "(0, 1, 2)"
    assert shown.loc["far:101", "state"] == "running"
    assert shown.loc["far:101", "partitions"] == "0, 1, 2, 3, 4, 5"
    assert shown.loc["far:101", "share"] == "300.0/s"
    assert any("1 worker(s) dead (pid 100 on far)" in w.value for w in at.warning)
    # The replay's events/s is its live workers' sum (the dead one no longer counts); its
    # progress their furthest positions.
    assert metric(at, "Events/s") == "290.0"
    assert any(text.startswith("300 of 600 events") for text in progress_texts(at))
