"""The Lab page's words and arithmetic, pure (no Streamlit, no I/O): each lesson's text, the
equivalent Kafka command lines, messages per partition, and who holds which partition."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "LESSONS",
    "Lesson",
    "acks_all_text",
    "group_summary",
    "kafka_cli_lines",
    "lab_cli_lines",
    "lag_rows",
    "member_rows",
    "redelivery_summary",
    "replication_rows",
    "share_rows",
    "share_summary",
    "spread_rows",
    "teacher_rows",
    "trail_comparison",
    "trail_rows",
]


@dataclass(frozen=True)
class Lesson:
    title: str
    do: str
    watch: str
    why: str


LESSONS: dict[int, Lesson] = {
    1: Lesson(
        "Keys and partitions",
        "Produce a few hundred messages three times: with one key, with random keys, with no key.",
        "Where each batch lands: one key fills one partition; random keys spread evenly; no key "
        "comes in uneven bursts.",
        "A key's murmur2 hash modulo the partition count picks its partition (the same in every "
        "client), so all messages of one key stay on one partition, in order. Without a key the "
        "producer sticks to one partition until a batch is full or sent, then picks another: "
        "fewer, bigger batches (KIP-480).",
    ),
    2: Lesson(
        "A group shares the work",
        "Add consumers to one group, one at a time; then add more consumers than the topic has "
        "partitions.",
        "The partitions split between the members after each join; the extra members hold none.",
        "Within a group each partition has exactly one owner, so a group can use at most as many "
        "members as the topic has partitions: the rest stay idle as stand-ins. Each join (and "
        "leave) is a rebalance.",
    ),
    3: Lesson(
        "Rebalances",
        "Pick an assignor, add three consumers, then stop one (graceful) and kill another. Start "
        "again with another assignor (a new group name) and compare the trails: range, "
        "roundrobin, cooperative-sticky, and consumer (Kafka 4's protocol, KIP-848).",
        "The membership trail below: who was revoked what, who was assigned what, and when. A "
        "stopped member's partitions move within a second or two; a killed member's wait for "
        "the session timeout before anyone gets them.",
        "A graceful stop sends LeaveGroup, so the group rebalances at once. A killed process "
        "says nothing: the coordinator notices only when its heartbeats stop for "
        "`session.timeout.ms` (the Lab's consumers use LAB_SESSION_TIMEOUT_MS; with the "
        "consumer protocol the broker's `group.consumer.session.timeout.ms`, 45 s by default). "
        "The eager assignors (range, roundrobin) revoke every partition from every member at "
        "each rebalance and hand them all out again: everyone stops. cooperative-sticky revokes "
        "only the partitions that move (two short rounds), the rest keep working. With "
        "`group.protocol=consumer` the broker computes the assignment and each member gets "
        "only its own changes, incrementally, with no group-wide barrier.",
    ),
    4: Lesson(
        "Slow consumer and lag",
        "Add two consumers, produce a thousand messages, then set one member's rate to 2 per "
        "second. Later, set it back to 0 (no limit).",
        "Lag grows only on the slow member's partitions; the other member's stay near zero. "
        "Once the rate is lifted, that lag drains.",
        "Each partition has one owner in the group, and an owner reads its partitions in order. "
        "A slow member cannot hand part of its backlog to an idle neighbour: lag is per "
        "partition, and the cure is a faster owner or more partitions (and members). Lag is "
        "the log's end offset minus the group's committed offset on each partition.",
    ),
    5: Lesson(
        "Commits and redelivery",
        "Add a consumer that commits after processing, let it work a few seconds, kill it, and "
        "add another. Then try the same with auto-commit.",
        "The 'redelivered' column: messages the next owner reads again because the killed "
        "member processed them but never committed. With commit=after it stays small (at most "
        "a second's worth); with auto-commit it can also lose messages (committed, never "
        "processed) or redeliver up to five seconds' worth.",
        "Kafka remembers a group's progress only as committed offsets. Whatever a member "
        "processed after its last commit is read again by the next owner: at-least-once. "
        "Committing after processing bounds the redelivery to what was in flight; auto-commit "
        "(`enable.auto.commit`, every `auto.commit.interval.ms`=5 s) commits what was handed "
        "out, processed or not, so a crash can skip messages too.",
    ),
    6: Lesson(
        "Replication",
        "Create a topic with replication 3 and produce with acks=all. Then ask your teacher to "
        "stop one broker, produce again, stop a second one, produce again, and start them "
        "again.",
        "The leader and in-sync replica (ISR) columns: leaders move off the stopped broker, "
        "the ISR shrinks. With one broker down acks=all still works (two replicas in sync); "
        "with two down the leader refuses: NOT_ENOUGH_REPLICAS.",
        "Each partition has one leader and followers that copy it. With `acks=all` the leader "
        "answers once every in-sync replica has the message, and refuses to write when fewer "
        "than the topic's `min.insync.replicas` (2 here) are in sync: better unavailable than "
        "acknowledged on one disk only. A stopped broker's leaderships move to an in-sync "
        "follower; when it comes back it catches up and rejoins the ISR.",
    ),
    7: Lesson(
        "Replay",
        "Start a slow 'live' group, produce, then start a 'replay' group on the same topic with "
        "no rate limit.",
        "The replay group starts from the earliest offset and races ahead at its own speed; "
        "the live group's markers do not move any faster or slower because of it.",
        "Kafka keeps messages after they are read (until retention), and each group has its "
        "own committed offsets. A new group with `auto.offset.reset=earliest` reads everything "
        "again without disturbing anyone: this is how taskstream rebuilds a search index "
        "(the Replays page).",
    ),
    8: Lesson(
        "Queues for Kafka (share groups)",
        "Add three share consumers to a share group on a two-partition topic (one of them "
        "releases each message once), and one consumer-group member beside them; then produce "
        "a few hundred messages at 50 per second.",
        "Every share member is busy although there are more members than partitions; the "
        "releasing member's messages come back (delivery count 2) and someone accepts them; "
        "the consumer-group member reads every message on its own, untouched.",
        "A share group (KIP-932, Kafka 4) hands records, not partitions, to its members: the "
        "broker lends each record to one member under a time-limited lock, and the member "
        "acknowledges it: accept (done), release (deliver it again, its delivery count one "
        "higher) or reject (never again). Several members read one partition at once, so a "
        "queue's workers scale past the partition count, at the price of order. A record whose "
        "member dies goes back when its lock expires (30 s). The broker lends records a batch "
        "at a time, so messages produced in one big batch go to one member.",
    ),
}


def spread_rows(partitions: int, spread: Mapping[str, int] | Mapping[int, int]) -> list[dict]:
    """One row per partition (zeros included) for the 'messages per partition' chart."""
    counts = {int(p): int(n) for p, n in spread.items()}
    return [{"partition": f"p{p}", "messages": counts.get(p, 0)} for p in range(partitions)]


def member_rows(consumers: Sequence[Mapping[str, Any]], group: str) -> list[dict]:
    """The group's consumers as table rows, newest last (stopped and dead ones included)."""
    rows = []
    for c in consumers:
        if c["group"] != group:
            continue
        rate = c.get("rate")
        rows.append(
            {
                "id": c["id"],
                "client.id": c["client_id"],
                "state": c["state"],
                "partitions": ", ".join(str(p) for p in c["partitions"]) or "—",
                "processed": c["processed"],
                "redelivered": c["redelivered"],
                "rate": "max" if rate is None else f"{rate:g}/s",
                "assignor": c["assignor"],
            }
        )
    return rows


