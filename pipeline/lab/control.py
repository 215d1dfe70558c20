"""The Lab's actions, shared by the CLI (`python -m pipeline lab …`) and the Lab page.

Topics and groups live in a learner's namespace (`pipeline.lab.names`); every action is refused
in read-only mode and past the caps (`LAB_MAX_*` settings), with one line naming the cap and its
value. Consumers are worker processes (`pipeline.lab.worker`) steered through `lab_consumers`.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
    ResourceType,
)

from pipeline.core import clock
from pipeline.core.events import dumps
from pipeline.core.partitioner import partition_for_key
from pipeline.core.ratelimit import RateLimiter
from pipeline.core.settings import Settings
from pipeline.kafka.admin import (
    UnknownTopic,
    delete_group,
    group_offsets,
    topic_metadata,
    topic_watermarks,
)
from pipeline.lab.names import (
    ASSIGNORS,
    COMMIT_MODES,
    KEY_MODES,
    LAB_PREFIX,
    SHARE_ACKS,
    LabRefused,
    Namespace,
    check_cap,
    check_choice,
    check_count,
    check_partitions,
    check_rate,
    check_replication,
    require_lab_name,
)
from pipeline.lab.store import LIVE_STATES, LabConsumerRow, LabStore, effective_state
from pipeline.lab.worker import is_lab_worker, spawn_lab_consumer, wait_gone

__all__ = [
    "ProduceResult",
    "ResetReport",
    "add_consumer",
    "add_share_consumer",
    "class_overview",
    "create_topic",
    "group_lag",
    "kill_consumer",
    "list_consumers",
    "pause_consumer",
    "produce",
    "produce_acks_all",
    "replication_state",
    "reset",
    "resume_consumer",
    "set_consumer_rate",
    "stop_consumer",
]

_STOP_WAIT = 10.0  # seconds a graceful stop may take before the CLI answers anyway


def refuse_read_only(settings: Settings, what: str) -> None:
    if settings.read_only:
        raise LabRefused(f"read-only mode (TASKSTREAM_READ_ONLY=true): the Lab cannot {what}")


def existing_topic(admin: AdminClient, topic: str) -> int:
    """The number of partitions of a lab topic; refused when it does not exist."""
    require_lab_name(topic)
    try:
        return len(topic_metadata(admin, topic, timeout=10).partitions)
    except UnknownTopic:
        raise LabRefused(
            f"topic {topic!r} does not exist: create it with `lab topic create`"
        ) from None


# -- topics ------------------------------------------------------------------------------------


def create_topic(
    settings: Settings, store: LabStore, admin: AdminClient, ns: Namespace, name: str,
    partitions: int = 3, replication: int | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Create `lab-[learner-]NAME` and wait until every partition has a leader. With three
    replicas or more, `min.insync.replicas=2` (as taskstream's own topics), for lesson 6."""
    refuse_read_only(settings, "create topics")
    topic = ns.name(name)
    check_partitions(partitions)
    metadata = admin.list_topics(timeout=10)
    live = len(metadata.brokers)
    factor = check_replication(min(3, live) if replication is None else replication, live)
    owner = store.topic_owner(topic)
    if owner is not None and owner != ns.learner:
        raise LabRefused(f"topic {topic!r} belongs to another learner: choose another name")
    if topic in metadata.topics:
        store.add_topic(topic, ns.learner, len(metadata.topics[topic].partitions), factor)
        return {"topic": topic, "partitions": len(metadata.topics[topic].partitions),
                "replication": len(metadata.topics[topic].partitions[0].replicas),
                "created": False}  # fmt: skip
    mine = [t for t in store.topics(ns.learner)]
    check_cap(
        "LAB_MAX_TOPICS_PER_LEARNER", settings.lab_max_topics_per_learner, len(mine),
        whose=ns.label,
    )  # fmt: skip
    config = {"min.insync.replicas": "2"} if factor >= 3 else {}
    future = admin.create_topics(
        [NewTopic(topic, num_partitions=partitions, replication_factor=factor, config=config)],
        request_timeout=30,
    )[topic]
    try:
        future.result(timeout=30)
    except KafkaException as exc:
        if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
            raise
    store.add_topic(topic, ns.learner, partitions, factor)
    _wait_usable(admin, topic, partitions)
    return {"topic": topic, "partitions": partitions, "replication": factor, "created": True}


