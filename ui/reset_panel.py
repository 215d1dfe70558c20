"""What the offset reset on the Consumer groups page shows, computed from reset plans.

Pure functions over `pipeline.kafka.offsets` values (no Streamlit, no I/O): the strategies the
form offers, the `--to` text they make, the preview table, and the same reset with Kafka's own
`kafka-consumer-groups` tool.
"""

from __future__ import annotations

import shlex
from datetime import UTC, datetime

from pipeline.kafka.offsets import ResetPlan, ResetSpec

__all__ = [
    "DASH",
    "RESET_STRATEGIES",
    "reset_cli_command",
    "reset_rows",
    "reset_spec_text",
]

DASH = "—"
RESET_STRATEGIES = {
    "earliest": "Earliest (the oldest message still kept)",
    "latest": "Latest (skip everything written so far)",
    "time": "A time (the first message at or after it)",
    "offsets": "Explicit offsets (PARTITION:OFFSET,…)",
    "shift": "Shift by ±N from the committed offset",
}


def reset_spec_text(strategy: str, value: str) -> str:
    """The `offsets reset --to` text for a strategy of RESET_STRATEGIES and its input."""
    value = value.strip()
    if strategy in ("earliest", "latest"):
        return strategy
    if strategy == "shift":
        sign = "" if value[:1] in "+-" else "+"
        return f"shift:{sign}{value}"
    return value


def reset_rows(plan: ResetPlan) -> list[dict]:
    """The preview table: partition, current → new, lag before → after."""
    return [
        {
            "partition": r.partition,
            "current": DASH if r.current is None else str(r.current),
            "new": r.new,
            "change": DASH if r.current is None else f"{r.new - r.current:+d}",
            "lag before": DASH if r.lag_before is None else str(r.lag_before),
            "lag after": r.lag_after,
        }
        for r in plan.rows
    ]


def _kafka_time(at: datetime) -> str:
    """Kafka's --to-datetime format (YYYY-MM-DDTHH:mm:SS.sss), in UTC with a zone."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"


def reset_cli_command(
    bootstrap: str, group: str, topic: str, spec: ResetSpec, offsets: dict[int, int]
) -> str:
    """The same reset with `kafka-consumer-groups --reset-offsets` (a dry run, then --execute)."""
    base = ["kafka-consumer-groups", "--bootstrap-server", bootstrap, "--group", group]
    prelude = ""
    if spec.kind == "offsets":
        # Different offsets per partition need a CSV file: topic,partition,offset per line.
        lines = "".join(f"{topic},{p},{o}\\n" for p, o in sorted(offsets.items()))
        prelude = f"printf '{lines}' > reset.csv\n"
        option = ["--from-file", "reset.csv"]
    else:
        scope = ["--topic", topic]
        option = {
            "earliest": ["--to-earliest"],
            "latest": ["--to-latest"],
            "time": ["--to-datetime", _kafka_time(spec.time) if spec.time else ""],
            "shift": ["--shift-by", str(spec.shift)],
        }[spec.kind]
        option = scope + option
    command = [*base, "--reset-offsets", *option]
    dry = shlex.join([*command, "--dry-run"])
    execute = shlex.join([*command, "--execute"])
    devstack = shlex.join(["python", "-m", "devstack", "kafka", *command[:1], *command[3:]])
    return (
        f"{prelude}# preview (what the table above shows)\n{dry}\n"
        "# apply (the group must have no active members)\n"
        f"{execute}\n"
        "# on this machine, Kafka's tools from devstack's cache (--bootstrap-server is added)\n"
        f"{devstack} --dry-run\n"
    )
