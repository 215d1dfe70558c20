"""The guard of the tests that stop Kafka brokers (marked `broker_faults`): they need the
three-broker cluster this devstack started, and say so by failing, with what to run, when the
cluster is another one."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pytest

__all__ = ["require_stoppable_brokers"]


def require_stoppable_brokers(brokers: int, status: Sequence[Mapping[str, Any]]) -> None:
    """Fail unless there are three brokers or more and devstack started every one of them
    (`status`: the rows of `python -m devstack status kafka --json`)."""
    if brokers < 3:
        pytest.fail(
            f"needs three brokers to stop one, the cluster has DEVSTACK_KAFKA_BROKERS={brokers}: "
            "start three (`python -m devstack down kafka --wipe && python -m devstack up`), or "
            "leave these tests out (`pytest -m 'not broker_faults'`, as `make test` does on "
            "fewer than three)",
            pytrace=False,
        )
    if not all(row["managed"] for row in status):
        # A cluster devstack did not start (docker compose, another checkout's .devstack):
        # `down kafka-N` leaves it alone, so no broker can be stopped from here.
        pytest.fail(
            "the brokers were not started by this devstack, which cannot stop them: stop that "
            "cluster and run `python -m devstack up`, or leave these tests out "
            "(`pytest -m 'not broker_faults'`)",
            pytrace=False,
        )