def _wait_usable(admin: AdminClient, topic: str, partitions: int, timeout: float = 30.0) -> None:
    """Until every partition has a leader and answers ListOffsets (every broker knows it)."""
    deadline = clock.monotonic() + timeout
    while True:
        try:
            found = topic_metadata(admin, topic, timeout=5)
            if len(found.partitions) == partitions and all(
                p.leader >= 0 for p in found.partitions.values()
            ):
                topic_watermarks(admin, topic, 5)
                return
        except (KafkaException, UnknownTopic):
            pass
        if clock.monotonic() > deadline:
            raise TimeoutError(f"topic {topic} has no leader on every partition after {timeout} s")
        time.sleep(0.2)


# -- producing ---------------------------------------------------------------------------------


@dataclass
class ProduceResult:
    """Where `produce` put the messages: partition -> count, and murmur2's pick for a key."""

    topic: str
    count: int
    keys: str  # "fixed", "random" or "none"
    key: str | None
    partitions: dict[int, int] = field(default_factory=dict)
    key_partition: int | None = None  # murmur2(key) % partitions, for a fixed key
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "count": self.count,
            "keys": self.keys,
            "key": self.key,
            "key_partition": self.key_partition,
            "partitions": {str(p): n for p, n in sorted(self.partitions.items())},
            "seconds": round(self.seconds, 3),
        }


