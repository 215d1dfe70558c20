"""`dlq list` / `dlq redrive` against the real Kafka and PostgreSQL: the letters listed, exactly
the chosen ones sent back once with their key, value and headers, the crash window settled."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from urllib.parse import quote

import psycopg
import pytest

from pipeline.core.events import TASK_CREATED, dumps
from pipeline.core.partitioner import partition_for_key
from pipeline.kafka.admin import topic_watermarks
from pipeline.kafka.clients import kafka_consumer, kafka_producer
from pipeline.kafka.redrive import LetterPublisher, Outgoing
from pipeline.kafka.redrive_rules import LetterFilter
from pipeline.postgres.pool import postgres_pool
from pipeline.postgres.redrives import RedriveLedger, migrate_redrives
from pipeline.workers.indexer import Indexer
from pipeline.workers.redrive import list_dead_letters, plan_redrive, redrive
from testkit.processes import run_pipeline
from testkit.topics import create_topic
from testkit.waiting import wait_for

PARTITIONS = 6


def read_all(settings, topic: str, expected: int) -> list:
    """Every message of `topic`, once `expected` are there (and no more after a short look)."""
    consumer = kafka_consumer(settings, f"test-reader-{uuid.uuid4().hex[:8]}")
    consumer.subscribe([topic])
    messages: list = []
    try:
        wait_for(
            lambda: (
                messages.extend(m for m in consumer.consume(100, timeout=0.5) if m.error() is None)
                or len(messages) >= expected
            ),
            f"{expected} message(s) on {topic}",
        )
        messages += [m for m in consumer.consume(100, timeout=1.0) if m.error() is None]
    finally:
        consumer.close()
    return messages


@pytest.fixture
def dlq(admin, topic) -> Iterator[str]:
    name = f"{topic}.dlq"
    yield name
    if name in admin.list_topics(timeout=10).topics:
        admin.delete_topics([name])[name].result(timeout=30)


@pytest.fixture
def cli(settings, pg_schema, topic):
    env = {
        **os.environ,
        "KAFKA_TOPIC": topic,
        "DATABASE_URL": f"{settings.database_url}?options={quote(f'-c search_path={pg_schema}')}",
    }

    def run(*args: str, **extra: str) -> subprocess.CompletedProcess:
        return run_pipeline("dlq", *args, env={**env, **extra})

    return run


def letter(key, value, error, source, partition, offset, *, dropped=None, extra=()):
    headers = [*extra, ("error", error.encode()), ("source_topic", source.encode()),
               ("source_partition", str(partition).encode()),
               ("source_offset", str(offset).encode())]  # fmt: skip
    if dropped:
        headers.append(("value_dropped", dropped.encode()))
    return key, value, headers


def test_list_then_redrive_exactly_the_chosen_letters_once(settings, admin, topic, dlq, cli):
    create_topic(admin, dlq, 2, replication_factor=1)
    trace = ("trace", b"from-the-test")
    letters = [
        # An original header called "error" stays: only the indexer's trailing ones come off.
        letter(b"k-json", b"not json", "message value is not JSON", topic, 1, 7,
               extra=[trace, ("error", b"upstream's own")]),
        letter(b"k-type", b'{"type": "x"}', "unknown type 'x'", topic, 2, 3),
        letter(b"k-big", None, "message value is not JSON", topic, 0, 9,
               dropped="2000000 bytes, over the dead-letter topic's size limit"),
        letter(None, b"keyless", "message key is missing", topic, 4, 1),
        letter(b"k-gone", b"{}", "unknown type", "no-such-topic-" + topic, 0, 0),
    ]  # fmt: skip
    producer = kafka_producer(settings)
    for i, (key, value, headers) in enumerate(letters):
        producer.produce(dlq, partition=i % 2, key=key, value=value, headers=headers)
    assert producer.flush(30) == 0

    listed = cli("list", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert sorted(r["key"] or "" for r in rows) == ["", "k-big", "k-gone", "k-json", "k-type"]
    by_key = {r["key"]: r for r in rows}
    assert by_key["k-json"]["error"] == "message value is not JSON"
    assert (by_key["k-json"]["source_topic"], by_key["k-json"]["source_partition"],
            by_key["k-json"]["source_offset"]) == (topic, 1, 7)  # fmt: skip
    assert by_key["k-big"]["value_dropped"].startswith("2000000 bytes")
    assert all(r["status"] == "dead" and r["redriven"] is None for r in rows)
    assert all(r["timestamp"] for r in rows)
    narrowed = json.loads(cli("list", "--json", "--error-contains", "NOT json").stdout)
    assert sorted(r["key"] for r in narrowed) == ["k-big", "k-json"]
    assert json.loads(cli("list", "--json", "--since", "2099-01-01").stdout) == []
    bad_since = cli("list", "--since", "yesterday-ish")
    assert bad_since.returncode == 2 and len(bad_since.stderr.strip().splitlines()) == 1
    assert "--since" in bad_since.stderr

    # A dry run previews and sends nothing.
    dry = cli("redrive", "--error-contains", "not json", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    preview = json.loads(dry.stdout)
    assert preview["dry_run"] is True and preview["to_publish"] == 1
    actions = {x["key"]: (x["action"], x["reason"]) for x in preview["letters"]}
    assert actions["k-json"] == ("publish", None)
    assert actions["k-big"][0] == "skip" and "value was dropped" in actions["k-big"][1]
    assert "k-json" in dry.stderr  # the preview, on stderr since stdout is JSON

    # Read-only: refused in one line, exit 2.
    refused = cli("redrive", "--yes", TASKSTREAM_READ_ONLY="true")
    assert refused.returncode == 2
    assert len(refused.stderr.strip().splitlines()) == 1 and "read-only" in refused.stderr

    first = cli("redrive", "--error-contains", "not json", "--rate", "50", "--json")
    assert first.returncode == 0, first.stderr
    result = json.loads(first.stdout)
    assert [p["letter"].split(":")[0] for p in result["published"]] == [dlq]
    assert result["run"]["state"] == "finished" and result["run"]["published"] == 1
    assert any("value was dropped" in s["reason"] for s in result["skipped"])
    [sent] = read_all(settings, topic, 1)
    json_letter = by_key["k-json"]
    assert sent.key() == b"k-json" and sent.value() == b"not json"
    assert sent.partition() == partition_for_key(b"k-json", PARTITIONS)
    origin = f"{dlq}:{json_letter['partition']}:{json_letter['offset']}"
    assert sent.headers() == [
        trace,
        ("error", b"upstream's own"),
        ("redriven_from", origin.encode()),
    ]
    assert result["published"][0] == {
        "letter": origin, "topic": topic, "partition": sent.partition(), "offset": sent.offset()
    }  # fmt: skip

    # The same redrive again sends nothing; an unfiltered one sends only the two others left.
    again = json.loads(cli("redrive", "--error-contains", "not json", "--json").stdout)
    assert again["published"] == [] and again["run"] is None
    assert any(
        s["letter"] == origin and "already redriven" in s["reason"] for s in again["skipped"]
    )
    rest = cli("redrive", "--json")
    assert rest.returncode == 0, rest.stderr
    rest = json.loads(rest.stdout)
    assert len(rest["published"]) == 2
    reasons = {s["letter"]: s["reason"] for s in rest["skipped"]}
    assert any("does not exist" in r for r in reasons.values())
    messages = read_all(settings, topic, 3)
    assert sorted(m.key() or b"" for m in messages) == [b"", b"k-json", b"k-type"]
    keyless = next(m for m in messages if m.key() is None)
    assert keyless.partition() == 4 and keyless.value() == b"keyless"  # the partition it came from

    history = {r["key"]: r for r in json.loads(cli("list", "--json").stdout)}
    assert history["k-json"]["status"] == "redriven"
    assert history["k-json"]["redriven"]["run"] == result["run"]["id"]
    assert history["k-json"]["redriven"]["offset"] == sent.offset()
    assert history["k-type"]["redriven"]["run"] == rest["run"]["id"]
    assert history["k-big"]["status"] == "dead" and history["k-gone"]["status"] == "dead"
    human = cli("list")
    assert human.returncode == 0, human.stderr
    assert "5 dead letter(s)" in human.stdout and "3 already redriven" in human.stdout


def test_letters_of_a_live_indexer_and_the_crash_window(
    settings, admin, es, topic, dlq, group, index_name, pg_schema, forget
):
    """Real dead letters from a live indexer; a run that died after claiming two letters (one
    delivered, one not) is settled by the next redrive: the delivered one is not sent again."""
    forget.append(group)
    live = settings.replace(kafka_topic=topic, indexer_group=group, elasticsearch_index=index_name)
    producer = kafka_producer(settings)
    bad = [
        (b"task-a", b"this is not json"),
        (b"task-b", dumps({"type": "tasks.event.archived", "value": {"id": "task-b"}})),
        (b"task-c", dumps({"type": TASK_CREATED, "value": {"description": "no id"}})),
    ]
    for key, value in bad:
        producer.produce(topic, key=key, value=value, headers=[("trace", key)])
    assert producer.flush(30) == 0

    indexer = Indexer.live(live)
    import threading

    thread = threading.Thread(target=indexer.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: indexer.stats.dead_lettered >= 3, "the indexer to dead-letter 3")
    finally:
        indexer.request_stop()
        thread.join(60)

    pool = postgres_pool(settings, schema=pg_schema, max_size=3)
    try:
        migrate_redrives(pool)
        ledger = RedriveLedger(pool)
        listed = list_dead_letters(live, ledger)
        assert sorted(x.letter.key for x in listed) == [b"task-a", b"task-b", b"task-c"]
        assert all(x.letter.source_topic == topic for x in listed)

        # A run that claimed task-a and task-b, delivered task-a, and died before confirming.
        plan = plan_redrive(live, ledger, LetterFilter())
        items = {i.letter.key: i for i in plan.to_publish}
        a, b = items[b"task-a"], items[b"task-b"]
        dead_run = ledger.start_run(dlq, {}, None, 2, {topic: {a.partition: 0, b.partition: 0}})
        assert ledger.claim(dead_run, [(i.letter.id, i.topic, i.partition) for i in (a, b)]) == {
            a.letter.id, b.letter.id
        }  # fmt: skip
        with LetterPublisher(live) as publisher:
            [report] = publisher.send([Outgoing(a.letter, topic, a.partition)])
        assert report.error is None
        preview = plan_redrive(live, ledger, LetterFilter())
        assert {i.letter.key for i in preview.to_publish} == {b"task-c"}
        assert all("in doubt" in i.reason for i in preview.skipped)

        result = redrive(live, ledger, plan_redrive(live, ledger, LetterFilter()))
        assert result.resolved == (1, 1)  # task-a found in the topic, task-b never got there
        assert sorted(result.published) == sorted([b.letter.id, items[b"task-c"].letter.id])
        redriven = [
            m for m in read_all(settings, topic, 6) if m.headers()[-1][0] == "redriven_from"
        ]
        assert sorted(m.key() for m in redriven) == [b"task-a", b"task-b", b"task-c"]
        entries = ledger.entries(dlq)
        assert entries[a.letter.id].state == "published"
        assert entries[a.letter.id].target_offset == report.offset
        runs = {r.id: r for r in ledger.runs(dlq)}
        assert runs[dead_run].state == "interrupted" and runs[dead_run].published == 1
        assert redrive(live, ledger, plan_redrive(live, ledger, LetterFilter())).published == {}
    finally:
        pool.close()


def test_a_redrive_killed_mid_run_still_sends_each_letter_once(
    settings, admin, topic, dlq, pg, pg_schema
):
    """SIGKILL a paced `dlq redrive` mid-batch, some of the batch delivered but unconfirmed; the
    next redrive finds those on the topic and sends the rest: every letter on the topic once."""
    create_topic(admin, dlq, 1, replication_factor=1)
    count = 20
    producer = kafka_producer(settings)
    for i in range(count):
        key, value, headers = letter(f"k-{i:02d}".encode(), b"v%d" % i, "bad", topic, 0, i)
        producer.produce(dlq, key=key, value=value, headers=headers)
    assert producer.flush(30) == 0
    env = {
        **os.environ,
        "KAFKA_TOPIC": topic,
        "DATABASE_URL": f"{settings.database_url}?options={quote(f'-c search_path={pg_schema}')}",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "dlq", "redrive", "--rate", "5", "--yes"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    table = f"{pg_schema}.dlq_redrives"

    def published() -> int:
        if process.poll() is not None:
            pytest.fail(f"the redrive ended (exit {process.returncode}) before it was killed")
        try:
            return pg.execute(f"SELECT count(*) FROM {table} WHERE state = 'published'").fetchone()[
                0
            ]
        except psycopg.errors.UndefinedTable:
            return 0

    def on_topic() -> int:
        return sum(high for _low, high in topic_watermarks(admin, topic).values())

    try:
        # Batches of 5 at 5/s: the second batch claimed, its first letter delivered, unconfirmed
        # (its last four take another 0.8 s, far more than a poll of this wait).
        wait_for(lambda: published() >= 5 and on_topic() >= 6, "a batch and a letter delivered")
    finally:
        process.kill()
        process.wait(30)
    after = run_pipeline("dlq", "redrive", "--yes", "--json", env=env)
    assert after.returncode == 0, after.stderr
    settled = json.loads(after.stdout)["in_doubt_resolved"]
    assert settled["published"] >= 1 and settled["published"] + settled["sent_again"] == 5
    messages = read_all(settings, topic, count)
    origins = [dict(m.headers())["redriven_from"].decode() for m in messages]
    assert sorted(origins) == sorted(f"{dlq}:0:{i}" for i in range(count))  # each once
    assert sorted(m.key() for m in messages) == [f"k-{i:02d}".encode() for i in range(count)]
    rows = json.loads(run_pipeline("dlq", "list", "--json", env=env).stdout)
    assert {r["status"] for r in rows} == {"redriven"}
