"""`python -m pipeline …`: tasks, seed, relay, indexer, search (docs/architecture.md, "The command line").

Invalid arguments or a refused request: one line on stderr, exit code 2, no traceback. A service
that does not answer: one line naming it, exit code 1. With --json, stdout holds only JSON.

It starts at once: this module imports only the standard library, and each command imports what
it needs when it runs, so `--help` or a mistyped option never loads the settings, a
driver or the domain (tests/unit/test_cli_imports.py keeps it so).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from pipeline.core.usage import PROG, UsageError

if TYPE_CHECKING:
    from pipeline.core.settings import Settings

__all__ = ["main"]

_UNSET: Any = object()


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error and exit code 2 (no usage dump)."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message} (see --help)")


def _json_flag() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    # SUPPRESS keeps a leaf's default from hiding a --json given before the command.
    parent.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="print only JSON on stdout"
    )
    return parent


def _optional_time(text: str) -> str | None:
    """'' or 'none' clears a date; anything else is validated by the domain."""
    return None if text.strip().lower() in {"", "none", "null"} else text


def _lag_window(text: str) -> float:
    """`lag --window`: seconds, 0 or more."""
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 <= seconds <= 600:
        raise argparse.ArgumentTypeError(f"from 0 to 600 seconds, not {text}")
    return seconds


def _parser() -> argparse.ArgumentParser:
    common = _json_flag()
    parser = _Parser(
        prog=PROG, description="taskstream: tasks through the outbox, Kafka and Elasticsearch."
    )
    parser.add_argument("--json", action="store_true", help="print only JSON on stdout")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more (to stderr)")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    tasks = commands.add_parser("tasks", help="create, change, read and list tasks")
    actions = tasks.add_subparsers(dest="action", required=True, parser_class=_Parser)
    create = actions.add_parser("create", parents=[common], help="create a task")
    create.add_argument("--description", required=True, help="what to do (1-1000 characters)")
    create.add_argument("--priority", default="none", help="none, low, medium or high")
    create.add_argument(
        "--start", type=_optional_time, help="RFC 3339 time, e.g. 2026-12-01T09:00:00Z"
    )
    create.add_argument("--due", type=_optional_time, help="RFC 3339 time, not before --start")
    update = actions.add_parser("update", parents=[common], help="change some fields of a task")
    update.add_argument("id")
    update.add_argument("--description")
    update.add_argument("--priority")
    update.add_argument(
        "--start", type=_optional_time, default=_UNSET, help="a time, or none to clear it"
    )
    update.add_argument(
        "--due", type=_optional_time, default=_UNSET, help="a time, or none to clear it"
    )
    done = update.add_mutually_exclusive_group()
    done.add_argument("--done", dest="is_done", action="store_const", const=True)
    done.add_argument("--not-done", dest="is_done", action="store_const", const=False)
    for name, text in (("get", "show a task"), ("delete", "delete a task")):
        action = actions.add_parser(name, parents=[common], help=text)
        action.add_argument("id")
    listing = actions.add_parser("list", parents=[common], help="list tasks, newest first")
    listing.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")

    seed = commands.add_parser("seed", parents=[common], help="create N realistic tasks")
    seed.add_argument("--count", type=int, required=True, help="how many tasks")
    seed.add_argument(
        "--batch", type=int, default=1000, help="tasks per transaction (default 1000)"
    )
    seed.add_argument("--seed", type=int, default=None, help="random seed, for repeatable data")

    commands.add_parser("relay", help="publish the outbox to Kafka until SIGINT/SIGTERM")
    commands.add_parser("indexer", help="index the topic into Elasticsearch until SIGINT/SIGTERM")

    lag = commands.add_parser(
        "lag",
        parents=[common],
        help="consumer groups' lag on the topic, per partition: rates, catch-up and why it lags",
    )
    lag.add_argument("--group", action="append", dest="groups", help="only this group (repeatable)")
    lag.add_argument(
        "--window",
        type=_lag_window,
        default=5.0,
        help="without a recent lag history, seconds between the two snapshots the rates are "
        "measured on (default 5; 0: no rates)",
    )
    lag.add_argument(
        "--no-history",
        action="store_true",
        help="do not read the lag history in PostgreSQL; measure the rates over --window",
    )
    lag.add_argument(
        "--message-age",
        action="store_true",
        help="also read the message at each lagging partition's committed offset from Kafka, "
        "for its exact age beside the interpolated lag in seconds",
    )

    search = commands.add_parser("search", parents=[common], help="full-text search of tasks")
    search.add_argument("text")
    search.add_argument("--index", help="index to search (default: the live index)")
    search.add_argument("--priority", help="only this priority")
    state = search.add_mutually_exclusive_group()
    state.add_argument("--done", dest="is_done", action="store_const", const=True)
    state.add_argument("--not-done", dest="is_done", action="store_const", const=False)
    search.add_argument("--limit", type=int, default=20)
    _replay_parser(commands, common)
    _offsets_parser(commands, common)
    _topic_parser(commands, common)
    _monitor_parser(commands, common)
    _dlq_parser(commands, common)
    __import__("pipeline.lab.cli").lab.cli.add_lab_parser(commands, common)  # standard library only
    return parser


def _letters_per_second(text: str) -> float:
    """`dlq redrive --rate`: letters per second, above 0."""
    try:
        rate = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of letters per second: {text!r}") from None
    if not 0 < rate < float("inf"):
        raise argparse.ArgumentTypeError(f"must be above 0, not {text}")
    return rate


def _dlq_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    dlq = commands.add_parser("dlq", help="the dead letters, and sending them back once fixed")
    actions = dlq.add_subparsers(dest="action", required=True, parser_class=_Parser)
    listing = actions.add_parser(
        "list", parents=[common], help="the dead letters, each with whether it was redriven"
    )
    redrive = actions.add_parser(
        "redrive",
        parents=[common],
        help="send the chosen dead letters back to their source topic (never one twice), "
        "after a preview",
    )
    for action in (listing, redrive):
        action.add_argument(
            "--error-contains", metavar="TEXT", help="only letters whose error contains TEXT"
        )
        action.add_argument(
            "--since",
            metavar="TIME",
            help="only letters dead-lettered at or after TIME (ISO time, or an age: 30m, 2h, 7d)",
        )
    redrive.add_argument(
        "--rate",
        type=_letters_per_second,
        metavar="N",
        help="at most N letters per second (default: no limit)",
    )
    redrive.add_argument("--dry-run", action="store_true", help="only show the preview")
    redrive.add_argument("--yes", action="store_true", help="do not ask for confirmation")


def _monitor_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    monitor = commands.add_parser(
        "monitor",
        help="sample every group's lag into the history, evaluate alert rules and serve "
        "Prometheus metrics on METRICS_ADDRESS:METRICS_PORT until SIGINT/SIGTERM",
    )
    monitor.add_argument(
        "--interval", type=float, default=5.0, help="seconds between samples (default 5)"
    )
    monitor.add_argument(
        "--cluster-name",
        help="the cluster_name label of the metrics (default: Kafka's cluster id)",
    )
    alerts = commands.add_parser(
        "alerts", help="alert rules on a group's lag, sent to a webhook by the monitor"
    )
    actions = alerts.add_subparsers(dest="action", required=True, parser_class=_Parser)
    add = actions.add_parser("add", parents=[common], help="add an alert rule")
    add.add_argument("name", help="the alert's name (letters, digits, '.', '_', '-')")
    add.add_argument("--group", required=True, help="the consumer group to watch")
    add.add_argument(
        "--when",
        required=True,
        help="the condition: 'status != OK', 'lag_seconds > 60' or 'lag > 1000'",
    )
    add.add_argument(
        "--for",
        dest="for_",
        default="0s",
        help="how long the condition must hold before the alert fires (default 0s; 60s, 5m, …)",
    )
    add.add_argument("--webhook", required=True, help="http(s) URL the alert is POSTed to")
    add.add_argument("--topic", help="the topic the group reads (default: KAFKA_TOPIC)")
    actions.add_parser("list", parents=[common], help="alert rules and their state")
    delete = actions.add_parser("delete", parents=[common], help="delete an alert rule")
    delete.add_argument("name")
    history = actions.add_parser(
        "history",
        parents=[common],
        help="alerts fired and resolved, newest first, with their webhook deliveries",
    )
    history.add_argument("name", nargs="?", help="only this alert")
    history.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")


def _topic_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    topic = commands.add_parser("topic", help="a topic's partitions, brokers and controller")
    actions = topic.add_subparsers(dest="action", required=True, parser_class=_Parser)
    describe = actions.add_parser(
        "describe",
        parents=[common],
        help="each partition's leader, replicas, in-sync replicas and watermarks; the live "
        "brokers and the active controller (like kafka-topics --describe)",
    )
    describe.add_argument("--topic", help="the topic (default: KAFKA_TOPIC)")


def _offsets_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    offsets = commands.add_parser("offsets", help="a consumer group's committed offsets")
    actions = offsets.add_subparsers(dest="action", required=True, parser_class=_Parser)
    reset = actions.add_parser(
        "reset",
        parents=[common],
        help="reset a group's offsets on the topic (a preview by default)",
    )
    reset.add_argument("group", help="the consumer group")
    reset.add_argument(
        "--to",
        required=True,
        dest="to",
        help="earliest, latest, an ISO time, PARTITION:OFFSET,… or shift:±N",
    )
    reset.add_argument(
        "--execute", action="store_true", help="apply it (the group must have no active members)"
    )


def _offsets(args: argparse.Namespace, settings: Settings) -> Any:
    from pipeline.kafka import offsets
    from pipeline.kafka.clients import kafka_admin
    from pipeline.service.tasks import ReadOnlyError

    if args.execute and settings.read_only:
        raise ReadOnlyError("offsets reset --execute")
    try:
        spec = offsets.parse_reset_spec(args.to)
        admin = kafka_admin(settings)
        plan = offsets.plan_reset(admin, settings.kafka_topic, args.group, spec)
        if args.execute:
            offsets.execute_reset(admin, plan)
    except offsets.OffsetResetRefused as exc:
        raise UsageError(f"offsets reset: {exc}") from None
    if args.json:
        return {**plan.to_json(), "executed": bool(args.execute)}
    print(f"group {plan.group}  topic {plan.topic}  --to {plan.spec}")
    print(
        f"  {'PARTITION':>9}  {'CURRENT':>10}  {'NEW':>10}  {'LAG BEFORE':>10}  {'LAG AFTER':>10}"
    )
    for r in plan.rows:
        current = "-" if r.current is None else r.current
        before = "-" if r.lag_before is None else r.lag_before
        print(f"  {r.partition:>9}  {current:>10}  {r.new:>10}  {before:>10}  {r.lag_after:>10}")
    if args.execute:
        print(f"applied: {len(plan.rows)} partition(s) reset")
    else:
        print("preview only: add --execute to apply (the group must have no active members)")
    return None


def _topic(args: argparse.Namespace, settings: Settings) -> Any:
    from pipeline.kafka.clients import kafka_admin
    from pipeline.kafka.quorum import QuorumUnavailable, describe_quorum
    from pipeline.kafka.topics import topic_overview

    name = args.topic or settings.kafka_topic
    overview = topic_overview(kafka_admin(settings), name, timeout=10.0)
    quorum, quorum_error = None, None
    try:
        quorum = describe_quorum(settings, timeout=5.0)
    except QuorumUnavailable as exc:
        quorum_error = str(exc)
    # The active controller is the quorum's leader; the metadata's controller id is only a
    # broker that forwards to it, so it stands in only when the quorum cannot be read.
    controller = quorum.leader_id if quorum is not None else overview.controller
    if args.json:
        result = {
            "topic": overview.topic,
            "brokers": [{"id": b.id, "host": b.host, "port": b.port} for b in overview.brokers],
            "controller": controller,
            "partitions": [
                {
                    "partition": p.partition,
                    "leader": p.leader,
                    "replicas": p.replicas,
                    "isr": p.isr,
                    # null: an offline partition has no leader to tell its watermarks
                    "low": p.low if p.watermarks_known else None,
                    "high": p.high if p.watermarks_known else None,
                }
                for p in overview.partitions
            ],
            "quorum": None if quorum is None else quorum.to_json(),
        }
        if quorum_error is not None:
            result["quorum_error"] = quorum_error
        return result
    print(_topic_text(overview, quorum, quorum_error))
    return None


def _topic_text(overview: Any, quorum: Any = None, quorum_error: str | None = None) -> str:
    """`topic describe` for people: the topic, its brokers and controller, then a table like
    `kafka-topics --describe` with offline and under-replicated partitions marked."""
    parts = overview.partitions
    factor = max((len(p.replicas) for p in parts), default=0)
    lines = [
        f"topic {overview.topic}: {len(parts)} partition(s), replication factor {factor}, "
        f"{overview.messages} message(s)"
    ]
    live = {b.id for b in overview.brokers}
    brokers = ", ".join(f"{b.id} at {b.host}:{b.port}" for b in overview.brokers) or "none"
    lines.append(f"brokers: {brokers}")
    down = sorted({r for p in parts for r in p.replicas} - live)
    if down:
        lines.append(
            f"not answering: {', '.join(map(str, down))} (named as replicas, missing from the "
            "metadata)"
        )
    if quorum is not None and quorum.leader_id is not None:
        controller = f"{quorum.leader_id} (the KRaft quorum's leader, epoch {quorum.leader_epoch})"
    elif quorum is not None:
        controller = "none (the KRaft quorum has no leader: an election is under way)"
    else:
        said = "none" if overview.controller is None else str(overview.controller)
        controller = (
            f"{said} (as the metadata says; the quorum could not be read: "
            f"{quorum_error or 'no answer'})"
        )
    lines.append(f"controller: {controller}")
    lines.append("")

    def ids(values: list[int]) -> str:
        return ",".join(map(str, values)) or "-"

    header = ("PARTITION", "LEADER", "REPLICAS", "ISR", "LOW", "HIGH")
    rows = [
        (
            str(p.partition),
            "none" if p.leader is None else str(p.leader),
            ids(p.replicas),
            ids(p.isr),
            str(p.low) if p.watermarks_known else "-",
            str(p.high) if p.watermarks_known else "-",
        )
        for p in parts
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    right = {0, 4, 5}  # numbers line up on the right

    def line(cells: tuple[str, ...], mark: str = "") -> str:
        shown = [
            cell.rjust(width) if i in right else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(["", *shown, mark]).rstrip()

    lines.append(line(header))
    lines.extend(line(row, _partition_mark(p)) for row, p in zip(rows, parts, strict=True))
    offline, under = len(overview.offline), len(overview.under_replicated)
    lines.append("")
    if offline or under:
        lines.append(
            f"{offline} partition(s) offline, {under} under-replicated "
            "(fewer replicas in sync than assigned)"
        )
    else:
        lines.append("every partition has a leader and all its replicas in sync")
    return "\n".join(lines)


def _partition_mark(p: Any) -> str:
    if p.offline:
        return "OFFLINE: no leader"
    if p.under_replicated:
        return f"UNDER-REPLICATED: {','.join(map(str, p.missing_replicas))} not in sync"
    return ""


def _replay_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    replay = commands.add_parser(
        "replay", help="re-index the topic into scratch-NAME as group replay-NAME, at a speed"
    )
    actions = replay.add_subparsers(dest="action", required=True, parser_class=_Parser)
    start = actions.add_parser("start", parents=[common], help="start a replay worker")
    start.add_argument("name", help="group replay-NAME, index scratch-NAME")
    start.add_argument(
        "--from",
        dest="start",
        default="earliest",
        help="earliest (default), latest, an ISO time, or PARTITION:OFFSET,… (others skipped)",
    )
    start.add_argument(
        "--until",
        default="end",
        help="end (the end offsets now), an ISO time, or follow (keep reading new events)",
    )
    start.add_argument(
        "--speed", default="100", help="events/s (default 100), Nx the original pace, or max"
    )
    start.add_argument(
        "--type",
        dest="types",
        metavar="T[,T]",
        help="index only these event types (created, updated, deleted); the rest is skipped",
    )
    start.add_argument(
        "--key", dest="keys", metavar="K[,K]", help="index only the events of these task ids"
    )
    start.add_argument(
        "--partition", dest="partitions", metavar="P[,P]", help="index only these partitions"
    )
    start.add_argument(
        "--mapping",
        metavar="FILE",
        help='create scratch-NAME with this JSON {"mappings": …, "settings": …}',
    )
    start.add_argument(
        "--workers",
        default="1",
        metavar="N",
        help="worker processes sharing the replay's group and speed (default 1, at most 8)",
    )
    actions.add_parser("list", parents=[common], help="replays with state and progress")
    for name, text in (
        ("pause", "pause a replay"),
        ("resume", "resume a replay (restarts a dead or stopped worker)"),
        ("stop", "stop a replay; its group and index stay"),
        ("run", "run a worker in the foreground (one more worker if the replay has some)"),
    ):
        action = actions.add_parser(name, parents=[common], help=text)
        action.add_argument("name")
    compare = actions.add_parser(
        "compare", parents=[common], help="compare scratch-NAME with the live index"
    )
    compare.add_argument("name")
    promote = actions.add_parser(
        "promote",
        parents=[common],
        help="point the live index alias at scratch-NAME (an unfiltered, following replay)",
    )
    promote.add_argument("name")
    promote.add_argument(
        "--max-lag",
        type=int,
        default=100,
        help="events the replay may be behind the live group (default 100)",
    )
    rollback = actions.add_parser(
        "rollback", parents=[common], help="point the live alias back at the index NAME replaced"
    )
    rollback.add_argument("name")
    rate = actions.add_parser("rate", parents=[common], help="change a replay's speed")
    rate.add_argument("name")
    rate.add_argument("speed", help="events/s, Nx the original pace, or max")
    delete = actions.add_parser(
        "delete", parents=[common], help="stop a replay and delete its row and consumer group"
    )
    delete.add_argument("name")
    delete.add_argument("--drop-index", action="store_true", help="also delete scratch-NAME")


def _print_tasks(tasks: Sequence[Any]) -> None:
    for task in tasks:
        mark = "x" if task.is_done else " "
        due = f"  due {task.dates.due:%Y-%m-%d %H:%M}" if task.dates.due else ""
        print(f"[{mark}] {task.id}  {task.priority.value:<6}  {task.description}{due}")


def _change_line(verb: str, change: Any) -> str:
    event = change.event
    return (
        f"{verb} task {change.task.id}: event {event.type} (key {event.key}) will go to "
        f"partition {event.partition} once the relay publishes it"
    )


def _tasks(args: argparse.Namespace, settings: Settings) -> Any:
    from pipeline.bootstrap import open_task_service
    from pipeline.core.domain import task_to_dict

    with open_task_service(settings) as service:
        if args.action == "create":
            change = service.create(args.description, args.priority, args.start, args.due)
            return _change_result(args, "created", change)
        if args.action == "update":
            changes = {
                name: getattr(args, name)
                for name in ("description", "priority", "is_done")
                if getattr(args, name) is not None
            }
            # A date given as "none" clears it (None), so only an absent option leaves it alone.
            changes.update(
                {
                    name: getattr(args, name)
                    for name in ("start", "due")
                    if getattr(args, name) is not _UNSET
                }
            )
            return _change_result(args, "updated", service.update(args.id, **changes))
        if args.action == "delete":
            return _change_result(args, "deleted", service.delete(args.id))
        if args.action == "get":
            task = service.get(args.id)
            if args.json:
                return task_to_dict(task)
            _print_tasks([task])
            return None
        page = service.list(limit=args.limit)
        if args.json:
            return [task_to_dict(t) for t in page.tasks]
        _print_tasks(page.tasks)
        print(f"{len(page.tasks)} of {page.total} task(s)", file=sys.stderr)
        return None


def _change_result(args: argparse.Namespace, verb: str, change: Any) -> Any:
    if args.json:
        from pipeline.core.domain import task_to_dict

        return task_to_dict(change.task)
    print(_change_line(verb, change))
    return None


def _seed(args: argparse.Namespace, settings: Settings) -> Any:
    from tqdm import tqdm

    from pipeline.bootstrap import open_task_service
    from pipeline.core.seed import generate_tasks

    if args.count < 1 or args.batch < 1:
        raise UsageError(f"{PROG} seed: --count and --batch must be at least 1")
    created = 0
    tasks = generate_tasks(args.count, seed=args.seed)
    with (
        open_task_service(settings) as service,
        tqdm(
            total=args.count,
            unit="task",
            file=sys.stderr,
            disable=args.json and not sys.stderr.isatty(),
        ) as bar,
    ):
        while created < args.count:
            batch = [next(tasks) for _ in range(min(args.batch, args.count - created))]
            service.create_many(batch)
            created += len(batch)
            bar.update(len(batch))
    if args.json:
        return {"created": created}
    print(
        f"created {created} task(s); the relay publishes their events to '{settings.kafka_topic}'"
    )
    return None


def _relay(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.workers.relay import run_relay

    return run_relay(settings)


def _indexer(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.workers.indexer import run_indexer

    return run_indexer(settings)


def _search(args: argparse.Namespace, settings: Settings) -> Any:
    from pipeline.bootstrap import open_task_service
    from pipeline.core.domain import task_to_dict

    with open_task_service(settings) as service:
        result = service.search(
            args.text,
            index=args.index,
            priority=args.priority,
            is_done=args.is_done,
            limit=args.limit,
        )
    tasks = list(result.tasks)
    if args.json:
        return {"total": result.total, "tasks": [task_to_dict(t) for t in tasks]}
    _print_tasks(tasks)
    print(f"{len(tasks)} of {result.total} match(es)", file=sys.stderr)
    return None


def _monitor(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.workers.monitor import MonitorPortInUse, run_monitor

    if args.interval <= 0:
        raise UsageError(f"{PROG} monitor: --interval must be more than 0")
    try:
        return run_monitor(settings, interval=args.interval, cluster_name=args.cluster_name)
    except MonitorPortInUse as exc:
        raise UsageError(f"monitor: {exc}") from None


def _dlq(args: argparse.Namespace, settings: Settings) -> Any:
    from pipeline.kafka.redrive_rules import RedriveInvalid
    from pipeline.redrive_cli import run_dlq

    try:
        return run_dlq(args, settings)
    except RedriveInvalid as exc:
        raise UsageError(f"dlq {args.action}: {exc}") from None


COMMANDS: dict[str, Callable[[argparse.Namespace, Settings], Any]] = {
    "lag": lambda args, settings: __import__("pipeline.lag.cli").lag.cli.run_lag(args, settings),
    "tasks": _tasks,
    "seed": _seed,
    "relay": _relay,
    "indexer": _indexer,
    "search": _search,
    "replay": lambda args, settings: __import__("pipeline.replay.cli").replay.cli.run_replay(
        args, settings
    ),
    "offsets": _offsets,
    "topic": _topic,
    "monitor": _monitor,
    "alerts": lambda args, settings: __import__("pipeline.lag.cli").lag.cli.run_alerts(
        args, settings
    ),
    "dlq": _dlq,
    "lab": lambda args, settings: __import__("pipeline.lab.cli").lab.cli.run_lab(args, settings),
}
LONG_RUNNING = {"relay", "indexer", "monitor", ("replay", "run")}
# Commands that talk to Kafka: its credentials are checked first, so a refused password is one
# clear line within a second rather than a timeout (`check_kafka_access`).
# (`lag` checks them itself, on the client it then reads with: `kafka.clients.checked_admin`.)
USES_KAFKA = {"offsets", "relay", "indexer", "monitor", "dlq", ("topic", "describe")} | {
    ("replay", action) for action in ("start", "delete", "run")
}
# Commands that change something: refused in read-only mode.
WRITES = {
    ("tasks", "create"),
    ("tasks", "update"),
    ("tasks", "delete"),
    ("seed", None),
    ("relay", None),
    ("indexer", None),
} | {("replay", action) for action in ("start", "pause", "resume", "stop", "rate", "delete", "run")}
WRITES |= {("alerts", "add"), ("alerts", "delete")}


def _refusal(exc: Exception) -> bool:
    """A refused request (exit code 2): the classes are imported only now, on the error path."""
    from pipeline.core.domain import ValidationError
    from pipeline.kafka.admin import UnknownTopic
    from pipeline.service.tasks import NotFound, ReadOnlyError

    return isinstance(exc, ValidationError | NotFound | ReadOnlyError | UnknownTopic)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit code."""
    settings: Settings | None = None
    try:
        args = _parser().parse_args(argv)
        import logging

        from pipeline.core.settings import load_settings

        # Workers log their progress; one-shot commands only warnings, so stderr stays one line.
        running = (
            args.command in LONG_RUNNING
            or (args.command, getattr(args, "action", None)) in LONG_RUNNING
        )
        quiet = logging.INFO if running else logging.WARNING
        logging.basicConfig(
            level=logging.DEBUG if args.verbose else quiet,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
            stream=sys.stderr,
        )
        if not args.verbose:
            # One INFO line per HTTP request (a bulk per batch) would drown the progress lines.
            logging.getLogger("elastic_transport.transport").setLevel(logging.WARNING)
        if not running:
            # The pool logs every failed connection attempt, librdkafka every broker it cannot
            # reach (one of three down, say): the answer or the one-line error says it all.
            logging.getLogger("psycopg.pool").setLevel(logging.CRITICAL)
            logging.getLogger("taskstream.kafka").setLevel(logging.CRITICAL)
        settings = load_settings()
        if settings.read_only and (args.command, getattr(args, "action", None)) in WRITES:
            from pipeline.service.tasks import ReadOnlyError

            raise ReadOnlyError(f"{args.command} {getattr(args, 'action', '') or ''}".strip())
        action = (args.command, getattr(args, "action", None))
        if args.command in USES_KAFKA or action in USES_KAFKA:
            _check_kafka(settings, wait_for_it=not running)
        result = COMMANDS[args.command](args, settings)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a service that does not answer, said in one line
        if _refusal(exc):
            print(f"error: {exc}", file=sys.stderr)
            return 2
        text = _describe(exc, read_only=settings is not None and settings.read_only)
        if settings is not None:  # never echo a configured secret back
            text = settings.redact_secrets(text)
        print(f"error: {text}", file=sys.stderr)
        return 1
    if isinstance(result, int) and not isinstance(result, bool):
        return result
    if result is not None:
        from pipeline.core.events import dumps

        sys.stdout.write(dumps(result, indent=True).decode() + "\n")
    return 0


