"""Read-only mode against the real services: every page and every command, and nothing written.

A world is prepared first with writes allowed (migrated schema with tasks and lag history,
topic and dead-letter topic filled by the relay, the live index and its group's committed offsets
from the indexer, a finished replay with its group and scratch index). Then
`TASKSTREAM_READ_ONLY=true`: a snapshot of everything the test owns (topics, partitions and
watermarks; committed offsets of every group on its topics; indices with their uuids, mappings,
document counts and indexing counters; the schema's relations, row counts, row checksums with
xmin, sequences and PostgreSQL's own insert/update/delete counters) is taken before and after
exercising every page with AppTest and every CLI command, and the two must be equal.

Only this test's names are compared: other sessions create topics, groups and indices on the
same cluster meanwhile.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest
from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import AdminClient
from elasticsearch import Elasticsearch
from elasticsearch._sync.client._base import BaseClient
from psycopg import sql
from streamlit.testing.v1 import AppTest
from streamlit.testing.v1.element_tree import AppTestError

from pipeline.core import clock
from pipeline.core.settings import Settings, load_settings
from pipeline.kafka.browse import BROWSER_GROUP
from pipeline.kafka.clients import kafka_producer
from pipeline.lag.history import LagHistory, migrate_lag_history
from pipeline.lag.reader import LagReader
from pipeline.postgres.pool import postgres_pool
from pipeline.postgres.store import OutboxStore, PostgresTaskRepository, migrate
from pipeline.replay.control import create_replay, plan_replay, topic_watermarks
from pipeline.replay.store import open_replay_store
from pipeline.service.tasks import TaskService
from pipeline.workers.indexer import Indexer
from pipeline.workers.relay import OutboxRelay
from testkit.processes import run_pipeline
from testkit.waiting import wait_for
from ui.resources import clear_caches

ROOT = Path(__file__).resolve().parents[2]
READ_ONLY_NOTE = "TASKSTREAM_READ_ONLY=true"


@dataclass(frozen=True)
class World:
    """Everything the test owns, by name."""

    unique: str
    schema: str
    topic: str
    dlq: str
    index: str
    group: str
    replay: str
    task_ids: list[str]

    @property
    def replay_group(self) -> str:
        return f"replay-{self.replay}"

    @property
    def scratch(self) -> str:
        return f"scratch-{self.replay}"


def point_app_at(monkeypatch: pytest.MonkeyPatch, settings: Settings, world: World) -> None:
    separator = "&" if "?" in settings.database_url else "?"
    options = quote("-c search_path=" + world.schema)
    monkeypatch.setenv("DATABASE_URL", f"{settings.database_url}{separator}options={options}")
    monkeypatch.setenv("KAFKA_TOPIC", world.topic)
    monkeypatch.setenv("ELASTICSEARCH_INDEX", world.index)
    monkeypatch.setenv("INDEXER_GROUP", world.group)


def committed(admin: AdminClient, group: str, topic: str, partitions: list[int]) -> dict:
    request = ConsumerGroupTopicPartitions(group, [TopicPartition(topic, p) for p in partitions])
    result = admin.list_consumer_group_offsets([request])[group].result(timeout=15)
    return {tp.partition: tp.offset for tp in result.topic_partitions or [] if tp.offset >= 0}


def caught_up(admin: AdminClient, group: str, topic: str) -> bool:
    """Whether `group` has committed the end of every non-empty partition of `topic`."""
    ends = {p: high for p, (_, high) in topic_watermarks(admin, topic).items() if high}
    return committed(admin, group, topic, sorted(ends)) == ends


def remove_world(admin: AdminClient, es: Elasticsearch, world: World) -> None:
    clear_caches()  # stops the samplers before their topics go
    groups = [world.group, world.replay_group]
    for future in admin.delete_consumer_groups(groups, request_timeout=30).values():
        future.exception(timeout=60)  # a group that was never made is fine
    for future in admin.delete_topics([world.topic, world.dlq]).values():
        future.exception(timeout=60)
    for index in (world.index, world.scratch):
        es.indices.delete(index=index, ignore_unavailable=True)


@pytest.fixture
def world(
    monkeypatch: pytest.MonkeyPatch,
    settings: Settings,
    admin: AdminClient,
    es: Elasticsearch,
    pg: psycopg.Connection,
    pg_schema: str,
    unique: str,
) -> Iterator[World]:
    """A world made with writes allowed, then the app and the CLI switched to read-only."""
    world = World(
        unique=unique,
        schema=pg_schema,
        topic=f"test-{unique}",
        dlq=f"test-{unique}.dlq",
        index=f"test-{unique}",
        group=f"test-group-{unique}",
        replay=f"ro-{unique}",
        task_ids=[],
    )
    point_app_at(monkeypatch, settings, world)
    monkeypatch.setenv("TASKSTREAM_READ_ONLY", "false")
    clear_caches()
    config = load_settings()
    try:
        pool = postgres_pool(config, max_size=3)
        try:
            migrate(pool)
            migrate_lag_history(pool)
            service = TaskService(PostgresTaskRepository(pool), config)
            made = [
                service.create(text, priority).task
                for text, priority in (
                    ("Water the plants", "high"),
                    ("Renew car insurance", "medium"),
                    ("Call the plumber", "low"),
                    ("Cancel the newspaper", "none"),
                )
            ]
            service.update(made[1].id, is_done=True)
            service.delete(made[3].id)
            world.task_ids.extend(str(t.id) for t in made[:3])

            relay = OutboxRelay(config, OutboxStore(pool))  # creates the topic and the DLQ
            try:
                wait_for(
                    lambda: relay.run_once() == 0 and OutboxStore(pool).pending_count() == 0,
                    "the relay to publish the outbox",
                )
            finally:
                relay.close()
            producer = kafka_producer(config)
            producer.produce(world.topic, key=b"not-a-task", value=b"not json")  # for the DLQ
            assert producer.flush(30) == 0

            indexer = Indexer.live(config)
            worker = threading.Thread(target=indexer.run, daemon=True)
            worker.start()
            try:
                wait_for(
                    lambda: caught_up(admin, world.group, world.topic),
                    "the indexer to commit every event",
                )
            finally:
                indexer.request_stop()
                worker.join(timeout=60)
            assert indexer.stats.dead_lettered == 1

            plan = plan_replay(config, admin, world.replay, "earliest", "end", "max")
            with open_replay_store(config) as store:
                create_replay(store, admin, plan)
                wait_for(
                    lambda: store.get(world.replay).state == "finished",
                    "the replay to finish",
                )
            LagHistory(pool).record(LagReader(admin, world.topic).snapshot())
        finally:
            pool.close()

        monkeypatch.setenv("TASKSTREAM_READ_ONLY", "true")
        clear_caches()
        yield world
    finally:
        remove_world(admin, es, world)


# -- the state of the world ------------------------------------------------------------------


def kafka_state(admin: AdminClient, world: World) -> dict:
    topics = sorted(t for t in admin.list_topics(timeout=15).topics if world.unique in t)
    watermarks = {t: topic_watermarks(admin, t) for t in topics}
    groups: dict[str, dict] = {}
    for topic in topics:
        snapshot = LagReader(admin, topic, timeout=15).snapshot()
        assert not snapshot.errors, snapshot.errors
        for group in snapshot.groups:
            groups[f"{group.group} on {topic}"] = {
                p.partition: p.committed for p in group.partitions if p.committed is not None
            }
        # Named ones too: the message browser's group must never get offsets.
        for name in (world.group, world.replay_group, BROWSER_GROUP):
            groups[f"{name} commits on {topic}"] = committed(
                admin, name, topic, sorted(watermarks[topic])
            )
    listed = admin.list_consumer_groups(request_timeout=15).result(timeout=30)
    names = sorted(g.group_id for g in listed.valid if world.unique in g.group_id)
    return {"topics": watermarks, "groups": groups, "group names": names}


def elasticsearch_state(es: Elasticsearch, world: World) -> dict:
    pattern = f"*{world.unique}*"
    # Document counts are as of the last refresh, which any search may trigger: refresh here so
    # they count what is indexed. The indexing counters count every write as it happens.
    es.indices.refresh(index=pattern, expand_wildcards="all", allow_no_indices=True)
    described = es.indices.get(index=pattern, expand_wildcards="all").body
    stats = es.indices.stats(index=pattern, metric="docs,indexing", expand_wildcards="all").body
    state = {}
    for name, index in described.items():
        counters = stats["indices"][name]["primaries"]
        state[name] = {
            "uuid": index["settings"]["index"]["uuid"],
            "mappings": index["mappings"],
            "docs": counters["docs"]["count"],
            "indexed": counters["indexing"]["index_total"],
            "deleted": counters["indexing"]["delete_total"],
        }
    return state


def _pg_counters(pg: psycopg.Connection, schema: str) -> list[tuple]:
    return pg.execute(
        "SELECT relname, n_tup_ins, n_tup_upd, n_tup_del FROM pg_stat_user_tables"
        " WHERE schemaname = %s ORDER BY relname",
        (schema,),
    ).fetchall()


def settled_pg_counters(pg: psycopg.Connection, schema: str) -> list[tuple]:
    """PostgreSQL's per-table insert/update/delete counters once every backend has reported.

    A backend reports its counters within 10 s of going idle (at once when it exits), so
    counters unchanged for 11 s include every write made before they were first read.
    """
    counters, since = _pg_counters(pg, schema), clock.monotonic()
    while clock.monotonic() - since < 11:
        time.sleep(1)
        now = _pg_counters(pg, schema)
        if now != counters:
            counters, since = now, clock.monotonic()
    return counters


def postgres_state(pg: psycopg.Connection, schema: str) -> dict:
    relations = pg.execute(
        "SELECT relname, relkind FROM pg_class WHERE relnamespace = %s::regnamespace"
        " ORDER BY relname",
        (schema,),
    ).fetchall()
    rows = {}
    for name, kind in relations:
        if kind != "r":
            continue
        table = sql.Identifier(schema, name)
        # xmin changes with every update, even one that writes the same values.
        rows[name] = pg.execute(
            sql.SQL(
                "SELECT count(*), md5(coalesce(string_agg(t.xmin::text || ':' || t::text, '|'"
                " ORDER BY t::text), '')) FROM {} AS t"
            ).format(table)
        ).fetchone()
    sequences = pg.execute(
        "SELECT sequencename, last_value FROM pg_sequences WHERE schemaname = %s"
        " ORDER BY sequencename",
        (schema,),
    ).fetchall()
    return {
        "relations": relations,
        "rows": rows,
        "sequences": sequences,
        "counters": settled_pg_counters(pg, schema),
    }


def state_of_the_world(admin: AdminClient, es: Elasticsearch, pg, world: World) -> dict:
    return {
        "kafka": kafka_state(admin, world),
        "elasticsearch": elasticsearch_state(es, world),
        "postgres": postgres_state(pg, world.schema),
    }


def assert_unchanged(before: dict, after: dict) -> None:
    """Equal, or the first thing that changed, by service and name."""
    for service, things in before.items():
        for name in things.keys() | after[service].keys():
            assert after[service].get(name) == things.get(name), f"{service}: {name} changed"


# -- the pages -------------------------------------------------------------------------------


def texts(elements) -> str:
    return "\n".join(str(e.value) for e in elements)


def refused_click(widget) -> None:
    """A browser cannot click a disabled widget, and neither can AppTest."""
    assert widget.disabled, widget
    with pytest.raises(AppTestError):
        widget.click() if hasattr(widget, "click") else widget.check()


def forged_click(at: AppTest, widget) -> AppTest:
    """Click a disabled button the way a hand-made request could; Streamlit's server ignores it
    (and the state of the world shows that nothing changed)."""
    widget.proto.disabled = False
    widget.click()
    return run(at)


def run(at: AppTest) -> AppTest:
    at.run()
    assert not at.exception, at.exception
    return at


def open_app(topic: str | None = None) -> AppTest:
    """The app's first page, with the read-only badge in the sidebar (and `topic` chosen there)."""
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    if topic is not None:
        at.session_state["sidebar_topic"] = topic
    run(at)
    assert at.title[0].value == "taskstream"
    assert "Read-only mode" in texts(at.sidebar.warning)
    return at


