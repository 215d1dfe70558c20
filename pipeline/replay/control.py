"""Replays: named workers that re-index the topic into `scratch-<name>` as group `replay-<name>`.

A replay is a row in the `replays` table (desired state, speed, start and target offsets,
progress) plus a worker process (`python -m pipeline replay run NAME`) running the live
indexer's own code (`pipeline.workers.indexer.Indexer`, same handlers and versioning) with its own group
and index. The worker reads its desired state and speed from the row about once a second and
writes its progress there in the same statement, so the CLI and the app are a remote control.

The guards (`replay_names`, `parse_start`, `parse_until`, `check_offsets`, `parse_replay_speed`)
are pure, so a refused request is refused before anything is created.

A replay may index a slice (`ReplayFilter`: types, keys, partitions), follow the topic past its
end offsets (`--until follow`) and build its scratch index with a mapping of the user's. A
following, unfiltered replay close behind the live group can be promoted: the live index name
becomes an alias pointing at its scratch index (`promote_replay`), and `rollback_replay` points
it back at the index it replaced.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import psycopg
from confluent_kafka.admin import AdminClient
from elasticsearch import Elasticsearch

from pipeline.core import clock
from pipeline.core.partitioner import partition_for_key
from pipeline.core.ratelimit import Speed
from pipeline.core.settings import Settings
from pipeline.elasticsearch.compare import Comparison, compare_indices
from pipeline.elasticsearch.index import IndexMappingError, TaskIndex
from pipeline.kafka.admin import (
    TopicNotAuthorized,
    UnknownTopic,
    delete_group,
    group_offsets,
    offsets_at,
    seed_group_offsets,
)
from pipeline.kafka.admin import topic_watermarks as admin_watermarks
from pipeline.replay.members import ALIVE, this_worker, worker_state
from pipeline.replay.scale import check_workers
from pipeline.replay.spec import (
    ReplayFilter,
    ReplayNames,
    ReplayRefused,
    check_filter_partitions,
    check_offsets,
    is_follow,
    parse_filter,
    parse_mapping,
    parse_replay_speed,
    parse_start,
    parse_until,
    refusal_about,
    replay_names,
    resolve_offsets,
)
from pipeline.replay.store import ReplayRow, ReplayStore, effective_state, worker_alive
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
    slice: ReplayFilter = field(default_factory=ReplayFilter)
    mapping: dict[str, Any] | None = None
    workers: int = 1

    @property
    def following(self) -> bool:
        return is_follow(self.until_spec)

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
    *,
    types: str | None = None,
    keys: str | None = None,
    partitions: str | None = None,
    mapping: str | None = None,
    workers: int | str = 1,
) -> ReplayPlan:
    """Run every guard and resolve the start and target offsets; creates nothing.

    `types`, `keys`, `partitions`: the slice, comma-separated; `mapping`: the text of a JSON
    object with `mappings` and/or `settings` for the scratch index; `workers`: how many worker
    processes share the replay's group (1 to `MAX_WORKERS`).
    """
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
    try:
        worker_count = check_workers(workers)
    except ValueError as exc:
        raise ReplayRefused(str(exc), "workers") from None
    slice_ = parse_filter(types, keys, partitions)
    body = parse_mapping(mapping) if mapping is not None and mapping.strip() else None
    topic = settings.kafka_topic
    watermarks = topic_watermarks(admin, topic)
    with refusal_about("from"):
        check_offsets(spec.offsets, watermarks, topic)
    check_filter_partitions(slice_, watermarks, topic)
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
    return ReplayPlan(
        names, topic, parsed_speed, start, until, start_offsets, until_offsets, slice_, body,
        worker_count,
    )  # fmt: skip


def create_replay(
    store: ReplayStore,
    admin: AdminClient,
    plan: ReplayPlan,
    env: Mapping[str, str] | None = None,
    *,
    es: Elasticsearch | None = None,
) -> ReplayRow:
    """Insert the row, commit the start offsets for the group and spawn the plan's workers.

    A plan with a mapping needs `es`: the scratch index is created here, so a mapping
    Elasticsearch refuses is said before any worker starts.
    """
    names = plan.names
    if store.exists(names.name):
        raise ReplayRefused(
            f"a replay named {names.name!r} already exists: choose another name, or "
            f"`replay delete {names.name}` first",
            "name",
        )
    if plan.mapping is not None:
        if es is None:
            raise ValueError("a replay with a mapping needs an Elasticsearch client")
        _create_scratch(es, names.index, plan.mapping)
    store.create(
        names,
        topic=plan.topic,
        speed=plan.speed,
        start_spec=plan.start_spec,
        until_spec=plan.until_spec,
        start_offsets=plan.start_offsets,
        until_offsets=plan.until_offsets,
        slice_=plan.slice,
        mapping=plan.mapping,
    )
    seed_group_offsets(admin, names.group, plan.topic, plan.start_offsets)
    store.set_workers_wanted(names.name, plan.workers)
    pids = _spawn_workers(store, names.name, plan.workers, env)
    store.update(names.name, pid=pids[0])
    row = store.get(names.name)
    assert row is not None
    return row


def _create_scratch(es: Elasticsearch, index: str, body: Mapping[str, Any]) -> None:
    """Create the scratch index with the user's mapping and settings, or refuse saying why."""
    from elasticsearch import ApiError

    tasks = TaskIndex(es, index)
    if tasks.exists(index):
        raise ReplayRefused(
            f"index {index!r} already exists, so it cannot take the mapping: delete it first",
            "mapping",
        )
    try:
        tasks.create_index(index, body.get("mappings"), body.get("settings"))
    except IndexMappingError as exc:
        raise ReplayRefused(
            f"the mapping breaks the task index contract ({'; '.join(exc.problems)})", "mapping"
        ) from None
    except ApiError as exc:
        reason = exc.info.get("error", {}) if isinstance(exc.info, dict) else {}
        text = reason.get("reason") if isinstance(reason, dict) else None
        raise ReplayRefused(
            f"Elasticsearch refused the mapping ({exc.status_code}): {text or exc.message}",
            "mapping",
        ) from None


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


