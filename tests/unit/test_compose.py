"""docker-compose.yml parses and runs the same versions as devstack."""

import re
from pathlib import Path

import yaml

from devstack.config import SASL_PASSWORD, SASL_USER, load_config
from devstack.services import Kafka
from devstack.versions import ELASTICSEARCH_VERSION, KAFKA_VERSION, POSTGRES_MAJOR
from pipeline.core.settings import Settings

COMPOSE = Path(__file__).resolve().parents[2] / "docker-compose.yml"
BROKERS = range(3)


def load() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_images_match_devstack_versions():
    services = load()["services"]
    for node in BROKERS:
        assert services[f"kafka-{node}"]["image"] == f"apache/kafka:{KAFKA_VERSION}"
    assert services["elasticsearch"]["image"] == (
        f"docker.elastic.co/elasticsearch/elasticsearch:{ELASTICSEARCH_VERSION}"
    )
    assert services["postgres"]["image"] == f"postgres:{POSTGRES_MAJOR}"


def test_ports_and_settings_follow_design():
    services = load()["services"]
    for node in BROKERS:
        port = 9092 + 10 * node
        assert f"127.0.0.1:{port}:{port}" in services[f"kafka-{node}"]["ports"]
    assert "127.0.0.1:9200:9200" in services["elasticsearch"]["ports"]
    assert "127.0.0.1:5432:5432" in services["postgres"]["ports"]
    assert services["elasticsearch"]["environment"]["xpack.security.enabled"] == "false"
    assert services["kafka-0"]["environment"]["KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS"] == 0
    assert services["postgres"]["environment"]["POSTGRES_DB"] == "taskstream"
    app_env = services["app"]["environment"]
    assert set(app_env) >= {"DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS", "ELASTICSEARCH_URL"}
    for dependency in ("kafka-0", "kafka-1", "kafka-2", "elasticsearch", "postgres"):
        assert services["app"]["depends_on"][dependency]["condition"] == "service_healthy"


def test_relay_and_indexer_run_beside_the_app_with_its_settings():
    services = load()["services"]
    for name in ("relay", "indexer"):
        assert services[name]["command"] == ["python", "-m", "pipeline", name]
        assert services[name]["environment"] == services["app"]["environment"]
        assert services[name]["depends_on"] == services["app"]["depends_on"]


# -- Kafka's security settings: the same as devstack's ----------------------------------------


def image_properties(environment: dict) -> dict[str, str]:
    """What apache/kafka's image writes to server.properties from its environment (its Go
    utility, docker/resources/utility): KAFKA_ dropped, `___` → `-`, `__` → `_`, `_` → `.`,
    lower case; a variable whose value holds "=" is dropped, as are the JVM options."""
    excluded = {
        "KAFKA_VERSION",
        "KAFKA_HEAP_OPTS",
        "KAFKA_LOG4J_OPTS",
        "KAFKA_OPTS",
        "KAFKA_JMX_OPTS",
        "KAFKA_JVM_PERFORMANCE_OPTS",
        "KAFKA_GC_LOG_OPTS",
    }
    found = {}
    for key, value in environment.items():
        value = str(value).lower() if isinstance(value, bool) else str(value)
        if not key.startswith("KAFKA_") or key in excluded or "=" in value:
            continue
        name = re.sub(r"(?<=[^_])_(?=[^_])", ".", key[len("KAFKA_") :])
        found[name.replace("___", "-").replace("__", "_").lower()] = value
    return found


def devstack_kafka_properties(tmp_path, monkeypatch, node: int = 0) -> dict[str, str]:
    for name in (
        "DEVSTACK_KAFKA_BROKERS",
        "DEVSTACK_KAFKA_SASL_PORT",
        "DEVSTACK_KAFKA_SASL_USER",
        "DEVSTACK_KAFKA_SASL_PASSWORD",
    ):
        monkeypatch.delenv(name, raising=False)
    config = load_config(Settings(kafka_bootstrap_servers="127.0.0.1:9092"))
    lines = Kafka(config, node)._server_properties(tmp_path).splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def test_the_image_property_rule_is_the_upstream_one():
    assert image_properties(
        {
            "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP": "A:B",
            "KAFKA_LISTENER_NAME_SASL__PLAINTEXT_SCRAM___SHA___256_SASL_JAAS_CONFIG": "x",
            "KAFKA_LISTENER_NAME_SASL__PLAINTEXT_PLAIN_SASL_JAAS_CONFIG": 'M required user_a="b";',
            "KAFKA_OPTS": "-Dx=y",
        }
    ) == {
        "listener.security.protocol.map": "A:B",
        "listener.name.sasl_plaintext.scram-sha-256.sasl.jaas.config": "x",
    }


def test_kafka_has_devstacks_sasl_listener_and_acl_settings(tmp_path, monkeypatch):
    kafka = load()["services"]["kafka-0"]
    ours = image_properties(kafka["environment"])
    devstack = devstack_kafka_properties(tmp_path, monkeypatch)
    assert "127.0.0.1:9094:9094" in kafka["ports"]
    assert "SASL_PLAINTEXT://127.0.0.1:9094" in ours["advertised.listeners"].split(",")
    assert "SASL_PLAINTEXT://:9094" in ours["listeners"].split(",")
    assert "SASL_PLAINTEXT:SASL_PLAINTEXT" in ours["listener.security.protocol.map"].split(",")
    for name in (
        "sasl.enabled.mechanisms",
        "listener.name.sasl_plaintext.sasl.enabled.mechanisms",
        "authorizer.class.name",
        "allow.everyone.if.no.acl.found",
        "super.users",
    ):
        assert ours[name] == devstack[name], name
    # The JAAS lines ("=" in them) come from a mounted file, named by the JVM options.
    mount, _, target = next(v for v in kafka["volumes"] if "jaas" in v).partition(":")
    assert (
        f"-Djava.security.auth.login.config={target.removesuffix(':ro')}"
        in kafka["environment"]["KAFKA_OPTS"]
    )
    jaas = (COMPOSE.parent / mount).read_text()
    user, password = SASL_USER, SASL_PASSWORD
    plain = devstack["listener.name.sasl_plaintext.plain.sasl.jaas.config"]
    assert plain == (
        "org.apache.kafka.common.security.plain.PlainLoginModule required "
        f'user_{user}="{password}";'
    )
    assert "org.apache.kafka.common.security.plain.PlainLoginModule required" in jaas
    assert f'user_{user}="{password}";' in jaas
    assert "org.apache.kafka.common.security.scram.ScramLoginModule required;" in jaas