def produce(
    settings: Settings, admin: AdminClient, ns: Namespace, name: str, count: int, *,
    key: str | None = None, keys: str = "random", rate: float | None = None,
) -> ProduceResult:  # fmt: skip
    """Send `count` small JSON messages with one key, random keys or no key, optionally at
    `rate` per second; waits for every delivery report. No key: librdkafka's sticky partitioner
    fills one partition's batch before moving on; a key: murmur2, as Kafka's Java client."""
    refuse_read_only(settings, "produce")
    topic = ns.name(name)
    check_count(count, settings.lab_max_messages_per_produce)
    mode = "fixed" if key is not None else check_choice(keys, KEY_MODES, "--keys")
    limiter = RateLimiter(check_rate(rate))
    partitions = existing_topic(admin, topic)
    from pipeline.kafka.clients import kafka_producer

    producer = kafka_producer(settings, **{"client.id": f"{ns.prefix}producer"})
    result = ProduceResult(topic, count, mode, key)
    if key is not None:
        result.key_partition = partition_for_key(key.encode(), partitions)
    failures: list[str] = []

    def delivered(error: Any, message: Any) -> None:
        if error is not None:
            failures.append(error.str())
        else:
            p = message.partition()
            result.partitions[p] = result.partitions.get(p, 0) + 1

    started = clock.monotonic()
    for n in range(count):
        limiter.acquire(1)
        chosen = key if key is not None else uuid.uuid4().hex if mode == "random" else None
        value = dumps({"n": n, "key": chosen, "at": clock.utcnow().isoformat()})
        while True:
            try:
                producer.produce(topic, value=value, key=chosen, on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    left = producer.flush(60)
    result.seconds = clock.monotonic() - started
    if left or failures:
        reason = failures[0] if failures else f"{left} messages not confirmed within 60 s"
        raise RuntimeError(f"Kafka: {len(failures) + left} of {count} messages failed: {reason}")
    return result


# -- consumers ---------------------------------------------------------------------------------


def _live(rows: Sequence[LabConsumerRow], now: Any) -> list[LabConsumerRow]:
    return [r for r in rows if effective_state(r, now) in LIVE_STATES]


def add_consumer(
    settings: Settings, store: LabStore, admin: AdminClient, ns: Namespace, name: str, *,
    group: str, assignor: str = "range", rate: float | None = None, commit: str = "after",
    env: Mapping[str, str] | None = None,
) -> LabConsumerRow:  # fmt: skip
    """Start a consumer worker reading lab topic NAME as group `lab-[learner-]G`."""
    refuse_read_only(settings, "start consumers")
    topic = ns.name(name)
    group_name = ns.name(group, "group")
    check_choice(assignor, ASSIGNORS, "--assignor")
    check_choice(commit, COMMIT_MODES, "--commit")
    checked_rate = check_rate(rate)
    existing_topic(admin, topic)
    now = clock.utcnow()
    every = _live(store.consumers(), now)
    mine = [r for r in every if r.learner == ns.learner]
    check_cap(
        "LAB_MAX_CONSUMERS_PER_LEARNER", settings.lab_max_consumers_per_learner, len(mine),
        whose=ns.label,
    )  # fmt: skip
    check_cap("LAB_MAX_CONSUMERS", settings.lab_max_consumers, len(every), whose="the class")
    _check_group_kind(store, group_name, share=False)
    row = store.add_consumer(
        learner=ns.learner, prefix=ns.prefix, topic=topic, group=group_name, assignor=assignor,
        commit_mode=commit, rate=checked_rate,
    )  # fmt: skip
    store.update(row.id, pid=spawn_lab_consumer(row.id, env))
    return store.consumer(row.id)


def _check_group_kind(store: LabStore, group: str, *, share: bool) -> None:
    """A group id is either a consumer group or a share group, never both."""
    other = [r for r in store.consumers() if r.group_name == group and r.is_share != share]
    if other:
        mine, theirs = ("share", "consumer") if share else ("consumer", "share")
        raise LabRefused(f"group {group!r} is a {theirs} group: give the {mine} group another name")


def add_share_consumer(
    settings: Settings, store: LabStore, admin: AdminClient, ns: Namespace, name: str, *,
    group: str, ack: str = "accept", rate: float | None = None,
    env: Mapping[str, str] | None = None,
) -> LabConsumerRow:  # fmt: skip
    """Start a share consumer (KIP-932) reading lab topic NAME in share group
    `lab-[learner-]G`, acknowledging each record as `ack` says (accept, release, reject). The
    group starts from the earliest record (`share.auto.offset.reset=earliest`; Kafka's default
    is latest), so what was produced before the first member joined is shared too."""
    refuse_read_only(settings, "start share consumers")
    topic = ns.name(name)
    group_name = ns.name(group, "group")
    check_choice(ack, SHARE_ACKS, "--ack")
    checked_rate = check_rate(rate)
    existing_topic(admin, topic)
    every = _live(store.consumers(), clock.utcnow())
    mine = [r for r in every if r.learner == ns.learner]
    check_cap(
        "LAB_MAX_CONSUMERS_PER_LEARNER", settings.lab_max_consumers_per_learner, len(mine),
        whose=ns.label,
    )  # fmt: skip
    check_cap("LAB_MAX_CONSUMERS", settings.lab_max_consumers, len(every), whose="the class")
    _check_group_kind(store, group_name, share=True)
    share_from_earliest(admin, group_name)
    row = store.add_consumer(
        learner=ns.learner, prefix=ns.prefix, topic=topic, group=group_name, assignor="share",
        commit_mode=ack, rate=checked_rate,
    )  # fmt: skip
    store.update(row.id, pid=spawn_lab_consumer(row.id, env))
    return store.consumer(row.id)


def share_from_earliest(admin: AdminClient, group: str) -> None:
    """Set the share group's `share.auto.offset.reset` to earliest (a group config)."""
    require_lab_name(group, "group")
    resource = ConfigResource(
        ResourceType.GROUP,
        group,
        incremental_configs=[
            ConfigEntry(
                "share.auto.offset.reset",
                "earliest",
                incremental_operation=AlterConfigOpType.SET,
            )
        ],
    )
    admin.incremental_alter_configs([resource], request_timeout=15)[resource].result(timeout=20)


# -- replication (lesson 6) --------------------------------------------------------------------


def replication_state(admin: AdminClient, topic: str) -> dict[str, Any]:
    """The live brokers and, per partition, its leader (-1: none), replicas and in-sync
    replicas, as the cluster's metadata has them now."""
    require_lab_name(topic)
    metadata = admin.list_topics(topic, timeout=10)
    found = metadata.topics.get(topic)
    if found is None or found.error is not None:
        raise LabRefused(f"topic {topic!r} does not exist: create it with `lab topic create`")
    return {
        "brokers": sorted(metadata.brokers),
        "partitions": [
            {
                "partition": p,
                "leader": found.partitions[p].leader,
                "replicas": list(found.partitions[p].replicas),
                "isr": sorted(found.partitions[p].isrs),
            }
            for p in sorted(found.partitions)
        ],
    }


def produce_acks_all(
    settings: Settings, admin: AdminClient, ns: Namespace, name: str, count: int = 10,
    timeout_ms: int = 8000,
) -> dict[str, Any]:  # fmt: skip
    """Send `count` messages with `acks=all` and no retries, so a refusal by the leader reaches
    the caller as it is: with fewer in-sync replicas than the topic's `min.insync.replicas`,
    `NOT_ENOUGH_REPLICAS` ("Broker: Not enough in-sync replicas"). Returns how many were
    written and each error (its name and text) with its count."""
    refuse_read_only(settings, "produce")
    topic = ns.name(name)
    check_count(count, settings.lab_max_messages_per_produce)
    existing_topic(admin, topic)
    from confluent_kafka import Producer

    config = settings.kafka_config(
        **{
            "client.id": f"{ns.prefix}acks-all",
            "acks": "all",
            "enable.idempotence": False,
            "retries": 0,
            "message.timeout.ms": timeout_ms,
        }
    )
    config.pop("logger", None)
    producer = Producer(config)
    delivered: dict[int, int] = {}
    errors: dict[str, dict[str, Any]] = {}

    def report(error: Any, message: Any) -> None:
        if error is None:
            p = message.partition()
            delivered[p] = delivered.get(p, 0) + 1
            return
        seen = errors.setdefault(error.name(), {"error": error.name(), "text": error.str(),
                                                "count": 0})  # fmt: skip
        seen["count"] += 1

    for n in range(count):
        producer.produce(topic, value=dumps({"n": n, "acks": "all"}), key=f"k{n}",
                         on_delivery=report)  # fmt: skip
    left = producer.flush(timeout_ms / 1000 + 10)
    if left:
        errors["NOT_CONFIRMED"] = {"error": "NOT_CONFIRMED", "count": left,
                                   "text": f"{left} messages had no answer in time"}  # fmt: skip
    return {
        "topic": topic,
        "count": count,
        "written": sum(delivered.values()),
        "partitions": {str(p): n for p, n in sorted(delivered.items())},
        "errors": sorted(errors.values(), key=lambda e: -e["count"]),
    }


def list_consumers(store: LabStore, ns: Namespace | None = None) -> list[LabConsumerRow]:
    """A learner's consumers (all of them for None or the default namespace)."""
    learner = None if ns is None or not ns.learner else ns.learner
    return store.consumers(learner)


def _mine(store: LabStore, ns: Namespace, consumer_id: int) -> LabConsumerRow:
    row = store.consumer(consumer_id)
    if ns.learner and row.learner != ns.learner:
        raise LabRefused(f"lab consumer {consumer_id} belongs to another learner")
    return row


def pause_consumer(settings: Settings, store: LabStore, ns: Namespace, cid: int) -> LabConsumerRow:
    """Ask the worker to pause: it keeps its partitions (and serves the group) but reads none."""
    refuse_read_only(settings, "pause consumers")
    _mine(store, ns, cid)
    store.update(cid, desired_state="paused")
    return store.consumer(cid)


def resume_consumer(
    settings: Settings, store: LabStore, ns: Namespace, cid: int,
    env: Mapping[str, str] | None = None,
) -> LabConsumerRow:  # fmt: skip
    """Ask for running; a stopped or dead worker is started again (same id and client.id)."""
    refuse_read_only(settings, "resume consumers")
    row = _mine(store, ns, cid)
    store.update(cid, desired_state="running")
    if effective_state(row, clock.utcnow()) not in LIVE_STATES:
        store.update(cid, state="pending", pid=None, heartbeat_at=None, partitions=[])
        store.update(cid, pid=spawn_lab_consumer(cid, env))
    return store.consumer(cid)


def set_consumer_rate(
    settings: Settings, store: LabStore, ns: Namespace, cid: int, rate: float | None
) -> LabConsumerRow:
    """Change the processing rate (messages/s; 0 = as fast as it can), applied within a second."""
    refuse_read_only(settings, "change consumers")
    checked = check_rate(rate)
    _mine(store, ns, cid)
    store.update(cid, rate=checked)
    return store.consumer(cid)


def stop_consumer(
    settings: Settings, store: LabStore, ns: Namespace, cid: int, wait: float = _STOP_WAIT
) -> LabConsumerRow:
    """Graceful stop: the worker commits, closes and so leaves its group at once."""
    refuse_read_only(settings, "stop consumers")
    row = _mine(store, ns, cid)
    store.update(cid, desired_state="stopped")
    if effective_state(row, clock.utcnow()) not in LIVE_STATES:
        store.update(cid, state="stopped", partitions=[])
        return store.consumer(cid)
    deadline = clock.monotonic() + wait
    while clock.monotonic() < deadline:
        current = store.consumer(cid)
        if effective_state(current, clock.utcnow()) not in LIVE_STATES:
            return current
        time.sleep(0.1)
    return store.consumer(cid)


def kill_consumer(settings: Settings, store: LabStore, ns: Namespace, cid: int) -> LabConsumerRow:
    """SIGKILL the worker: no commit, no goodbye; its partitions wait for the session timeout."""
    refuse_read_only(settings, "kill consumers")
    row = _mine(store, ns, cid)
    store.update(cid, desired_state="stopped")  # never started again by itself
    if row.pid is None or effective_state(row, clock.utcnow()) not in LIVE_STATES:
        return store.consumer(cid)
    import socket

    if row.host != socket.gethostname():
        raise LabRefused(f"lab consumer {cid} runs on host {row.host}: kill it there")
    if is_lab_worker(row.pid, cid):
        os.kill(row.pid, signal.SIGKILL)
        wait_gone(row.pid, 5.0)
    store.update(cid, state="dead", partitions=[])
    return store.consumer(cid)


# -- lag ---------------------------------------------------------------------------------------


def group_lag(admin: AdminClient, group: str, topic: str) -> dict[int, int | None]:
    """partition -> lag of `group` on `topic` (None where the group has committed nothing)."""
    watermarks = topic_watermarks(admin, topic, 10)
    committed = group_offsets(admin, group, topic, sorted(watermarks))
    return {
        p: (None if p not in committed else max(0, high - committed[p]))
        for p, (_, high) in sorted(watermarks.items())
    }


# -- reset and the teacher's view ----------------------------------------------------------------


@dataclass
class ResetReport:
    consumers: list[int] = field(default_factory=list)
    topics: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)
    groups_left: dict[str, str] = field(default_factory=dict)  # group -> why it stays

    def to_json(self) -> dict[str, Any]:
        return {
            "consumers_stopped": self.consumers,
            "topics_deleted": self.topics,
            "groups_deleted": self.groups,
            "groups_left": self.groups_left,
        }