def _spawn_workers(
    store: ReplayStore, name: str, count: int, env: Mapping[str, str] | None
) -> list[int]:
    """Start `count` workers of the replay, each recorded as `starting`; their pids."""
    host = this_worker()[1]
    pids = []
    for _ in range(count):
        pid = spawn_worker(name, env)
        store.add_worker(name, host, pid)
        pids.append(pid)
    return pids


def resume_replay(store: ReplayStore, name: str, env: Mapping[str, str] | None = None) -> ReplayRow:
    """Ask for running; dead, failed or stopped workers are started again (from the group's
    commits), up to the number the replay was started with; the rows of gone ones are dropped."""
    row = _existing(store, name)
    store.update(name, desired_state="running")
    if row.state == "finished":
        return _existing(store, name)
    now = clock.utcnow()
    states = {w.worker: worker_state(w, now, this_worker()[1]) for w in row.workers}
    store.forget_workers(name, [w for w, state in states.items() if state not in ALIVE])
    alive = sum(state in ALIVE for state in states.values())
    if not worker_alive(row, now) or alive == 0:
        store.update(name, state="pending", pid=None)
        alive = 0
    missing = max(0, row.workers_wanted - alive)
    if missing:
        pids = _spawn_workers(store, name, missing, env)
        if alive == 0:
            store.update(name, pid=pids[0])
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
    if row.promoted:
        raise ReplayRefused(
            f"replay {name!r} is promoted: its index {row.index_name!r} is the live index. "
            f"`replay rollback {name}` first (or promote another replay)"
        )
    if es is not None:
        for other in store.list():
            if other.promoted and other.previous_index == row.index_name:
                raise ReplayRefused(
                    f"index {row.index_name!r} is what `replay rollback {other.name}` returns "
                    "to: delete the replay without dropping its index"
                )
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


