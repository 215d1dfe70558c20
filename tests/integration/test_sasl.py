"""Authenticated Kafka for real: the devstack's SASL_PLAINTEXT listener, with PLAIN and SCRAM-SHA-256.

The lag path (`python -m pipeline lag --json`) and the browse path work through it with the
KAFKA_* variables a user would set; a wrong password fails with one clear line within seconds,
and the password text appears nowhere (stdout, stderr, errors, `devstack status`, the broker log).
A topic an ACL hides from the user is named as such (never "does not exist", never "is Kafka
running?") by the lag reader, the browser, a replay, the CLI and the pages.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
    ScramMechanism,
    UserScramCredentialDeletion,
)

from devstack.config import DevstackConfig, load_config
from devstack.services import ensure_scram_user
from pipeline.core.settings import Settings
from pipeline.health import kafka_health
from pipeline.kafka.admin import TopicNotAuthorized, topic_metadata
from pipeline.kafka.browse import Start, browse
from pipeline.kafka.clients import KafkaAuthenticationError, kafka_admin, kafka_consumer
from pipeline.lag.reader import LagReader
from pipeline.replay.control import topic_watermarks
from pipeline.replay.spec import ReplayRefused
from testkit.processes import run_pipeline
from tests.kafka_data import produce_keyed

ROOT = Path(__file__).resolve().parents[2]
COUNT = 40
# Fast means "seconds", not a metadata timeout: the CLI's own Kafka timeout is 10 s.
FAIL_WITHIN = 8.0


@pytest.fixture(scope="session")
def devstack(settings: Settings, admin: AdminClient) -> DevstackConfig:
    """devstack's configuration, with its SASL listener checked once (PLAIN, the dev user)."""
    config = load_config(settings)
    if config.kafka_sasl_address is None:
        pytest.fail(
            "the Kafka SASL listener is off (DEVSTACK_KAFKA_SASL_PORT=off); unset it and restart "
            "Kafka: `python -m devstack down kafka && python -m devstack up kafka`",
            pytrace=False,
        )
    health = kafka_health(config.kafka_sasl_settings("PLAIN"), timeout=10)
    if not health.ok:
        pytest.fail(
            f"Kafka's SASL listener at {config.kafka_sasl_address} does not let user "
            f"'{config.kafka_sasl_user}' in ({health.detail}). A broker started before devstack "
            "had the listener needs a restart: `python -m devstack down kafka && python -m "
            "devstack up kafka`",
            pytrace=False,
        )
    return config


@pytest.fixture
def scram_user(settings: Settings, admin: AdminClient, unique: str) -> Iterator[tuple[str, str]]:
    """A SCRAM-SHA-256 user of this test's own, created through the admin API, deleted after."""
    user, password = f"scram-{unique}"[:64], secrets.token_urlsafe(18)
    ensure_scram_user(settings, user, password)
    yield user, password
    deletion = UserScramCredentialDeletion(user, ScramMechanism.SCRAM_SHA_256)
    admin.alter_user_scram_credentials([deletion])[user].result(timeout=30)


@pytest.fixture(params=["PLAIN", "SCRAM-SHA-256"])
def sasl(request, devstack: DevstackConfig) -> Settings:
    """Settings through the SASL listener: PLAIN as the dev user, SCRAM as a user of the test's own."""
    if request.param == "PLAIN":
        return devstack.kafka_sasl_settings("PLAIN")
    user, password = request.getfixturevalue("scram_user")
    return devstack.kafka_sasl_settings("SCRAM-SHA-256", username=user, password=password)


