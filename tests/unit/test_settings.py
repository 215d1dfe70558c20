"""Settings: defaults from docs/architecture.md (Settings), environment and .env, KAFKA_* pass-through, no secret shown."""

import pickle
import re
from pathlib import Path

import pytest

from pipeline.core.settings import (
    SecretStr,
    Settings,
    load_settings,
    redact_url,
    settings_fields,
    settings_table,
)

README = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch, tmp_path):
    for name in list(__import__("os").environ):
        if name.startswith(
            ("KAFKA_", "ELASTICSEARCH_", "DATABASE_", "INDEXER_", "TASKSTREAM_", "DEVSTACK_")
        ):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def test_defaults_are_the_design_table():
    s = load_settings()
    assert s.database_url == "postgresql://taskstream@127.0.0.1:5432/taskstream"
    assert s.kafka_bootstrap_servers == "127.0.0.1:9092,127.0.0.1:9102,127.0.0.1:9112"
    assert (s.kafka_topic, s.kafka_topic_partitions, s.dlq_topic) == ("tasks", 6, "tasks.dlq")
    assert (s.elasticsearch_url, s.elasticsearch_index) == ("http://127.0.0.1:9200", "tasks")
    assert s.indexer_group == "elasticsearch-indexer"
    assert s.read_only is False


def test_environment_wins_over_dotenv(monkeypatch, tmp_path):
    (tmp_path / ".env").write_text("KAFKA_TOPIC=from-file\nKAFKA_TOPIC_PARTITIONS=3\n")
    monkeypatch.setenv("KAFKA_TOPIC", "from-env")
    monkeypatch.setenv("TASKSTREAM_READ_ONLY", "true")
    s = load_settings()
    assert (s.kafka_topic, s.kafka_topic_partitions, s.read_only) == ("from-env", 3, True)


def test_invalid_value_is_refused_naming_the_variable(monkeypatch):
    monkeypatch.setenv("KAFKA_TOPIC_PARTITIONS", "zero")
    with pytest.raises(ValueError, match="kafka_topic_partitions"):
        load_settings()


def test_kafka_pass_through_reaches_client_config(monkeypatch, tmp_path):
    (tmp_path / ".env").write_text("KAFKA_SASL_MECHANISM=PLAIN\n")
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("KAFKA_SASL_USERNAME", "alice")
    monkeypatch.setenv("KAFKA_SASL_PASSWORD", "s3cret-pw")
    config = load_settings().kafka_config(**{"group.id": "g"})
    assert config == {
        "bootstrap.servers": "127.0.0.1:9092,127.0.0.1:9102,127.0.0.1:9112",
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "PLAIN",
        "sasl.username": "alice",
        "sasl.password": "s3cret-pw",
        "group.id": "g",
    }


def test_secrets_never_appear_in_repr_str_or_display(monkeypatch):
    monkeypatch.setenv("KAFKA_SASL_PASSWORD", "s3cret-pw")
    monkeypatch.setenv("ELASTICSEARCH_PASSWORD", "es-pw-123")
    monkeypatch.setenv("ELASTICSEARCH_API_KEY", "key-456")
    monkeypatch.setenv("DATABASE_URL", "postgresql://bob:pg-pw-789@db:5432/tasks")
    s = load_settings()
    shown = " ".join([repr(s), str(s), str(s.display())])
    for secret in ("s3cret-pw", "es-pw-123", "key-456", "pg-pw-789"):
        assert secret not in shown
    assert s.display()["KAFKA_SASL_PASSWORD"] == "********"
    assert s.display()["DATABASE_URL"] == "postgresql://bob:********@db:5432/tasks"
    assert s.elasticsearch_auth() == {"api_key": "key-456"}


def test_basic_auth_when_no_api_key(monkeypatch):
    monkeypatch.setenv("ELASTICSEARCH_USERNAME", "elastic")
    monkeypatch.setenv("ELASTICSEARCH_PASSWORD", "pw")
    assert load_settings().elasticsearch_auth() == {"basic_auth": ("elastic", "pw")}


def test_redact_url_leaves_passwordless_urls_alone():
    assert redact_url("postgresql://u@h/db") == "postgresql://u@h/db"
    assert redact_url("postgresql://u:p@h:1/db") == "postgresql://u:********@h:1/db"


