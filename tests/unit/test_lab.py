"""The Lab's pure guards: namespaces and names, caps, consumer options, broker-action refusals,
the dead-worker rule, and the `lab` command line's shape."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from pipeline.core.settings import Settings, SettingsError, load_settings
from pipeline.lab.brokers import check_broker_action
from pipeline.lab.names import (
    LabRefused,
    Namespace,
    check_cap,
    check_count,
    check_partitions,
    check_rate,
    check_replication,
    consumer_overrides,
    learner_name,
    require_lab_name,
)
from pipeline.lab.store import LabConsumerRow, effective_state

NOW = datetime(2026, 12, 2, 8, 0, tzinfo=UTC)
BROKERS = "127.0.0.1:9092,127.0.0.1:9102,127.0.0.1:9112"


@pytest.mark.parametrize("name", ["ada", "team-3", "a", "x" * 16, "0-b"])
def test_valid_learner_names(name):
    assert learner_name(name) == name


@pytest.mark.parametrize("name", ["Ada", "x" * 17, "-ada", "ada-", "a_b", "a b", "é"])
def test_invalid_learner_names_are_refused_with_what_to_use(name):
    with pytest.raises(LabRefused, match="lowercase letters, digits or dashes"):
        learner_name(name)


def test_no_learner_is_the_default_namespace():
    assert learner_name(None) == learner_name("  ") == ""
    assert Namespace.of(None).name("orders") == "lab-orders"
    assert Namespace.of(None).label == "default"


def test_a_learner_namespace_prefixes_every_name():
    ns = Namespace.of("ada")
    assert ns.name("orders") == "lab-ada-orders"
    assert ns.name("g1", "group") == "lab-ada-g1"
    assert ns.name("lab-ada-orders") == "lab-ada-orders"  # already in the namespace
    assert ns.owns("lab-ada-orders") and not ns.owns("lab-bob-orders")
    assert ns.short("lab-ada-orders") == "orders"


@pytest.mark.parametrize("name", ["", "Orders", "a/b", "-x", "x" * 65, "a b"])
def test_invalid_topic_names_are_refused(name):
    with pytest.raises(LabRefused, match="not valid"):
        Namespace.of("ada").name(name)


def test_names_outside_lab_are_refused():
    assert require_lab_name("lab-x") == "lab-x"
    for name in ("tasks", "elasticsearch-indexer", "lab-", "labx"):
        with pytest.raises(LabRefused, match="outside the Lab"):
            require_lab_name(name)


def test_a_cap_refusal_names_the_setting_and_its_value():
    check_cap("LAB_MAX_CONSUMERS", 30, 29)  # the 30th is fine
    with pytest.raises(LabRefused, match=r"LAB_MAX_CONSUMERS_PER_LEARNER=6 \(now 6\)") as caught:
        check_cap("LAB_MAX_CONSUMERS_PER_LEARNER", 6, 6, whose="ada")
    assert "for ada" in str(caught.value)


def test_message_counts():
    assert check_count(10_000, 10_000) == 10_000
    with pytest.raises(LabRefused, match="LAB_MAX_MESSAGES_PER_PRODUCE=10000"):
        check_count(10_001, 10_000)
    with pytest.raises(LabRefused, match="at least 1"):
        check_count(0, 10_000)


def test_partitions_replication_and_rates():
    assert check_partitions(1) == 1
    with pytest.raises(LabRefused, match="from 1 to 32"):
        check_partitions(0)
    assert check_replication(3, 3) == 3
    with pytest.raises(LabRefused, match="--replication 2 or less"):
        check_replication(3, 2)
    assert check_rate(None) is None and check_rate(0) is None and check_rate(2.5) == 2.5
    with pytest.raises(LabRefused):
        check_rate(-1)


def test_consumer_options_per_assignor():
    classic = consumer_overrides("cooperative-sticky", "after", "lab-ada-c1", 6000)
    assert classic["partition.assignment.strategy"] == "cooperative-sticky"
    assert classic["session.timeout.ms"] == 6000
    assert classic["heartbeat.interval.ms"] == 1000
    assert classic["enable.auto.commit"] is False
    assert classic["client.id"] == "lab-ada-c1"
    kip848 = consumer_overrides("consumer", "auto", "lab-c2", 6000)
    assert kip848["group.protocol"] == "consumer"
    assert kip848["enable.auto.commit"] is True
    # The broker assigns and times sessions: librdkafka refuses these with the new protocol.
    assert not {"partition.assignment.strategy", "session.timeout.ms"} & set(kip848)
    with pytest.raises(LabRefused, match="--assignor must be one of"):
        consumer_overrides("sticky", "after", "c", 6000)


def test_lab_settings_defaults_and_overrides():
    settings = Settings()
    assert settings.lab_max_consumers_per_learner == 6
    assert settings.lab_max_consumers == 30
    assert settings.lab_max_topics_per_learner == 5
    assert settings.lab_max_messages_per_produce == 10_000
    assert settings.lab_session_timeout_ms == 6000
    loaded = load_settings(env_file=None, environ={"LAB_MAX_CONSUMERS": "4"})
    assert loaded.lab_max_consumers == 4
    with pytest.raises(SettingsError, match="LAB_MAX_CONSUMERS"):
        load_settings(env_file=None, environ={"LAB_MAX_CONSUMERS": "0"})


def _broker(node: int, *, answering: bool = True, managed: bool = True) -> dict:
    port = 9092 + 10 * node
    return {"name": f"kafka-{node}", "address": f"127.0.0.1:{port}", "answering": answering,
            "managed": managed}  # fmt: skip


def test_broker_actions_refused():
    settings = Settings(kafka_bootstrap_servers=BROKERS)
    three = [_broker(0), _broker(1), _broker(2)]
    assert check_broker_action(settings, "stop", 1, three) == "kafka-1"
    cases = [
        (settings, "stop", 1, three, "ada", "teacher's alone"),
        (settings.replace(taskstream_read_only=True), "stop", 1, three, "", "read-only"),
        (settings, "stop", 1, [_broker(n, managed=False) for n in range(3)], "", "does not run"),
        (settings.replace(kafka_bootstrap_servers="10.0.0.9:9092"), "stop", 1, three, "",
         "does not run"),
        (settings, "stop", 7, three, "", "no devstack broker 7"),
        (settings, "start", 1, three, "", "already running"),
        (settings, "stop", 1, [_broker(0, answering=False), _broker(1), _broker(2, answering=False)],
         "", "last one running"),
        (settings, "reboot", 1, three, "", "stop or start"),
    ]  # fmt: skip
    for chosen, action, node, brokers, learner, why in cases:
        with pytest.raises(LabRefused, match=why):
            check_broker_action(chosen, action, node, brokers, learner)
    down = [_broker(0), _broker(1, answering=False, managed=False), _broker(2)]
    assert check_broker_action(settings, "start", 1, down) == "kafka-1"


def _row(**changes) -> LabConsumerRow:
    values = dict(
        id=1, learner="", client_id="lab-c1", topic="lab-t", group_name="lab-g",
        assignor="range", commit_mode="after", rate=None, desired_state="running",
        state="running", partitions=[0], processed=0, redelivered=0, pid=None, host="elsewhere",
        heartbeat_at=NOW, created_at=NOW, updated_at=NOW, last_error=None,
    )  # fmt: skip
    values.update(changes)
    return LabConsumerRow(**values)


def test_a_silent_worker_is_dead():
    assert effective_state(_row(), NOW + timedelta(seconds=2)) == "running"
    assert effective_state(_row(), NOW + timedelta(seconds=6)) == "dead"
    assert effective_state(_row(state="paused"), NOW + timedelta(seconds=6)) == "dead"
    assert effective_state(_row(state="stopped"), NOW + timedelta(hours=1)) == "stopped"
    pending = _row(state="pending", heartbeat_at=None)
    assert effective_state(pending, NOW + timedelta(seconds=10)) == "pending"
    assert effective_state(pending, NOW + timedelta(seconds=31)) == "dead"


def test_a_worker_whose_process_is_gone_is_dead_at_once():
    import socket
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    gone = _row(pid=int(done.stdout), host=socket.gethostname())
    assert effective_state(gone, NOW) == "dead"


def test_the_lab_commands_parse():
    from pipeline.cli import _parser

    parser = _parser()
    args = parser.parse_args(["lab", "--learner", "ada", "consumer", "add", "t", "--group", "g",
                              "--assignor", "consumer", "--rate", "5", "--commit", "auto"])  # fmt: skip
    assert (args.action, args.lab_action, args.learner) == ("consumer", "add", "ada")
    assert (args.assignor, args.rate, args.commit) == ("consumer", 5.0, "auto")
    args = parser.parse_args(["lab", "produce", "t", "--count", "3", "--key", "k", "--json"])
    assert (args.key, args.count, args.json) == ("k", 3, True)
    args = parser.parse_args(["lab", "consumer", "rate", "4", "0.5"])
    assert (args.id, args.rate) == (4, 0.5)
    args = parser.parse_args(["lab", "broker", "stop", "1"])
    assert (args.lab_action, args.node) == ("stop", 1)
