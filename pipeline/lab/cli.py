"""`python -m pipeline lab …`: the Lab's command-line twin (docs/cli.md, "Lab").

The page and these commands call the same functions (`pipeline.lab.control`, `.brokers`).
Importing this module costs only the standard library (`pipeline/cli.py` registers it at start-up);
each command imports what it needs when it runs. A refusal prints one line and exits 2.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipeline.core.settings import Settings

__all__ = ["add_lab_parser", "run_lab"]

_ASSIGNORS = ("range", "roundrobin", "cooperative-sticky", "consumer")
_READS = {
    ("consumer", "list"),
    ("overview", None),
    ("topic", "describe"),
}  # allowed in read-only mode
_CONTROLS = {
    "pause": "pause a consumer (it keeps its partitions)",
    "resume": "resume a paused consumer, or start a stopped or dead one again",
    "stop": "stop a consumer gracefully (it leaves its group at once)",
    "kill": "kill a consumer (SIGKILL: its partitions wait for the session timeout)",
}


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of messages per second: {text!r}") from None
    if value != value or value < 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"a rate of 0 (no limit) or more, not {text}")
    return value


def add_lab_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    """Register `lab` and its subcommands on the top-level subparsers."""
    learner = argparse.ArgumentParser(add_help=False)
    learner.add_argument(
        "--learner",
        default=argparse.SUPPRESS,
        help="the learner's namespace (lab-LEARNER-…); default: lab-…",
    )
    both = [common, learner]
    lab = commands.add_parser(
        "lab", parents=[learner], help="experiments on throw-away lab-* topics, groups, consumers"
    )
    parser_class = type(lab)
    actions = lab.add_subparsers(dest="action", required=True, parser_class=parser_class)

    topic = actions.add_parser("topic", help="lab topics")
    topic_actions = topic.add_subparsers(
        dest="lab_action", required=True, parser_class=parser_class
    )
    create = topic_actions.add_parser("create", parents=both, help="create topic lab-NAME")
    create.add_argument("name")
    create.add_argument("--partitions", type=int, default=3, help="default 3")
    create.add_argument(
        "--replication", type=int, default=None, help="default: 3, or the live brokers if fewer"
    )

    describe = topic_actions.add_parser(
        "describe", parents=both, help="leaders, replicas and in-sync replicas of lab-NAME"
    )
    describe.add_argument("name")

    produce = actions.add_parser("produce", parents=both, help="send N messages to lab-NAME")
    produce.add_argument("name")
    produce.add_argument("--count", type=int, required=True, help="how many messages")
    keys = produce.add_mutually_exclusive_group()
    keys.add_argument("--key", help="one key for every message (murmur2 picks its partition)")
    keys.add_argument(
        "--keys", choices=("random", "none"), default="random", help="random keys or no key"
    )
    produce.add_argument("--rate", type=_rate, default=None, help="messages per second")
    produce.add_argument(
        "--acks-all-no-retries",
        action="store_true",
        dest="acks_all",
        help="acks=all without retries: a broker's refusal (NOT_ENOUGH_REPLICAS) shows as it is",
    )

    share = actions.add_parser("share", help="share consumers (KIP-932 share groups)")
    share_actions = share.add_subparsers(
        dest="lab_action", required=True, parser_class=parser_class
    )
    share_add = share_actions.add_parser(
        "add", parents=both, help="start a share consumer of lab-NAME in share group lab-G"
    )
    share_add.add_argument("name")
    share_add.add_argument("--group", required=True)
    share_add.add_argument(
        "--ack",
        choices=("accept", "release", "reject"),
        default="accept",
        help="accept (default); release each record on its first delivery; reject every record",
    )
    share_add.add_argument(
        "--rate", type=_rate, default=None, help="records processed per second (default: no limit)"
    )

    consumer = actions.add_parser("consumer", help="lab consumers (worker processes)")
    consumer_actions = consumer.add_subparsers(
        dest="lab_action", required=True, parser_class=parser_class
    )
    add = consumer_actions.add_parser(
        "add", parents=both, help="start a consumer of lab-NAME in group lab-G"
    )
    add.add_argument("name")
    add.add_argument("--group", required=True)
    add.add_argument("--assignor", choices=_ASSIGNORS, default="range", help="default range")
    add.add_argument(
        "--rate", type=_rate, default=None, help="messages processed per second (default: no limit)"
    )
    add.add_argument("--commit", choices=("auto", "after"), default="after", help="default after")
    consumer_actions.add_parser("list", parents=both, help="lab consumers and their state")
    for name, text in _CONTROLS.items():
        control = consumer_actions.add_parser(name, parents=both, help=text)
        control.add_argument("id", type=int)
    rate = consumer_actions.add_parser("rate", parents=both, help="change a consumer's rate")
    rate.add_argument("id", type=int)
    rate.add_argument("rate", type=_rate, help="messages per second (0: no limit)")
    run = consumer_actions.add_parser("run", help="the worker itself, in the foreground")
    run.add_argument("id", type=int)

    broker = actions.add_parser("broker", help="stop or start a devstack broker (teacher only)")
    broker_actions = broker.add_subparsers(
        dest="lab_action", required=True, parser_class=parser_class
    )
    for name in ("stop", "start"):
        action = broker_actions.add_parser(name, parents=both, help=f"{name} broker N")
        action.add_argument("node", type=int, metavar="N")

    actions.add_parser(
        "reset",
        parents=both,
        help="a learner's: their consumers, topics and groups; without --learner: every lab-* one",
    )
    actions.add_parser("overview", parents=both, help="every learner's topics, groups, consumers")


def run_lab(args: argparse.Namespace, settings: Settings) -> Any:
    """Run one `lab` command: its JSON result, None after printing text, or an exit code."""
    from pipeline.kafka.admin import UnknownTopic
    from pipeline.lab.names import LabRefused, Namespace

    action = args.action
    sub = getattr(args, "lab_action", None)
    words = " ".join(w for w in ("lab", action, sub) if w)
    try:
        ns = Namespace.of(getattr(args, "learner", None))
        if settings.read_only and (action, sub) not in _READS:
            raise LabRefused("read-only mode (TASKSTREAM_READ_ONLY=true) refuses every Lab change")
        if (action, sub) == ("consumer", "run"):
            import logging

            from pipeline.lab.worker import run_lab_consumer

            logging.getLogger("taskstream.lab").setLevel(logging.INFO)
            return run_lab_consumer(settings, args.id)
        if action == "broker":
            from pipeline.lab.brokers import broker_action

            result = broker_action(settings, sub, args.node, learner=ns.learner)
            return result if args.json else _say(result["devstack"] or f"broker {sub}: done")
        return _with_clients(args, settings, ns, action, sub)
    except (LabRefused, UnknownTopic) as exc:
        print(f"error: {words}: {exc}", file=sys.stderr)
        return 2


def _say(text: str) -> None:
    print(text)


def _with_clients(
    args: argparse.Namespace, settings: Settings, ns: Any, action: str, sub: str | None
) -> Any:
    from pipeline.core import clock
    from pipeline.kafka.clients import check_kafka_access, kafka_admin
    from pipeline.lab import control
    from pipeline.lab.store import open_lab_store

    # A refused password fails here within about a second, not after a request's timeout.
    check_kafka_access(settings, timeout=10.0)
    admin = kafka_admin(settings)
    if action == "produce" and args.acks_all:
        written = control.produce_acks_all(settings, admin, ns, args.name, args.count)
        if args.json:
            return written
        lines = [f"{written['written']} of {written['count']} messages written to "
                 f"{written['topic']} (acks=all, no retries)"]  # fmt: skip
        lines += [f"{e['count']} refused: {e['error']}: {e['text']}" for e in written["errors"]]
        return _say("\n".join(lines))
    if (action, sub) == ("topic", "describe"):
        state = control.replication_state(admin, ns.name(args.name))
        if args.json:
            return state
        lines = [f"live brokers: {', '.join(str(b) for b in state['brokers'])}"]
        lines += [f"p{r['partition']}: leader {r['leader']}, replicas {r['replicas']}, "
                  f"isr {r['isr']}" for r in state["partitions"]]  # fmt: skip
        return _say("\n".join(lines))
    if action == "produce":  # no database needed
        result = control.produce(
            settings, admin, ns, args.name, args.count, key=args.key,
            keys="none" if args.keys == "none" else "random", rate=args.rate,
        )  # fmt: skip
        if args.json:
            return result.to_json()
        spread = ", ".join(f"p{p}: {n}" for p, n in sorted(result.partitions.items()))
        picked = (
            "" if result.key is None else f" (murmur2 of {result.key!r} → p{result.key_partition})"
        )
        return _say(
            f"{result.count} messages to {result.topic} in {result.seconds:.1f} s{picked}: {spread}"
        )
    with open_lab_store(settings) as store:
        now = clock.utcnow()
        if action == "topic":
            found = control.create_topic(
                settings, store, admin, ns, args.name, args.partitions, args.replication
            )
            if args.json:
                return found
            verb = "created" if found["created"] else "exists"
            return _say(f"{found['topic']}: {verb}, {found['partitions']} partitions, "
                        f"replication {found['replication']}")  # fmt: skip
        if action == "reset":
            report = control.reset(settings, store, admin, ns)
            if args.json:
                return report.to_json()
            lines = [
                f"stopped {len(report.consumers)} consumers, deleted {len(report.topics)} topics "
                f"and {len(report.groups)} groups"
            ]
            lines += [f"group {g} left: {why}" for g, why in report.groups_left.items()]
            return _say("\n".join(lines))
        if action == "overview":
            return control.class_overview(store, admin)
        if action == "share":
            row = control.add_share_consumer(
                settings, store, admin, ns, args.name, group=args.group, ack=args.ack,
                rate=args.rate,
            )  # fmt: skip
            if args.json:
                return {"id": row.id, "group": row.group_name, "pid": row.pid,
                        "client_id": row.client_id}  # fmt: skip
            return _say(
                f"share consumer {row.id} ({row.client_id}) in share group {row.group_name}, "
                f"pid {row.pid}"
            )
        if sub == "add":
            row = control.add_consumer(
                settings, store, admin, ns, args.name, group=args.group,
                assignor=args.assignor, rate=args.rate, commit=args.commit,
            )  # fmt: skip
            if args.json:
                return {"id": row.id, "group": row.group_name, "pid": row.pid,
                        "client_id": row.client_id}  # fmt: skip
            return _say(f"consumer {row.id} ({row.client_id}) in {row.group_name}, pid {row.pid}")
        if sub == "list":
            rows = control.list_consumers(store, ns)
            if args.json:
                return [r.to_json(now) for r in rows]
            return _say(_consumer_table([r.to_json(now) for r in rows]))
        if sub == "rate":
            row = control.set_consumer_rate(settings, store, ns, args.id, args.rate or None)
        else:
            steer = {
                "pause": control.pause_consumer,
                "resume": control.resume_consumer,
                "stop": control.stop_consumer,
                "kill": control.kill_consumer,
            }[sub]
            row = steer(settings, store, ns, args.id)
        shown = row.to_json(clock.utcnow())
        return shown if args.json else _say(f"consumer {row.id}: {sub} → {shown['state']}")


def _consumer_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no lab consumers"
    lines = [f"{'ID':>4}  {'STATE':<8}  {'GROUP':<28}  {'TOPIC':<28}  {'PARTITIONS':<14}  "
             f"{'PROCESSED':>9}  {'AGAIN':>5}  {'RATE':>6}  PID"]  # fmt: skip
    for r in rows:
        parts = ",".join(str(p) for p in r["partitions"]) or "-"
        rate = "max" if r["rate"] is None else f"{r['rate']:g}"
        lines.append(
            f"{r['id']:>4}  {r['state']:<8}  {r['group']:<28}  {r['topic']:<28}  {parts:<14}  "
            f"{r['processed']:>9}  {r['redelivered']:>5}  {rate:>6}  {r['pid'] or '-'}"
        )
    return "\n".join(lines)
