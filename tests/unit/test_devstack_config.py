"""devstack's configuration: addresses come from taskstream's settings; remote ones are never started."""

import pytest

from devstack.config import load_config
from devstack.processes import DevstackError
from devstack.services import Elasticsearch, Kafka, Postgres, all_services
from devstack.stack import select
from pipeline.core.settings import Settings


def config_for(**fields):
    return load_config(Settings(**fields))


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


# -- the SASL_PLAINTEXT listener ----------------------------------------------------------------


def sasl_config(monkeypatch, **variables):
    for name in (
        "DEVSTACK_KAFKA_BROKERS",
        "DEVSTACK_KAFKA_SASL_PORT",
        "DEVSTACK_KAFKA_SASL_USER",
        "DEVSTACK_KAFKA_SASL_PASSWORD",
    ):
        monkeypatch.delenv(name, raising=False)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    return config_for(kafka_bootstrap_servers="127.0.0.1:19092")


def test_sasl_listener_is_on_by_default_two_ports_above_kafka(monkeypatch):
    config = sasl_config(monkeypatch)
    assert config.kafka_sasl_port == 19094
    assert config.kafka_sasl_address == "127.0.0.1:19094,127.0.0.1:19104,127.0.0.1:19114"
    assert config.kafka_sasl_node_address(1) == "127.0.0.1:19104"
    assert config.kafka_sasl_user == "taskstream"


@pytest.mark.parametrize(("value", "port"), [("29999", 29999), ("off", None), ("0", None)])
def test_sasl_port_is_configurable_or_off(monkeypatch, value, port):
    assert sasl_config(monkeypatch, DEVSTACK_KAFKA_SASL_PORT=value).kafka_sasl_port == port


def test_server_properties_add_a_sasl_listener_and_keep_brokers_on_plaintext(monkeypatch, tmp_path):
    config = sasl_config(
        monkeypatch, DEVSTACK_KAFKA_SASL_USER="alice", DEVSTACK_KAFKA_SASL_PASSWORD="alice-pw-123"
    )
    lines = Kafka(config)._server_properties(tmp_path).splitlines()
    assert (
        "listeners=PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093,"
        "SASL_PLAINTEXT://127.0.0.1:19094"
    ) in lines
    assert (
        "advertised.listeners=PLAINTEXT://127.0.0.1:19092,SASL_PLAINTEXT://127.0.0.1:19094"
    ) in lines
    assert "inter.broker.listener.name=PLAINTEXT" in lines
    assert "controller.listener.names=CONTROLLER" in lines
    assert (
        "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,"
        "SASL_PLAINTEXT:SASL_PLAINTEXT"
    ) in lines
    assert "sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256" in lines
    assert (
        "listener.name.sasl_plaintext.plain.sasl.jaas.config="
        'org.apache.kafka.common.security.plain.PlainLoginModule required user_alice="alice-pw-123";'
    ) in lines
    assert (
        "listener.name.sasl_plaintext.scram-sha-256.sasl.jaas.config="
        "org.apache.kafka.common.security.scram.ScramLoginModule required;"
    ) in lines


def test_server_properties_without_the_sasl_listener(monkeypatch, tmp_path):
    config = sasl_config(monkeypatch, DEVSTACK_KAFKA_SASL_PORT="off")
    text = Kafka(config)._server_properties(tmp_path)
    assert "SASL" not in text and "sasl" not in text
    assert "listeners=PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093" in text


def test_server_properties_enforce_acls_but_leave_resources_without_any_open(monkeypatch, tmp_path):
    lines = Kafka(sasl_config(monkeypatch))._server_properties(tmp_path).splitlines()
    assert (
        "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer"
    ) in lines
    assert "allow.everyone.if.no.acl.found=true" in lines
    # The controller, the broker and devstack itself connect over PLAINTEXT, anonymously.
    assert "super.users=User:ANONYMOUS" in lines


@pytest.mark.parametrize("password", ['has"quote1', "semi;colon1", "with space1", "short"])
def test_a_password_that_cannot_go_into_jaas_is_refused_without_echoing_it(monkeypatch, password):
    with pytest.raises(DevstackError, match="DEVSTACK_KAFKA_SASL_PASSWORD") as caught:
        sasl_config(monkeypatch, DEVSTACK_KAFKA_SASL_PASSWORD=password)
    assert password not in str(caught.value)


def test_a_user_name_that_cannot_go_into_jaas_is_refused(monkeypatch):
    with pytest.raises(DevstackError, match="DEVSTACK_KAFKA_SASL_USER"):
        sasl_config(monkeypatch, DEVSTACK_KAFKA_SASL_USER='bob" x')


