"""taskstream's settings: one typed object, built at the edge from the environment and `.env`.

Each setting carries its environment variable, type, default and description in one place
(`SETTINGS_TABLE` renders them for docs/configuration.md, and a test keeps the two in step).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from dotenv import dotenv_values
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings", "load_settings", "redact_url", "settings_table"]

# Names under KAFKA_ that are taskstream's own, not librdkafka pass-through keys.
_OWN_KAFKA_VARIABLES = {"KAFKA_BOOTSTRAP_SERVERS", "KAFKA_TOPIC", "KAFKA_TOPIC_PARTITIONS"}
# librdkafka keys whose values are secrets: never shown in the UI or logs.
_SECRET_KAFKA_KEYS = {
    "sasl.password",
    "sasl.oauthbearer.client.secret",
    "ssl.key.password",
    "ssl.key.pem",
    "ssl.keystore.password",
}
REDACTED = "********"
_PASS_THROUGH_FIELDS = {"kafka_options", "kafka_secrets"}


class Settings(BaseSettings):
    """Everything taskstream can be configured with; see `settings_table()`.

    Build it with `load_settings()`, which also collects the KAFKA_* pass-through options.
    """

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", frozen=True
    )

    database_url: str = Field(
        "postgresql://taskstream@127.0.0.1:5432/taskstream",
        description="PostgreSQL connection URL (tasks, outbox, replays, lag history).",
    )
    kafka_bootstrap_servers: str = Field(
        "127.0.0.1:9092", description="Kafka bootstrap servers, comma-separated host:port."
    )
    kafka_topic: str = Field("tasks", description="Topic the task events are published to.")
    kafka_topic_partitions: int = Field(
        6, ge=1, description="Partitions of the topic when taskstream creates it."
    )
    elasticsearch_url: str = Field("http://127.0.0.1:9200", description="Elasticsearch URL.")
    elasticsearch_index: str = Field("tasks", description="The live index the indexer writes.")
    elasticsearch_api_key: SecretStr | None = Field(
        None, description="Elasticsearch API key (secret)."
    )
    elasticsearch_username: str | None = Field(None, description="Elasticsearch user name.")
    elasticsearch_password: SecretStr | None = Field(
        None, description="Elasticsearch password (secret)."
    )
    indexer_group: str = Field(
        "elasticsearch-indexer", description="Consumer group of the live indexer."
    )
    taskstream_read_only: bool = Field(
        False, description="Refuse every write: tasks, topics, replays, offset resets, indices."
    )
    app_address: str = Field(
        "127.0.0.1",
        description="Address the Streamlit app listens on; loopback by default (see "
        "Serving for a shared setup behind a reverse proxy).",
    )
    app_port: int = Field(8501, ge=1, le=65535, description="Port the Streamlit app listens on.")
    lag_history_hours: float = Field(
        24, gt=0, description="Hours of lag history the app keeps in PostgreSQL."
    )
    lag_history_max_rows: int = Field(
        2_000_000,
        ge=10_000,
        description="Row cap of the lag history (all topics; a row per group and partition per "
        "sample, every 5 s): the oldest samples go first when it is reached.",
    )
    # Filled from every other KAFKA_<LIBRDKAFKA_KEY> variable (see `load_settings`).
    kafka_options: dict[str, str] = Field(default_factory=dict, exclude=True)
    kafka_secrets: dict[str, SecretStr] = Field(default_factory=dict, exclude=True)

    @property
    def read_only(self) -> bool:
        """True when every write must be refused."""
        return self.taskstream_read_only

    @property
    def dlq_topic(self) -> str:
        """The dead-letter topic beside the events topic."""
        return f"{self.kafka_topic}.dlq"

    def kafka_config(self, **overrides: Any) -> dict[str, Any]:
        """librdkafka configuration for any client: bootstrap servers plus the pass-through keys."""
        config: dict[str, Any] = {"bootstrap.servers": self.kafka_bootstrap_servers}
        config.update(self.kafka_options)
        config.update({key: value.get_secret_value() for key, value in self.kafka_secrets.items()})
        config.update(overrides)
        return config

    def elasticsearch_auth(self) -> dict[str, Any]:
        """Keyword arguments for the Elasticsearch client's authentication."""
        if self.elasticsearch_api_key is not None:
            return {"api_key": self.elasticsearch_api_key.get_secret_value()}
        if self.elasticsearch_username:
            password = (
                self.elasticsearch_password.get_secret_value()
                if self.elasticsearch_password
                else ""
            )
            return {"basic_auth": (self.elasticsearch_username, password)}
        return {}

    def display(self) -> dict[str, str]:
        """The settings as shown to people: every secret replaced by asterisks."""
        shown: dict[str, str] = {}
        for name in type(self).model_fields:
            if name in _PASS_THROUGH_FIELDS:
                continue
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                shown[name.upper()] = REDACTED
            elif value is None:
                continue
            elif name == "database_url":
                shown[name.upper()] = redact_url(value)
            elif isinstance(value, bool):
                shown[name.upper()] = str(value).lower()
            elif isinstance(value, float):
                # 24, not 24.0, as one would write it; never rounded
                shown[name.upper()] = str(int(value)) if value.is_integer() else repr(value)
            else:
                shown[name.upper()] = str(value)
        for key in sorted({*self.kafka_options, *self.kafka_secrets}):
            env = "KAFKA_" + key.replace(".", "_").upper()
            shown[env] = REDACTED if key in self.kafka_secrets else self.kafka_options[key]
        return shown

    def redact_secrets(self, text: str) -> str:
        """text with every configured secret value replaced by asterisks (for error messages)."""
        secrets = [value.get_secret_value() for value in self.kafka_secrets.values()]
        for value in (self.elasticsearch_password, self.elasticsearch_api_key):
            if value is not None:
                secrets.append(value.get_secret_value())
        password = urlsplit(self.database_url).password
        if password:
            secrets.append(password)
        # Longest first, so a secret that contains another is replaced whole.
        for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
            text = text.replace(secret, REDACTED)
        return text

    def __repr_args__(self):  # keep secrets out of repr() and therefore out of logs
        for name, value in super().__repr_args__():
            if name == "database_url" and isinstance(value, str):
                yield name, redact_url(value)
            elif name == "kafka_secrets":
                yield name, {key: REDACTED for key in value}
            else:
                yield name, value


