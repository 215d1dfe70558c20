"""Stopping and starting a broker for the replication lesson: only on a cluster devstack owns.

devstack (`python -m devstack`) records the processes it started in `.devstack/state.json`; it
stops only those and starts a broker of its own again. The Lab asks devstack through its command
line (`python -m devstack status|down|up kafka-N`, run as a program, never through a shell):
`pipeline` never imports devstack (docs/architecture.md, "Packages and layering"), and devstack
stays the one place that knows its processes. Broker actions are the teacher's alone (the
default namespace), never a learner's.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pipeline.core.settings import Settings
from pipeline.lab.names import LabRefused

__all__ = ["BROKER_ACTIONS", "broker_action", "devstack_brokers"]

BROKER_ACTIONS = ("stop", "start")
_ROOT = Path(__file__).resolve().parents[2]
Runner = Callable[..., subprocess.CompletedProcess]


def _devstack(
    args: list[str], env: Mapping[str, str] | None, run: Runner, timeout: float
) -> subprocess.CompletedProcess:
    return run(
        [sys.executable, "-m", "devstack", *args],
        cwd=_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(env) if env is not None else None,
    )


def devstack_brokers(
    env: Mapping[str, str] | None = None, run: Runner = subprocess.run
) -> list[dict[str, Any]]:
    """devstack's view of its brokers: name, address, answering, managed (started by it)."""
    done = _devstack(["status", "kafka", "--json"], env, run, 60)
    try:
        rows = json.loads(done.stdout or "null")
    except ValueError:
        rows = None
    if not isinstance(rows, list):
        why = (done.stderr or done.stdout).strip().splitlines()
        raise LabRefused(
            "devstack cannot tell which brokers it runs"
            + (f" ({why[-1]})" if why else "")
            + ": broker actions need a cluster started by `python -m devstack up`"
        )
    return [r for r in rows if str(r.get("name", "")).startswith("kafka-")]


def check_broker_action(
    settings: Settings, action: str, node: int, brokers: list[dict[str, Any]], learner: str = ""
) -> str:
    """The devstack service name for the action, or LabRefused saying why not (pure)."""
    if settings.read_only:
        raise LabRefused("read-only mode (TASKSTREAM_READ_ONLY=true): the Lab cannot " + action)
    if learner:
        raise LabRefused("stopping and starting brokers is the teacher's alone (no --learner)")
    if action not in BROKER_ACTIONS:
        raise LabRefused(f"broker action must be stop or start, got {action!r}")
    name = f"kafka-{node}"
    ours = {s.strip() for s in settings.kafka_bootstrap_servers.split(",")}
    owned = [b for b in brokers if b.get("managed") and b.get("address") in ours]
    if not owned:
        raise LabRefused(
            "devstack does not run this cluster (no broker at "
            f"{settings.kafka_bootstrap_servers} was started by `python -m devstack up`): "
            "the Lab stops and starts only brokers devstack owns"
        )
    known = {b["name"]: b for b in brokers}
    if name not in known:
        choices = ", ".join(sorted(n.removeprefix("kafka-") for n in known))
        raise LabRefused(f"no devstack broker {node}: choose one of {choices}")
    broker = known[name]
    if action == "stop":
        if not broker.get("answering"):
            raise LabRefused(f"broker {node} is not running")
        if not broker.get("managed"):
            raise LabRefused(f"broker {node} was not started by devstack: the Lab leaves it alone")
        if sum(1 for b in brokers if b.get("answering")) <= 1:
            raise LabRefused(f"broker {node} is the last one running: the Lab keeps one up")
    elif broker.get("answering"):
        raise LabRefused(f"broker {node} is already running")
    return name


def broker_action(
    settings: Settings, action: str, node: int, *, learner: str = "",
    env: Mapping[str, str] | None = None, run: Runner = subprocess.run,
) -> dict[str, Any]:  # fmt: skip
    """Stop or start devstack's broker `node` (0, 1, 2 for three brokers)."""
    if settings.read_only or learner:  # refused before asking devstack anything
        check_broker_action(settings, action, node, [], learner)
    name = check_broker_action(settings, action, node, devstack_brokers(env, run), learner)
    verb = "down" if action == "stop" else "up"
    done = _devstack([verb, name], env, run, 300)
    if done.returncode != 0:
        why = (done.stderr or done.stdout).strip().splitlines()
        raise RuntimeError(f"devstack {verb} {name} failed: {why[-1] if why else done.returncode}")
    return {"broker": node, "action": action, "devstack": (done.stdout or "").strip()}