def group_summary(consumers: Sequence[Mapping[str, Any]], group: str, partitions: int) -> str:
    """One line: how many live members share how many partitions, and who is idle."""
    live = [c for c in consumers if c["group"] == group and c["state"] in ("running", "paused")]
    if not live:
        return "No member is running in this group yet: add one."
    held = sorted({p for c in live for p in c["partitions"]})
    idle = [c["client_id"] for c in live if not c["partitions"]]
    members = f"{len(live)} members hold" if len(live) != 1 else "1 member holds"
    text = f"{members} {len(held)} of {partitions} partitions"
    if len(held) < partitions:
        text += " (the rest are between owners: a rebalance is under way, or a member died)"
    if idle:
        more = " (more members than partitions)" if len(live) > partitions else ""
        text += f"; idle: {', '.join(idle)}{more}"
    return text + "."


def _when(seconds: float) -> str:
    return f"+{seconds:.1f} s"


def trail_rows(events: Sequence[Mapping[str, Any]], client_ids: Mapping[int, str]) -> list[dict]:
    """The group's membership trail (assigned, revoked, lost), oldest first, each with the
    seconds since the first event and since the one before."""
    rows: list[dict] = []
    first = previous = None
    for e in events:
        at = e["at"]
        first = first or at
        gap = 0.0 if previous is None else (at - previous).total_seconds()
        previous = at
        rows.append(
            {
                "when": _when((at - first).total_seconds()),
                "after": _when(gap),
                "member": client_ids.get(e["consumer_id"], f"c{e['consumer_id']}"),
                "event": e["kind"],
                "partitions": ", ".join(str(p) for p in e["partitions"]) or "—",
            }
        )
    return rows


