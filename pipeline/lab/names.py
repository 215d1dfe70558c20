"""The Lab's pure guards: namespaces, names, caps and the consumer options (no I/O).

Every lab topic and group is `lab-<learner>-<name>` for a learner, `lab-<name>` in the default
namespace (the CLI's without `--learner`); nothing outside `lab-*` is ever created, changed or
deleted by the Lab. A refused request raises `LabRefused` with one line saying what to fix.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ASSIGNORS",
    "COMMIT_MODES",
    "KEY_MODES",
    "LAB_PREFIX",
    "MAX_PARTITIONS",
    "SHARE_ACKS",
    "LabRefused",
    "Namespace",
    "check_cap",
    "check_choice",
    "check_count",
    "check_partitions",
    "check_rate",
    "check_replication",
    "consumer_overrides",
    "learner_name",
    "require_lab_name",
]

LAB_PREFIX = "lab-"
MAX_PARTITIONS = 32  # a lesson needs a handful; more only costs the brokers
ASSIGNORS = ("range", "roundrobin", "cooperative-sticky", "consumer")
COMMIT_MODES = ("auto", "after")
KEY_MODES = ("random", "none")
SHARE_ACKS = ("accept", "release", "reject")  # how a share consumer acknowledges (KIP-932)
_LEARNER = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,14}[a-z0-9])?")
_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")


class LabRefused(ValueError):
    """A Lab request that cannot be done; the message says why and what to do instead."""


def learner_name(text: str | None) -> str:
    """A learner's validated short name ('' for the default namespace)."""
    if text is None or text.strip() == "":
        return ""
    name = text.strip()
    if not _LEARNER.fullmatch(name):
        raise LabRefused(
            f"learner name {name!r} is not valid: use 1-16 lowercase letters, digits or dashes "
            "(not at either end), e.g. 'ada' or 'team-3'"
        )
    return name


@dataclass(frozen=True)
class Namespace:
    """Where one learner's topics and groups live: `lab-<learner>-…`, or `lab-…` by default."""

    learner: str = ""

    @classmethod
    def of(cls, learner: str | None) -> Namespace:
        return cls(learner_name(learner))

    @property
    def prefix(self) -> str:
        return f"{LAB_PREFIX}{self.learner}-" if self.learner else LAB_PREFIX

    @property
    def label(self) -> str:
        """How people see the namespace: the learner's name, or 'default'."""
        return self.learner or "default"

    def name(self, text: str, what: str = "topic") -> str:
        """The full Kafka name for a learner's short name (a name already in the namespace is
        taken as it is, so `lab-x` and `x` are the same topic in the default namespace)."""
        short = (text or "").strip()
        if short.startswith(self.prefix):
            short = short[len(self.prefix) :]
        if not _NAME.fullmatch(short):
            raise LabRefused(
                f"{what} name {text!r} is not valid: use up to 64 lowercase letters, digits, "
                "'.', '_' or '-', starting with a letter or digit"
            )
        return self.prefix + short

    def short(self, full: str) -> str:
        """The name without the namespace prefix (for display)."""
        return full[len(self.prefix) :] if full.startswith(self.prefix) else full

    def owns(self, full: str) -> bool:
        """Whether a full name lies in this namespace (the default namespace holds every lab-*)."""
        return full.startswith(self.prefix)


def require_lab_name(name: str, what: str = "topic") -> str:
    """`name` itself, refused unless it is a lab name (`lab-*`): the Lab touches nothing else."""
    if not name.startswith(LAB_PREFIX) or len(name) <= len(LAB_PREFIX):
        raise LabRefused(
            f"{what} {name!r} is outside the Lab: the Lab only touches names starting with "
            f"{LAB_PREFIX!r}"
        )
    return name


def check_cap(setting: str, cap: int, have: int, adding: int = 1, whose: str = "") -> None:
    """Refuse going past a cap, naming the setting and its value."""
    if have + adding > cap:
        scope = f" for {whose}" if whose else ""
        raise LabRefused(
            f"cap reached{scope}: {setting}={cap} (now {have}); stop or reset something first, "
            f"or raise {setting}"
        )


def check_count(count: int, cap: int) -> int:
    """Messages one produce may send: 1 up to LAB_MAX_MESSAGES_PER_PRODUCE."""
    if count < 1:
        raise LabRefused(f"--count must be at least 1, got {count}")
    check_cap("LAB_MAX_MESSAGES_PER_PRODUCE", cap, 0, count)
    return count


def check_partitions(partitions: int) -> int:
    if not 1 <= partitions <= MAX_PARTITIONS:
        raise LabRefused(f"partitions must be from 1 to {MAX_PARTITIONS}, got {partitions}")
    return partitions


def check_replication(replication: int, live_brokers: int) -> int:
    """A replication factor the cluster can place: 1 up to the live brokers."""
    if replication < 1:
        raise LabRefused(f"replication must be at least 1, got {replication}")
    if replication > live_brokers:
        raise LabRefused(
            f"replication {replication} needs {replication} live brokers, the cluster has "
            f"{live_brokers}: use --replication {live_brokers} or less"
        )
    return replication


def check_rate(rate: float | None, what: str = "rate") -> float | None:
    """Messages per second; None or 0 means as fast as possible."""
    if rate is None or rate == 0:
        return None
    if rate != rate or rate < 0 or rate == float("inf"):
        raise LabRefused(f"{what} must be a positive number of messages per second, got {rate}")
    return float(rate)


def check_choice(value: str, choices: Iterable[str], what: str) -> str:
    options = tuple(choices)
    if value not in options:
        raise LabRefused(f"{what} must be one of {', '.join(options)}, got {value!r}")
    return value


def consumer_overrides(
    assignor: str, commit_mode: str, client_id: str, session_timeout_ms: int
) -> dict[str, Any]:
    """librdkafka configuration of a lab consumer (on top of `kafka_consumer`'s).

    `consumer` is Kafka 4's protocol (KIP-848): the broker assigns, so the client sets neither
    an assignor nor session and heartbeat times (the group's are broker settings,
    `group.consumer.session.timeout.ms`, 45 s by default).
    """
    check_choice(assignor, ASSIGNORS, "--assignor")
    check_choice(commit_mode, COMMIT_MODES, "--commit")
    config: dict[str, Any] = {
        "client.id": client_id,
        "enable.auto.commit": commit_mode == "auto",
        "auto.offset.reset": "earliest",
    }
    if assignor == "consumer":
        config["group.protocol"] = "consumer"
    else:
        config["partition.assignment.strategy"] = assignor
        config["session.timeout.ms"] = session_timeout_ms
        # A third of the session or less, so a graceful leave or a join is seen within a second.
        config["heartbeat.interval.ms"] = max(100, min(1000, session_timeout_ms // 3))
    return config
