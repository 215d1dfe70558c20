"""What the Replays page shows, computed from replay rows.

Pure functions over `pipeline.replay` values (no Streamlit, no I/O), so the page stays a layout and the arithmetic is unit-tested.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import pandas as pd

from pipeline.core.ratelimit import parse_speed
from pipeline.lag.status import rate_series
from pipeline.replay.members import WorkerRow, worker_state
from pipeline.replay.store import ReplayRow

__all__ = [
    "DASH",
    "RATE_SAMPLES",
    "Controls",
    "add_sample",
    "controls",
    "duration_text",
    "partition_rows",
    "progress",
    "rate_frame",
    "replay_cli_commands",
    "slice_text",
    "speed_short",
    "speed_text",
    "worker_rows",
]

DASH = "—"
# Samples kept per replay in the session: at a 2 s refresh, the last four minutes or so.
RATE_SAMPLES = 120


def duration_text(seconds: float | None) -> str:
    """`42 s`, `3 min 5 s`, `2 h 10 min`; a dash when unknown."""
    if seconds is None:
        return DASH
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60)} s"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60)} min"


def speed_text(speed: str) -> str:
    """`100 events/s`, `60x the original pace`, `max`; the stored text if it does not parse."""
    try:
        parsed = parse_speed(speed)
    except ValueError:
        return speed
    if parsed.kind == "rate":
        return f"{parsed} events/s"
    if parsed.kind == "pace":
        return f"{parsed} the original pace"
    return "max (unthrottled)"


def speed_short(speed: str) -> str:
    """`100/s`, `60x`, `max`: short enough for a metric."""
    try:
        parsed = parse_speed(speed)
    except ValueError:
        return speed
    return f"{parsed}/s" if parsed.kind == "rate" else str(parsed)


def progress(row: ReplayRow, now: datetime) -> tuple[float, str]:
    """The bar's fraction and its text: done of total, percentage, events/s and ETA."""
    total, remaining = row.total, row.remaining
    if row.following:
        done = total - remaining
        fraction = 1.0 if total == 0 else done / total
        return fraction, (
            f"following: {remaining:,} events behind the live end · {done:,} read · "
            f"{row.events_per_s:,.1f} events/s · ETA following"
        )
    if total == 0:
        return 1.0, "nothing to replay: the start and the target end offsets are equal"
    done = total - remaining
    fraction = done / total
    text = f"{done:,} of {total:,} events ({fraction:.0%})"
    if remaining == 0:
        return 1.0, text
    eta = row.to_json(now)["eta_s"]
    rate = row.events_per_s
    return fraction, f"{text} · {rate:,.1f} events/s · ETA {duration_text(eta)}"


def slice_text(row: ReplayRow) -> str:
    """`every event`, or the slice: `only type tasks.event.created; partition 0`."""
    slice_ = row.slice
    return "every event" if slice_.empty else f"only {slice_.describe()}"


def partition_rows(row: ReplayRow) -> list[dict]:
    """Per partition: start, position, target end (following: the live end), done, remaining
    and progress (0-1)."""
    position = {**row.start_offsets, **row.position}
    rows = []
    for p, end in sorted(row.ends.items()):
        start = row.start_offsets.get(p, end)
        at = min(max(position.get(p, start), start), end)
        total = max(0, end - start)
        done = at - start if total else 0
        rows.append(
            {
                "partition": p,
                "start": start,
                "position": at,
                "end": end,
                "done": done,
                "remaining": end - at,
                "progress": 1.0 if total == 0 else done / total,
            }
        )
    return rows


def worker_rows(workers: Sequence[WorkerRow], now: datetime, here: str | None = None) -> list[dict]:
    """Per worker: id, host, pid, partitions, events done, events/s, share of the speed,
    heartbeat age and state (`dead`: silent too long, or its process on `here` gone)."""
    rows = []
    for w in workers:
        state = worker_state(w, now, here)
        owned = ", ".join(map(str, w.partitions)) or DASH
        rows.append(
            {
                "worker": w.worker,
                "host": w.host,
                "pid": w.pid,
                # A dead worker's last partitions: the group gives them to the others.
                "partitions": f"({owned})" if state == "dead" and w.partitions else owned,
                "events done": w.events_done,
                "events/s": 0.0 if state not in ("running", "idle") else round(w.events_per_s, 1),
                "share": DASH if w.speed_share is None else f"{w.speed_share:,.1f}/s",
                "heartbeat": f"{duration_text((now - w.heartbeat_at).total_seconds())} ago",
                "state": state,
                "started by": "start/resume" if w.spawned else "replay run",
            }
        )
    return rows


def add_sample(
    samples: list[tuple[datetime, int]], at: datetime, done: int, limit: int = RATE_SAMPLES
) -> None:
    """Append (time, events done) and keep the newest `limit`; a repeated time is not added."""
    if samples and samples[-1][0] >= at:
        return
    if samples and done < samples[-1][1]:
        samples.clear()  # the replay was recreated under the same name: a new series
    samples.append((at, done))
    del samples[:-limit]


def rate_frame(samples: Sequence[tuple[datetime, int]]) -> pd.DataFrame:
    """Events per second between consecutive samples, indexed by seconds before the latest.

    Relative seconds read better on a chart spanning a minute or two than clock times do.
    """
    points = rate_series(samples)
    if not points:
        return pd.DataFrame()
    latest = points[-1][0]
    frame = pd.DataFrame(
        {"events/s": [rate for _, rate in points]},
        index=[round((at - latest).total_seconds(), 1) for at, _ in points],
    )
    frame.index.name = "seconds (0 = latest)"
    return frame


@dataclass(frozen=True)
class Controls:
    """Which of a card's buttons apply to the replay's state."""

    pause: bool
    resume: bool
    restart: bool
    stop: bool
    speed: bool
    compare: bool
    promote: bool = False
    rollback: bool = False


def controls(
    state: str, desired: str, *, following: bool = False, promoted: bool = False
) -> Controls:
    """The buttons that make sense for a replay in `state` (effective) wanting `desired`.

    A following replay never finishes: it compares while running, and promotes while running
    (the promote itself checks the slice and the lag); a promoted one rolls back.
    """
    live = state in ("pending", "running", "paused")
    return Controls(
        pause=live and desired == "running",
        resume=(live and desired == "paused") or state in ("stopped", "failed"),
        restart=state == "dead",
        stop=live or state == "dead",
        speed=state != "finished",
        compare=state == "finished" or (following and state in ("running", "paused")),
        promote=following and not promoted and state == "running",
        rollback=promoted,
    )


def replay_cli_commands(name: str) -> str:
    """The card's buttons as `python -m pipeline replay …` commands."""
    quoted = shlex.quote(name)
    return (
        f"python -m pipeline replay list\n"
        f"python -m pipeline replay pause {quoted}\n"
        f"python -m pipeline replay resume {quoted}\n"
        f"python -m pipeline replay rate {quoted} 500\n"
        f"python -m pipeline replay stop {quoted}\n"
        f"python -m pipeline replay compare {quoted}\n"
        f"python -m pipeline replay promote {quoted}  # a following, unfiltered replay\n"
        f"python -m pipeline replay rollback {quoted}\n"
        f"python -m pipeline replay delete {quoted} --drop-index\n"
        f"# the worker's log\ntail -f .devstack/logs/replay-{name}.log\n"
    )
