"""taskstream's settings: one typed object, built at the edge from the environment and `.env`.

Each setting carries its environment variable, type, default and description in one place
(`settings_table()` renders them for docs/configuration.md, and a test keeps the two in step).

The standard library only (a frozen dataclass): every command that reads the settings, `lag
--json` among them, starts without importing a validation framework (docs/cli-startup.md).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

__all__ = [
    "Duration",
    "SecretStr",
    "Settings",
    "SettingsError",
    "load_settings",
    "redact_url",
    "settings_table",
]

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
_TRUE = {"1", "true", "yes", "on", "t", "y"}
_FALSE = {"0", "false", "no", "off", "f", "n"}


class SecretStr:
    """A secret value: shown as asterisks by str() and repr(), read with get_secret_value()."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get_secret_value(self) -> str:
        return self._value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SecretStr) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __str__(self) -> str:
        return REDACTED

    def __repr__(self) -> str:
        return f"SecretStr('{REDACTED}')"

    def __reduce__(self):  # worker processes receive the settings pickled
        return (SecretStr, (self._value,))


# Duration units: "7d", "36h", "90m", "45s", "250ms"; a plain number is seconds.
_DURATION_UNITS = {"d": 86_400.0, "h": 3_600.0, "m": 60.0, "s": 1.0}


class Duration(float):
    """A length of time: a float of seconds, read from "7d", "36h", "90m", "45s" or a number of
    seconds, and written back as it was given (`text`, what `display()` and the docs show)."""

    __slots__ = ("text",)
    text: str

    def __new__(cls, value: Any) -> Duration:
        if isinstance(value, Duration):
            return value
        wrong = ValueError(
            f"must be a duration such as 7d, 36h, 90m or 45s, or a number of seconds, got {value!r}"
        )
        if isinstance(value, str):
            text = value.strip()
            unit = text[-1:].lower()
            number: Any = text[:-1] if unit in _DURATION_UNITS else text
            scale = _DURATION_UNITS.get(unit, 1.0)
            if text[-2:].lower() == "ms":
                number, scale = text[:-2], 0.001
        elif isinstance(value, int | float) and not isinstance(value, bool):
            number, scale, text = value, 1.0, ""
        else:
            raise wrong
        try:
            seconds = float(number) * scale
        except ValueError:
            raise wrong from None
        if seconds != seconds or seconds in (float("inf"), float("-inf")):
            raise wrong
        if seconds < 0:
            raise ValueError(f"must not be negative, got {value!r}")
        duration = super().__new__(cls, seconds)
        # Given as a number: written as seconds, 90 rather than 90.0 (never rounded).
        duration.text = text or f"{int(seconds) if seconds.is_integer() else repr(seconds)}s"
        return duration

    def __repr__(self) -> str:
        return f"Duration({self.text!r})"

    def __reduce__(self):  # worker processes receive the settings pickled
        return (Duration, (self.text,))


class SettingsError(ValueError):
    """A setting whose value cannot be used; the message names the variable and what to fix."""


def _setting(default: Any, description: str, **bounds: float) -> Any:
    """A dataclass field carrying its description and numeric bounds (ge, gt, le)."""
    return field(default=default, metadata={"description": description, **bounds})


