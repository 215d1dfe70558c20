"""The `replay_workers` table: each worker process of a replay, and how many a replay wants.

The `replays` row stays the replay's (its desired state, speed, position and totals); each
worker keeps a row of its own here (host, pid, partitions owned, events done, events/s, share of
the speed, state, heartbeat), written in the same transaction as its report to the `replays`
row. `replay_scale` keeps how many workers `replay start --workers N` asked for, so `resume`
tops a replay up to that many.

The tables are created beside the numbered migrations, like `pipeline.lag.alerts`'s: idempotent
DDL under an advisory lock of this module's own (`migrate_replay_workers`).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from pipeline.core.processes import pid_gone
from pipeline.postgres.store import create_own_tables

__all__ = [
    "WORKER_STATES",
    "WorkerRow",
    "migrate_replay_workers",
    "pid_gone",
    "this_worker",
    "worker_state",
]

_MIGRATION_LOCK_CLASS = 0x7A66
WORKER_DEAD_AFTER = timedelta(seconds=10)  # a worker silent this long is shown as dead
_STARTING_DEAD_AFTER = timedelta(seconds=30)  # a spawned worker that never reported within this
# starting: spawned, not reported yet; idle: in the group without partitions (or all of its
# partitions at their end while others still read theirs).
WORKER_STATES = ("starting", "running", "idle", "paused", "finished", "stopped", "failed")
ALIVE = ("starting", "running", "idle", "paused")

_DDL = """
CREATE TABLE IF NOT EXISTS replay_workers (
    replay        text        NOT NULL REFERENCES replays (name) ON DELETE CASCADE,
    worker        text        NOT NULL,   -- host:pid
    host          text        NOT NULL,
    pid           integer     NOT NULL,
    spawned       boolean     NOT NULL DEFAULT false,  -- by start/resume; false: `replay run`
    partitions    integer[]   NOT NULL DEFAULT '{}',
    events_done   bigint      NOT NULL DEFAULT 0,
    events_per_s  double precision NOT NULL DEFAULT 0,
    speed_share   double precision NULL,  -- events/s of an events/s speed; NULL: Nx or max
    state         text        NOT NULL DEFAULT 'starting',
    started_at    timestamptz NOT NULL DEFAULT now(),
    heartbeat_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (replay, worker)
);
CREATE TABLE IF NOT EXISTS replay_scale (
    replay   text    PRIMARY KEY REFERENCES replays (name) ON DELETE CASCADE,
    workers  integer NOT NULL
);
"""


def migrate_replay_workers(
    target: ConnectionPool | psycopg.Connection, schema: str | None = None
) -> None:
    """Create the per-worker tables if missing (after the `replays` table); safe concurrently."""
    create_own_tables(
        target,
        _DDL,
        lock_class=_MIGRATION_LOCK_CLASS,
        caller="migrate_replay_workers",
        schema=schema,
    )


def this_worker() -> tuple[str, str, int]:
    """(worker id, host, pid) of the running process: the id is `host:pid`."""
    host, pid = socket.gethostname(), os.getpid()
    return f"{host}:{pid}", host, pid


@dataclass(frozen=True)
class WorkerRow:
    """One row of `replay_workers`."""

    replay: str
    worker: str
    host: str
    pid: int
    spawned: bool
    partitions: tuple[int, ...]
    events_done: int
    events_per_s: float
    speed_share: float | None
    state: str
    started_at: datetime
    heartbeat_at: datetime

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> WorkerRow:
        values = dict(record)
        values["partitions"] = tuple(sorted(values.get("partitions") or ()))
        return cls(**values)

    def to_json(self, now: datetime, here: str | None = None) -> dict[str, Any]:
        return {
            "worker": self.worker,
            "host": self.host,
            "pid": self.pid,
            "spawned": self.spawned,
            "partitions": list(self.partitions),
            "events_done": self.events_done,
            "events_per_s": round(self.events_per_s, 1),
            "speed_share": None if self.speed_share is None else round(self.speed_share, 1),
            "state": worker_state(self, now, here),
            "started_at": self.started_at,
            "heartbeat_at": self.heartbeat_at,
            "heartbeat_age_s": round(max(0.0, (now - self.heartbeat_at).total_seconds()), 1),
        }


def worker_state(row: WorkerRow, now: datetime, here: str | None = None) -> str:
    """The worker's state, or `dead`: alive by its row but silent too long, or (on `here`, this
    host) its process gone."""
    if row.state not in ALIVE:
        return row.state
    silent = now - row.heartbeat_at
    if silent > (_STARTING_DEAD_AFTER if row.state == "starting" else WORKER_DEAD_AFTER):
        return "dead"
    if here is not None and row.host == here and pid_gone(row.pid):
        return "dead"
    return row.state
