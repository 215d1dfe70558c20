"""Replays against the real services, through the CLI as a user runs them.

Each test gets its own topic (KAFKA_TOPIC), PostgreSQL schema, live index name and replay name,
and deletes its replay's group and scratch index afterwards. Waits poll the `replays` table (via
`replay list --json`) with a deadline; nothing asserts on elapsed time.
"""

import json
import os
import random
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import pytest
from confluent_kafka import ConsumerGroupTopicPartitions

from pipeline import clock
from pipeline.clients import kafka_producer
from pipeline.domain import apply_changes, new_task, task_to_dict
from pipeline.events import created_event, deleted_event, encode_event, updated_event

ROOT = Path(__file__).resolve().parents[2]
WAIT = 90.0


def wait_for(condition: Callable[[], object], what: str, timeout: float = WAIT) -> object:
    deadline = clock.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if clock.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        threading.Event().wait(0.2)


def produce_history(settings, topic: str, count: int, seed: int = 5) -> dict[str, dict]:
    """Create, update and delete tasks on `topic`; returns the expected final documents by id."""
    rng = random.Random(seed)
    producer = kafka_producer(settings)
    expected: dict[str, dict] = {}
    tasks = {}
    for i in range(count):
        if tasks and rng.random() < 0.3:
            task_id = rng.choice(list(tasks))
            if rng.random() < 0.3:
                event = deleted_event(task_id)
                del tasks[task_id]
                expected.pop(str(task_id))
            else:
                tasks[task_id] = apply_changes(tasks[task_id], is_done=rng.random() < 0.5)
                event = updated_event(tasks[task_id])
                expected[str(task_id)] = task_to_dict(tasks[task_id])
        else:
            task = new_task(f"replayed task {i}", rng.choice(["none", "low", "high"]))
            tasks[task.id] = task
            event = created_event(task)
            expected[str(task.id)] = task_to_dict(task)
        message = encode_event(event)
        producer.produce(topic, key=message.key, value=message.value, headers=message.headers)
        producer.poll(0)
    producer.produce(topic, key=b"junk", value=b"not json")  # malformed: counted, skipped
    assert producer.flush(30) == 0
    return expected