def test_configuration_table_matches_the_settings():
    readme = README.read_text()
    for name, _default, _description in settings_fields():
        assert f"`{name.upper()}`" in readme, (
            f"docs/configuration.md does not document {name.upper()}"
        )
    assert settings_table() in readme, (
        "regenerate docs/configuration.md's table with pipeline.core.settings.settings_table()"
    )
    assert re.search(r"KAFKA_<LIBRDKAFKA_KEY>|KAFKA_SASL_USERNAME", readme)


def test_architecture_document_carries_the_same_table():
    architecture = (README.parent / "architecture.md").read_text()
    assert settings_table() in architecture, (
        "regenerate docs/architecture.md's table with pipeline.core.settings.settings_table()"
    )


def test_display_writes_numbers_as_one_would_type_them_and_reads_back_the_same(monkeypatch):
    monkeypatch.setenv("LAG_HISTORY_HOURS", "24")
    assert load_settings().display()["LAG_HISTORY_HOURS"] == "24"
    monkeypatch.setenv("LAG_HISTORY_HOURS", "1234567.25")
    shown = load_settings().display()["LAG_HISTORY_HOURS"]
    assert shown == "1234567.25"
    monkeypatch.setenv("LAG_HISTORY_HOURS", shown)
    assert load_settings().lag_history_hours == 1234567.25


def test_every_wrong_value_is_named_with_what_to_fix(monkeypatch):
    monkeypatch.setenv("APP_PORT", "70000")
    monkeypatch.setenv("LAG_HISTORY_HOURS", "0")
    monkeypatch.setenv("TASKSTREAM_READ_ONLY", "maybe")
    with pytest.raises(ValueError) as caught:
        load_settings()
    message = str(caught.value)
    assert "app_port (APP_PORT): must be at most 65535, got 70000" in message
    assert "lag_history_hours (LAG_HISTORY_HOURS): must be more than 0, got 0" in message
    assert "taskstream_read_only (TASKSTREAM_READ_ONLY): must be true or false" in message


def test_values_given_in_code_are_read_and_checked_like_the_environment():
    s = Settings(kafka_topic_partitions="3", taskstream_read_only="yes", lag_history_hours=2)
    assert (s.kafka_topic_partitions, s.read_only, s.lag_history_hours) == (3, True, 2.0)
    assert s.replace(kafka_topic="other").kafka_topic == "other"
    with pytest.raises(ValueError, match="kafka_topic_partitions"):
        s.replace(kafka_topic_partitions=0)
    with pytest.raises(TypeError):
        s.replace(no_such_setting=1)
    with pytest.raises(AttributeError):
        s.kafka_topic = "changed"  # type: ignore[misc]


def test_names_match_without_regard_to_case_and_empty_optionals_are_unset(monkeypatch):
    monkeypatch.setenv("kafka_topic", "lower")
    monkeypatch.setenv("ELASTICSEARCH_API_KEY", "")
    monkeypatch.setenv("ELASTICSEARCH_USERNAME", "")
    s = load_settings()
    assert s.kafka_topic == "lower"
    assert (s.elasticsearch_api_key, s.elasticsearch_username) == (None, None)
    assert s.elasticsearch_auth() == {}


def test_settings_travel_to_worker_processes_with_their_secrets(monkeypatch):
    monkeypatch.setenv("KAFKA_SASL_PASSWORD", "s3cret-pw")
    monkeypatch.setenv("ELASTICSEARCH_PASSWORD", "es-pw")
    s = load_settings()
    copy = pickle.loads(pickle.dumps(s))
    assert copy == s
    assert copy.kafka_config()["sasl.password"] == "s3cret-pw"
    assert copy.elasticsearch_password == SecretStr("es-pw")
    assert "es-pw" not in repr(copy.elasticsearch_password)


