"""The Kafka admin client's configuration (what it is built with, not the server's answers)."""

import pipeline.kafka.clients
from pipeline.core.settings import load_settings


def test_admin_client_never_asks_the_broker_to_create_a_topic(monkeypatch):
    # librdkafka lets an admin (producer-type) client's metadata request create the topic it
    # names when the broker allows auto-creation; a user's pass-through setting cannot undo it.
    monkeypatch.setenv("KAFKA_ALLOW_AUTO_CREATE_TOPICS", "true")
    built = []
    monkeypatch.setattr(pipeline.kafka.clients, "AdminClient", lambda config: built.append(config))
    pipeline.kafka.clients.kafka_admin(load_settings())
    [config] = built
    assert config["allow.auto.create.topics"] is False
    assert config["bootstrap.servers"] == load_settings().kafka_bootstrap_servers