def switch(at: AppTest, page: str, title: str) -> AppTest:
    at.switch_page(f"pages/{page}.py")
    run(at)
    assert at.title[0].value == title
    return at


def exercise_overview(at: AppTest) -> None:
    assert list(at.dataframe[0].value["answers"]) == ["yes", "yes", "yes"]


def exercise_tasks(at: AppTest, world: World) -> None:
    switch(at, "tasks", "Tasks")
    assert READ_ONLY_NOTE in texts(at.info)
    assert at.text_input(key="create_description").disabled
    refused_click(at.button(key="create_submit"))
    refused_click(at.button(key="generate_submit"))
    listed = at.main.dataframe[-1].value
    assert sorted(listed["id"]) == sorted(world.task_ids)
    at.text_input(key="filter_text").input("plants")
    run(at)
    assert list(at.main.dataframe[-1].value["description"]) == ["Water the plants"]
    at.selectbox(key="selected_task").select(world.task_ids[0])
    run(at)
    refused_click(at.button(key="edit_submit"))
    refused_click(at.button(key="toggle_done"))
    refused_click(at.button(key="delete"))
    assert not at.error
    forged_click(at, at.button(key="toggle_done"))
    assert not at.success


def exercise_search(at: AppTest, world: World) -> None:
    switch(at, "search", "Search")
    assert at.metric[0].value == "3"
    at.text_input(key="search_text").input("plumber")
    run(at)
    assert list(at.dataframe[0].value["description"]) == ["Call the plumber"]
    at.radio(key="search_index_choice").set_value("other index…")
    run(at)
    at.text_input(key="search_other_index").input(world.scratch)
    run(at)
    assert list(at.dataframe[0].value["description"]) == ["Call the plumber"]
    at.text_input(key="search_other_index").input(f"test-missing-{world.unique}")
    run(at)
    assert "does not exist yet" in texts(at.info)
    assert not at.error