def _check_kafka(settings: Settings, *, wait_for_it: bool) -> None:
    """Refused Kafka credentials raise KafkaAuthenticationError within about a second.

    One-shot commands also fail here when Kafka does not answer; workers go on and ride out the
    outage as they would mid-run.
    """
    from confluent_kafka import KafkaException

    from pipeline.kafka.clients import check_kafka_access

    try:
        check_kafka_access(settings, timeout=10.0 if wait_for_it else 5.0)
    except KafkaException:
        if wait_for_it:
            raise


def _describe(exc: Exception, *, read_only: bool = False) -> str:
    """One line: the service that failed and the first line of why, with what to check."""
    from pipeline.core.failures import POSTGRESQL, failing_service, first_line
    from pipeline.kafka.admin import TopicNotAuthorized
    from pipeline.kafka.clients import KafkaAuthenticationError
    from pipeline.postgres.store import NOT_MIGRATED_READ_ONLY, is_missing_table

    text = first_line(exc)
    if isinstance(exc, KafkaAuthenticationError | TopicNotAuthorized):
        return text
    if read_only and is_missing_table(exc):
        return f"{POSTGRESQL}: {NOT_MIGRATED_READ_ONLY} ({text})"
    service = failing_service(exc)
    if service is not None:
        return f"{service}: {text} (is it running? `python -m devstack up`)"
    return f"{type(exc).__name__}: {text}"