def test_the_sasl_user_gets_its_scram_credential_once_kafka_answers():
    services = load()["services"]
    setup = services["kafka-scram-user"]
    assert setup["image"] == services["kafka-0"]["image"]
    for node in BROKERS:
        assert setup["depends_on"][f"kafka-{node}"]["condition"] == "service_healthy"
    argv = setup["entrypoint"] + setup["command"]
    assert argv[0].endswith("/kafka-configs.sh")
    assert argv[argv.index("--entity-name") + 1] == SASL_USER
    assert f"SCRAM-SHA-256=[iterations=4096,password={SASL_PASSWORD}]" in argv


def test_three_nodes_form_the_same_cluster_as_devstacks(tmp_path, monkeypatch):
    services = load()["services"]
    cluster_ids = set()
    for node in BROKERS:
        environment = services[f"kafka-{node}"]["environment"]
        ours = image_properties(environment)
        devstack = devstack_kafka_properties(tmp_path, monkeypatch, node)
        cluster_ids.add(environment["CLUSTER_ID"])
        assert ours["node.id"] == devstack["node.id"] == str(node)
        assert ours["process.roles"] == devstack["process.roles"]
        # The same voters, by container name instead of loopback ports.
        voters = [v.split("@")[0] for v in ours["controller.quorum.voters"].split(",")]
        assert voters == [v.split("@")[0] for v in devstack["controller.quorum.voters"].split(",")]
        for name in (
            "default.replication.factor",
            "offsets.topic.replication.factor",
            "transaction.state.log.replication.factor",
            "transaction.state.log.min.isr",
            "share.coordinator.state.topic.replication.factor",
            "share.coordinator.state.topic.min.isr",
        ):
            assert ours[name] == devstack[name], (node, name)
        port = 9092 + 10 * node
        assert f"PLAINTEXT://127.0.0.1:{port}" in ours["advertised.listeners"].split(",")
    assert len(cluster_ids) == 1
    bootstrap = services["app"]["environment"]["KAFKA_BOOTSTRAP_SERVERS"].split(",")
    assert bootstrap == [f"kafka-{node}:19092" for node in BROKERS]


# -- the monitor, Prometheus and Grafana -------------------------------------------------------

DOCKER = COMPOSE.parent / "docker"


def _mounted(service: dict, target: str) -> Path:
    """The repository path mounted at `target` in the service."""
    for volume in service["volumes"]:
        source, _, rest = volume.partition(":")
        if rest.removesuffix(":ro") == target:
            return COMPOSE.parent / source
    raise AssertionError(f"nothing mounted at {target}")


def test_the_monitor_runs_beside_the_app_serving_metrics_to_the_network():
    services = load()["services"]
    monitor = services["monitor"]
    assert monitor["command"] == ["python", "-m", "pipeline", "monitor"]
    environment = dict(monitor["environment"])
    assert environment.pop("METRICS_ADDRESS") == "0.0.0.0"
    assert str(environment.pop("METRICS_PORT")) == "8000" == str(Settings().metrics_port)
    assert environment == services["app"]["environment"]
    assert monitor["depends_on"] == services["app"]["depends_on"]
    assert "127.0.0.1:8000:8000" in monitor["ports"]


def test_prometheus_scrapes_the_monitor():
    prometheus = load()["services"]["prometheus"]
    assert "127.0.0.1:9090:9090" in prometheus["ports"]
    config = yaml.safe_load(_mounted(prometheus, "/etc/prometheus/prometheus.yml").read_text())
    (job,) = config["scrape_configs"]
    assert job["static_configs"][0]["targets"] == ["monitor:8000"]
    assert config["global"]["scrape_interval"] == "5s"  # the monitor's sampling interval


def test_grafana_is_provisioned_with_prometheus_and_the_lag_dashboard():
    import json

    from pipeline.lag.metrics import METRICS

    grafana = load()["services"]["grafana"]
    assert "127.0.0.1:3000:3000" in grafana["ports"]
    provisioning = _mounted(grafana, "/etc/grafana/provisioning")
    (source,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())[
        "datasources"
    ]
    assert (source["type"], source["url"], source["uid"]) == (
        "prometheus",
        "http://prometheus:9090",
        "prometheus",
    )
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "taskstream.yml").read_text())[
        "providers"
    ]
    dashboards = _mounted(grafana, provider["options"]["path"])
    dashboard = json.loads((dashboards / "taskstream-lag.json").read_text())
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{provider['options']['path']}/taskstream-lag.json"
    # Every query names metrics the monitor serves, from the provisioned data source.
    queries = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    queries += [v["query"]["query"] for v in dashboard["templating"]["list"]]
    named = {m for q in queries for m in re.findall(r"\b(kafka_\w+|taskstream_\w+)", q)}
    assert named and named <= set(METRICS)
    assert {p["datasource"]["uid"] for p in dashboard["panels"]} == {source["uid"]}