def trail_comparison(trails: Mapping[str, tuple[str, Sequence[Mapping[str, Any]]]]) -> list[dict]:
    """Groups side by side (group -> (assignor, its trail)): how many partitions their members
    gave up (revoked or lost) and were handed, and the longest a given-up partition waited for
    its next owner. Eager assignors give up everything at each rebalance; cooperative ones and
    the consumer protocol only what moves."""
    rows = []
    for group, (assignor, events) in trails.items():
        given_up: dict[int, Any] = {}
        waits: list[float] = []
        revoked = assigned = 0
        for e in events:
            if e["kind"] in ("revoked", "lost"):
                revoked += len(e["partitions"])
                for p in e["partitions"]:
                    given_up[p] = e["at"]
            elif e["kind"] == "assigned":
                assigned += len(e["partitions"])
                for p in e["partitions"]:
                    if p in given_up:
                        waits.append((e["at"] - given_up.pop(p)).total_seconds())
        rows.append(
            {
                "group": group,
                "assignor": assignor,
                "events": len(events),
                "partitions given up": revoked,
                "partitions handed out": assigned,
                "longest wait for a new owner": f"{max(waits):.1f} s" if waits else "—",
            }
        )
    return rows


def lag_rows(
    lag: Mapping[int, int | None], consumers: Sequence[Mapping[str, Any]], group: str
) -> list[dict]:
    """Per partition: its lag, its owner (a live member of the group) and the owner's rate."""
    owners = {
        p: c
        for c in consumers
        if c["group"] == group and c["state"] in ("running", "paused")
        for p in c["partitions"]
    }
    rows = []
    for p, behind in sorted(lag.items()):
        owner = owners.get(p)
        rate = None if owner is None else owner.get("rate")
        rows.append(
            {
                "partition": f"p{p}",
                "lag": -1 if behind is None else behind,
                "owner": owner["client_id"] if owner else "—",
                "owner rate": "—" if owner is None else "max" if rate is None else f"{rate:g}/s",
            }
        )
    return rows


def redelivery_summary(consumers: Sequence[Mapping[str, Any]], group: str, distinct: int) -> str:
    """How many messages the group processed, how many of them twice or more."""
    members = [c for c in consumers if c["group"] == group]
    processed = sum(c["processed"] for c in members)
    again = sum(c["redelivered"] for c in members)
    return (
        f"{processed} messages processed by {len(members)} member(s), {distinct} distinct: "
        f"**{again} redelivered** (processed again by a later owner)."
    )


def replication_rows(state: Mapping[str, Any]) -> list[dict]:
    """Per partition: leader, replicas, in-sync replicas and what is missing."""
    rows = []
    for p in state["partitions"]:
        out = [r for r in p["replicas"] if r not in p["isr"]]
        rows.append(
            {
                "partition": f"p{p['partition']}",
                "leader": "none (offline)" if p["leader"] < 0 else str(p["leader"]),
                "replicas": ", ".join(map(str, p["replicas"])),
                "in sync (ISR)": ", ".join(map(str, p["isr"])) or "none",
                "out of sync": ", ".join(map(str, out)) or "—",
            }
        )
    return rows