def exercise_topic(world: World) -> None:
    for topic, messages in ((world.topic, 7), (world.dlq, 1)):
        at = switch(open_app(topic), "topic", "Topic")
        assert at.subheader[0].value.startswith(f"`{topic}`: 6 partitions, {messages} messages")
        read = next(b for b in at.button if b.label == "Read")
        read.click()
        run(at)
        # The message browser's table (on the dead-letter topic the dead-letter view follows).
        shown = next(d.value for d in at.dataframe if "offset" in d.value.columns)
        assert len(shown) == messages
        at.button(key="next_page").click()
        run(at)
        assert not at.error, texts(at.error)


def exercise_partitions(at: AppTest, world: World) -> None:
    switch(at, "partitions", "Partitions")
    at.text_input(key="partitions_key").input(world.task_ids[0])
    run(at)
    assert "murmur2" in texts(at.info)
    at.text_input(key="partitions_search").input("replay-")
    run(at)
    assert not at.error, texts(at.error)


def exercise_groups(at: AppTest, world: World) -> None:
    switch(at, "groups", "Consumer groups")
    listed = at.dataframe[0].value
    assert {world.group, world.replay_group} <= set(listed["group"])
    at.selectbox(key="group").select(world.group)
    run(at)
    assert f"`{world.group}`" in texts(at.subheader)
    # The history is this process's memory, and the page says so rather than "PostgreSQL".
    history_notes = [
        c for c in texts(at.caption).splitlines() if "lag history" in c or "No samples" in c
    ]
    assert history_notes and all(
        "read-only mode" in c and "PostgreSQL" not in c for c in history_notes
    )
    # The chosen group's offset reset previews, and cannot be applied.
    at.radio(key="reset_strategy").set_value("earliest")
    run(at)
    at.button(key="reset_preview").click()
    run(at)
    assert "Preview:" in texts(at.markdown)
    assert READ_ONLY_NOTE in texts(at.caption)
    refused_click(at.button(key="reset_apply"))
    assert not at.error, texts(at.error)
    at.text_input(key="group_search").input("replay-")
    run(at)
    assert not at.error, texts(at.error)


