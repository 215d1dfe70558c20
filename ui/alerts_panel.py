"""What the Consumer groups page shows of alert rules, and the checks of its "new alert" form.

Pure functions over `pipeline.lag.alerts` values (no Streamlit, no I/O), so the page stays a
layout. The page reads the rules and events with an `AlertStore` (`store.rules()`,
`store.events(limit=…)`), shows `rule_rows` / `event_rows`, builds a rule from the form with
`form_rule` (an `AlertRuleInvalid` message goes under the form as is) and stores it with
`store.add(rule)`; `store.delete(name)` removes one. Writes are refused in read-only mode:
`form_refusal(read_only)` says so in the page's words. The monitor (`python -m pipeline
monitor`) evaluates the rules: `monitor_note` tells whether one runs.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Sequence
from datetime import datetime

from pipeline.lag.alerts import AlertEvent, AlertRule, MonitorInfo, new_rule

__all__ = [
    "CONDITION_EXAMPLES",
    "DASH",
    "alert_cli_command",
    "event_rows",
    "form_refusal",
    "form_rule",
    "monitor_note",
    "rule_rows",
    "sampling_note",
]

DASH = "—"
# The form's choices; the text field takes any condition `parse_condition` reads.
CONDITION_EXAMPLES = ("status != OK", "lag_seconds > 60", "lag > 1000")


def _ago(then: datetime | None, now: datetime) -> str:
    if then is None:
        return DASH
    seconds = max((now - then).total_seconds(), 0.0)
    if seconds < 60:
        return f"{seconds:.0f} s ago"
    if seconds < 3600:
        return f"{int(seconds // 60)} min ago"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60)} min ago"


def rule_rows(rules: Iterable[AlertRule], now: datetime, group: str | None = None) -> list[dict]:
    """One row per rule (of `group` only, when given): firing first, then pending, then by name."""
    order = {"firing": 0, "pending": 1, "ok": 2}
    shown = [r for r in rules if group is None or r.group == group]
    shown.sort(key=lambda r: (order.get(r.state, 3), r.name))
    return [
        {
            "alert": r.name,
            "group": r.group,
            "topic": r.topic,
            "rule": r.text,
            "state": r.state.upper() if r.state != "ok" else "OK",
            "since": _ago(r.since, now),
            "last value": DASH if r.value is None else str(r.value),
            "webhook": r.webhook,
        }
        for r in shown
    ]


def event_rows(events: Sequence[AlertEvent], group: str | None = None) -> list[dict]:
    """The alert history as a table, newest first: what fired or resolved, why, and whether the
    webhook got it (a failing delivery says its last error and when it is tried again)."""
    rows = []
    for e in events:
        if group is not None and e.group != group:
            continue
        if e.delivery == "delivered":
            delivery = f"delivered ({e.attempts} attempt{'s' if e.attempts != 1 else ''})"
        elif e.delivery == "retrying":
            delivery = (
                f"retrying: {e.attempts} failed, next at {e.next_attempt_at:%H:%M:%S} UTC "
                f"({e.last_error})"
            )
        elif e.delivery == "failed":
            delivery = f"gave up after {e.attempts} attempts ({e.last_error})"
        else:
            delivery = "pending"
        rows.append(
            {
                "time (UTC)": e.at.strftime("%Y-%m-%d %H:%M:%S"),
                "alert": e.alert,
                "state": e.state.upper(),
                "value": DASH if e.value is None else str(e.value),
                "reason": e.reason,
                "webhook": delivery,
            }
        )
    return rows


def form_rule(name: str, group: str, topic: str, when: str, for_: str, webhook: str) -> AlertRule:
    """The rule the form describes (AlertRuleInvalid says what is wrong, ready to show)."""
    return new_rule(name.strip(), group, topic, when, for_.strip() or "0s", webhook.strip())


def form_refusal(read_only: bool) -> str | None:
    """Why the form cannot add or delete rules, or None when it can."""
    if read_only:
        return (
            "Read-only mode (TASKSTREAM_READ_ONLY): alert rules can be listed but not added or "
            "deleted."
        )
    return None


def monitor_note(monitors: Sequence[MonitorInfo]) -> str:
    """Whether a monitor evaluates the rules, in one sentence for under the table."""
    if not monitors:
        return (
            "No monitor is running: rules are evaluated and webhooks sent only while "
            "`python -m pipeline monitor` runs."
        )
    where = ", ".join(m.metrics_url or m.id for m in monitors)
    return f"Evaluated every 5 s by the monitor ({where})."


def sampling_note(monitors: Sequence[MonitorInfo], interval: float) -> str:
    """What the page says while its background sampler stands by for a monitor."""
    where = ", ".join(m.metrics_url or m.id for m in monitors)
    who = f"The monitor ({where})" if where else "A monitor (`python -m pipeline monitor`)"
    return (
        f"{who} samples the lag history into PostgreSQL; this app's own "
        f"sampler (every {interval:g} s) stands by, and takes over again if the monitor stops."
    )


def alert_cli_command(rule: AlertRule) -> str:
    """The same rule as a command line (`python -m pipeline alerts add …`)."""
    args = [
        "python", "-m", "pipeline", "alerts", "add", rule.name,
        "--group", rule.group, "--topic", rule.topic,
        "--when", rule.condition.text, "--for", rule.text.rsplit(" for ", 1)[1],
        "--webhook", rule.webhook,
    ]  # fmt: skip
    return shlex.join(args)