@pytest.fixture
def replay_cli(settings, topic, pg_schema, index_name, admin, es):
    """Run `python -m pipeline` on the test's topic, schema and live index; cleans up replays."""
    env = {
        **os.environ,
        "DATABASE_URL": f"{settings.database_url}?options={quote(f'-c search_path={pg_schema}')}",
        "ELASTICSEARCH_INDEX": index_name,
        "KAFKA_TOPIC": topic,
    }
    names: list[str] = []

    def run(*args: str, extra_env: dict | None = None) -> subprocess.CompletedProcess:
        if len(args) > 2 and args[:2] == ("replay", "start"):
            names.append(args[2])
        return subprocess.run(
            [sys.executable, "-m", "pipeline", *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            env={**env, **(extra_env or {})},
        )

    yield run
    for name in names:
        if run("replay", "delete", name, "--drop-index").returncode == 2:
            continue  # refused at start: nothing was created
        es.indices.delete(index=f"scratch-{name}", ignore_unavailable=True)
        admin.delete_consumer_groups([f"replay-{name}"])


def listed(cli, name: str) -> dict | None:
    result = cli("replay", "list", "--json")
    assert result.returncode == 0, result.stderr
    return next((r for r in json.loads(result.stdout) if r["name"] == name), None)


def scratch_documents(es, index: str) -> dict[str, dict]:
    es.indices.refresh(index=index)
    hits = es.search(index=index, size=10_000, query={"match_all": {}})["hits"]["hits"]
    return {hit["_id"]: hit["_source"] for hit in hits}


def same_documents(expected: dict[str, dict], actual: dict[str, dict]) -> None:
    assert set(actual) == set(expected)
    for task_id, task in expected.items():
        doc = actual[task_id]
        assert (doc["id"], doc["description"], doc["priority"], doc["is_done"]) == (
            task["id"],
            task["description"],
            task["priority"],
            task["is_done"],
        )


def test_replay_from_earliest_until_end_reproduces_the_documents(
    replay_cli, settings, topic, es, unique
):
    expected = produce_history(settings, topic, 300)
    name = f"r-{unique}"
    started = replay_cli("replay", "start", name, "--speed", "max", "--json")
    assert started.returncode == 0, started.stderr
    row = json.loads(started.stdout)
    assert row["total"] == 301 and row["remaining"] == 301
    assert row["group"] == f"replay-{name}" and row["index"] == f"scratch-{name}"

    done = wait_for(
        lambda: (r := listed(replay_cli, name)) and r["state"] in ("finished", "failed") and r,
        "the replay to finish",
    )
    assert done["state"] == "finished", done
    assert done["remaining"] == 0
    assert done["errors"] == 1  # the malformed message, skipped (no dead letters from replays)
    same_documents(expected, scratch_documents(es, f"scratch-{name}"))


def test_pause_stops_progress_resume_continues_and_rate_applies(
    replay_cli, settings, topic, es, unique
):
    expected = produce_history(settings, topic, 400)
    name = f"p-{unique}"
    assert replay_cli("replay", "start", name, "--speed", "40").returncode == 0
    wait_for(lambda: listed(replay_cli, name)["events_done"] > 0, "first progress")

    assert replay_cli("replay", "pause", name).returncode == 0
    paused = wait_for(
        lambda: (r := listed(replay_cli, name))["state"] == "paused" and r, "state paused"
    )
    # Two more heartbeats while paused and the position has not moved.
    beat = paused["heartbeat_at"]
    later = wait_for(
        lambda: (r := listed(replay_cli, name))["heartbeat_at"] != beat and r, "a heartbeat"
    )
    later = wait_for(
        lambda: (r := listed(replay_cli, name))["heartbeat_at"] != later["heartbeat_at"] and r,
        "another heartbeat",
    )
    assert later["state"] == "paused"
    assert later["position"] == paused["position"]
    assert later["remaining"] > 0

    assert replay_cli("replay", "resume", name).returncode == 0
    wait_for(
        lambda: listed(replay_cli, name)["remaining"] < later["remaining"], "progress after resume"
    )
    # At 40 events/s the rest would take ~10 s: max finishes it, without a restart.
    assert replay_cli("replay", "rate", name, "max").returncode == 0
    row = listed(replay_cli, name)
    assert row["speed"] == "max" and row["pid"] is not None
    pid = row["pid"]
    done = wait_for(
        lambda: (r := listed(replay_cli, name))["state"] in ("finished", "failed") and r,
        "the replay to finish",
    )
    assert done["state"] == "finished" and done["pid"] == pid, done
    same_documents(expected, scratch_documents(es, f"scratch-{name}"))


def test_sigkill_then_resume_converges(replay_cli, settings, topic, es, admin, unique):
    expected = produce_history(settings, topic, 400)
    name = f"k-{unique}"
    assert replay_cli("replay", "start", name, "--speed", "60").returncode == 0
    # Wait for a commit beyond the start, then kill the worker without warning.
    first = wait_for(
        lambda: (r := listed(replay_cli, name))["events_done"] >= 60 and r, "some progress"
    )
    os.kill(first["pid"], signal.SIGKILL)
    dead = wait_for(lambda: (r := listed(replay_cli, name))["state"] == "dead" and r, "dead")
    assert 0 < dead["remaining"] < 401

    # The group kept its committed offsets: the restarted worker resumes there.
    request = ConsumerGroupTopicPartitions(f"replay-{name}")
    committed = admin.list_consumer_group_offsets([request])[f"replay-{name}"].result(timeout=10)
    assert sum(tp.offset for tp in committed.topic_partitions) >= 1

    resumed = replay_cli("replay", "resume", name)
    assert resumed.returncode == 0, resumed.stderr
    assert replay_cli("replay", "rate", name, "max").returncode == 0
    done = wait_for(
        lambda: (r := listed(replay_cli, name))["state"] in ("finished", "failed") and r,
        "the restarted replay to finish",
    )
    assert done["state"] == "finished", done
    assert done["pid"] != first["pid"]
    same_documents(expected, scratch_documents(es, f"scratch-{name}"))


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (("Bad-Name",), {}, "lower-case"),
        (("a b",), {}, "space"),
        (("a:b",), {}, "not allowed in an index name"),
        (("_abc",), {}, "must not start"),
        (("+abc",), {}, "must not start"),
        (("x" * 201,), {}, "at most 200"),
        (("live",), {"INDEXER_GROUP": "replay-live"}, "live indexer's group"),
        (("live",), {"ELASTICSEARCH_INDEX": "scratch-live"}, "the live index"),
        (("ok", "--speed", "0"), {}, "speed must be"),
        (("ok", "--speed", "-5"), {}, "speed must be"),
        (("ok", "--speed", "fast"), {}, "speed must be"),
        (("ok", "--from", "yesterday"), {}, "ISO time"),
        (("ok", "--until", "soon"), {}, "ISO time"),
        (("ok", "--from", "0:999999"), {}, "outside partition 0's range 0..4"),
        (("ok", "--from", "9:0"), {}, "no partition 9"),
        (("ok",), {"KAFKA_TOPIC": "no-such-topic-for-replays"}, "does not exist"),
        (("ok",), {"TASKSTREAM_READ_ONLY": "true"}, "read-only"),
    ],
)  # fmt: skip
def test_every_guard_refuses_with_exit_2_and_creates_nothing(
    replay_cli, settings, topic, pg, pg_schema, es, admin, unique, args, env, message
):
    producer = kafka_producer(settings)
    for _ in range(4):
        producer.produce(topic, key=b"k", value=b"x", partition=0)
    assert producer.flush(10) == 0
    name = args[0] if args[0] != "ok" else f"g-{unique}"
    result = replay_cli("replay", "start", name, *args[1:], extra_env=env)
    assert result.returncode == 2, result
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    exists = pg.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = %s"
        " AND table_name = 'replays'",
        (pg_schema,),
    ).fetchone()[0]
    if exists:
        assert pg.execute(f'SELECT count(*) FROM "{pg_schema}".replays').fetchone() == (0,)
    if name.lower() == name and not set(name) & set(" :_+") and len(name) < 200:
        assert not es.indices.exists(index=f"scratch-{name}")
    groups = {g.group_id for g in admin.list_consumer_groups().result(timeout=10).valid}
    assert f"replay-{name}" not in groups


def test_a_taken_name_is_refused(replay_cli, settings, topic, unique):
    produce_history(settings, topic, 5)
    name = f"t-{unique}"
    assert replay_cli("replay", "start", name, "--speed", "max").returncode == 0
    again = replay_cli("replay", "start", name)
    assert again.returncode == 2
    assert "already exists" in again.stderr