def exercise_replays(at: AppTest, world: World) -> None:
    switch(at, "replays", "Replays")
    assert READ_ONLY_NOTE in texts(at.info)
    assert at.text_input(key="replay_name").disabled
    refused_click(at.button(key="replay_start"))
    name = world.replay
    for button in ("pause", "resume", "stop", "apply_speed", "delete"):
        refused_click(at.button(key=f"replay_{button}_{name}"))
    refused_click(at.checkbox(key=f"replay_drop_{name}"))
    assert at.text_input(key=f"replay_speed_{name}").disabled
    for button in ("pause", "delete"):
        forged_click(at, at.button(key=f"replay_{button}_{name}"))
        assert not at.success
    at.button(key=f"replay_compare_{name}").click()  # a read: allowed
    run(at)
    assert "The indices match" in texts(at.success)
    assert not at.error, texts(at.error)


# Elasticsearch requests that only read: every GET and HEAD, and POSTs to these endpoints.
READING_POSTS = {"_search", "_count", "_msearch", "_mget", "_field_caps", "_validate"}


def record_es_requests(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Every (method, path) this process sends to Elasticsearch from now on (the pages run in
    this process under AppTest)."""
    sent: list[tuple[str, str]] = []
    original = BaseClient._perform_request

    def recording(self, method: str, path: str, **kwargs):
        sent.append((method, path))
        return original(self, method, path, **kwargs)

    monkeypatch.setattr(BaseClient, "_perform_request", recording)
    return sent


def writing(requests: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [
        (method, path)
        for method, path in requests
        if method not in {"GET", "HEAD"}
        and not (method == "POST" and path.split("?")[0].rstrip("/").rsplit("/", 1)[-1]
                 in READING_POSTS)
    ]  # fmt: skip


def exercise_every_page(world: World) -> None:
    at = open_app()
    exercise_overview(at)
    exercise_tasks(at, world)
    exercise_search(at, world)
    exercise_topic(world)
    exercise_partitions(at, world)
    exercise_groups(at, world)
    exercise_replays(at, world)


# -- the command line ------------------------------------------------------------------------


def cli(*args: str) -> subprocess.CompletedProcess:
    """`python -m pipeline …` with the test's (read-only) environment, as from a shell."""
    return run_pipeline(*args, env=os.environ)


def write_commands(world: World) -> list[tuple[str, ...]]:
    task = world.task_ids[0]
    return [
        ("tasks", "create", "--description", "not in read-only mode"),
        ("tasks", "update", task, "--description", "changed"),
        ("tasks", "update", task, "--done"),
        ("tasks", "delete", task),
        ("seed", "--count", "3"),
        ("relay",),
        ("indexer",),
        ("replay", "start", f"ro2-{world.unique}", "--speed", "max"),
        ("replay", "pause", world.replay),
        ("replay", "resume", world.replay),
        ("replay", "rate", world.replay, "500"),
        ("replay", "stop", world.replay),
        ("replay", "delete", world.replay, "--drop-index"),
        ("replay", "run", world.replay),
        ("offsets", "reset", world.group, "--to", "earliest", "--execute"),
    ]


def read_commands(world: World) -> list[tuple[str, ...]]:
    return [
        ("tasks", "list", "--json"),
        ("tasks", "get", world.task_ids[0], "--json"),
        ("search", "plumber", "--json"),
        ("search", "plumber", "--index", world.scratch, "--json"),
        ("lag", "--json"),
        ("replay", "list", "--json"),
        ("replay", "compare", world.replay, "--json"),
        ("offsets", "reset", world.group, "--to", "earliest", "--json"),
    ]


def exercise_every_command(world: World) -> None:
    writes, reads = write_commands(world), read_commands(world)
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(lambda args: cli(*args), writes + reads))
    for args, result in zip(writes, results[: len(writes)], strict=True):
        assert result.returncode == 2, (args, result)
        assert len(result.stderr.strip().splitlines()) == 1, (args, result.stderr)
        assert result.stderr.startswith("error: "), (args, result.stderr)
        assert "read-only" in result.stderr, (args, result.stderr)
        assert result.stdout == "", (args, result.stdout)
    outputs = {}
    for args, result in zip(reads, results[len(writes) :], strict=True):
        assert result.returncode == 0, (args, result.stderr)
        outputs[args[:2]] = json.loads(result.stdout)
    assert len(outputs[("tasks", "list")]) == 3
    assert outputs[("tasks", "get")]["description"] == "Water the plants"
    assert outputs[("search", "plumber")]["total"] == 1
    assert {world.group, world.replay_group} <= {
        g["group"] for g in outputs[("lag", "--json")]["groups"]
    }
    assert [r["state"] for r in outputs[("replay", "list")]] == ["finished"]
    assert outputs[("replay", "compare")]["identical"] is True
    assert outputs[("offsets", "reset")]