def test_the_sasl_password_is_not_in_the_config_repr(monkeypatch):
    config = sasl_config(monkeypatch, DEVSTACK_KAFKA_SASL_PASSWORD="do-not-print-me")
    assert "do-not-print-me" not in repr(config)
    assert "do-not-print-me" not in repr(config.kafka_sasl_settings())


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256"])
def test_sasl_settings_are_what_a_user_would_export(monkeypatch, mechanism):
    config = sasl_config(monkeypatch, DEVSTACK_KAFKA_SASL_PASSWORD="the-dev-pw")
    settings = config.kafka_sasl_settings(mechanism)
    assert settings.kafka_config() == {
        "bootstrap.servers": "127.0.0.1:19094,127.0.0.1:19104,127.0.0.1:19114",
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": mechanism,
        "sasl.username": "taskstream",
        "sasl.password": "the-dev-pw",
    }
    assert settings.display()["KAFKA_SASL_PASSWORD"] == "********"
    wrong = config.kafka_sasl_settings(mechanism, password="other")
    assert wrong.kafka_config()["sasl.password"] == "other"


def test_sasl_settings_refuse_an_unknown_mechanism_or_a_listener_that_is_off(monkeypatch):
    with pytest.raises(DevstackError, match="GSSAPI"):
        sasl_config(monkeypatch).kafka_sasl_settings("GSSAPI")
    with pytest.raises(DevstackError, match="off"):
        sasl_config(monkeypatch, DEVSTACK_KAFKA_SASL_PORT="off").kafka_sasl_settings()


# -- several brokers ----------------------------------------------------------------------------


def test_three_brokers_by_default_ten_ports_apart(monkeypatch):
    config = sasl_config(monkeypatch)
    assert config.kafka_brokers == 3
    assert config.kafka_bootstrap() == "127.0.0.1:19092,127.0.0.1:19102,127.0.0.1:19112"
    brokers = [s for s in all_services(config) if isinstance(s, Kafka)]
    assert [(b.name, b.port, b.controller_port, b.sasl_port) for b in brokers] == [
        ("kafka-0", 19092, 19093, 19094),
        ("kafka-1", 19102, 19103, 19104),
        ("kafka-2", 19112, 19113, 19114),
    ]
    assert [b.home.name for b in brokers] == ["kafka-0", "kafka-1", "kafka-2"]


def test_every_node_is_a_voter_and_topics_get_three_replicas(monkeypatch, tmp_path):
    config = sasl_config(monkeypatch)
    lines = Kafka(config, 2)._server_properties(tmp_path).splitlines()
    assert "node.id=2" in lines
    assert "process.roles=broker,controller" in lines
    assert (
        "controller.quorum.voters=0@127.0.0.1:19093,1@127.0.0.1:19103,2@127.0.0.1:19113"
    ) in lines
    assert (
        "listeners=PLAINTEXT://127.0.0.1:19112,CONTROLLER://127.0.0.1:19113,SASL_PLAINTEXT://127.0.0.1:19114"
        in lines
    )
    for line in (
        "default.replication.factor=3",
        "offsets.topic.replication.factor=3",
        "transaction.state.log.min.isr=2",
    ):
        assert line in lines


def test_one_broker_keeps_one_replica(monkeypatch, tmp_path):
    config = sasl_config(monkeypatch, DEVSTACK_KAFKA_BROKERS="1")
    assert config.kafka_sasl_address == "127.0.0.1:19094"
    lines = Kafka(config)._server_properties(tmp_path).splitlines()
    assert "controller.quorum.voters=0@127.0.0.1:19093" in lines
    assert "offsets.topic.replication.factor=1" in lines
    assert [s.name for s in all_services(config)] == ["elasticsearch", "kafka-0", "postgres"]


@pytest.mark.parametrize("value", ["0", "6", "three"])
def test_a_broker_count_outside_one_to_five_is_refused(monkeypatch, value):
    with pytest.raises(DevstackError, match=r"DEVSTACK_KAFKA_BROKERS|invalid literal"):
        sasl_config(monkeypatch, DEVSTACK_KAFKA_BROKERS=value)


def test_kafka_names_every_broker_and_kafka_n_one(monkeypatch):
    config = sasl_config(monkeypatch)
    assert [s.name for s in select(config, ["kafka"])] == ["kafka-0", "kafka-1", "kafka-2"]
    assert [s.name for s in select(config, ["kafka-1", "postgres"])] == ["kafka-1", "postgres"]
    with pytest.raises(DevstackError, match="unknown service kafka-7"):
        select(config, ["kafka-7"])
