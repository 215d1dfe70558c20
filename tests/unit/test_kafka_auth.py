"""Authenticated Kafka: KAFKA_* settings reach every client, refused credentials are one clear line
naming the user and never the password, and a waiting call notices them at once."""

import pytest
from confluent_kafka import KafkaError, KafkaException

from pipeline.core.settings import SecretStr, Settings
from pipeline.kafka import clients
from pipeline.kafka.clients import (
    KafkaAuthenticationError,
    KafkaAuthWatch,
    kafka_admin,
    kafka_consumer,
    kafka_metadata,
    kafka_producer,
)

PASSWORD = "pa55-w0rd-never-shown"


def sasl_settings(**options: str) -> Settings:
    return Settings(
        kafka_bootstrap_servers="127.0.0.1:9094",
        kafka_options={
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": "PLAIN",
            "sasl.username": "alice",
            **options,
        },
        kafka_secrets={"sasl.password": SecretStr(PASSWORD)},
    )


def test_the_sasl_settings_reach_the_producer_the_consumer_and_the_admin_client(monkeypatch):
    built = {}
    for name in ("Producer", "Consumer", "AdminClient"):
        monkeypatch.setattr(clients, name, lambda config, name=name: built.setdefault(name, config))
    settings = sasl_settings()
    kafka_producer(settings)
    kafka_consumer(settings, "g")
    kafka_admin(settings)
    assert set(built) == {"Producer", "Consumer", "AdminClient"}
    for config in built.values():
        assert config["bootstrap.servers"] == "127.0.0.1:9094"
        assert config["security.protocol"] == "SASL_PLAINTEXT"
        assert config["sasl.mechanism"] == "PLAIN"
        assert (config["sasl.username"], config["sasl.password"]) == ("alice", PASSWORD)


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (
            {},
            "Kafka authentication failed for user 'alice' (SASL PLAIN) at 127.0.0.1:9094: "
            "check KAFKA_SASL_USERNAME / KAFKA_SASL_PASSWORD",
        ),
        (
            {"sasl.mechanism": "SCRAM-SHA-256"},
            "Kafka authentication failed for user 'alice' (SASL SCRAM-SHA-256) at 127.0.0.1:9094: "
            "check KAFKA_SASL_USERNAME / KAFKA_SASL_PASSWORD",
        ),
        (
            {"sasl.mechanism": "OAUTHBEARER"},
            "Kafka authentication failed for user 'alice' (SASL OAUTHBEARER) at 127.0.0.1:9094: "
            "check KAFKA_SASL_MECHANISM and its KAFKA_SASL_* settings",
        ),
    ],
)
def test_the_authentication_error_names_user_mechanism_and_address(options, expected):
    error = KafkaAuthenticationError(sasl_settings(**options))
    assert str(error) == expected
    assert PASSWORD not in str(error) and PASSWORD not in repr(error)


def test_the_authentication_error_without_sasl_names_the_protocol():
    settings = Settings(
        kafka_bootstrap_servers="127.0.0.1:9092",
        kafka_options={"security.protocol": "ssl"},
    )
    assert str(KafkaAuthenticationError(settings)) == (
        "Kafka authentication failed (SSL) at 127.0.0.1:9092: check KAFKA_SECURITY_PROTOCOL "
        "and the KAFKA_SASL_* / KAFKA_SSL_* settings"
    )


def test_the_watch_keeps_authentication_failures_and_passes_every_error_on():
    seen = []
    watch = KafkaAuthWatch(sasl_settings(), chained=seen.append)
    watch(KafkaError(KafkaError._TRANSPORT, "connection refused"))
    watch.raise_if_failed()  # not an authentication failure
    watch(KafkaError(KafkaError._AUTHENTICATION, "SASL authentication error: Invalid password"))
    with pytest.raises(KafkaAuthenticationError, match="for user 'alice'"):
        watch.raise_if_failed()
    assert [e.code() for e in seen] == [KafkaError._TRANSPORT, KafkaError._AUTHENTICATION]


class FakeClient:
    """Times out every metadata request; its poll() serves an error_cb like librdkafka's."""

    def __init__(self, watch, error_after_polls: int | None) -> None:
        self.watch = watch
        self.error_after_polls = error_after_polls
        self.polls = 0
        self.requests = 0

    def list_topics(self, topic=None, timeout=-1):
        self.requests += 1
        raise KafkaException(KafkaError(KafkaError._TRANSPORT, "Failed to get metadata"))

    def poll(self, timeout):
        self.polls += 1
        if self.polls == self.error_after_polls:
            self.watch(KafkaError(KafkaError._AUTHENTICATION, "Invalid username or password"))


def test_metadata_raises_the_authentication_error_as_soon_as_it_is_reported():
    watch = KafkaAuthWatch(sasl_settings())
    client = FakeClient(watch, error_after_polls=2)
    with pytest.raises(KafkaAuthenticationError):
        kafka_metadata(client, watch, timeout=30)
    assert client.requests == 2


def test_metadata_without_an_authentication_error_raises_kafkas_own_after_the_timeout():
    watch = KafkaAuthWatch(sasl_settings())
    with pytest.raises(KafkaException) as caught:
        kafka_metadata(FakeClient(watch, error_after_polls=None), watch, timeout=0.6)
    assert caught.value.args[0].code() == KafkaError._TRANSPORT


def test_configured_secrets_are_redacted_from_any_text():
    settings = sasl_settings().replace(
        database_url="postgresql://u:db-pw-1@127.0.0.1/x",
        elasticsearch_password=SecretStr("es-pw-2"),
    )
    text = f"failed with {PASSWORD}, db-pw-1 and es-pw-2 inside"
    assert settings.redact_secrets(text) == "failed with ********, ******** and ******** inside"
