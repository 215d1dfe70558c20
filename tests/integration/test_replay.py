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
import threading
from urllib.parse import quote

import pytest
from confluent_kafka import ConsumerGroupTopicPartitions

from pipeline.core import clock
from pipeline.core.domain import apply_changes, new_task, task_to_dict
from pipeline.core.events import created_event, deleted_event, encode_event, updated_event
from pipeline.kafka.admin import group_offsets
from pipeline.kafka.clients import kafka_producer
from pipeline.lag.reader import LagReader
from pipeline.replay.control import topic_watermarks
from pipeline.workers.indexer import Indexer
from testkit.processes import run_pipeline
from testkit.waiting import wait_for


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
        return run_pipeline(*args, env={**env, **(extra_env or {})})

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
    replay_cli, settings, topic, es, admin, unique
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
    # Paused, its consumer stays in its own group, named for the replay.
    [member] = LagReader(admin, topic).snapshot([later["group"]]).groups[0].members
    assert member.client_id == f"taskstream-replay-{name}"

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


def produce_spread(settings, topic: str, count: int, gap_ms: int) -> dict[str, dict]:
    """`count` created events on partition 0 whose Kafka timestamps are `gap_ms` apart."""
    producer = kafka_producer(settings)
    first = int(clock.utcnow().timestamp() * 1000) - count * gap_ms
    expected: dict[str, dict] = {}
    for i in range(count):
        task = new_task(f"paced task {i}", "low")
        expected[str(task.id)] = task_to_dict(task)
        message = encode_event(created_event(task))
        producer.produce(
            topic, key=message.key, value=message.value, headers=message.headers,
            partition=0, timestamp=first + i * gap_ms,
        )  # fmt: skip
    assert producer.flush(30) == 0
    return expected


def test_pace_replays_follow_the_event_timestamps_and_obey_controls_during_a_long_wait(
    replay_cli, settings, topic, es, unique
):
    # 12 events 3 s apart: 33 s of history. At 2x that is 16.5 s from the first event to the
    # last; at 0.1x every gap is a 30 s wait, inside which pause and rate must still apply.
    expected = produce_spread(settings, topic, 12, 3_000)
    paced, slow = f"x-{unique}", f"w-{unique}"
    assert replay_cli("replay", "start", paced, "--speed", "2x").returncode == 0
    # A short poll interval: a worker that blocked in its wait instead of serving the group
    # would be dropped from it (and fail its commits) during a 30 s gap.
    short_poll = {"KAFKA_MAX_POLL_INTERVAL_MS": "10000", "KAFKA_SESSION_TIMEOUT_MS": "6000"}
    started = replay_cli("replay", "start", slow, "--speed", "0.1x", extra_env=short_poll)
    assert started.returncode == 0, started.stderr

    wait_for(lambda: listed(replay_cli, paced)["events_done"] > 0, "the 2x replay's progress")
    first_progress = clock.monotonic()
    first_slow = wait_for(
        lambda: (r := listed(replay_cli, slow))["events_done"] > 0 and r,
        "the 0.1x replay's progress",
    )
    assert first_slow["remaining"] > 0  # the first event goes at once, the next is 30 s later

    # A pause during the 30 s wait is seen within a few seconds, and nothing moves meanwhile.
    assert replay_cli("replay", "pause", slow).returncode == 0
    paused = wait_for(
        lambda: (r := listed(replay_cli, slow))["state"] == "paused" and r, "paused", timeout=15
    )
    beat = paused["heartbeat_at"]
    later = wait_for(
        lambda: (r := listed(replay_cli, slow))["heartbeat_at"] != beat and r, "a heartbeat"
    )
    assert later["state"] == "paused" and later["position"] == paused["position"]
    assert later["remaining"] >= 10

    # Half the 2x replay's span after its first progress, it is still going.
    threading.Event().wait(max(0.0, first_progress + 5 - clock.monotonic()))
    halfway = listed(replay_cli, paced)
    assert halfway["state"] == "running" and halfway["remaining"] > 0, halfway

    # Resumed, then max: the rest (9+ events, 270+ s at 0.1x) goes at once, without a restart.
    assert replay_cli("replay", "resume", slow).returncode == 0
    assert replay_cli("replay", "rate", slow, "max").returncode == 0
    done_slow = wait_for(
        lambda: (r := listed(replay_cli, slow))["state"] in ("finished", "failed") and r,
        "the 0.1x replay to finish after rate max",
        timeout=30,
    )
    assert done_slow["state"] == "finished" and done_slow["pid"] == first_slow["pid"], done_slow
    assert done_slow["errors"] == 0, done_slow  # stayed in its group through the long waits

    done = wait_for(
        lambda: (r := listed(replay_cli, paced))["state"] in ("finished", "failed") and r,
        "the 2x replay to finish",
    )
    assert done["state"] == "finished", done
    # 16.5 s of compressed history: it cannot have taken much less than that.
    assert clock.monotonic() - first_progress > 8
    for name in (paced, slow):
        same_documents(expected, scratch_documents(es, f"scratch-{name}"))


