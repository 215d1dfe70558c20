"""`python -m pipeline` against the real services: JSON output, one-line errors, exit codes."""

import json
import os
import subprocess
import uuid
from urllib.parse import quote

import pytest

from pipeline.core.partitioner import partition_for_key
from testkit.processes import run_pipeline


@pytest.fixture
def cli(settings, pg_schema, index_name):
    """Run the CLI with its own PostgreSQL schema and index, as a user would from a shell."""
    env = {
        **os.environ,
        "DATABASE_URL": f"{settings.database_url}?options={quote(f'-c search_path={pg_schema}')}",
        "ELASTICSEARCH_INDEX": index_name,
    }

    def run(*args: str, extra_env: dict | None = None) -> subprocess.CompletedProcess:
        return run_pipeline(*args, env={**env, **(extra_env or {})})

    return run


def test_create_get_update_list_delete_round_trip(cli, pg, pg_schema):
    made = cli("tasks", "create", "--description", "  Water the plants ", "--priority", "HIGH",
               "--due", "2026-12-24", "--json")  # fmt: skip
    assert made.returncode == 0, made.stderr
    task = json.loads(made.stdout)
    assert task["description"] == "Water the plants"
    assert task["priority"] == "high"
    assert task["dates"] == {"start": None, "due": "2026-12-24T00:00:00Z"}
    assert task["is_done"] is False

    got = json.loads(cli("tasks", "get", task["id"], "--json").stdout)
    assert got == task

    changed = cli("tasks", "update", task["id"], "--done", "--due", "none", "--json")
    assert changed.returncode == 0, changed.stderr
    assert json.loads(changed.stdout) | {} == {
        **task,
        "is_done": True,
        "dates": {"start": None, "due": None},
    }

    listed = json.loads(cli("tasks", "list", "--limit", "5", "--json").stdout)
    assert [t["id"] for t in listed] == [task["id"]]

    human = cli("tasks", "delete", task["id"])
    assert human.returncode == 0, human.stderr
    partition = partition_for_key(task["id"].encode(), 6)
    assert f"partition {partition}" in human.stdout
    missing = cli("tasks", "get", task["id"])
    assert missing.returncode == 2
    assert missing.stderr.strip() == f"error: task {task['id']} not found"

    # Every change wrote one outbox event, in order.
    rows = pg.execute(
        f'SELECT type FROM "{pg_schema}".outbox WHERE aggregate_id = %s ORDER BY id',
        (uuid.UUID(task["id"]),),
    ).fetchall()
    assert [r[0] for r in rows] == [
        "tasks.event.created",
        "tasks.event.updated",
        "tasks.event.deleted",
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("tasks", "create", "--description", "   "), "description"),
        (("tasks", "create", "--description", "x", "--priority", "urgent"), "priority"),
        (("tasks", "create", "--description", "x", "--start", "2026-12-02", "--due", "2026-12-01"),
         "dates.due"),
        (("tasks", "create", "--description", "x", "--due", "next tuesday"), "dates.due"),
        (("tasks", "get", "not-a-uuid"), "id"),
        (("tasks", "list", "--limit", "many"), "--limit"),
        (("tasks", "frobnicate"), "invalid choice"),
        (("seed", "--count", "0"), "--count"),
    ],
)  # fmt: skip
def test_invalid_input_is_one_line_exit_2_and_creates_nothing(cli, pg, pg_schema, args, message):
    result = cli(*args)
    assert result.returncode == 2, result
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    tables = pg.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = %s AND table_name = 'tasks'",
        (pg_schema,),
    ).fetchone()[0]
    if tables:
        assert pg.execute(f'SELECT count(*) FROM "{pg_schema}".tasks').fetchone() == (0,)


def test_read_only_mode_refuses_every_write(cli, pg, pg_schema):
    for args in (("tasks", "create", "--description", "x"), ("seed", "--count", "3"),
                 ("tasks", "delete", str(uuid.uuid4()))):  # fmt: skip
        result = cli(*args, extra_env={"TASKSTREAM_READ_ONLY": "true"})
        assert result.returncode == 2
        assert "read-only" in result.stderr
    exists = pg.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = %s", (pg_schema,)
    ).fetchone()
    assert exists == (0,)


def test_seed_creates_tasks_with_their_events(cli, pg, pg_schema):
    result = cli("seed", "--count", "2500", "--batch", "1000", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"created": 2500}
    counts = pg.execute(
        f'SELECT (SELECT count(*) FROM "{pg_schema}".tasks), (SELECT count(*) FROM "{pg_schema}".outbox)'
    ).fetchone()
    assert counts == (2500, 2500)


def test_a_dead_service_is_named_in_one_line(cli):
    result = cli(
        "tasks", "list", extra_env={"DATABASE_URL": "postgresql://taskstream@127.0.0.1:1/x"}
    )
    assert result.returncode == 1
    assert result.stderr.startswith("error: PostgreSQL")
    assert len(result.stderr.strip().splitlines()) == 1


def test_lag_json_has_the_design_shape(cli, settings, topic, group):
    from pipeline.kafka.clients import kafka_consumer, kafka_producer

    producer = kafka_producer(settings)
    for n in range(30):
        producer.produce(topic, key=f"k{n}".encode(), value=b"{}")
    assert producer.flush(30) == 0
    consumer = kafka_consumer(settings, group)
    consumer.subscribe([topic])
    read = 0
    for _ in range(60):
        read += len(consumer.consume(num_messages=30, timeout=1.0))
        if read >= 30:
            break
    consumer.commit(asynchronous=False)
    consumer.close()

    result = cli("lag", "--group", group, "--json", extra_env={"KAFKA_TOPIC": topic})
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["topic"] == topic
    [entry] = report["groups"]
    assert entry["group"] == group
    assert entry["total_lag"] == 0
    partitions = entry["partitions"]
    assert [p["partition"] for p in partitions] == list(range(6))
    assert sum(p["end"] for p in partitions) == 30
    assert all(p["lag"] == 0 and p["committed"] == p["end"] for p in partitions if p["end"])

    unknown = cli("lag", "--json", extra_env={"KAFKA_TOPIC": f"{topic}-missing"})
    assert unknown.returncode == 2
    assert "does not exist" in unknown.stderr