# -- OUTBOX_RETENTION: a duration ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("typed", "seconds"),
    [
        ("7d", 7 * 86_400),
        ("36h", 36 * 3_600),
        ("90m", 90 * 60),
        ("45s", 45),
        ("3600", 3_600),
        ("1.5h", 5_400),
        (" 2D ", 2 * 86_400),
        ("250ms", 0.25),
    ],
)
def test_outbox_retention_reads_a_duration_and_shows_it_as_typed(monkeypatch, typed, seconds):
    monkeypatch.setenv("OUTBOX_RETENTION", typed)
    s = load_settings()
    assert s.outbox_retention == seconds
    assert isinstance(s.outbox_retention, float)
    assert s.display()["OUTBOX_RETENTION"] == typed.strip()
    # What display() shows reads back the same, and the value travels to worker processes.
    monkeypatch.setenv("OUTBOX_RETENTION", s.display()["OUTBOX_RETENTION"])
    assert load_settings().outbox_retention == seconds
    copy = pickle.loads(pickle.dumps(s))
    assert (copy.outbox_retention, copy.outbox_retention.text) == (seconds, typed.strip())


def test_outbox_retention_defaults_to_seven_days_and_takes_seconds_in_code(monkeypatch):
    monkeypatch.delenv("OUTBOX_RETENTION", raising=False)
    s = load_settings()
    assert s.outbox_retention == 7 * 86_400
    assert s.display()["OUTBOX_RETENTION"] == "7d"
    assert repr(s.outbox_retention) == "Duration('7d')"
    assert "| `OUTBOX_RETENTION` | `7d` |" in settings_table()
    given = s.replace(outbox_retention=90)
    assert (given.outbox_retention, given.display()["OUTBOX_RETENTION"]) == (90, "90s")
    assert s.replace(outbox_retention=0.25).display()["OUTBOX_RETENTION"] == "0.25s"
    assert s.replace(outbox_retention="2h").outbox_retention == 7_200


def test_the_refresh_interval_is_a_duration_of_more_than_nothing(monkeypatch):
    monkeypatch.delenv("ELASTICSEARCH_REFRESH_INTERVAL", raising=False)
    assert load_settings().elasticsearch_refresh_interval.text == "1s"
    monkeypatch.setenv("ELASTICSEARCH_REFRESH_INTERVAL", "250ms")
    assert load_settings().elasticsearch_refresh_interval == 0.25
    for wrong in ("0ms", "fast"):
        monkeypatch.setenv("ELASTICSEARCH_REFRESH_INTERVAL", wrong)
        with pytest.raises(ValueError, match="ELASTICSEARCH_REFRESH_INTERVAL"):
            load_settings()


@pytest.mark.parametrize("wrong", ["7w", "", "d", "soon", "nan", "inf", "7d12h", "1 week"])
def test_an_unreadable_outbox_retention_is_refused_naming_the_variable(monkeypatch, wrong):
    monkeypatch.setenv("OUTBOX_RETENTION", wrong)
    with pytest.raises(ValueError) as caught:
        load_settings()
    assert (
        "outbox_retention (OUTBOX_RETENTION): must be a duration such as 7d, 36h, 90m or 45s, "
        f"or a number of seconds, got {wrong!r}"
    ) in str(caught.value)


@pytest.mark.parametrize(("wrong", "said"), [("0", "be more than 0"), ("-5m", "not be negative")])
def test_outbox_retention_must_be_more_than_nothing(monkeypatch, wrong, said):
    monkeypatch.setenv("OUTBOX_RETENTION", wrong)
    with pytest.raises(ValueError, match=rf"outbox_retention \(OUTBOX_RETENTION\): must {said}"):
        load_settings()


@pytest.mark.parametrize(
    ("count", "bootstrap"),
    [(None, "127.0.0.1:9092,127.0.0.1:9102,127.0.0.1:9112"), ("1", "127.0.0.1:9092"),
     ("2", "127.0.0.1:9092,127.0.0.1:9102"), ("x", "127.0.0.1:9092,127.0.0.1:9102,127.0.0.1:9112")],
)  # fmt: skip
def test_the_default_bootstrap_lists_the_devstack_brokers(count, bootstrap):
    environ = {} if count is None else {"DEVSTACK_KAFKA_BROKERS": count}
    assert load_settings(env_file=None, environ=environ).kafka_bootstrap_servers == bootstrap
    given = {**environ, "KAFKA_BOOTSTRAP_SERVERS": "kafka:9092"}
    assert load_settings(env_file=None, environ=given).kafka_bootstrap_servers == "kafka:9092"