def compare_replay(
    settings: Settings,
    es: Elasticsearch,
    name: str,
    store: ReplayStore | None = None,
) -> Comparison:
    """The replay's scratch index against the live index; refused when either is missing.

    With `store`, a replay of a slice is compared on its slice: its keys and partitions (a
    task's partition is its key's, among the topic's partitions when it started), and with a type
    filter only the documents the scratch index holds.
    """
    names = replay_names(name, settings)
    row = None
    if store is not None:
        try:
            row = store.get(name, missing_ok=True)
        except psycopg.errors.UndefinedTable:  # read-only on a database never migrated
            row = None
    slice_ = row.slice if row is not None else ReplayFilter()
    live = settings.elasticsearch_index
    for index, what in (
        (names.index, f"replay {names.name}'s scratch index"),
        (live, "the live index"),
    ):
        if not es.indices.exists(index=index):
            raise ReplayRefused(f"{what} {index!r} does not exist")
    if slice_.empty:
        return compare_indices(es, names.index, live, refresh=not settings.read_only)
    assert row is not None
    count = len(row.until_offsets) or settings.kafka_topic_partitions

    def match(doc_id: str) -> bool:
        partition = partition_for_key(doc_id.encode(), count)
        return slice_.matches(partition, doc_id)

    result = compare_indices(
        es,
        names.index,
        live,
        refresh=not settings.read_only,
        match=match,
        scratch_ids_only=bool(slice_.types),
    )
    result.scope = slice_.describe() + (
        " (the live documents the scratch index holds)" if slice_.types else ""
    )
    return result


# -- promote and rollback --------------------------------------------------------------------

PROMOTE_MAX_LAG = 100  # events a replay may be behind the live group and still be promoted
_CATCH_UP_WAIT = 30.0  # seconds promote waits for the replay to pass the swap point


@dataclass(frozen=True)
class Promotion:
    """A promote or rollback done: the live alias now points at `index`, before at `previous`.

    `caught_up`: the new index has every event published before the swap (a promoted replay
    got there; a rollback's catch-up did), so the replay may be stopped.
    """

    name: str
    alias: str
    index: str
    previous: str | None
    caught_up: bool
    behind: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "alias": self.alias,
            "index": self.index,
            "previous": self.previous,
            "caught_up": self.caught_up,
            "behind": self.behind,
        }


def replay_lag_behind_live(settings: Settings, admin: AdminClient, row: ReplayRow) -> int:
    """Events the replay's position is behind the live group's committed offsets (summed)."""
    partitions = sorted(row.until_offsets)
    live = group_offsets(admin, settings.indexer_group, row.topic, partitions)
    position = {**row.start_offsets, **row.position}
    return sum(max(0, offset - position.get(p, 0)) for p, offset in live.items())


def promote_blockers(
    settings: Settings, admin: AdminClient, row: ReplayRow, max_lag: int = PROMOTE_MAX_LAG
) -> list[str]:
    """What keeps the replay from being promoted, one clause each (empty: it can be)."""
    missing = []
    if row.promoted:
        missing.append(f"it is promoted already (its index {row.index_name!r} is live)")
    if not row.slice.empty:
        missing.append(f"it replays a slice ({row.slice.describe()}), not every event")
    if not row.following:
        missing.append("it does not follow the topic (start it with --until follow)")
    state = effective_state(row, clock.utcnow())
    if state != "running":
        missing.append(f"its worker is {state}, not running")
    if row.topic != settings.kafka_topic:
        missing.append(f"it reads topic {row.topic!r}, not the live topic {settings.kafka_topic!r}")
    elif not missing:
        behind = replay_lag_behind_live(settings, admin, row)
        if behind > max_lag:
            missing.append(
                f"it is {behind:,} events behind the live group {settings.indexer_group!r} "
                f"(at most {max_lag:,}: wait, or raise its speed)"
            )
    return missing