# -- the tests -------------------------------------------------------------------------------


def test_read_only_mode_writes_nothing_through_any_page_or_command(
    world, admin, es, pg, monkeypatch
):
    before = state_of_the_world(admin, es, pg, world)
    assert set(before["kafka"]["topics"]) == {world.topic, world.dlq}
    assert set(before["elasticsearch"]) == {world.index, world.scratch}
    assert {"tasks", "outbox", "replays", "lag_samples"} <= set(before["postgres"]["rows"])

    with monkeypatch.context() as patch:
        requests = record_es_requests(patch)
        exercise_every_page(world)
    assert requests and not writing(requests), writing(requests)
    exercise_every_command(world)
    clear_caches()  # stops the lag samplers and closes the app's pools

    assert_unchanged(before, state_of_the_world(admin, es, pg, world))


@pytest.fixture
def fresh(
    monkeypatch: pytest.MonkeyPatch,
    settings: Settings,
    admin: AdminClient,
    es: Elasticsearch,
    pg_schema: str,
    unique: str,
) -> Iterator[World]:
    """Names nothing exists under yet: schema never migrated, no topic, index or group."""
    world = World(
        unique=unique,
        schema=pg_schema,
        topic=f"test-{unique}",
        dlq=f"test-{unique}.dlq",
        index=f"test-{unique}",
        group=f"test-group-{unique}",
        replay=f"ro-{unique}",
        task_ids=[str(uuid.uuid4())],
    )
    point_app_at(monkeypatch, settings, world)
    monkeypatch.setenv("TASKSTREAM_READ_ONLY", "true")
    clear_caches()
    try:
        yield world
    finally:
        remove_world(admin, es, world)


