"""Replays: named workers that re-index the topic into `scratch-<name>` as group `replay-<name>`.

A replay is a row in the `replays` table (desired state, speed, start and target offsets,
progress) plus a worker process (`python -m pipeline replay run NAME`) running the live
indexer's own code (`pipeline.workers.indexer.Indexer`, same handlers and versioning) with its own group
and index. The worker reads its desired state and speed from the row about once a second and
writes its progress there in the same statement, so the CLI and the app are a remote control.

The guards (`replay_names`, `parse_start`, `parse_until`, `check_offsets`, `parse_replay_speed`)
are pure, so a refused request is refused before anything is created.

"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

from confluent_kafka.admin import AdminClient
from elasticsearch import Elasticsearch

from pipeline.core import clock
from pipeline.core.ratelimit import Speed
from pipeline.core.settings import Settings
from pipeline.elasticsearch.compare import Comparison, compare_indices
from pipeline.elasticsearch.index import TaskIndex
from pipeline.kafka.admin import (
    TopicNotAuthorized,
    UnknownTopic,
    delete_group,
    offsets_at,
    seed_group_offsets,
)
from pipeline.kafka.admin import topic_watermarks as admin_watermarks
from pipeline.replay.spec import (
    ReplayNames,
    ReplayRefused,
    check_offsets,
    parse_replay_speed,
    parse_start,
    parse_until,
    refusal_about,
    replay_names,
    resolve_offsets,
)
from pipeline.replay.store import ReplayRow, ReplayStore, worker_alive
from pipeline.replay.worker import spawn_worker


def topic_watermarks(
    admin: AdminClient, topic: str, timeout: float = 10.0
) -> dict[int, tuple[int, int]]:
    """partition -> (low, high) for the topic to replay; refused when it does not exist or
    Kafka's ACLs hide it (any other broker error raises KafkaException)."""
    try:
        return admin_watermarks(admin, topic, timeout)
    except TopicNotAuthorized as exc:
        raise ReplayRefused(str(exc)) from None
    except UnknownTopic:
        raise ReplayRefused(
            f"topic {topic!r} does not exist (KAFKA_TOPIC names the topic to replay)"
        ) from None


@dataclass(frozen=True)
class ReplayPlan:
    """A replay that passed every guard: its names, speed and offsets, not yet created."""

    names: ReplayNames
    topic: str
    speed: Speed
    start_spec: str
    until_spec: str
    start_offsets: dict[int, int]
    until_offsets: dict[int, int]

    @property
    def total(self) -> int:
        """Events between the start and the target end offsets."""
        return sum(max(0, end - self.start_offsets[p]) for p, end in self.until_offsets.items())


def plan_replay(
    settings: Settings,
    admin: AdminClient,
    name: str,
    start: str = "earliest",
    until: str = "end",
    speed: str = "100",
) -> ReplayPlan:
    """Run every guard and resolve the start and target offsets; creates nothing."""
    if settings.read_only:
        raise ReplayRefused("read-only mode (TASKSTREAM_READ_ONLY=true): replays cannot start")
    with refusal_about("name"):
        names = replay_names(name, settings)
    with refusal_about("speed"):
        parsed_speed = parse_replay_speed(speed)
    with refusal_about("from"):
        spec = parse_start(start)
    with refusal_about("until"):
        until_time = parse_until(until)
    topic = settings.kafka_topic
    watermarks = topic_watermarks(admin, topic)
    with refusal_about("from"):
        check_offsets(spec.offsets, watermarks, topic)
    partitions = sorted(watermarks)
    at_time = offsets_at(admin, topic, partitions, spec.time) if spec.time is not None else None
    start_offsets = resolve_offsets(spec, watermarks, at_time)
    if until_time is None:
        until_offsets = {p: high for p, (_, high) in watermarks.items()}
    else:
        found = offsets_at(admin, topic, partitions, until_time)
        until_offsets = {
            p: high if found[p] < 0 else found[p] for p, (_, high) in watermarks.items()
        }
    until_offsets = {p: max(until_offsets[p], start_offsets[p]) for p in partitions}
    return ReplayPlan(names, topic, parsed_speed, start, until, start_offsets, until_offsets)