def reset(
    settings: Settings, store: LabStore, admin: AdminClient, ns: Namespace | None,
    *, group_wait: float = 20.0,
) -> ResetReport:  # fmt: skip
    """A learner's reset (`ns` with a learner): their consumers stopped, their topics and groups
    deleted. Everything (`ns` None or the default namespace): every lab consumer stopped and
    every `lab-*` topic and group deleted. A group whose killed member still holds it (until its
    session times out) is retried for `group_wait` seconds, then reported in `groups_left`."""
    refuse_read_only(settings, "reset")
    everything = ns is None or not ns.learner
    learner = None if everything else ns.learner  # type: ignore[union-attr]
    report = ResetReport()
    rows = store.consumers(learner)
    report.consumers = [r.id for r in _live(rows, clock.utcnow())]
    for row in rows:
        store.update(row.id, desired_state="stopped")
    deadline = clock.monotonic() + _STOP_WAIT
    waiting = _live(rows, clock.utcnow())
    while waiting and clock.monotonic() < deadline:
        time.sleep(0.2)
        waiting = _live([store.consumer(r.id) for r in waiting], clock.utcnow())
    for row in waiting:  # did not stop in time: no more waiting
        if row.pid is not None and is_lab_worker(row.pid, row.id):
            os.kill(row.pid, signal.SIGKILL)
    groups = {r.group_name for r in rows}
    topics = {t.name for t in store.topics(learner)}
    if everything:
        topics |= {t for t in admin.list_topics(timeout=10).topics if t.startswith(LAB_PREFIX)}
        listed = admin.list_consumer_groups(request_timeout=10).result(timeout=15)
        groups |= {g.group_id for g in listed.valid if g.group_id.startswith(LAB_PREFIX)}
        groups |= set(store.groups_processed())
    topics = {require_lab_name(t) for t in topics}
    groups = {require_lab_name(g, "group") for g in groups}
    # A share group goes first, while its topic still exists: deleting it deletes its share
    # state too, which the broker finds slow (past a 10 s request) once the topic is gone.
    for group in sorted({r.group_name for r in rows if r.is_share} & groups):
        why = _delete_share_group(admin, group, clock.monotonic() + group_wait)
        if why is None:
            report.groups.append(group)
        else:
            report.groups_left[group] = why
        groups.discard(group)
    if topics:
        futures = admin.delete_topics(sorted(topics), operation_timeout=30, request_timeout=30)
        for topic, future in futures.items():
            try:
                future.result(timeout=30)
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
                    raise
            report.topics.append(topic)
    report.topics.sort()
    deadline = clock.monotonic() + group_wait
    for group in sorted(groups):
        while True:
            try:
                delete_group(admin, group)
                report.groups.append(group)
                break
            except KafkaException as exc:
                if clock.monotonic() > deadline:
                    report.groups_left[group] = str(exc.args[0].str() if exc.args else exc)
                    break
                time.sleep(0.5)
    store.forget_topics(sorted(topics))
    store.forget_consumers([r.id for r in rows], sorted(groups))
    return report


