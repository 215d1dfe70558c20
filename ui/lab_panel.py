"""The Lab page's words and arithmetic, pure (no Streamlit, no I/O): each lesson's text, the
equivalent Kafka command lines, messages per partition, and who holds which partition."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "LESSONS",
    "Lesson",
    "group_summary",
    "kafka_cli_lines",
    "lab_cli_lines",
    "member_rows",
    "spread_rows",
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
    text = f"{len(live)} member{'s' if len(live) != 1 else ''} hold {len(held)} of {partitions} partitions"
    if len(held) < partitions:
        text += " (the rest are between owners: a rebalance is under way, or a member died)"
    if idle:
        more = " (more members than partitions)" if len(live) > partitions else ""
        text += f"; idle: {', '.join(idle)}{more}"
    return text + "."


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
    return [
        f"{base} consumer add {topic_short} --group {group_short} --rate 20",
        f"{base} consumer list",
        f"{base} consumer stop ID",
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
    return [
        f"kafka-console-consumer.sh {server} --topic {topic} --group {group}     (in several "
        "terminals)",
        f"kafka-consumer-groups.sh {server} --describe --group {group} --members --verbose",
    ]