@dataclass(frozen=True, repr=False)
class Settings:
    """Everything taskstream can be configured with; see `settings_table()`.

    Build it from the environment with `load_settings()`, which also collects the KAFKA_*
    pass-through options; `Settings(**values)` takes values as given (strings are read the way
    the environment's are) and refuses a wrong one with `SettingsError` naming the setting.
    """

    database_url: str = _setting(
        "postgresql://taskstream@127.0.0.1:5432/taskstream",
        "PostgreSQL connection URL (tasks, outbox, replays, lag history).",
    )
    kafka_bootstrap_servers: str = _setting(
        "127.0.0.1:9092,127.0.0.1:9102,127.0.0.1:9112",
        "Kafka bootstrap servers, comma-separated host:port (the default lists the devstack's "
        "three brokers, so a client starts while one is down; with DEVSTACK_KAFKA_BROKERS=N, "
        "its N brokers).",
    )
    kafka_topic: str = _setting("tasks", "Topic the task events are published to.")
    kafka_topic_partitions: int = _setting(
        6, "Partitions of the topic when taskstream creates it.", ge=1
    )
    elasticsearch_url: str = _setting("http://127.0.0.1:9200", "Elasticsearch URL.")
    elasticsearch_index: str = _setting("tasks", "The live index the indexer writes.")
    elasticsearch_refresh_interval: Duration = _setting(
        Duration("1s"),
        "The index's refresh_interval, which the indexer and replays set on their index: how "
        "soon writes become searchable under load. Under light traffic the indexer refreshes "
        "right after each small batch anyway (see docs/benchmarks.md for what each costs).",
        gt=0,
    )
    elasticsearch_api_key: SecretStr | None = _setting(None, "Elasticsearch API key (secret).")
    elasticsearch_username: str | None = _setting(None, "Elasticsearch user name.")
    elasticsearch_password: SecretStr | None = _setting(None, "Elasticsearch password (secret).")
    indexer_group: str = _setting("elasticsearch-indexer", "Consumer group of the live indexer.")
    taskstream_read_only: bool = _setting(
        False, "Refuse every write: tasks, topics, replays, offset resets, indices."
    )
    app_address: str = _setting(
        "127.0.0.1",
        "Address the Streamlit app listens on; loopback by default (see "
        "Serving for a shared setup behind a reverse proxy).",
    )
    app_port: int = _setting(8501, "Port the Streamlit app listens on.", ge=1, le=65535)
    lag_history_hours: float = _setting(
        24.0, "Hours of lag history the app keeps in PostgreSQL.", gt=0
    )
    lag_history_max_rows: int = _setting(
        2_000_000,
        "Row cap of the lag history (all topics; a row per group and partition per "
        "sample, every 5 s): the oldest samples go first when it is reached.",
        ge=10_000,
    )
    outbox_retention: Duration = _setting(
        Duration("7d"),
        "How long published events stay in the outbox (7d, 36h, 90m, 45s or seconds); the relay "
        "deletes older ones in small batches, never an unpublished one.",
        gt=0,
    )
    metrics_address: str = _setting(
        "127.0.0.1",
        "Address the monitor (`python -m pipeline monitor`) serves Prometheus metrics on; "
        "loopback by default.",
    )
    metrics_port: int = _setting(
        8000, "Port of the monitor's Prometheus metrics (`/metrics`).", ge=1, le=65535
    )
    lab_max_consumers_per_learner: int = _setting(
        6, "Lab consumers one learner may run at once (`lab consumer add` refuses more).", ge=1
    )
    lab_max_consumers: int = _setting(
        30, "Lab consumers running at once for the whole class (each is a process).", ge=1
    )
    lab_max_topics_per_learner: int = _setting(5, "Lab topics one learner may have at once.", ge=1)
    lab_max_messages_per_produce: int = _setting(
        10_000, "Messages one `lab produce` may send.", ge=1
    )
    lab_session_timeout_ms: int = _setting(
        6000,
        "session.timeout.ms of lab consumers (classic protocol): how long a killed member's "
        "partitions wait before the group takes them back.",
        ge=1000,
        le=300_000,
    )
    lab_teacher_key: SecretStr | None = _setting(
        None,
        "The Lab's teacher key (secret): whoever types it on the Lab page gets the teacher view "
        "(every learner's things, resets, broker stop and start). Unset: no teacher on the page.",
    )
    # Filled from every other KAFKA_<LIBRDKAFKA_KEY> variable (see `load_settings`).
    kafka_options: dict[str, str] = field(default_factory=dict)
    kafka_secrets: dict[str, SecretStr] = field(default_factory=dict)

    def __post_init__(self) -> None:
        problems: list[str] = []
        for spec in dataclasses.fields(self):
            if spec.name in _PASS_THROUGH_FIELDS:
                continue
            try:
                value = _convert(spec, getattr(self, spec.name))
            except ValueError as exc:
                problems.append(f"{spec.name} ({spec.name.upper()}): {exc}")
                continue
            object.__setattr__(self, spec.name, value)
        secrets = {
            key: value if isinstance(value, SecretStr) else SecretStr(str(value))
            for key, value in self.kafka_secrets.items()
        }
        object.__setattr__(self, "kafka_secrets", secrets)
        object.__setattr__(self, "kafka_options", dict(self.kafka_options))
        if problems:
            raise SettingsError("invalid settings: " + "; ".join(problems))

    @property
    def read_only(self) -> bool:
        """True when every write must be refused."""
        return self.taskstream_read_only

    @property
    def dlq_topic(self) -> str:
        """The dead-letter topic beside the events topic."""
        return f"{self.kafka_topic}.dlq"

    def replace(self, **changes: Any) -> Settings:
        """A copy with `changes` applied (and checked like any other value)."""
        return dataclasses.replace(self, **changes)

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
        for spec in dataclasses.fields(self):
            if spec.name in _PASS_THROUGH_FIELDS:
                continue
            value = getattr(self, spec.name)
            if value is None:
                continue
            if isinstance(value, SecretStr):
                shown[spec.name.upper()] = REDACTED
            elif spec.name == "database_url":
                shown[spec.name.upper()] = redact_url(value)
            else:
                shown[spec.name.upper()] = _written(value)
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

    def __repr__(self) -> str:  # keep secrets out of repr() and therefore out of logs
        parts = []
        for spec in dataclasses.fields(self):
            value = getattr(self, spec.name)
            if spec.name == "database_url":
                value = redact_url(value)
            elif spec.name == "kafka_secrets":
                value = {key: REDACTED for key in value}
            parts.append(f"{spec.name}={value!r}")
        return f"Settings({', '.join(parts)})"

    __str__ = __repr__