def redact_url(url: str) -> str:
    """The URL with any password replaced by asterisks."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return urlunsplit(parts._replace(netloc=f"{user}:{REDACTED}@{host}{port}"))


def _kafka_pass_through(
    variables: Mapping[str, str | None],
) -> tuple[dict[str, str], dict[str, SecretStr]]:
    """Split KAFKA_<KEY> variables into librdkafka options and secret options."""
    options: dict[str, str] = {}
    secrets: dict[str, SecretStr] = {}
    for name, value in variables.items():
        if not name.startswith("KAFKA_") or name in _OWN_KAFKA_VARIABLES or value is None:
            continue
        key = name[len("KAFKA_") :].lower().replace("_", ".")
        if key in _SECRET_KAFKA_KEYS:
            secrets[key] = SecretStr(value)
        else:
            options[key] = value
    return options, secrets


def load_settings(env_file: str | Path | None = ".env") -> Settings:
    """Build the settings from the environment, which wins over the `.env` file if there is one."""
    file_values: dict[str, str | None] = {}
    if env_file is not None and Path(env_file).is_file():
        file_values = dict(dotenv_values(env_file))
    options, secrets = _kafka_pass_through({**file_values, **os.environ})
    return Settings(_env_file=env_file, kafka_options=options, kafka_secrets=secrets)  # type: ignore[call-arg]


def settings_table() -> str:
    """The configuration table for docs/configuration.md, in Markdown."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        if name in _PASS_THROUGH_FIELDS:
            continue
        default = field.default
        shown = (
            ""
            if default is None
            else str(default).lower()
            if isinstance(default, bool)
            else str(default)
        )
        rows.append(f"| `{name.upper()}` | `{shown}` | {field.description} |")
    return "\n".join(rows)
