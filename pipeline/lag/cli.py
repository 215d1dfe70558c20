"""`python -m pipeline lag` and `alerts`: the commands' bodies (the parser is pipeline.cli's).

The standard library alone at import, as pipeline.cli: each command imports what it needs when
it runs (`tests/unit/test_cli_imports.py` keeps it so).
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pipeline.core.usage import PROG, UsageError

if TYPE_CHECKING:
    from pipeline.core.settings import Settings

__all__ = ["run_alerts", "run_lag"]


def run_lag(args: argparse.Namespace, settings: Settings) -> Any:
    """Every group's lag, and per group the lag doctor (`pipeline.lag.doctor`): rates, catch-up,
    why it lags. Rates come from the lag history in PostgreSQL when it is recent, else from two
    snapshots `--window` seconds apart (only when some group lags: a group at lag 0 is caught up
    whatever the rates); PostgreSQL down or refusing is no error, it only means sampling."""
    from confluent_kafka import KafkaException

    from pipeline.kafka.clients import checked_admin
    from pipeline.lag.reader import lag_report

    with contextlib.ExitStack() as cleanup:
        # The lag history's connection is opened beside the Kafka reads (importing psycopg and
        # connecting take about as long as they do).
        history = None if args.no_history else _HistoryConnection.start(settings)
        if history is not None:
            cleanup.callback(history.close)
        # The access check's client reads the lag too (one bootstrap, not two). A Kafka that
        # does not answer is said by the read itself, as for the other one-shot commands.
        try:
            admin = cleanup.enter_context(checked_admin(settings, timeout=5.0))
        except KafkaException:
            admin = None
        snapshot = lag_report(settings, args.groups, admin=admin)
        diagnoses: dict[str, Any] = {}
        source, note = None, ""
        if any(g.error is None for g in snapshot.groups):
            snapshot, diagnoses, source, note = _lag_doctor(
                args, settings, snapshot, admin, history
            )
    if args.json:
        document = snapshot.to_json()
        document["rates_from"] = source
        for entry in document["groups"]:
            diagnosis = diagnoses.get(entry["group"])
            if diagnosis is None:
                continue
            found = diagnosis.to_json()
            per_partition = {p["partition"]: p for p in found.pop("partitions")}
            for key in ("group", "topic"):
                found.pop(key)
            entry.update(found)
            for p in entry["partitions"]:
                p.update(per_partition.get(p["partition"], {}))
        return document
    print(f"topic {snapshot.topic}" + (f"  ({note})" if note else ""))
    for group in snapshot.groups:
        _lag_group_text(group, diagnoses.get(group.group))
    if not snapshot.groups:
        print("no consumer group reads this topic")
    return None


def _lag_doctor(
    args: argparse.Namespace, settings: Settings, snapshot: Any, admin: Any, history: Any
) -> tuple:
    """(the newest snapshot, diagnosis per group, where the rates came from, that in words)."""
    import time

    from pipeline.lag import doctor
    from pipeline.lag.reader import lag_report, message_times

    started = time.monotonic()
    lagging = any((g.total_lag or 0) > 0 for g in snapshot.groups if g.error is None)
    inputs, source, note = None, None, "--no-history"
    if history is not None:
        inputs, note = _lag_history(history, snapshot, doctor.DEFAULT_WINDOW)
        source = "history" if inputs is not None else None
    if inputs is None and lagging and args.window > 0:
        time.sleep(max(started + args.window - time.monotonic(), 0.0))
        first, snapshot = snapshot, lag_report(settings, args.groups, admin=admin)
        inputs = {
            g.group: doctor.history_from_snapshots([first, snapshot], g.group)
            for g in snapshot.groups
        }
        source = "samples"
        note = f"rates between two snapshots {args.window:g} s apart; {note}"
    elif inputs is None:
        why = "every group is caught up" if not lagging else "--window 0"
        note = f"no rates: {why}; {note}"
    # The age of each lagging partition's next message, read from Kafka (within ~2 s): of the
    # 48 most lagging positions, so that hundreds of groups cost no more than a few.
    lagging_positions = sorted(
        (
            (p.lag, p.partition, p.committed)
            for g in snapshot.groups
            if g.error is None
            for p in g.partitions
            if p.lag and not p.committed_below_start
        ),
        reverse=True,
    )
    positions = list(dict.fromkeys((p, o) for _, p, o in lagging_positions))[:48]
    if not args.message_age:
        # Opt-in: a short-lived consumer per call, and a process that segfaulted inside
        # librdkafka twice while brokers restarted ran one (under investigation, issue 16).
        positions = []
    try:
        times = message_times(settings, snapshot.topic, positions) if positions else {}
    except Exception:  # the lag itself is the answer; the ages are a bonus
        times = {}
    diagnoses = {}
    for g in snapshot.groups:
        samples, marks, trail = (inputs or {}).get(g.group) or doctor.history_from_snapshots(
            [snapshot], g.group
        )
        at = {
            p.partition: times[(p.partition, p.committed)]
            for p in g.partitions
            if (p.partition, p.committed) in times
        }
        diagnoses[g.group] = doctor.diagnose_group(
            g, samples, marks, trail, snapshot.taken_at, message_times=at, topic=snapshot.topic
        )
    return snapshot, diagnoses, source, note


class _HistoryConnection:
    """One PostgreSQL connection for `lag`'s read of the lag history, opened on a thread of its
    own while Kafka is read. psycopg is imported there only: `lag --no-history` never loads it.
    It stands in for the pool `LagHistory` reads through."""

    def __init__(self, settings: Settings) -> None:
        import threading

        self._settings = settings
        self._conn: Any = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._open, name="lag-history", daemon=True)

    @classmethod
    def start(cls, settings: Settings) -> _HistoryConnection:
        opener = cls(settings)
        opener._thread.start()
        return opener

    def _open(self) -> None:
        try:
            import psycopg

            import pipeline.lag.history  # noqa: F401  (imported here, off the main thread)

            self._conn = psycopg.connect(
                self._settings.database_url, connect_timeout=5, autocommit=True
            )
        except BaseException as exc:  # PostgreSQL down or refusing: the rates are sampled
            self.error = exc

    def ready(self) -> bool:
        """Wait for the connection; False (with `error` set) when there is none."""
        self._thread.join()
        return self._conn is not None

    def connection(self) -> Any:
        """The pool interface `LagHistory` uses: `with pool.connection() as conn`."""
        from contextlib import nullcontext

        return nullcontext(self._conn)

    def close(self) -> None:
        self._thread.join()
        if self._conn is not None:
            self._conn.close()


def _lag_history(
    connection: _HistoryConnection, snapshot: Any, window: Any
) -> tuple[dict | None, str]:
    """Each group's recorded samples, the topic's watermarks and the membership trail over
    `window`, when the lag history in PostgreSQL is recent (its newest snapshot of the topic
    under 30 s old, every lagging group with two samples or more); else None and why not."""
    from datetime import timedelta

    from pipeline.core.failures import first_line

    if not connection.ready():  # PostgreSQL down or refusing: sample instead
        return None, f"no lag history: {first_line(connection.error, 120)}"
    from pipeline.lag.history import LagHistory

    try:
        history = LagHistory(connection)  # type: ignore[arg-type]
        since = snapshot.taken_at - window
        marks = history.end_offsets(snapshot.topic, since)
        taken = sorted({w.taken_at for w in marks})
        if len(taken) < 2 or taken[-1] < snapshot.taken_at - timedelta(seconds=30):
            return None, "no recent lag history of the topic (is the app's sampler running?)"
        inputs = {}
        for g in snapshot.groups:
            if g.error is not None:
                continue
            samples = history.series(snapshot.topic, g.group, since)
            if (g.total_lag or 0) > 0 and len({s.taken_at for s in samples}) < 2:
                return None, f"no recent lag history of group {g.group}"
            trail = history.membership(snapshot.topic, g.group, since)
            inputs[g.group] = (samples, marks, trail)
        span = (snapshot.taken_at - taken[0]).total_seconds()
        return inputs, f"rates from the lag history in PostgreSQL, last {span:.0f} s"
    except Exception as exc:  # no table yet, a refused query: sample instead
        return None, f"no lag history: {first_line(exc, 120)}"


def _lag_group_text(group: Any, diagnosis: Any) -> None:
    """One group for people: a header, rates and catch-up, why it lags, the partitions."""
    from pipeline.lag.doctor import duration_text, rate_text

    def seconds(value: float | None) -> str:
        return "-" if value is None else duration_text(value)

    total = "-" if group.total_lag is None else group.total_lag
    print(
        f"\ngroup {group.group}  state {group.state}  members {len(group.members)}  "
        f"total lag {total}"
    )
    if group.error:
        print(f"  Kafka did not answer for this group: {group.error}")
    if diagnosis is not None and group.error is None:
        r = diagnosis.rates
        span = f" (last {duration_text(r.seconds)})" if r.seconds else ""
        print(
            f"  consume {rate_text(r.consume)}  produce {rate_text(r.produce)}  "
            f"drain {rate_text(r.drain)}{span}  catch-up: {diagnosis.catchup_text}"
        )
        if diagnosis.findings:
            print("  why it lags:")
            for finding in diagnosis.findings:
                print(f"    - {finding.rule}: {finding.text}")
    print(
        f"  {'PARTITION':>9}  {'COMMITTED':>10}  {'END':>10}  {'LAG':>8}  {'CONSUME':>9}  "
        f"{'PRODUCE':>9}  {'CATCH-UP':<16}  {'LAG TIME':>10}  {'MSG AGE':>10}"
    )
    for p in group.partitions:
        committed = "-" if p.committed is None else p.committed
        lag = "-" if p.lag is None else p.lag
        line = f"  {p.partition:>9}  {committed:>10}  {p.end:>10}  {lag:>8}"
        if diagnosis is not None and diagnosis.partitions:
            d = diagnosis.partition(p.partition)
            line += (
                f"  {rate_text(d.rates.consume):>9}  {rate_text(d.rates.produce):>9}  "
                f"{d.catchup_text:<16}  {seconds(d.lag_seconds):>10}  "
                f"{seconds(d.message_age_seconds):>10}"
            )
        print(line.rstrip())
    if diagnosis is not None and diagnosis.partitions:
        timed = [d for d in diagnosis.partitions if d.lag and d.lag_time_text]
        if timed:
            oldest = max(timed, key=lambda d: d.message_age_seconds or d.lag_seconds or 0.0)
            print(
                f"  lag in time (LAG TIME interpolated from the end offsets, MSG AGE the "
                f"message's own), partition {oldest.partition}: {oldest.lag_time_text}"
            )


def run_alerts(args: argparse.Namespace, settings: Settings) -> Any:
    from pipeline.lag import alerts
    from pipeline.postgres.pool import postgres_pool

    try:
        rule = None
        if args.action == "add":  # checked before PostgreSQL is asked anything
            topic = args.topic or settings.kafka_topic
            rule = alerts.new_rule(args.name, args.group, topic, args.when, args.for_, args.webhook)
        elif args.action == "history" and args.limit < 1:
            raise UsageError(f"{PROG} alerts history: --limit must be at least 1")
        pool = postgres_pool(settings, max_size=1)
        try:
            if not settings.read_only:
                alerts.migrate_alerts(pool)
            store = alerts.AlertStore(pool)
            if rule is not None:
                rule = store.add(rule)
            elif args.action == "delete":
                rule = store.delete(args.name)
            elif args.action == "list":
                return _alerts_list(args, store.rules())
            else:
                return _alerts_history(args, store.events(args.name, limit=args.limit))
        finally:
            pool.close()
    except alerts.AlertRuleInvalid as exc:
        raise UsageError(f"alerts {args.action}: {exc}") from None
    if args.action == "delete":
        if args.json:
            return {"deleted": rule.name}
        print(f"alert {rule.name} deleted")
        return None
    if args.json:
        return rule.to_json()
    print(
        f"alert {rule.name}: {rule.text} on group {rule.group}, topic {rule.topic} -> "
        f"{rule.webhook} (evaluated by the monitor, `{PROG} monitor`)"
    )
    return None


def _alerts_list(args: argparse.Namespace, rules: Sequence[Any]) -> Any:
    if args.json:
        return [r.to_json() for r in rules]
    print(f"{'NAME':<20} {'GROUP':<24} {'TOPIC':<16} {'RULE':<26} {'STATE':<8} WEBHOOK")
    for r in rules:
        since = f" since {r.since:%H:%M:%S}" if r.since else ""
        print(
            f"{r.name:<20} {r.group:<24} {r.topic:<16} {r.text:<26} {r.state + since:<8} "
            f"{r.webhook}"
        )
    if not rules:
        print(f"no alert rules (add one with `{PROG} alerts add`)")
    return None


def _alerts_history(args: argparse.Namespace, events: Sequence[Any]) -> Any:
    if args.json:
        return [e.to_json() for e in events]
    for e in events:
        delivery = e.delivery
        if e.delivery == "delivered":
            delivery += f" ({e.attempts} attempt{'s' if e.attempts != 1 else ''})"
        elif e.attempts:
            delivery += (
                f" after {e.attempts} attempt{'s' if e.attempts != 1 else ''}: {e.last_error}"
            )
            if e.delivery == "retrying":
                delivery += f"; next at {e.next_attempt_at:%H:%M:%S}"
        print(f"{e.at:%Y-%m-%d %H:%M:%S}  {e.alert}  {e.state.upper()}  {e.reason}")
        print(f"    webhook: {delivery}")
    if not events:
        print("no alerts fired yet")
    return None
