"""What the Topic page says about the brokers, the replicas and the metadata quorum.

Pure functions over a `TopicOverview` (one Metadata answer: live brokers, each partition's
leader, replicas and in-sync replicas) and a `QuorumStatus` (the KRaft metadata quorum, or None
when it could not be read), so the page stays a layout. No Streamlit, no I/O.

A broker id that some partition lists as a replica but the metadata does not list as a live
broker is down or unreachable: Kafka keeps a partition's replica assignment while its brokers
come and go.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Sequence

from pipeline.kafka.quorum import QuorumReplica, QuorumStatus, quorum_describe_lines
from pipeline.kafka.topics import PartitionOverview, TopicOverview

__all__ = [
    "MIN_INSYNC",
    "STALE_FETCH_MS",
    "broker_rows",
    "brokers_cli_text",
    "bullets",
    "controller_text",
    "down_brokers",
    "expected_brokers",
    "format_age",
    "live_brokers",
    "offline_texts",
    "outage_texts",
    "partition_problem",
    "partition_status",
    "preferred_leader_text",
    "quorum_rows",
    "quorum_summary",
    "topics_describe_lines",
    "under_replicated_texts",
]

# taskstream creates its topics with replication factor 3 and min.insync.replicas=2 on a
# cluster of three or more brokers: acks=all writes need this many replicas in sync.
MIN_INSYNC = 2
# A voter that has not fetched the metadata log for this long is probably down.
STALE_FETCH_MS = 10_000
DASH = "—"


def _ids(ids: Iterable[int]) -> str:
    """`1, 2` (Kafka's own tools write `1,2`; people read the space better)."""
    return ", ".join(map(str, ids))


def _brokers(ids: Sequence[int]) -> str:
    """`broker 2` or `brokers 1, 2` (by id)."""
    return f"broker {ids[0]}" if len(ids) == 1 else f"brokers {_ids(sorted(ids))}"


def _is(ids: Sequence[int]) -> str:
    return "is" if len(ids) == 1 else "are"


def live_brokers(overview: TopicOverview) -> set[int]:
    """The ids of the brokers the metadata lists: the ones that answer."""
    return {b.id for b in overview.brokers}


def expected_brokers(overview: TopicOverview, quorum: QuorumStatus | None) -> list[int]:
    """Broker ids the cluster should have beyond what the partitions name: the quorum's voters,
    when every live broker is itself a voter (each node is a broker and a controller, as in the
    devstack; node ids are unique across a cluster, so a live broker that is a voter is such a
    combined node). Empty otherwise: dedicated controllers are not brokers."""
    if quorum is None or not overview.brokers:
        return []
    voters = {v.id for v in quorum.voters}
    if not live_brokers(overview) <= voters:
        return []
    return sorted(voters)


def down_brokers(overview: TopicOverview, expected: Iterable[int] = ()) -> list[int]:
    """Broker ids some partition has a replica on (or `expected` names) that the metadata does
    not list: down or unreachable."""
    named = {r for p in overview.partitions for r in p.replicas} | set(expected)
    return sorted(named - live_brokers(overview))


def partition_status(p: PartitionOverview) -> str:
    """`offline` (no leader), `under-replicated` (fewer replicas in sync than assigned) or `ok`."""
    if p.offline:
        return "offline"
    if p.under_replicated:
        return "under-replicated"
    return "ok"


def partition_problem(p: PartitionOverview, live: set[int]) -> str | None:
    """What is wrong with the partition, in words; None when nothing is.

    `partition 1 is offline: no leader (brokers 1, 2 are down)`;
    `partition 3 has 2 of 3 replicas in sync: broker 2 is down or behind (it does not answer)`.
    """
    if p.offline:
        down = [r for r in p.replicas if r not in live]
        up = [r for r in p.replicas if r in live]
        if not p.replicas:
            return f"partition {p.partition} is offline: no leader, and no replica is known"
        if not down:
            return (
                f"partition {p.partition} is offline: no leader (its replicas "
                f"{_ids(up)} answer: an election is probably under way)"
            )
        text = f"partition {p.partition} is offline: no leader ({_brokers(down)} {_is(down)} down"
        if up:
            text += (
                f"; {_brokers(up)} {'answers' if len(up) == 1 else 'answer'} but "
                f"{'was' if len(up) == 1 else 'were'} not in sync, and Kafka elects only an "
                "in-sync replica"
            )
        return text + ")"
    if not p.under_replicated:
        return None
    missing = p.missing_replicas
    down = [r for r in missing if r not in live]
    behind = [r for r in missing if r in live]
    if down and not behind:
        why = "it does not answer" if len(down) == 1 else "they do not answer"
    elif behind and not down:
        why = (
            "it answers, so it is catching up"
            if len(behind) == 1
            else "they answer, so they are catching up"
        )
    else:
        why = (
            f"{_brokers(down)} {'does' if len(down) == 1 else 'do'} not answer; "
            f"{_brokers(behind)} {'answers' if len(behind) == 1 else 'answer'} and "
            f"{_is(behind)} catching up"
        )
    text = (
        f"partition {p.partition} has {len(p.isr)} of {len(p.replicas)} replicas in sync: "
        f"{_brokers(missing)} {_is(missing)} down or behind ({why})"
    )
    if len(p.isr) < MIN_INSYNC <= len(p.replicas):
        text += (
            f"; with min.insync.replicas={MIN_INSYNC}, writes with acks=all are refused until "
            "another replica is back in sync"
        )
    return text


def offline_texts(overview: TopicOverview) -> list[str]:
    """One sentence per offline partition."""
    live = live_brokers(overview)
    return [partition_problem(p, live) or "" for p in overview.offline]


def under_replicated_texts(overview: TopicOverview) -> list[str]:
    """One sentence per under-replicated partition that still has a leader."""
    live = live_brokers(overview)
    return [partition_problem(p, live) or "" for p in overview.under_replicated if not p.offline]


def bullets(texts: Sequence[str], limit: int = 12) -> str:
    """Sentences as a Markdown list, each capitalised and ended with a full stop; past `limit`,
    how many more there are."""
    lines = [f"- {t[:1].upper()}{t[1:]}." for t in texts[:limit]]
    if len(texts) > limit:
        lines.append(f"- … and {len(texts) - limit} more like these (the table has every one).")
    return "\n".join(lines)


def preferred_leader_text(overview: TopicOverview) -> str | None:
    """How many partitions a broker other than their preferred replica (the first of the list)
    leads, and why that is fine; None when every leader is the preferred one."""
    moved = [p for p in overview.partitions if p.leader is not None and p.replicas]
    moved = [p for p in moved if p.leader != p.replicas[0]]
    if not moved:
        return None
    count = len(moved)
    return (
        f"{count} of {len(overview.partitions)} "
        f"partition{'s' if len(overview.partitions) != 1 else ''} "
        f"{'are' if count != 1 else 'is'} not led by {'their' if count != 1 else 'its'} "
        "preferred replica (the first of the list), as after a broker restarts: leadership "
        "moved to another in-sync replica while it was away. With auto.leader.rebalance.enable "
        "(the default) the controller moves it back, checking every 5 minutes."
    )


def outage_texts(overview: TopicOverview, expected: Iterable[int] = ()) -> list[str]:
    """One sentence per broker that does not answer, naming it and what it held of the topic."""
    texts = []
    for broker in down_brokers(overview, expected):
        held = [p.partition for p in overview.partitions if broker in p.replicas]
        if held:
            where = (
                f"partition {held[0]}" if len(held) == 1 else f"partitions {_ids(held)}"
            ) + f" of `{overview.topic}` {'has' if len(held) == 1 else 'have'} a replica on it"
        else:
            where = "it is a voter of the metadata quorum"
        texts.append(
            f"Broker {broker} does not answer: it is missing from the cluster's metadata, "
            f"though {where}. It is down or unreachable."
        )
    return texts


def broker_rows(
    overview: TopicOverview, quorum: QuorumStatus | None, expected: Iterable[int] = ()
) -> list[dict]:
    """One row per broker (live, named by a replica list, or expected): its address, whether it
    answers, how many of the topic's partitions it leads, holds and is in sync for, and its part
    in the metadata quorum."""
    live = {b.id: b for b in overview.brokers}
    ids = sorted(set(live) | set(down_brokers(overview, expected)))
    voters = {v.id for v in quorum.voters} if quorum is not None else set()
    observers = {o.id for o in quorum.observers} if quorum is not None else set()
    rows = []
    for broker in ids:
        info = live.get(broker)
        if quorum is not None and quorum.leader_id == broker:
            role = "active controller"
        elif broker in voters:
            role = "controller (voter)"
        elif broker in observers:
            role = "observer"
        elif quorum is None and overview.controller == broker:
            role = "controller, says the metadata"
        else:
            role = DASH
        rows.append(
            {
                "broker": broker,
                "address": f"{info.host}:{info.port}" if info else DASH,
                "answers": "yes" if info else "no: down or unreachable",
                "leads": sum(p.leader == broker for p in overview.partitions),
                "holds": sum(broker in p.replicas for p in overview.partitions),
                "in sync": sum(broker in p.isr for p in overview.partitions),
                "quorum": role,
            }
        )
    return rows


def controller_text(
    overview: TopicOverview, quorum: QuorumStatus | None, quorum_error: str | None = None
) -> str:
    """Which node is the active controller: from the quorum, or, when it could not be read, what
    the metadata says (which in KRaft is not reliably the active controller)."""
    if quorum is not None:
        if quorum.leader_id is None:
            return (
                "The metadata quorum has no leader right now: an election is under way, or too "
                "few voters answer to form a majority. Until one is elected, no partition can "
                "get a new leader."
            )
        kind = "Broker" if quorum.leader_id in live_brokers(overview) else "Node"
        return (
            f"{kind} {quorum.leader_id} is the **active controller**: the leader of the KRaft "
            f"metadata quorum (epoch {quorum.leader_epoch}). It keeps the cluster's metadata "
            "log and picks a new leader for each partition whose leader fails; the other voters "
            "copy that log, and one of them takes over if it fails."
        )
    reason = quorum_error or "no answer"
    said = (
        f"the metadata says controller {overview.controller}"
        if overview.controller is not None
        else "the metadata names no controller either"
    )
    return (
        f"The metadata quorum could not be read ({reason}); {said}. In KRaft that is any live "
        "broker that forwards requests to the controllers, not necessarily the active one."
    )


def format_age(ms: int | None) -> str:
    """`0.4 s ago`, `12 s ago`, `3 min ago`; `—` when unknown."""
    if ms is None or ms < 0:
        return DASH
    if ms < 10_000:
        return f"{ms / 1000:.1f} s ago"
    if ms < 120_000:
        return f"{ms // 1000} s ago"
    return f"{ms // 60_000} min ago"


def _replica_state(r: QuorumReplica, leader: int | None) -> str:
    if r.id == leader:
        return "leader"
    if r.last_fetch_ms_ago is None:
        return "never fetched"
    if r.last_fetch_ms_ago > STALE_FETCH_MS:
        return "not fetching: down?"
    if r.lag:
        return "catching up"
    return "caught up"


def quorum_rows(quorum: QuorumStatus) -> list[dict]:
    """One row per voter, then per observer: its listeners (when the answer has them), log end
    offset, lag behind the leader, last fetch and last time caught up."""
    rows = []
    for role, replicas in (("voter", quorum.voters), ("observer", quorum.observers)):
        for r in replicas:
            rows.append(
                {
                    "node": r.id,
                    "role": role,
                    "listeners": ", ".join(quorum.endpoints.get(r.id, ())) or DASH,
                    "state": _replica_state(r, quorum.leader_id),
                    "log end offset": r.log_end_offset,
                    "lag": r.lag,
                    "last fetch": format_age(r.last_fetch_ms_ago),
                    "last caught up": format_age(r.last_caught_up_ms_ago),
                }
            )
    return rows


def quorum_summary(quorum: QuorumStatus) -> str:
    """The quorum in one sentence: leader, epoch, high watermark, voters and what they survive."""
    voters = len(quorum.voters)
    majority = voters // 2 + 1
    leader = "no leader" if quorum.leader_id is None else f"leader {quorum.leader_id}"
    text = (
        f"{leader}, epoch {quorum.leader_epoch}, high watermark {quorum.high_watermark:,}; "
        f"{voters} voter{'s' if voters != 1 else ''}"
    )
    if voters:
        spare = voters - majority
        text += (
            f": a majority of {majority} must answer, so it survives {spare} voter"
            f"{'s' if spare != 1 else ''} down"
        )
    observers = len(quorum.observers)
    text += f"; {observers} observer{'s' if observers != 1 else ''}."
    return text[0].upper() + text[1:]


def topics_describe_lines(overview: TopicOverview) -> str:
    """What `kafka-topics --describe --topic T` prints about the partitions (its Topic, Partition,
    Leader, Replicas and Isr columns; it also prints the topic id, configs and ELR)."""
    factor = max((len(p.replicas) for p in overview.partitions), default=0)
    lines = [
        f"Topic: {overview.topic}\tPartitionCount: {len(overview.partitions)}\t"
        f"ReplicationFactor: {factor}"
    ]
    for p in overview.partitions:
        leader = "none" if p.leader is None else str(p.leader)
        lines.append(
            f"\tTopic: {overview.topic}\tPartition: {p.partition}\tLeader: {leader}\t"
            f"Replicas: {','.join(map(str, p.replicas))}\tIsr: {','.join(map(str, p.isr))}"
        )
    return "\n".join(lines)


def brokers_cli_text(
    bootstrap: str,
    overview: TopicOverview,
    quorum: QuorumStatus | None,
    quorum_error: str | None = None,
) -> str:
    """The Brokers section with Kafka's own tools: each command and what it prints."""
    topic = overview.topic
    describe = shlex.join(
        ["kafka-topics", "--bootstrap-server", bootstrap, "--describe", "--topic", topic]
    )
    status = shlex.join(
        ["kafka-metadata-quorum", "--bootstrap-server", bootstrap, "describe", "--status"]
    )
    replication = shlex.join(
        ["kafka-metadata-quorum", "--bootstrap-server", bootstrap, "describe", "--replication"]
    )
    if quorum is not None:
        said = quorum_describe_lines(quorum).rstrip("\n")
    else:
        said = f"# (not read: {quorum_error or 'no answer'})"
    devstack = ["python", "-m", "devstack", "kafka"]
    return (
        "# each partition's leader, replicas and in-sync replicas (abridged: the tool also\n"
        "# prints the topic id, its configs and the eligible leader replicas)\n"
        f"$ {describe}\n"
        f"{topics_describe_lines(overview)}\n\n"
        "# the KRaft metadata quorum: LeaderId is the active controller\n"
        f"$ {status}\n"
        f"{said}\n\n"
        "# each voter's and observer's log end offset, lag and last fetch\n"
        f"$ {replication}\n\n"
        "# on this machine, through devstack's copy of Kafka's tools\n"
        f"$ {shlex.join([*devstack, 'kafka-topics', '--describe', '--topic', topic])}\n"
        f"$ {shlex.join([*devstack, 'kafka-metadata-quorum', 'describe', '--status'])}\n"
    )