def acks_all_text(result: Mapping[str, Any]) -> str:
    """What an acks=all produce got: written, or the broker's refusal word for word."""
    text = f"{result['written']} of {result['count']} written with acks=all."
    for e in result["errors"]:
        text += f"\n\n{e['count']} refused: `{e['error']}`: {e['text']}"
    return text


def share_rows(consumers: Sequence[Mapping[str, Any]], group: str) -> list[dict]:
    """A share group's members: what each got and how it acknowledged."""
    return [
        {
            "id": c["id"],
            "client.id": c["client_id"],
            "state": c["state"],
            "ack": c["commit"],
            "busy on": ", ".join(f"p{p}" for p in c["partitions"]) or "—",
            "accepted": c["processed"],
            "released": c.get("released", 0),
            "rejected": c.get("rejected", 0),
            "delivered again": c["redelivered"],
        }
        for c in consumers
        if c["group"] == group and c.get("kind") == "share"
    ]


def share_summary(consumers: Sequence[Mapping[str, Any]], group: str, partitions: int) -> str:
    """One line: how many share members got records, against the partition count."""
    members = [c for c in consumers if c["group"] == group and c.get("kind") == "share"]
    live = [c for c in members if c["state"] in ("running", "paused")]
    if not live:
        return "No share member is running yet: add some."
    worked = [c for c in live if c["processed"] + c.get("released", 0) + c.get("rejected", 0)]
    return (
        f"{len(live)} share member(s) on {partitions} partition(s): {len(worked)} of them have "
        f"received messages; {sum(c['redelivered'] for c in members)} deliveries were second "
        "(or later) tries."
    )


def teacher_rows(overview: Mapping[str, Any]) -> list[dict]:
    """The class at a glance: one row per learner."""
    rows = []
    for learner, found in overview["learners"].items():
        consumers = found["consumers"]
        live = [c for c in consumers if c["state"] in ("running", "paused", "pending")]
        rows.append(
            {
                "learner": learner,
                "topics": ", ".join(found["topics"]) or "—",
                "groups": ", ".join(found["groups"]) or "—",
                "consumers running": len(live),
                "consumers": len(consumers),
                "processed": sum(c["processed"] for c in consumers),
            }
        )
    return rows


def lab_cli_lines(lesson: int, topic_short: str, learner: str, group_short: str = "g") -> list[str]:
    """The Lab's own command-line twin of the lesson's actions."""
    who = f" --learner {learner}" if learner else ""
    base = f"python -m pipeline lab{who}"
    if lesson == 1:
        return [
            f"{base} produce {topic_short} --count 300 --key order-42",
            f"{base} produce {topic_short} --count 300 --keys random",
            f"{base} produce {topic_short} --count 300 --keys none",
        ]
    if lesson == 2:
        return [
            f"{base} consumer add {topic_short} --group {group_short} --rate 20",
            f"{base} consumer list",
            f"{base} consumer stop ID",
        ]
    add = f"{base} consumer add {topic_short} --group {group_short}"
    prefix = f"lab-{learner}-" if learner else "lab-"
    if lesson == 3:
        return [
            f"{add} --assignor cooperative-sticky     (three times)",
            f"{base} consumer stop ID     (graceful: leaves at once)",
            f"{base} consumer kill ID     (SIGKILL: waits for the session timeout)",
            f"{base} consumer add {topic_short} --group {group_short}-848 --assignor consumer",
        ]
    if lesson == 4:
        return [
            f"{add}     (twice)",
            f"{base} produce {topic_short} --count 1000 --keys random",
            f"{base} consumer rate ID 2     (slow)",
            f"{base} consumer rate ID 0     (no limit: it drains)",
            f"KAFKA_TOPIC={prefix}{topic_short} python -m pipeline lag --group "
            f"{prefix}{group_short}",
        ]
    if lesson == 5:
        return [
            f"{add} --commit after --rate 20",
            f"{base} consumer kill ID",
            f"{add} --commit after     (the next owner: see AGAIN in the list)",
            f"{add}-auto --commit auto --rate 20",
            f"{base} consumer list",
        ]
    if lesson == 6:
        return [
            f"{base} topic create {topic_short} --partitions 3 --replication 3",
            f"{base} produce {topic_short} --count 10 --acks-all-no-retries",
            f"{base} topic describe {topic_short}",
            "python -m pipeline lab broker stop 2     (the teacher: no --learner)",
            "python -m pipeline lab broker start 2",
        ]
    if lesson == 7:
        return [
            f"{base} consumer add {topic_short} --group live --rate 5",
            f"{base} produce {topic_short} --count 500 --keys random",
            f"{base} consumer add {topic_short} --group replay",
            "python -m pipeline replay …     (the Replays page, for the task topic)",
        ]
    return [
        f"{base} share add {topic_short} --group {group_short} --ack accept     (twice)",
        f"{base} share add {topic_short} --group {group_short} --ack release",
        f"{base} consumer add {topic_short} --group {group_short}-classic",
        f"{base} produce {topic_short} --count 300 --keys random --rate 50",
        f"{base} consumer list",
    ]


