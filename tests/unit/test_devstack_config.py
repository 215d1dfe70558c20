"""devstack's configuration: addresses come from taskstream's settings; remote ones are never started."""

import pytest

from devstack.config import load_config
from devstack.processes import DevstackError
from devstack.services import Elasticsearch, Kafka, Postgres
from pipeline.settings import Settings


def config_for(**fields):
    return load_config(Settings(_env_file=None, **fields))


def test_addresses_follow_the_settings():
    config = config_for(
        kafka_bootstrap_servers="127.0.0.1:19092,127.0.0.1:19093",
        elasticsearch_url="http://127.0.0.1:19200",
        database_url="postgresql://alice@127.0.0.1:15432/work",
    )
    assert (config.kafka_host, config.kafka_port, config.kafka_controller_port) == (
        "127.0.0.1",
        19092,
        19093,
    )
    assert (config.es_port, config.es_transport_port) == (19200, 19300)
    assert (config.pg_port, config.pg_user, config.pg_database) == (15432, "alice", "work")
    assert Kafka(config).address == "127.0.0.1:19092"


@pytest.mark.parametrize(
    ("service", "fields", "variable"),
    [
        (Kafka, {"kafka_bootstrap_servers": "kafka.example.com:9092"}, "KAFKA_BOOTSTRAP_SERVERS"),
        (Elasticsearch, {"elasticsearch_url": "https://es.example.com:9243"}, "ELASTICSEARCH_URL"),
        (Postgres, {"database_url": "postgresql://u@db.example.com/x"}, "DATABASE_URL"),
    ],
)
def test_a_service_on_another_host_is_never_started(service, fields, variable):
    with pytest.raises(DevstackError, match=f"not on this machine.*{variable}"):
        service(config_for(**fields)).check_startable()


def test_loopback_services_may_be_started():
    for service in (Kafka, Elasticsearch, Postgres):
        service(config_for()).check_startable()


def test_kafka_cluster_ids_never_start_with_a_dash():
    import base64

    from devstack.services import kafka_cluster_id

    ids = [kafka_cluster_id() for _ in range(5000)]
    assert not any(i.startswith("-") for i in ids)
    assert all(len(base64.urlsafe_b64decode(i + "==")) == 16 for i in ids)
    assert len(set(ids)) == len(ids)
