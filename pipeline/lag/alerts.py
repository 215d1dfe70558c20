"""Alert rules on consumer-group lag: the pure evaluator, their PostgreSQL store, the webhook.

A rule watches one group on one topic with one condition, `status != OK`, `lag_seconds > 60` or
`lag > 1000` (any of `> >= < <= == !=`; status only `==`/`!=`), held for a duration (`for`,
0 by default). Each evaluation of a rule (`evaluate_rule`, pure: the monitor calls it every
sample with the group's `GroupValues`) moves it between three states:

    ok ──condition holds──> pending ──held for `for`──> firing ──no longer holds──> ok
      └───────── holds, `for` 0 ──────────────────────────┘        (pending → ok: silently)

Entering `firing` makes one `firing` event, leaving it one `resolved` event: a rule fires once
per episode and resolves once, however many samples see the condition. A value that is unknown
(Kafka did not answer for the group, nothing committed, lag in seconds beyond the history) changes
nothing: neither fires nor resolves.

Tables (`migrate_alerts`, idempotent like `migrate_lag_history`): `alert_rules` (the rules and
each one's state, so a restarted monitor neither fires again nor forgets a firing alert),
`alert_events` (every firing and resolution with its webhook delivery: pending, retrying with
backoff, delivered, or failed after `GIVE_UP_AFTER`), and `monitors` (each running monitor's
heartbeat and the topics it samples, for the app to tell whether one samples its topic). Events of a rule are delivered in order:
a resolution waits for its firing to get through.

The webhook gets a JSON object: `alert`, `group`, `topic`, `state` (firing | resolved),
`value`, `rule`, `reason`, `at` and `text` (one line a Slack incoming webhook shows as is).
"""

from __future__ import annotations

import json
import logging
import math
import re
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from pipeline.core import clock
from pipeline.lag.metrics import GroupValues, MetricsSnapshot
from pipeline.lag.status import Status
from pipeline.postgres.store import create_own_tables

__all__ = [
    "DELIVERY_STATES",
    "GIVE_UP_AFTER",
    "AlertEvent",
    "AlertRule",
    "AlertRuleInvalid",
    "AlertStore",
    "Condition",
    "Delivery",
    "MonitorInfo",
    "Transition",
    "WebhookSender",
    "evaluate_rule",
    "migrate_alerts",
    "new_rule",
    "parse_condition",
    "parse_duration",
    "post_webhook",
    "retry_delay",
    "webhook_payload",
]

_log = logging.getLogger("taskstream.alerts")

# Advisory lock classes (first key): store.py 0x7A5C, history.py 0x7A5D/0x7A5E.
_MIGRATION_LOCK_CLASS = 0x7A60
_EVALUATE_LOCK_CLASS = 0x7A61

STATES = ("ok", "pending", "firing")
DELIVERY_STATES = ("pending", "retrying", "delivered", "failed")
# A delivery retried this long without success is given up (and shown as failed).
GIVE_UP_AFTER = timedelta(hours=24)
RETRY_FIRST = 1.0  # seconds before the first retry; doubles up to RETRY_MAX
RETRY_MAX = 300.0

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_CONDITION = re.compile(r"\s*([a-z_]+)\s*(>=|<=|==|!=|>|<|=)\s*(\S+)\s*")
_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_NUMERIC_FIELDS = ("lag", "lag_seconds")
_OPERATORS = {
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
}


class AlertRuleInvalid(ValueError):
    """A rule that cannot be made; the message says what to write instead."""


# -- conditions and durations ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Condition:
    """`field op value`: status (== / != a Burrow status), lag (messages), lag_seconds."""

    field: str
    op: str
    value: float | Status

    @property
    def text(self) -> str:
        value = self.value
        if isinstance(value, Status):
            shown = value.value
        else:
            shown = str(int(value)) if float(value).is_integer() else repr(value)
        return f"{self.field} {self.op} {shown}"

    def observed(self, values: GroupValues) -> Any:
        """The value the condition reads (None: unknown)."""
        if self.field == "status":
            return None if values.status is None else values.status.status.value
        return getattr(values, self.field)

    def holds(self, values: GroupValues | None) -> bool | None:
        """Whether the condition holds; None when the value it reads is unknown."""
        if values is None:
            return None
        observed = self.observed(values)
        if observed is None:
            return None
        if self.field == "status":
            return _OPERATORS[self.op](Status(observed), self.value)
        return _OPERATORS[self.op](observed, self.value)


