"""docker-compose.yml parses and runs the same versions as devstack."""

from pathlib import Path

import yaml

from devstack.versions import ELASTICSEARCH_VERSION, KAFKA_VERSION, POSTGRES_MAJOR

COMPOSE = Path(__file__).resolve().parents[2] / "docker-compose.yml"


def load() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_images_match_devstack_versions():
    services = load()["services"]
    assert services["kafka"]["image"] == f"apache/kafka:{KAFKA_VERSION}"
    assert services["elasticsearch"]["image"] == (
        f"docker.elastic.co/elasticsearch/elasticsearch:{ELASTICSEARCH_VERSION}"
    )
    assert services["postgres"]["image"] == f"postgres:{POSTGRES_MAJOR}"


def test_ports_and_settings_follow_design():
    services = load()["services"]
    assert "127.0.0.1:9092:9092" in services["kafka"]["ports"]
    assert "127.0.0.1:9200:9200" in services["elasticsearch"]["ports"]
    assert "127.0.0.1:5432:5432" in services["postgres"]["ports"]
    assert services["elasticsearch"]["environment"]["xpack.security.enabled"] == "false"
    assert services["kafka"]["environment"]["KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS"] == 0
    assert services["postgres"]["environment"]["POSTGRES_DB"] == "taskstream"
    app_env = services["app"]["environment"]
    assert set(app_env) >= {"DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS", "ELASTICSEARCH_URL"}
    for dependency in ("kafka", "elasticsearch", "postgres"):
        assert services["app"]["depends_on"][dependency]["condition"] == "service_healthy"


def test_relay_and_indexer_run_beside_the_app_with_its_settings():
    services = load()["services"]
    for name in ("relay", "indexer"):
        assert services[name]["command"] == ["python", "-m", "pipeline", name]
        assert services[name]["environment"] == services["app"]["environment"]
        assert services[name]["depends_on"] == services["app"]["depends_on"]