def _convert(spec: dataclasses.Field[Any], value: Any) -> Any:
    """The field's value in its type, read from text the way the environment gives it."""
    kind = spec.type if isinstance(spec.type, str) else getattr(spec.type, "__name__", "")
    optional = kind.endswith("| None")
    kind = kind.removesuffix(" | None")
    if value is None or (optional and value == ""):
        if optional:
            return None
        raise ValueError("is required")
    if kind == "SecretStr":
        return value if isinstance(value, SecretStr) else SecretStr(str(value))
    if kind == "str":
        if not isinstance(value, str):
            raise ValueError(f"must be text, got {value!r}")
        return value
    if kind == "bool":
        return _boolean(value)
    if kind == "int":
        number: float = _integer(value)
    elif kind == "float":
        number = _float(value)
    elif kind == "Duration":
        number = Duration(value)
    else:  # pragma: no cover - a field of a type this function does not know
        raise TypeError(f"{spec.name}: no reader for {kind}")
    _check_bounds(number, spec.metadata)
    return number


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"must be true or false, got {value!r}")


def _integer(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError(f"must be a whole number, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    try:
        return int(str(value).strip().replace("_", ""))
    except ValueError:
        raise ValueError(f"must be a whole number, got {value!r}") from None


def _float(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError(f"must be a number, got {value!r}")
    try:
        number = float(str(value).strip()) if isinstance(value, str) else float(value)
    except (TypeError, ValueError):
        raise ValueError(f"must be a number, got {value!r}") from None
    if number != number or number in (float("inf"), float("-inf")):
        raise ValueError(f"must be a finite number, got {value!r}")
    return number


def _check_bounds(number: float, bounds: Mapping[str, Any]) -> None:
    if "ge" in bounds and number < bounds["ge"]:
        raise ValueError(f"must be at least {_written(bounds['ge'])}, got {_written(number)}")
    if "gt" in bounds and number <= bounds["gt"]:
        raise ValueError(f"must be more than {_written(bounds['gt'])}, got {_written(number)}")
    if "le" in bounds and number > bounds["le"]:
        raise ValueError(f"must be at most {_written(bounds['le'])}, got {_written(number)}")


def _written(value: Any) -> str:
    """A value as one would type it: true/false, 24 rather than 24.0 (never rounded)."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, Duration):
        return value.text
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    return str(value)


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


def _read_env_file(path: Path) -> dict[str, str | None]:
    from dotenv import dotenv_values  # only when there is a file to read

    return dict(dotenv_values(path, encoding="utf-8"))


def load_settings(
    env_file: str | Path | None = ".env", environ: Mapping[str, str] | None = None
) -> Settings:
    """Build the settings from the environment, which wins over the `.env` file if there is one.

    Variable names are matched without regard to case, as the shells' habits differ.
    """
    file_values: dict[str, str | None] = {}
    if env_file is not None and Path(env_file).is_file():
        file_values = _read_env_file(Path(env_file))
    environment = os.environ if environ is None else environ
    variables = {
        name.upper(): value for name, value in [*file_values.items(), *environment.items()]
    }
    options, secrets = _kafka_pass_through(variables)
    values: dict[str, Any] = {
        spec.name: variables[spec.name.upper()]
        for spec in dataclasses.fields(Settings)
        if spec.name not in _PASS_THROUGH_FIELDS and variables.get(spec.name.upper()) is not None
    }
    if "kafka_bootstrap_servers" not in values:
        values["kafka_bootstrap_servers"] = _devstack_bootstrap(variables)
    return Settings(**values, kafka_options=options, kafka_secrets=secrets)


def _devstack_bootstrap(variables: Mapping[str, str | None]) -> str:
    """The default bootstrap: every broker of the devstack's cluster, as many as
    DEVSTACK_KAFKA_BROKERS says (three when unset; devstack refuses a count outside 1-5)."""
    count = (variables.get("DEVSTACK_KAFKA_BROKERS") or "").strip()
    default = Settings.__dataclass_fields__["kafka_bootstrap_servers"].default
    if not (count.isdigit() and 1 <= int(count) <= 5):
        return str(default)
    return ",".join(f"127.0.0.1:{9092 + 10 * n}" for n in range(int(count)))


def settings_fields() -> list[tuple[str, Any, str]]:
    """(name, default, description) of each setting, in order (the pass-through maps left out)."""
    return [
        (spec.name, spec.default, spec.metadata["description"])
        for spec in dataclasses.fields(Settings)
        if spec.name not in _PASS_THROUGH_FIELDS
    ]


def settings_table() -> str:
    """The configuration table for docs/configuration.md, in Markdown."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name, default, description in settings_fields():
        shown = "" if default is None else _written(default)
        rows.append(f"| `{name.upper()}` | `{shown}` | {description} |")
    return "\n".join(rows)