def _delete_share_group(admin: AdminClient, group: str, deadline: float) -> str | None:
    """Delete a share group (retried until `deadline`); None when gone, else why not."""
    while True:
        try:
            admin.delete_consumer_groups([group], request_timeout=30)[group].result(timeout=35)
            return None
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            if error is not None and error.code() == KafkaError.GROUP_ID_NOT_FOUND:
                return None
            if clock.monotonic() > deadline:
                return error.str() if error is not None else str(exc)
            time.sleep(0.5)


def class_overview(store: LabStore, admin: AdminClient) -> dict[str, Any]:
    """The teacher's view: each learner's topics, groups and consumers, and any `lab-*` topic
    the tables do not know (made by hand, or by a Lab on another database)."""
    now = clock.utcnow()
    learners: dict[str, dict[str, Any]] = {}

    def entry(learner: str) -> dict[str, Any]:
        label = learner or "default"
        return learners.setdefault(label, {"topics": [], "groups": [], "consumers": []})

    known = set()
    for topic in store.topics():
        entry(topic.learner)["topics"].append(topic.name)
        known.add(topic.name)
    for row in store.consumers():
        found = entry(row.learner)
        found["consumers"].append(row.to_json(now))
        if row.group_name not in found["groups"]:
            found["groups"].append(row.group_name)
    in_kafka = sorted(t for t in admin.list_topics(timeout=10).topics if t.startswith(LAB_PREFIX))
    return {
        "learners": {name: learners[name] for name in sorted(learners)},
        "unrecorded_topics": [t for t in in_kafka if t not in known],
        "missing_topics": sorted(known - set(in_kafka)),
    }


def assignment(store: LabStore, group: str) -> dict[int, list[int]]:
    """consumer id -> partitions, for the group's live consumers (as their workers report)."""
    now = clock.utcnow()
    return {
        r.id: sorted(r.partitions)
        for r in store.consumers()
        if r.group_name == group and effective_state(r, now) in ("running", "paused")
    }