def kafka_cli_lines(lesson: int, topic: str, group: str, bootstrap: str) -> list[str]:
    """The same experiment with Kafka's own tools."""
    server = f"--bootstrap-server {bootstrap.split(',')[0]}"
    if lesson == 1:
        return [
            f"kafka-console-producer.sh {server} --topic {topic} "
            "--property parse.key=true --property key.separator=:",
            "   order-42:first message     (one key: one partition)",
            f"kafka-console-producer.sh {server} --topic {topic}     (no key: sticky batches)",
            f"kafka-get-offsets.sh {server} --topic {topic}     (messages per partition)",
        ]
    describe = f"kafka-consumer-groups.sh {server} --describe --group {group}"
    consume = f"kafka-console-consumer.sh {server} --topic {topic} --group {group}"
    if lesson == 2:
        return [
            f"{consume}     (in several terminals)",
            f"{describe} --members --verbose",
        ]
    if lesson == 3:
        return [
            f"{consume} --consumer-property partition.assignment.strategy="
            "org.apache.kafka.clients.consumer.CooperativeStickyAssignor",
            f"{consume} --consumer-property group.protocol=consumer     (KIP-848)",
            f"{describe} --members --verbose     (after each stop, Ctrl-C, or kill -9)",
            f"{describe} --state",
        ]
    if lesson == 4:
        return [
            f"kafka-producer-perf-test.sh --topic {topic} --num-records 1000 --record-size 100 "
            f"--throughput -1 --producer-props bootstrap.servers={bootstrap.split(',')[0]}",
            f"{describe}     (LAG per partition, and CONSUMER-ID: who owns it)",
        ]
    if lesson == 5:
        return [
            f"{consume} --consumer-property enable.auto.commit=false     (commits only at exit)",
            f"{describe}     (CURRENT-OFFSET: the last commit; kill -9 the consumer and see)",
            f"kafka-consumer-groups.sh {server} --reset-offsets --group {group} --topic {topic} "
            "--to-earliest --execute     (redeliver everything, on purpose)",
        ]
    if lesson == 6:
        return [
            f"kafka-topics.sh {server} --create --topic {topic} --partitions 3 "
            "--replication-factor 3 --config min.insync.replicas=2",
            f"kafka-topics.sh {server} --describe --topic {topic}     (Leader, Replicas, Isr)",
            f"kafka-topics.sh {server} --describe --under-replicated-partitions",
            f"kafka-console-producer.sh {server} --topic {topic} --producer-property acks=all",
        ]
    if lesson == 7:
        return [
            f"kafka-console-consumer.sh {server} --topic {topic} --group {group}-replay "
            "--from-beginning",
            f"kafka-consumer-groups.sh {server} --reset-offsets --group {group}-replay "
            f"--topic {topic} --to-earliest --execute     (replay again)",
            f"{describe}",
        ]
    return [
        f"kafka-console-share-consumer.sh {server} --topic {topic} --group {group}     (several)",
        f"kafka-share-groups.sh {server} --describe --group {group} --members",
        f"kafka-configs.sh {server} --alter --entity-type groups --entity-name {group} "
        "--add-config share.auto.offset.reset=earliest",
        f"{consume}-classic     (a consumer group beside it)",
    ]