def parse_condition(text: str) -> Condition:
    """`status != OK`, `lag_seconds > 60`, `lag > 1000` (`=` reads as `==`)."""
    match = _CONDITION.fullmatch(text or "")
    if match is None:
        raise AlertRuleInvalid(
            f"cannot read the condition {text!r}: write FIELD OP VALUE, e.g. 'status != OK', "
            "'lag_seconds > 60' or 'lag > 1000'"
        )
    field, op, raw = match.groups()
    op = "==" if op == "=" else op
    if field == "status":
        if op not in ("==", "!="):
            raise AlertRuleInvalid(f"status compares only with == or !=, not {op}")
        try:
            return Condition(field, op, Status(raw.upper()))
        except ValueError:
            names = ", ".join(s.value for s in Status)
            raise AlertRuleInvalid(f"unknown status {raw!r}: one of {names}") from None
    if field not in _NUMERIC_FIELDS:
        raise AlertRuleInvalid(
            f"unknown field {field!r}: status, lag (messages) or lag_seconds (seconds)"
        )
    try:
        number = float(raw)
    except ValueError:
        raise AlertRuleInvalid(f"{field} compares with a number, not {raw!r}") from None
    if not math.isfinite(number) or number < 0:
        raise AlertRuleInvalid(f"{field} compares with a number of 0 or more, not {raw!r}")
    return Condition(field, op, number)


