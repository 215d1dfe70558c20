"""`python -m devstack up|down|status|env|logs|kafka`: real Kafka, Elasticsearch and PostgreSQL."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

from devstack.config import load_config
from devstack.processes import DevstackError
from devstack.services import Kafka
from devstack.stack import ServiceStatus, down, quorum_report, status, up

KAFKA_TOOLS = {
    "kafka-consumer-groups": "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
    "kafka-topics": "org.apache.kafka.tools.TopicCommand",
    "kafka-console-consumer": "org.apache.kafka.tools.consumer.ConsoleConsumer",
    "kafka-console-producer": "org.apache.kafka.tools.ConsoleProducer",
    "kafka-get-offsets": "org.apache.kafka.tools.GetOffsetShell",
    "kafka-configs": "org.apache.kafka.tools.ConfigCommand",
    "kafka-acls": "org.apache.kafka.tools.AclCommand",
    "kafka-metadata-quorum": "org.apache.kafka.tools.MetadataQuorumCommand",
    "kafka-producer-perf-test": "org.apache.kafka.tools.ProducerPerformance",
    "kafka-consumer-perf-test": "org.apache.kafka.tools.ConsumerPerformance",
}


SERVICES_HELP = (
    "elasticsearch, kafka (every broker), kafka-0, kafka-1, … (one broker), postgres (default: all)"
)


def _print_table(rows: list[ServiceStatus]) -> None:
    header = ("service", "version", "address", "answers", "pid", "state", "detail")
    table = [header] + [
        (r.name, r.version, r.address, "yes" if r.answering else "no",
         str(r.pid) if r.pid else "-", r.action, r.detail)
        for r in rows
    ]  # fmt: skip
    widths = [max(len(row[i]) for row in table) for i in range(len(header) - 1)]
    for row in table:
        print(
            "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)) + "  " + row[-1]
        )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m devstack",
        description="Run real Apache Kafka (KRaft), Elasticsearch and PostgreSQL on loopback.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (("up", "start (or reuse) the services and wait until they answer"),
                       ("status", "show each service, its address, pid and health")):  # fmt: skip
        p = sub.add_parser(name, help=text, description=text)
        p.add_argument("services", nargs="*", help=SERVICES_HELP)
        p.add_argument("--json", action="store_true", help="print JSON only")
    p = sub.add_parser("down", help="stop the services devstack started (others are left alone)")
    p.add_argument("services", nargs="*", help=SERVICES_HELP)
    p.add_argument("--wipe", action="store_true", help="also delete their data under .devstack/")
    sub.add_parser("env", help="print the settings as export lines (secrets masked)")
    p = sub.add_parser("logs", help="show a service's log")
    p.add_argument("service", help="kafka-0, kafka-1, …, elasticsearch or postgres")
    p.add_argument("-n", "--lines", type=int, default=50, help="how many lines (default 50)")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    p = sub.add_parser(
        "kafka",
        help="run one of Kafka's own CLI tools against the local broker",
        description="Tools: "
        + ", ".join(KAFKA_TOOLS)
        + ". --bootstrap-server is added when not given.",
    )
    p.add_argument("tool", choices=sorted(KAFKA_TOOLS))
    p.add_argument("args", nargs=argparse.REMAINDER, help="the tool's own arguments")
    return parser


def _logs(path: Path, lines: int, follow: bool) -> None:
    if not path.is_file():
        raise DevstackError(f"no log at {path} yet: the service was not started by devstack")
    with open(path, errors="replace") as f:
        for line in f.readlines()[-lines:]:
            print(line, end="")
        while follow:
            line = f.readline()
            if line:
                print(line, end="", flush=True)
            else:
                time.sleep(0.5)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = load_config()
        if args.command == "up":
            started = time.monotonic()
            rows = up(config, args.services)
            if args.json:
                print(json.dumps([r.as_dict() for r in rows], indent=2))
            else:
                _print_table(rows)
                print(
                    f"ready in {time.monotonic() - started:.1f} s; data and logs in {config.state_dir}"
                )
        elif args.command == "status":
            rows = status(config, args.services)
            brokers = [r for r in rows if r.name.startswith("kafka-")]
            quorum = quorum_report(config) if brokers else None
            if args.json:
                print(json.dumps([r.as_dict() for r in rows], indent=2))
            else:
                _print_table(rows)
                if quorum is not None:
                    print(quorum)
            return 0 if all(r.answering for r in rows) else 1
        elif args.command == "down":
            for line in down(config, args.services, wipe=args.wipe):
                print(line)
        elif args.command == "env":
            for name, value in config.settings.display().items():
                print(f"export {name}={shlex.quote(value)}")
        elif args.command == "logs":
            service = "kafka-0" if args.service == "kafka" else args.service
            _logs(config.state_dir / "logs" / f"{service}.log", args.lines, args.follow)
        elif args.command == "kafka":
            tool_args = [a for a in args.args if a != "--"]
            if "--bootstrap-server" not in tool_args:
                tool_args = [
                    "--bootstrap-server",
                    config.settings.kafka_bootstrap_servers,
                    *tool_args,
                ]
            argv_java = Kafka(config, 0).java_command(KAFKA_TOOLS[args.tool], *tool_args)
            sys.stdout.flush()
            os.execv(argv_java[0], argv_java)
    except DevstackError as exc:
        print(f"devstack: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
