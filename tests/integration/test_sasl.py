"""Authenticated Kafka for real: the devstack's SASL_PLAINTEXT listener, with PLAIN and SCRAM-SHA-256.

The lag path (`python -m pipeline lag --json`) and the browse path work through it with the
KAFKA_* variables a user would set; a wrong password fails with one clear line within seconds,
and the password text appears nowhere (stdout, stderr, errors, `devstack status`, the broker log).
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
from confluent_kafka.admin import AdminClient, ScramMechanism, UserScramCredentialDeletion

from devstack.config import DevstackConfig, load_config
from devstack.services import ensure_scram_user
from pipeline.browse import Start, browse
from pipeline.clients import KafkaAuthenticationError, kafka_consumer
from pipeline.health import kafka_health
from pipeline.settings import Settings
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
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
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
    assert (good.ok, good.authentication_failed, good.brokers) == (True, False, 1)


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
    [row] = json.loads(result.stdout)
    assert f"SASL_PLAINTEXT {devstack.kafka_sasl_address}" in row["detail"]
    assert f"user '{devstack.kafka_sasl_user}'" in row["detail"]
    assert password not in result.stdout + result.stderr
    log = devstack.state_dir / "logs" / "kafka.log"
    if log.is_file():  # a broker devstack started: Kafka hides JAAS passwords in its log too
        assert password not in log.read_text(errors="replace")


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