def promote_replay(
    settings: Settings,
    store: ReplayStore,
    admin: AdminClient,
    es: Elasticsearch,
    name: str,
    *,
    max_lag: int = PROMOTE_MAX_LAG,
    wait: float = _CATCH_UP_WAIT,
) -> Promotion:
    """Point the live alias at the replay's scratch index in one request (refused, saying what
    is missing, unless the replay is unfiltered, following, running and close behind the live
    group); the index it replaces is kept for `rollback_replay`.

    The live indexer carries on through the alias into the new index while the replay keeps
    following into it too: external versions make the overlap harmless. Waits (up to `wait`)
    for the replay to pass the end offsets at the swap, so nothing published before is missing.
    """
    if settings.read_only:
        raise ReplayRefused(
            "read-only mode (TASKSTREAM_READ_ONLY=true): replays cannot be promoted"
        )
    row = _existing(store, name)
    missing = promote_blockers(settings, admin, row, max_lag)
    if missing:
        raise ReplayRefused(f"replay {name!r} cannot be promoted: " + "; ".join(missing))
    alias = settings.elasticsearch_index
    index = TaskIndex(es, alias)
    if not index.exists(row.index_name):
        raise ReplayRefused(f"replay {name!r}'s index {row.index_name!r} does not exist")
    offsets = group_offsets(admin, settings.indexer_group, row.topic, sorted(row.until_offsets))
    previous = index.point_alias(row.index_name)
    store.promote(name, previous, offsets)
    for other in store.list():  # a replay promoted before is live no more (rollback returns to it)
        if other.name != name and other.promoted and other.index_name == previous:
            store.rolled_back(other.name)
    behind = _wait_past(store, name, admin, row.topic, wait)
    return Promotion(name, alias, row.index_name, previous, behind == 0, behind)


def _wait_past(store: ReplayStore, name: str, admin: AdminClient, topic: str, wait: float) -> int:
    """Wait until the replay's position reaches the topic's end offsets now; events short."""
    ends = {p: high for p, (_, high) in topic_watermarks(admin, topic).items()}
    deadline = clock.monotonic() + wait
    while True:
        row = _existing(store, name)
        position = {**row.start_offsets, **row.position}
        short = sum(max(0, end - position.get(p, 0)) for p, end in ends.items())
        if short == 0 or clock.monotonic() >= deadline:
            return short
        time.sleep(0.5)


def rollback_replay(
    settings: Settings, store: ReplayStore, admin: AdminClient, es: Elasticsearch, name: str
) -> Promotion:
    """Point the live alias back at the index the promote replaced, caught up first.

    The previous index missed what the live indexer wrote through the alias while the replay
    was promoted: a catch-up indexer (group `rollback-NAME`) re-reads from the live group's
    offsets at the promote into it, once before the swap back and once after (external
    versions make the re-reads harmless).
    """
    if settings.read_only:
        raise ReplayRefused("read-only mode (TASKSTREAM_READ_ONLY=true): replays cannot roll back")
    row = _existing(store, name)
    alias = settings.elasticsearch_index
    index = TaskIndex(es, alias)
    if not row.promoted:
        raise ReplayRefused(f"replay {name!r} is not promoted: nothing to roll back")
    previous = row.previous_index
    if previous is None:
        raise ReplayRefused(
            f"replay {name!r} has no previous index to go back to (there was no live index "
            "when it was promoted)"
        )
    if not index.exists(previous):
        raise ReplayRefused(f"the previous index {previous!r} no longer exists")
    live = index.live_targets()
    if live != [row.index_name]:
        raise ReplayRefused(
            f"the live alias {alias!r} points at {', '.join(live) or 'nothing'}, not at "
            f"{row.index_name!r}: another promote came after this one; roll that one back first"
        )
    group = f"rollback-{name}"
    if row.promote_offsets:  # partitions the live group had not committed start at 0
        seed_group_offsets(admin, group, row.topic, row.promote_offsets)
    try:
        _catch_up(settings, admin, group, row.topic, previous)
        index.point_alias(previous)
        store.rolled_back(name)
        for other in store.list():  # a replay whose index is live again is promoted again
            if other.index_name == previous and not other.promoted:
                store.update(other.name, promoted_at=clock.utcnow())
        _catch_up(settings, admin, group, row.topic, previous)
    finally:
        delete_group(admin, group)
    return Promotion(name, alias, previous, row.index_name, True)


def _catch_up(settings: Settings, admin: AdminClient, group: str, topic: str, index: str) -> None:
    """Index `topic` into `index` as `group` from its committed offsets to the end offsets now."""
    from pipeline.workers.indexer import Indexer

    ends = {p: high for p, (_, high) in topic_watermarks(admin, topic).items()}
    seed_group_offsets(admin, group, topic, {p: 0 for p in ends})
    Indexer(
        settings,
        group=group,
        topic=topic,
        index=index,
        dlq_topic=None,
        create_topics=False,
        until=ends,
        consumer_overrides={"client.id": f"taskstream-{group}"},
    ).run()