def test_read_only_mode_on_a_fresh_install_explains_and_creates_nothing(fresh, admin, es, pg):
    world = fresh
    before = state_of_the_world(admin, es, pg, world)
    assert before["postgres"]["relations"] == []
    assert before["kafka"]["topics"] == {} and before["elasticsearch"] == {}

    at = open_app()
    switch(at, "tasks", "Tasks")
    assert "not created yet" in texts(at.error)
    assert "read-only" in texts(at.error)
    switch(at, "search", "Search")
    assert "does not exist yet" in texts(at.info)
    for page, title in (("topic", "Topic"), ("partitions", "Partitions"),
                        ("groups", "Consumer groups")):  # fmt: skip
        switch(at, page, title)
        assert "does not exist" in texts(at.error)
    switch(at, "replays", "Replays")
    assert READ_ONLY_NOTE in texts(at.info)

    listed = cli("tasks", "list")
    assert listed.returncode == 1
    assert "not created yet" in listed.stderr and "read-only" in listed.stderr
    assert len(listed.stderr.strip().splitlines()) == 1
    for args in (("replay", "list", "--json"), ("search", "anything", "--json")):
        result = cli(*args)
        assert result.returncode == 0, (args, result.stderr)
    clear_caches()

    assert_unchanged(before, state_of_the_world(admin, es, pg, world))