def sasl_env(settings: Settings, topic: str) -> dict[str, str]:
    """The environment a user would export to reach Kafka with these settings' credentials."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAFKA_")}
    options = settings.kafka_config()
    env.update(
        KAFKA_BOOTSTRAP_SERVERS=settings.kafka_bootstrap_servers,
        KAFKA_TOPIC=topic,
        KAFKA_SECURITY_PROTOCOL=options["security.protocol"],
        KAFKA_SASL_MECHANISM=options["sasl.mechanism"],
        KAFKA_SASL_USERNAME=options["sasl.username"],
        KAFKA_SASL_PASSWORD=options["sasl.password"],
    )
    return env


def pipeline_cli(*args: str, env: dict[str, str]) -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    result = run_pipeline(*args, env=env, timeout=60)
    return result, time.monotonic() - started


def consume_and_commit(settings: Settings, topic: str, group: str, count: int) -> None:
    consumer = kafka_consumer(settings, group)
    try:
        consumer.subscribe([topic])
        read, deadline = 0, time.monotonic() + 30
        while read < count and time.monotonic() < deadline:
            for msg in consumer.consume(num_messages=count, timeout=1.0):
                assert msg.error() is None, msg.error()
                read += 1
        assert read == count
        consumer.commit(asynchronous=False)
    finally:
        consumer.close()


def test_produce_consume_and_the_lag_command_through_the_sasl_listener(sasl, topic, group):
    landed = produce_keyed(sasl, topic, COUNT)
    consume_and_commit(sasl, topic, group, COUNT)
    password = sasl.kafka_config()["sasl.password"]

    result, _ = pipeline_cli("lag", "--group", group, "--json", env=sasl_env(sasl, topic))

    assert result.returncode == 0, result.stderr
    assert password not in result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["topic"] == topic
    [entry] = report["groups"]
    assert (entry["group"], entry["total_lag"]) == (group, 0)
    ends = {p["partition"]: p["end"] for p in entry["partitions"]}
    assert ends == {p: landed.get(p, 0) for p in range(6)}
    assert all(p["committed"] == p["end"] for p in entry["partitions"] if p["end"])


def test_the_message_browser_reads_through_the_sasl_listener(sasl, topic):
    produce_keyed(sasl, topic, COUNT, prefix="browse")

    page = browse(sasl, topic, None, Start.earliest(), limit=COUNT * 2, timeout=10)

    assert len(page.messages) == COUNT
    assert {m.key for m in page.messages} == {f"browse-{i}" for i in range(COUNT)}
    assert sum(page.ends.values()) == COUNT


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256"])
def test_a_wrong_password_is_one_clear_line_within_seconds(devstack, topic, mechanism):
    wrong = f"wrong-{secrets.token_hex(8)}"
    settings = devstack.kafka_sasl_settings(mechanism, password=wrong)

    result, took = pipeline_cli("lag", "--json", env=sasl_env(settings, topic))

    assert took < FAIL_WITHIN, f"took {took:.1f} s"
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == (
        f"error: Kafka authentication failed for user '{devstack.kafka_sasl_user}' "
        f"(SASL {mechanism}) at {devstack.kafka_sasl_address}: "
        "check KAFKA_SASL_USERNAME / KAFKA_SASL_PASSWORD\n"
    )
    assert wrong not in result.stdout + result.stderr


def test_an_unknown_user_is_named_in_the_error(devstack, topic):
    settings = devstack.kafka_sasl_settings("PLAIN", username="nobody", password="nobody-pw")
    result, took = pipeline_cli("lag", "--json", env=sasl_env(settings, topic))
    assert took < FAIL_WITHIN
    assert result.returncode == 1
    assert "Kafka authentication failed for user 'nobody' (SASL PLAIN)" in result.stderr
    assert "nobody-pw" not in result.stderr


def test_browsing_with_a_wrong_password_raises_the_authentication_error_fast(devstack, topic):
    wrong = f"wrong-{secrets.token_hex(8)}"
    settings = devstack.kafka_sasl_settings("SCRAM-SHA-256", password=wrong)
    started = time.monotonic()
    with pytest.raises(KafkaAuthenticationError) as caught:
        browse(settings, topic, None, Start.earliest(), limit=10, timeout=30)
    assert time.monotonic() - started < FAIL_WITHIN
    assert f"user '{devstack.kafka_sasl_user}' (SASL SCRAM-SHA-256)" in str(caught.value)
    assert wrong not in str(caught.value) and wrong not in repr(caught.value)


def test_health_tells_refused_credentials_from_a_broker_that_is_down(devstack):
    wrong = f"wrong-{secrets.token_hex(8)}"
    started = time.monotonic()
    health = kafka_health(devstack.kafka_sasl_settings("PLAIN", password=wrong), timeout=30)
    assert time.monotonic() - started < FAIL_WITHIN
    assert (health.ok, health.authentication_failed) == (False, True)
    assert health.detail.startswith("Kafka authentication failed for user")
    assert wrong not in health.detail
    good = kafka_health(devstack.kafka_sasl_settings("PLAIN"))
    assert (good.ok, good.authentication_failed, good.brokers) == (
        True,
        False,
        devstack.kafka_brokers,
    )


def test_the_devstack_user_also_has_its_scram_credential(devstack):
    # Created by `devstack up` through the admin API, whatever the storage was formatted with.
    health = kafka_health(devstack.kafka_sasl_settings("SCRAM-SHA-256"), timeout=10)
    assert health.ok, health.detail


def test_devstack_status_shows_the_listener_and_never_the_password(devstack):
    result = subprocess.run(
        [sys.executable, "-m", "devstack", "status", "kafka", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    password = devstack.kafka_sasl_password.get_secret_value()
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [row["name"] for row in rows] == [f"kafka-{n}" for n in devstack.kafka_nodes]
    for node, row in zip(devstack.kafka_nodes, rows, strict=True):
        assert f"SASL_PLAINTEXT {devstack.kafka_sasl_node_address(node)}" in row["detail"]
        assert f"user '{devstack.kafka_sasl_user}'" in row["detail"]
        log = devstack.state_dir / "logs" / f"kafka-{node}.log"
        if log.is_file():  # a broker devstack started: Kafka hides JAAS passwords in its log too
            assert password not in log.read_text(errors="replace")
    assert password not in result.stdout + result.stderr


# -- the app, through the SASL listener --------------------------------------------------------


def open_topic_page():
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    at.switch_page("pages/topic.py").run()
    assert not at.exception, at.exception
    return at


def page_text(at) -> str:
    """Everything the page shows as text, sidebar included."""
    kinds = ("error", "warning", "info", "success", "markdown", "caption", "code", "text")
    kinds += ("title", "header", "subheader")
    return "\n".join(str(getattr(e, "value", "")) for kind in kinds for e in getattr(at, kind))


def use_kafka(monkeypatch, settings: Settings) -> None:
    from ui.resources import clear_caches

    for name, value in sasl_env(settings, os.environ["KAFKA_TOPIC"]).items():
        if name.startswith("KAFKA_"):
            monkeypatch.setenv(name, value)
    clear_caches()


def test_the_topic_page_reads_through_the_sasl_listener(monkeypatch, devstack, app_env):
    settings = devstack.kafka_sasl_settings("SCRAM-SHA-256")
    landed = produce_keyed(settings, app_env, COUNT)
    use_kafka(monkeypatch, settings)
    at = open_topic_page()
    assert not at.error, [e.value for e in at.error]
    [parts] = [d.value for d in at.dataframe if "high watermark" in d.value.columns]
    assert dict(zip(parts["partition"], parts["high watermark"], strict=True)) == {
        p: landed.get(p, 0) for p in range(6)
    }
    assert devstack.kafka_sasl_password.get_secret_value() not in page_text(at)


def test_a_wrong_password_is_a_banner_in_the_app_without_the_password(
    monkeypatch, devstack, app_env
):
    wrong = f"wrong-{secrets.token_hex(8)}"
    use_kafka(monkeypatch, devstack.kafka_sasl_settings("PLAIN", password=wrong))
    at = open_topic_page()
    assert any(
        e.value.startswith(f"Kafka authentication failed for user '{devstack.kafka_sasl_user}'")
        for e in at.error
    ), [e.value for e in at.error]
    assert not at.dataframe
    assert wrong not in page_text(at)


# -- ACLs: a topic the user may not describe -----------------------------------------------------


@pytest.fixture
def denied(admin: AdminClient, devstack: DevstackConfig, topic: str) -> Iterator[str]:
    """`topic`, with an ACL denying the devstack's SASL user every operation on it (removed after).

    devstack's broker enforces ACLs (StandardAuthorizer) but lets everyone do anything on a
    resource without ACLs, and anonymous PLAINTEXT clients are super users: only this topic, for
    this user, changes."""
    binding = AclBinding(
        ResourceType.TOPIC,
        topic,
        ResourcePatternType.LITERAL,
        f"User:{devstack.kafka_sasl_user}",
        "*",
        AclOperation.ALL,
        AclPermissionType.DENY,
    )
    try:
        admin.create_acls([binding])[binding].result(timeout=30)
    except KafkaException as exc:
        pytest.fail(
            f"Kafka does not take ACLs ({exc}): a broker started before devstack enabled its "
            "authorizer needs a restart: `python -m devstack down kafka && python -m devstack up "
            "kafka`",
            pytrace=False,
        )
    refused = kafka_admin(devstack.kafka_sasl_settings("PLAIN"))
    deadline = time.monotonic() + 15
    while True:  # the ACL takes effect once the broker has applied the metadata record
        try:
            topic_metadata(refused, topic, timeout=10)
        except TopicNotAuthorized:
            break
        assert time.monotonic() < deadline, "the DENY ACL never took effect"
        time.sleep(0.2)
    yield topic
    removal = AclBindingFilter(
        ResourceType.TOPIC,
        topic,
        ResourcePatternType.LITERAL,
        f"User:{devstack.kafka_sasl_user}",
        "*",
        AclOperation.ALL,
        AclPermissionType.DENY,
    )
    admin.delete_acls([removal])[removal].result(timeout=30)


def test_a_topic_hidden_by_an_acl_is_named_as_such_by_every_reader(devstack, admin, denied):
    refused = kafka_admin(devstack.kafka_sasl_settings("PLAIN"))
    settings = devstack.kafka_sasl_settings("PLAIN")

    with pytest.raises(TopicNotAuthorized) as caught:
        LagReader(refused, denied, timeout=10).snapshot()
    assert caught.value.topic == denied
    assert "TOPIC_AUTHORIZATION_FAILED" in str(caught.value)
    assert "DESCRIBE" in str(caught.value)

    with pytest.raises(TopicNotAuthorized):
        browse(settings, denied, None, Start.earliest(), limit=10, timeout=10)

    # A replay is refused with the reason, not told the topic does not exist.
    with pytest.raises(ReplayRefused) as refusal:
        topic_watermarks(refused, denied)
    assert "TOPIC_AUTHORIZATION_FAILED" in str(refusal.value)
    assert "does not exist" not in str(refusal.value)

    # Only that user is refused: the anonymous PLAINTEXT client still reads the topic.
    assert sorted(topic_watermarks(admin, denied)) == list(range(6))


def test_the_lag_command_names_the_acl_in_one_line(devstack, denied):
    settings = devstack.kafka_sasl_settings("PLAIN")

    result, took = pipeline_cli("lag", "--json", env=sasl_env(settings, denied))

    assert took < FAIL_WITHIN, f"took {took:.1f} s"
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(
        f"error: Kafka's ACLs do not let this client describe topic '{denied}'"
    )
    assert "is it running" not in result.stderr


@pytest.mark.parametrize("page", ["pages/topic.py", "pages/groups.py", "pages/partitions.py"])
def test_the_pages_show_an_acl_refusal_with_the_grant_that_would_allow_it(
    monkeypatch, devstack, app_env, denied, page
):
    from streamlit.testing.v1 import AppTest

    assert app_env == denied
    use_kafka(monkeypatch, devstack.kafka_sasl_settings("PLAIN"))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    at.switch_page(page).run()

    assert not at.exception, at.exception
    [banner] = [e for e in at.error if "TOPIC_AUTHORIZATION_FAILED" in e.value]
    assert banner.icon == ":material/lock:"
    assert f"`User:{devstack.kafka_sasl_user}`" in banner.value
    assert (
        f"kafka-acls --bootstrap-server {devstack.kafka_sasl_address} --add --allow-principal "
        f"User:{devstack.kafka_sasl_user} --operation Describe --operation Read --topic {denied}"
    ) in banner.value
    assert "does not exist" not in page_text(at)
    assert not [d for d in at.dataframe if "high watermark" in d.value.columns]


def test_devstack_runs_kafka_acls_against_its_broker(devstack, denied):
    result = subprocess.run(
        [sys.executable, "-m", "devstack", "kafka", "kafka-acls", "--list", "--topic", denied],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert f"name={denied}" in result.stdout
    assert f"principal=User:{devstack.kafka_sasl_user}" in result.stdout
    assert "permissionType=DENY" in result.stdout


@pytest.mark.parametrize("worker", ["relay", "indexer"])
def test_a_worker_refused_its_topic_by_an_acl_stops_with_the_acl_line(
    devstack, app_env, denied, index_name, group, worker
):
    # Waiting would not help (it is not an outage): the worker exits 1 and says why.
    env = sasl_env(devstack.kafka_sasl_settings("PLAIN"), denied)
    env.update(ELASTICSEARCH_INDEX=index_name, INDEXER_GROUP=group)

    result, took = pipeline_cli(worker, env=env)

    assert result.returncode == 1, result.stderr
    assert took < 30, f"took {took:.1f} s"
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: Kafka's ACLs do not let this client describe topic '{denied}'")