def test_a_new_pace_applies_to_the_event_being_held(replay_cli, settings, topic, es, unique):
    # 3 events 10 s apart. At 0.25x the first is written at once and the second is held for
    # 40 s. A few seconds into that wait the speed goes to 1x: the little event time that has
    # passed stays passed, and the rest of the gap (under 10 s) goes at 1x. It is not released
    # at once, and it does not wait out the 40 s at the old pace (it used to). `remaining`
    # counts what is not yet written: a held event has been consumed, not written.
    expected = produce_spread(settings, topic, 3, 10_000)
    name = f"p-{unique}"
    assert replay_cli("replay", "start", name, "--speed", "0.25x").returncode == 0
    wait_for(lambda: listed(replay_cli, name)["remaining"] == 2, "the first event")
    first = clock.monotonic()
    threading.Event().wait(2)
    assert replay_cli("replay", "rate", name, "1x").returncode == 0
    changed = clock.monotonic()
    held = listed(replay_cli, name)
    assert (held["remaining"], held["speed"], held["state"]) == (2, "1x", "running"), held
    wait_for(lambda: listed(replay_cli, name)["remaining"] <= 1, "the second event", timeout=60)
    released = clock.monotonic()
    # Due about 9 s after the change at 1x; at the old pace, 40 s after the first event.
    assert released - changed > 3 and released - first < 30, (released - first, released - changed)
    assert replay_cli("replay", "rate", name, "max").returncode == 0
    done = wait_for(
        lambda: (r := listed(replay_cli, name))["state"] in ("finished", "failed") and r,
        "the replay to finish",
    )
    assert (done["state"], done["errors"]) == ("finished", 0), done
    same_documents(expected, scratch_documents(es, f"scratch-{name}"))


def test_concurrent_replays_keep_their_own_rates_and_leave_the_live_indexer_alone(
    replay_cli, settings, topic, es, admin, index_name, unique, request
):
    expected = produce_history(settings, topic, 1500)
    # The live side: an indexer run to the end, on the group and index the replays must not touch.
    live_group = f"live-{unique}"
    request.addfinalizer(lambda: admin.delete_consumer_groups([live_group]))
    end = {p: high for p, (_, high) in topic_watermarks(admin, topic).items()}
    live_settings = settings.replace(kafka_topic=topic)
    Indexer(
        live_settings, group=live_group, topic=topic, index=index_name, dlq_topic=None,
        create_topics=False, until=end,
    ).run()  # fmt: skip
    es.indices.refresh(index=index_name)

    def live_state() -> tuple[dict[int, int], int, int]:
        offsets = group_offsets(admin, live_group, topic, sorted(end))
        stats = es.indices.stats(index=index_name, metric="indexing,docs")["_all"]["primaries"]
        return offsets, stats["docs"]["count"], stats["indexing"]["index_total"]

    before = live_state()
    assert before[0] == end and before[1] == len(expected)

    env = {"INDEXER_GROUP": live_group}
    slow, fast = f"s-{unique}", f"f-{unique}"
    for name, speed in ((slow, "25"), (fast, "150")):
        started = replay_cli("replay", "start", name, "--speed", speed, extra_env=env)
        assert started.returncode == 0, started.stderr

    def both() -> dict[str, dict]:
        result = replay_cli("replay", "list", "--json")
        assert result.returncode == 0, result.stderr
        return {r["name"]: r for r in json.loads(result.stdout) if r["name"] in (slow, fast)}

    first = wait_for(
        lambda: (rows := both()) and all(r["events_done"] > 0 for r in rows.values()) and rows,
        "both replays to make progress",
    )
    started_at = clock.monotonic()
    threading.Event().wait(6)
    second = both()
    elapsed = clock.monotonic() - started_at
    slow_done = second[slow]["events_done"] - first[slow]["events_done"]
    fast_done = second[fast]["events_done"] - first[fast]["events_done"]
    # Each is held to its own rate (an upper bound no busy machine can break; the slack is
    # one report interval and a batch) and the faster one clearly outpaces the slower one.
    assert 0 < slow_done <= 25 * (elapsed + 2) + 10, (slow_done, elapsed)
    assert fast_done <= 150 * (elapsed + 2) + 30, (fast_done, elapsed)
    assert fast_done > 2 * slow_done, (fast_done, slow_done)
    assert second[slow]["state"] == second[fast]["state"] == "running"

    for name in (slow, fast):
        assert replay_cli("replay", "rate", name, "max").returncode == 0
    for name in (slow, fast):
        done = wait_for(
            lambda n=name: (r := listed(replay_cli, n))["state"] in ("finished", "failed") and r,
            f"replay {name} to finish",
        )
        assert done["state"] == "finished", done
        same_documents(expected, scratch_documents(es, f"scratch-{name}"))

    # The live group's offsets and the live index are exactly as the live indexer left them.
    assert live_state() == before