def parse_duration(text: str | float | int) -> float:
    """Seconds from `60s`, `5m`, `1h`, `1d`, `500ms` or a plain number of seconds (0 or more)."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        seconds = float(text)
    else:
        match = _DURATION.fullmatch(str(text))
        if match is None:
            raise AlertRuleInvalid(
                f"cannot read the duration {text!r}: e.g. 0s, 30s, 5m, 1h (or seconds)"
            )
        seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2) or "s"]
    if not math.isfinite(seconds) or seconds < 0:
        raise AlertRuleInvalid(f"the duration must be 0 or more seconds, not {text!r}")
    return seconds


def _duration_text(seconds: float) -> str:
    if seconds and seconds % 3600 == 0:
        return f"{int(seconds // 3600)}h"
    if seconds and seconds % 60 == 0:
        return f"{int(seconds // 60)}m"
    return f"{int(seconds)}s" if float(seconds).is_integer() else f"{seconds}s"


# -- rules and the evaluator --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AlertRule:
    """A rule and its state: `ok`, `pending` (holds, not yet for `for_seconds`) or `firing`.

    `since` is when the current state began (None for ok); `value` the last value seen.
    """

    name: str
    group: str
    topic: str
    condition: Condition
    for_seconds: float
    webhook: str
    id: int | None = None
    created_at: datetime | None = None
    state: str = "ok"
    since: datetime | None = None
    value: Any = None

    @property
    def text(self) -> str:
        """The rule in words: `lag > 1000 for 1m`."""
        return f"{self.condition.text} for {_duration_text(self.for_seconds)}"

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "group": self.group,
            "topic": self.topic,
            "when": self.condition.text,
            "for_seconds": self.for_seconds,
            "webhook": self.webhook,
            "state": self.state,
            "since": self.since.isoformat() if self.since else None,
            "value": self.value,
            "created_at": self.created_at.isoformat() if self.created_at else None,
        }


def new_rule(
    name: str, group: str, topic: str, when: str, for_: str | float, webhook: str
) -> AlertRule:
    """A rule checked field by field; AlertRuleInvalid says what is wrong."""
    if not _NAME.fullmatch(name or ""):
        raise AlertRuleInvalid(
            f"the alert name {name!r} is not usable: 1-100 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    if not (group or "").strip():
        raise AlertRuleInvalid("the rule needs a consumer group (--group)")
    if not (topic or "").strip():
        raise AlertRuleInvalid("the rule needs a topic (--topic)")
    parts = urlsplit(webhook or "")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise AlertRuleInvalid(
            f"the webhook must be an http:// or https:// URL with a host, not {webhook!r}"
        )
    return AlertRule(
        name, group.strip(), topic.strip(), parse_condition(when), parse_duration(for_), webhook
    )


@dataclass(frozen=True, slots=True)
class Transition:
    """A rule entering `firing` or going back to ok (`resolved`): one event, one webhook."""

    state: str  # "firing" | "resolved"
    value: Any
    reason: str
    at: datetime


def _reason(rule: AlertRule, values: GroupValues, holds: bool) -> str:
    condition = rule.condition
    if condition.field == "status":
        status = values.status
        assert status is not None
        return f"status {status.status.value}: {status.rule}"
    observed = condition.observed(values)
    if condition.field == "lag":
        said = f"lag is {observed} message{'s' if observed != 1 else ''}"
    else:
        said = f"lag is {observed:.1f} s (the oldest unread message's age)"
    if holds:
        held = f" for {_duration_text(rule.for_seconds)}" if rule.for_seconds else ""
        return f"{said}: {condition.text} held{held}"
    return f"{said}: {condition.text} no longer holds"


def evaluate_rule(
    rule: AlertRule, values: GroupValues | None, now: datetime
) -> tuple[AlertRule, Transition | None]:
    """The rule with its state after seeing `values` at `now`, and the transition to announce
    (None when nothing is to be said). Pure: the monitor stores both."""
    holds = rule.condition.holds(values)
    if holds is None:  # unknown: neither fires nor resolves
        return rule, None
    assert values is not None
    value = rule.condition.observed(values)
    if holds:
        if rule.state == "firing":
            return replace(rule, value=value), None
        since = rule.since if rule.state == "pending" and rule.since is not None else now
        if (now - since).total_seconds() >= rule.for_seconds:
            fired = Transition("firing", value, _reason(rule, values, True), now)
            return replace(rule, state="firing", since=now, value=value), fired
        return replace(rule, state="pending", since=since, value=value), None
    if rule.state == "firing":
        resolved = Transition("resolved", value, _reason(rule, values, False), now)
        return replace(rule, state="ok", since=None, value=value), resolved
    return replace(rule, state="ok", since=None, value=value), None


def webhook_payload(rule: AlertRule, transition: Transition) -> dict[str, Any]:
    """The JSON the webhook gets (Slack shows `text` as is)."""
    mark = "[FIRING]" if transition.state == "firing" else "[RESOLVED]"
    text = (
        f"{mark} {rule.name}: group {rule.group} on topic {rule.topic}: {transition.reason} "
        f"(rule: {rule.text})"
    )
    return {
        "alert": rule.name,
        "group": rule.group,
        "topic": rule.topic,
        "state": transition.state,
        "value": transition.value,
        "rule": rule.text,
        "reason": transition.reason,
        "at": transition.at.isoformat().replace("+00:00", "Z"),
        "text": text,
    }


def retry_delay(attempts: int) -> float:
    """Seconds before retry number `attempts` + 1: 1, 2, 4, … capped at RETRY_MAX."""
    return min(RETRY_MAX, RETRY_FIRST * 2 ** max(0, min(attempts - 1, 30)))


# -- the store ----------------------------------------------------------------------------------------

_DDL = """
CREATE TABLE IF NOT EXISTS alert_rules (
    id           bigserial   PRIMARY KEY,
    name         text        NOT NULL UNIQUE,
    group_id     text        NOT NULL,
    topic        text        NOT NULL,
    condition    text        NOT NULL,
    for_seconds  double precision NOT NULL DEFAULT 0,
    webhook      text        NOT NULL,
    state        text        NOT NULL DEFAULT 'ok',
    since        timestamptz NULL,
    last_value   jsonb       NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS alert_events (
    id             bigserial   PRIMARY KEY,
    rule_id        bigint      NOT NULL,   -- no foreign key: history outlives a deleted rule
    alert          text        NOT NULL,
    group_id       text        NOT NULL,
    topic          text        NOT NULL,
    state          text        NOT NULL,   -- firing | resolved
    value          jsonb       NULL,
    reason         text        NOT NULL,
    at             timestamptz NOT NULL,
    payload        jsonb       NOT NULL,
    webhook        text        NOT NULL,
    delivery       text        NOT NULL DEFAULT 'pending',  -- pending|retrying|delivered|failed
    attempts       integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL,
    last_error     text        NULL,
    delivered_at   timestamptz NULL
);
CREATE INDEX IF NOT EXISTS alert_events_undelivered ON alert_events (rule_id, id)
    WHERE delivery IN ('pending', 'retrying');
CREATE INDEX IF NOT EXISTS alert_events_by_alert ON alert_events (alert, id);
CREATE TABLE IF NOT EXISTS monitors (
    id           text        PRIMARY KEY,  -- host:pid
    started_at   timestamptz NOT NULL,
    heartbeat_at timestamptz NOT NULL,
    metrics_url  text        NULL
);
-- The topics the monitor samples into the lag history (NULL: not said, taken as every topic).
ALTER TABLE monitors ADD COLUMN IF NOT EXISTS topics text[] NULL;
"""


def migrate_alerts(target: ConnectionPool | psycopg.Connection, schema: str | None = None) -> None:
    """Create the alert tables if missing; safe to run concurrently."""
    create_own_tables(
        target, _DDL, lock_class=_MIGRATION_LOCK_CLASS, caller="migrate_alerts", schema=schema
    )


@dataclass(frozen=True, slots=True)
class AlertEvent:
    """A firing or resolution and its webhook delivery."""

    id: int
    rule_id: int
    alert: str
    group: str
    topic: str
    state: str
    value: Any
    reason: str
    at: datetime
    payload: dict[str, Any]
    webhook: str
    delivery: str
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    delivered_at: datetime | None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "alert": self.alert,
            "group": self.group,
            "topic": self.topic,
            "state": self.state,
            "value": self.value,
            "reason": self.reason,
            "at": self.at.isoformat(),
            "delivery": self.delivery,
            "attempts": self.attempts,
            "next_attempt_at": (
                self.next_attempt_at.isoformat() if self.delivery == "retrying" else None
            ),
            "last_error": self.last_error,
            "delivered_at": self.delivered_at.isoformat() if self.delivered_at else None,
        }


@dataclass(frozen=True, slots=True)
class MonitorInfo:
    """A monitor process that heartbeats in the `monitors` table."""

    id: str
    started_at: datetime
    heartbeat_at: datetime
    metrics_url: str | None
    # The topics it samples into the lag history; None: not said (taken as every topic).
    topics: tuple[str, ...] | None = None

    def samples(self, topic: str) -> bool:
        """Whether this monitor records `topic`'s lag history."""
        return self.topics is None or topic in self.topics


_RULE_COLUMNS = (
    "id, name, group_id, topic, condition, for_seconds, webhook, state, since, last_value, "
    "created_at"
)
_EVENT_COLUMNS = (
    "id, rule_id, alert, group_id, topic, state, value, reason, at, payload, webhook, delivery, "
    "attempts, next_attempt_at, last_error, delivered_at"
)


def _rule(row: dict[str, Any]) -> AlertRule:
    return AlertRule(
        name=row["name"],
        group=row["group_id"],
        topic=row["topic"],
        condition=parse_condition(row["condition"]),
        for_seconds=row["for_seconds"],
        webhook=row["webhook"],
        id=row["id"],
        created_at=row["created_at"],
        state=row["state"],
        since=row["since"],
        value=row["last_value"],
    )


def _event(row: dict[str, Any]) -> AlertEvent:
    return AlertEvent(
        id=row["id"],
        rule_id=row["rule_id"],
        alert=row["alert"],
        group=row["group_id"],
        topic=row["topic"],
        state=row["state"],
        value=row["value"],
        reason=row["reason"],
        at=row["at"],
        payload=row["payload"],
        webhook=row["webhook"],
        delivery=row["delivery"],
        attempts=row["attempts"],
        next_attempt_at=row["next_attempt_at"],
        last_error=row["last_error"],
        delivered_at=row["delivered_at"],
    )


class AlertStore:
    """Alert rules, their events and deliveries, and monitor heartbeats in the pool's schema."""

    def __init__(self, pool: ConnectionPool) -> None:
        self._pool = pool

    def ready(self) -> bool:
        """Whether the tables exist (read-only mode creates nothing: without a monitor or a
        writable app ever run, there are no rules to read)."""
        with self._pool.connection() as conn:
            found = conn.execute(
                "SELECT to_regclass('alert_rules') IS NOT NULL"
                " AND to_regclass('monitors') IS NOT NULL"
            ).fetchone()
        return bool(found[0])

    # rules

    def add(self, rule: AlertRule) -> AlertRule:
        """Store a new rule; AlertRuleInvalid when the name is taken."""
        with self._pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            try:
                row = cur.execute(
                    "INSERT INTO alert_rules (name, group_id, topic, condition, for_seconds,"
                    f" webhook) VALUES (%s, %s, %s, %s, %s, %s) RETURNING {_RULE_COLUMNS}",
                    (
                        rule.name,
                        rule.group,
                        rule.topic,
                        rule.condition.text,
                        rule.for_seconds,
                        rule.webhook,
                    ),
                ).fetchone()
            except psycopg.errors.UniqueViolation:
                raise AlertRuleInvalid(
                    f"an alert named {rule.name!r} exists: delete it first or pick another name"
                ) from None
        return _rule(row)

    def rules(self) -> list[AlertRule]:
        with self._pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            rows = cur.execute(f"SELECT {_RULE_COLUMNS} FROM alert_rules ORDER BY name").fetchall()
        return [_rule(r) for r in rows]

    def rule(self, name: str) -> AlertRule | None:
        with self._pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            row = cur.execute(
                f"SELECT {_RULE_COLUMNS} FROM alert_rules WHERE name = %s", (name,)
            ).fetchone()
        return None if row is None else _rule(row)

    def delete(self, name: str) -> AlertRule:
        """Delete a rule (its history stays; undelivered events of it are given up)."""
        with (
            self._pool.connection() as conn,
            conn.transaction(),
            conn.cursor(row_factory=dict_row) as cur,
        ):
            row = cur.execute(
                f"DELETE FROM alert_rules WHERE name = %s RETURNING {_RULE_COLUMNS}", (name,)
            ).fetchone()
            if row is None:
                raise AlertRuleInvalid(f"no alert named {name!r} (see `alerts list`)")
            cur.execute(
                "UPDATE alert_events SET delivery = 'failed', last_error = coalesce(last_error"
                " || '; ', '') || 'rule deleted' WHERE rule_id = %s"
                " AND delivery IN ('pending', 'retrying')",
                (row["id"],),
            )
        return _rule(row)

    # evaluation

    def evaluate(self, snapshot: MetricsSnapshot, now: datetime | None = None) -> list[AlertEvent]:
        """Evaluate every rule against the snapshot and store the new states and events, in one
        transaction; returns the events made. Skips (returns []) while another monitor holds
        the evaluation lock, so two monitors never announce the same transition twice."""
        now = now or snapshot.taken_at
        made: list[AlertEvent] = []
        with (
            self._pool.connection() as conn,
            conn.transaction(),
            conn.cursor(row_factory=dict_row) as cur,
        ):
            locked = cur.execute(
                "SELECT pg_try_advisory_xact_lock(%s, hashtext(current_schema())) AS locked",
                (_EVALUATE_LOCK_CLASS,),
            ).fetchone()["locked"]
            if not locked:
                return []
            rows = cur.execute(
                f"SELECT {_RULE_COLUMNS} FROM alert_rules ORDER BY id FOR UPDATE"
            ).fetchall()
            for row in rows:
                try:
                    rule = _rule(row)
                except AlertRuleInvalid as exc:  # a condition edited by hand into nonsense
                    _log.warning("alert %s skipped: %s", row["name"], exc)
                    continue
                after, transition = evaluate_rule(
                    rule, snapshot.values(rule.topic, rule.group), now
                )
                if (after.state, after.since, after.value) != (rule.state, rule.since, rule.value):
                    cur.execute(
                        "UPDATE alert_rules SET state = %s, since = %s, last_value = %s"
                        " WHERE id = %s",
                        (after.state, after.since, Jsonb(after.value), rule.id),
                    )
                if transition is not None:
                    made.append(self._insert_event(cur, after, transition))
        return made

    def _insert_event(
        self, cur: psycopg.Cursor, rule: AlertRule, transition: Transition
    ) -> AlertEvent:
        payload = webhook_payload(rule, transition)
        row = cur.execute(
            "INSERT INTO alert_events (rule_id, alert, group_id, topic, state, value, reason, at,"
            " payload, webhook, next_attempt_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s,"
            f" %s) RETURNING {_EVENT_COLUMNS}",
            (
                rule.id,
                rule.name,
                rule.group,
                rule.topic,
                transition.state,
                Jsonb(transition.value),
                transition.reason,
                transition.at,
                Jsonb(payload),
                rule.webhook,
                transition.at,
            ),
        ).fetchone()
        event = _event(row)
        _log.info("alert %s %s: %s", rule.name, transition.state, transition.reason)
        return event

    # events and deliveries

    def events(self, alert: str | None = None, *, limit: int = 50) -> list[AlertEvent]:
        """The newest events first (of one alert, or all)."""
        where, params = ("WHERE alert = %s", [alert]) if alert else ("", [])
        with self._pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            rows = cur.execute(
                f"SELECT {_EVENT_COLUMNS} FROM alert_events {where} ORDER BY id DESC LIMIT %s",
                [*params, limit],
            ).fetchall()
        return [_event(r) for r in rows]

    def deliver_due(self, send: Any, now: datetime | None = None, *, limit: int = 20) -> int:
        """Send the due deliveries: per rule its oldest undelivered event only (a resolution
        waits for its firing), each under a row lock that other monitors skip. `send(url,
        payload)` returns None on success or the error in words. Returns how many were tried."""
        now = now or clock.utcnow()
        with self._pool.connection() as conn:
            heads = [
                r[0]
                for r in conn.execute(
                    "SELECT DISTINCT ON (rule_id) id FROM alert_events"
                    " WHERE delivery IN ('pending', 'retrying') ORDER BY rule_id, id"
                ).fetchall()
            ]
        tried = 0
        for event_id in heads[:limit]:
            with (
                self._pool.connection() as conn,
                conn.transaction(),
                conn.cursor(row_factory=dict_row) as cur,
            ):
                row = cur.execute(
                    f"SELECT {_EVENT_COLUMNS} FROM alert_events WHERE id = %s"
                    " AND delivery IN ('pending', 'retrying') AND next_attempt_at <= %s"
                    " FOR UPDATE SKIP LOCKED",
                    (event_id, now),
                ).fetchone()
                if row is None:
                    continue
                event = _event(row)
                tried += 1
                error = send(event.webhook, event.payload)
                attempts = event.attempts + 1
                if error is None:
                    cur.execute(
                        "UPDATE alert_events SET delivery = 'delivered', attempts = %s,"
                        " delivered_at = %s, last_error = NULL WHERE id = %s",
                        (attempts, clock.utcnow(), event.id),
                    )
                    _log.info(
                        "alert %s %s delivered (attempt %d)", event.alert, event.state, attempts
                    )
                    continue
                retry_at = now + timedelta(seconds=retry_delay(attempts))
                gave_up = retry_at - event.at > GIVE_UP_AFTER
                cur.execute(
                    "UPDATE alert_events SET delivery = %s, attempts = %s, last_error = %s,"
                    " next_attempt_at = %s WHERE id = %s",
                    ("failed" if gave_up else "retrying", attempts, error, retry_at, event.id),
                )
                if attempts == 1 or gave_up:
                    _log.warning(
                        "alert %s %s: webhook delivery failed (%s); %s",
                        event.alert,
                        event.state,
                        error,
                        "given up"
                        if gave_up
                        else "retrying with backoff until it answers (alerts history shows it)",
                    )
        return tried

    def next_due(self) -> datetime | None:
        """When the next undelivered event is due (None: nothing waits)."""
        with self._pool.connection() as conn:
            return conn.execute(
                "SELECT min(next_attempt_at) FROM alert_events"
                " WHERE delivery IN ('pending', 'retrying')"
            ).fetchone()[0]

    # monitors

    def heartbeat(
        self,
        monitor_id: str,
        started_at: datetime,
        metrics_url: str | None,
        topics: Iterable[str] | None = None,
    ) -> None:
        """Say this monitor runs, and which topics it samples (None: every topic)."""
        listed = None if topics is None else sorted(set(topics))
        with self._pool.connection() as conn:
            conn.execute(
                "INSERT INTO monitors (id, started_at, heartbeat_at, metrics_url, topics)"
                " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (id) DO UPDATE SET"
                " heartbeat_at = excluded.heartbeat_at, metrics_url = excluded.metrics_url,"
                " topics = excluded.topics",
                (monitor_id, started_at, clock.utcnow(), metrics_url, listed),
            )

    def leave(self, monitor_id: str) -> None:
        """A monitor stopping says so, so the app need not wait for its heartbeat to age."""
        with self._pool.connection() as conn:
            conn.execute("DELETE FROM monitors WHERE id = %s", (monitor_id,))

    def live_monitors(self, within: timedelta = timedelta(seconds=20)) -> list[MonitorInfo]:
        """Monitors that heartbeated within `within`: the app samples a topic's lag itself
        only when none of them samples it (else the history would get every snapshot twice)."""
        with self._pool.connection() as conn:
            rows = conn.execute(
                "SELECT id, started_at, heartbeat_at, metrics_url, topics FROM monitors"
                " WHERE heartbeat_at >= %s ORDER BY heartbeat_at DESC",
                (clock.utcnow() - within,),
            ).fetchall()
        return [MonitorInfo(*row[:4], None if row[4] is None else tuple(row[4])) for row in rows]


# -- the webhook ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Delivery:
    """What one webhook POST came to: None error when the receiver took it (2xx)."""

    error: str | None
    status: int | None = None


def post_webhook(url: str, payload: dict[str, Any], *, timeout: float = 10.0) -> Delivery:
    """POST the payload as JSON; a 2xx answer is a delivery, anything else an error in words."""
    body = json.dumps(payload, ensure_ascii=False).encode()
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", "User-Agent": "taskstream-monitor"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return Delivery(None, response.status)
    except urllib.error.HTTPError as exc:
        detail = exc.read(200).decode(errors="replace").strip()
        return Delivery(f"HTTP {exc.code}{': ' + detail if detail else ''}", exc.code)
    except OSError as exc:  # URLError, refused connections and timeouts alike
        reason = getattr(exc, "reason", exc)
        return Delivery(f"{type(reason).__name__}: {reason}")


class WebhookSender:
    """Delivers due alert events (`AlertStore.deliver_due`) with `post_webhook`; the monitor
    runs `step()` on a thread of its own, so a slow receiver never holds up sampling."""

    def __init__(self, store: AlertStore, *, timeout: float = 10.0) -> None:
        self._store = store
        self._timeout = timeout

    def send(self, url: str, payload: dict[str, Any]) -> str | None:
        return post_webhook(url, payload, timeout=self._timeout).error

    def step(self, now: datetime | None = None) -> int:
        return self._store.deliver_due(self.send, now)