def create_replay(
    store: ReplayStore, admin: AdminClient, plan: ReplayPlan, env: Mapping[str, str] | None = None
) -> ReplayRow:
    """Insert the row, commit the start offsets for the group and spawn the worker."""
    names = plan.names
    if store.exists(names.name):
        raise ReplayRefused(
            f"a replay named {names.name!r} already exists: choose another name, or "
            f"`replay delete {names.name}` first",
            "name",
        )
    store.create(
        names,
        topic=plan.topic,
        speed=plan.speed,
        start_spec=plan.start_spec,
        until_spec=plan.until_spec,
        start_offsets=plan.start_offsets,
        until_offsets=plan.until_offsets,
    )
    seed_group_offsets(admin, names.group, plan.topic, plan.start_offsets)
    store.update(names.name, pid=spawn_worker(names.name, env))
    row = store.get(names.name)
    assert row is not None
    return row


def _existing(store: ReplayStore, name: str) -> ReplayRow:
    row = store.get(name)
    assert row is not None
    return row


def pause_replay(store: ReplayStore, name: str) -> ReplayRow:
    """Ask the worker to pause (it keeps its group membership and heartbeats)."""
    _existing(store, name)
    store.update(name, desired_state="paused")
    return _existing(store, name)


def stop_replay(store: ReplayStore, name: str) -> ReplayRow:
    """Ask the worker to stop; a replay without a live worker is marked stopped at once."""
    row = _existing(store, name)
    store.update(name, desired_state="stopped")
    if not worker_alive(row, clock.utcnow()):
        store.update(name, state="stopped")
    return _existing(store, name)


def set_replay_speed(store: ReplayStore, name: str, speed: str) -> ReplayRow:
    """Change the speed; the worker applies it within a second, without a restart."""
    _existing(store, name)
    store.update(name, speed=str(parse_replay_speed(speed)))
    return _existing(store, name)


def resume_replay(store: ReplayStore, name: str, env: Mapping[str, str] | None = None) -> ReplayRow:
    """Ask for running; a dead, failed or stopped worker is started again (from its commits)."""
    row = _existing(store, name)
    store.update(name, desired_state="running")
    if row.state != "finished" and not worker_alive(row, clock.utcnow()):
        store.update(name, state="pending", pid=None)
        store.update(name, pid=spawn_worker(name, env))
    return _existing(store, name)


def delete_replay(
    store: ReplayStore,
    admin: AdminClient,
    name: str,
    *,
    es: Elasticsearch | None = None,
    wait: float = 15.0,
) -> None:
    """Stop the worker, delete the consumer group and the row; with `es`, the scratch index too."""
    row = _existing(store, name)
    if es is not None and not row.index_name.startswith("scratch-"):  # never the live index
        raise ReplayRefused(f"index {row.index_name!r} is not a scratch index")
    store.update(name, desired_state="stopped")
    deadline = clock.monotonic() + wait
    while clock.monotonic() < deadline:
        current = store.get(name, missing_ok=True)
        if (
            current is None
            or current.state == "stopped"
            or not worker_alive(current, clock.utcnow())
        ):
            break
        time.sleep(0.2)
    for attempt in range(10):  # the worker's consumer may take a moment to leave the group
        try:
            delete_group(admin, row.group_name)
            break
        except Exception:
            if attempt == 9:
                raise
            time.sleep(0.5)
    if es is not None:
        TaskIndex(es, row.index_name).delete_index(row.index_name)
    store.delete(name)


def compare_replay(settings: Settings, es: Elasticsearch, name: str) -> Comparison:
    """The replay's scratch index against the live index; refused when either is missing."""
    names = replay_names(name, settings)
    live = settings.elasticsearch_index
    for index, what in (
        (names.index, f"replay {names.name}'s scratch index"),
        (live, "the live index"),
    ):
        if not es.indices.exists(index=index):
            raise ReplayRefused(f"{what} {index!r} does not exist")
    return compare_indices(es, names.index, live, refresh=not settings.read_only)
