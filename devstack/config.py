"""Where and how devstack runs each service: addresses from taskstream's settings, the rest from DEVSTACK_*."""

from __future__ import annotations

import hashlib
import os
import pwd
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from psycopg.conninfo import conninfo_to_dict

from devstack.processes import DevstackError
from pipeline.core.settings import SecretStr, Settings, load_settings

__all__ = ["SASL_MECHANISMS", "DevstackConfig", "load_config"]

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SERVICE_USER = "taskstream"
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
# The SASL listener's user: a fixed development credential (README), never printed.
SASL_USER = "taskstream"
SASL_PASSWORD = "taskstream-dev-password"
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256")
DEFAULT_BROKERS = 3
_OFF = {"", "0", "off", "no", "false"}
# Written into a JAAS config and a SCRAM credential: no quotes, backslashes, ';' or blanks.
_SASL_USER_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
_SASL_PASSWORD_TEXT = re.compile(r"[!#-:<-\[\]-~]{8,128}")


@dataclass(frozen=True)
class DevstackConfig:
    """Everything devstack needs to start, find and stop the three services."""

    settings: Settings
    state_dir: Path
    kafka_host: str
    # Broker n (0-based) listens on kafka_port + 10n, its controller on kafka_controller_port +
    # 10n and its SASL listener on kafka_sasl_port + 10n: 9092, 9102, 9112 for three.
    kafka_port: int
    kafka_controller_port: int
    kafka_heap: str
    # The SASL_PLAINTEXT listener (None: off) and its one user, for PLAIN and SCRAM-SHA-256.
    kafka_sasl_port: int | None
    kafka_sasl_user: str
    kafka_sasl_password: SecretStr = field(repr=False)
    es_url: str
    es_host: str
    es_port: int
    es_transport_port: int
    es_heap: str
    pg_host: str
    pg_port: int
    pg_user: str
    pg_database: str
    start_timeout: float
    kafka_brokers: int = 1

    @property
    def kafka_nodes(self) -> range:
        """The node ids of devstack's Kafka brokers (each also a controller and quorum voter)."""
        return range(self.kafka_brokers)

    @property
    def replication_factor(self) -> int:
        """The replication factor devstack's cluster gives topics: 3 from three brokers, else 1."""
        return 3 if self.kafka_brokers >= 3 else 1

    def kafka_address(self, node: int) -> str:
        """host:port of broker `node`'s PLAINTEXT listener."""
        return f"{self.kafka_host}:{self.kafka_port + 10 * node}"

    def kafka_bootstrap(self) -> str:
        """Every broker's PLAINTEXT address, comma-separated."""
        return ",".join(self.kafka_address(n) for n in self.kafka_nodes)

    def kafka_sasl_node_address(self, node: int) -> str | None:
        """host:port of broker `node`'s SASL_PLAINTEXT listener, or None when it is off."""
        if self.kafka_sasl_port is None:
            return None
        return f"{self.kafka_host}:{self.kafka_sasl_port + 10 * node}"

    @property
    def kafka_sasl_address(self) -> str | None:
        """Every broker's SASL_PLAINTEXT listener, comma-separated, or None when it is off."""
        if self.kafka_sasl_port is None:
            return None
        return ",".join(str(self.kafka_sasl_node_address(n)) for n in self.kafka_nodes)

    def kafka_sasl_settings(
        self, mechanism: str = "PLAIN", *, username: str | None = None, password: str | None = None
    ) -> Settings:
        """taskstream's settings pointed at the SASL listener, as a user would set KAFKA_SASL_*."""
        address = self.kafka_sasl_address
        if address is None:
            raise DevstackError("the Kafka SASL listener is off (DEVSTACK_KAFKA_SASL_PORT=off)")
        if mechanism not in SASL_MECHANISMS:
            raise DevstackError(
                f"unknown SASL mechanism {mechanism!r}; the listener offers {', '.join(SASL_MECHANISMS)}"
            )
        secret = SecretStr(password) if password is not None else self.kafka_sasl_password
        return self.settings.replace(
            kafka_bootstrap_servers=address,
            kafka_options={
                **self.settings.kafka_options,
                "security.protocol": "SASL_PLAINTEXT",
                "sasl.mechanism": mechanism,
                "sasl.username": username if username is not None else self.kafka_sasl_user,
            },
            kafka_secrets={**self.settings.kafka_secrets, "sasl.password": secret},
        )

    @property
    def service_user(self) -> str | None:
        """The unprivileged user for Elasticsearch and PostgreSQL (both refuse root), or None."""
        return SERVICE_USER if os.geteuid() == 0 else None

    def private_dir(self, name: str) -> Path:
        """A service's data folder that its unprivileged user can reach, linked at .devstack/NAME.

        As root, the project may sit in a folder other users cannot enter (a mktemp -d clone, say),
        so the data lives under /var/lib/taskstream-devstack and .devstack/NAME points there.
        """
        link = self.state_dir / name
        user = self.service_user
        if user is None:
            link.mkdir(parents=True, exist_ok=True)
            return link
        digest = hashlib.sha256(str(self.state_dir.resolve()).encode()).hexdigest()[:10]
        target = Path("/var/lib/taskstream-devstack") / digest / name
        target.mkdir(parents=True, exist_ok=True)
        target.parent.chmod(0o755)
        target.parent.parent.chmod(0o755)
        entry = ensure_service_user(user)
        shutil.chown(target, entry.pw_uid, entry.pw_gid)
        if link.is_symlink() and link.resolve() != target:
            link.unlink()
        if not link.exists():
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(target, target_is_directory=True)
        return target

    def chown(self, path: Path) -> None:
        """Give path to the service user (a no-op when not root)."""
        if self.service_user is not None:
            entry = pwd.getpwnam(self.service_user)
            for root, dirs, files in os.walk(path):
                for name in [*dirs, *files]:
                    os.lchown(Path(root, name), entry.pw_uid, entry.pw_gid)
            os.lchown(path, entry.pw_uid, entry.pw_gid)


def ensure_service_user(user: str) -> pwd.struct_passwd:
    """The unprivileged system user, created when missing (we are root here)."""
    try:
        return pwd.getpwnam(user)
    except KeyError:
        pass
    try:
        subprocess.run(
            ["useradd", "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent",
             "--shell", "/usr/sbin/nologin", user],
            check=True, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    except (OSError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", "") or exc
        raise DevstackError(
            f"Elasticsearch and PostgreSQL refuse to run as root, and creating the user '{user}' "
            f"failed: {detail}. Create it (useradd --system {user}) or run devstack as a normal user."
        ) from exc
    return pwd.getpwnam(user)


def _host_port(text: str, default_port: int) -> tuple[str, int]:
    host, _, port = text.strip().rpartition(":")
    if not host:
        return text.strip(), default_port
    return host.strip("[]"), int(port)


def _sasl_port(text: str | None, kafka_port: int) -> int | None:
    """DEVSTACK_KAFKA_SASL_PORT: a port, "off" for no SASL listener, unset for Kafka port + 2."""
    if text is None:
        return kafka_port + 2
    if text.strip().lower() in _OFF:
        return None
    return int(text)


def _broker_count(text: str | None) -> int:
    """DEVSTACK_KAFKA_BROKERS: how many KRaft nodes (each broker and controller), 1 to 5; 3 unset."""
    if text is None or not text.strip():
        return DEFAULT_BROKERS
    count = int(text)
    if not 1 <= count <= 5:
        raise ValueError(f"DEVSTACK_KAFKA_BROKERS must be 1 to 5, got {count}")
    return count


def _sasl_credentials(env: os._Environ[str] | dict[str, str]) -> tuple[str, SecretStr]:
    user = env.get("DEVSTACK_KAFKA_SASL_USER", SASL_USER)
    password = env.get("DEVSTACK_KAFKA_SASL_PASSWORD", SASL_PASSWORD)
    if not _SASL_USER_NAME.fullmatch(user):
        raise DevstackError(
            f"DEVSTACK_KAFKA_SASL_USER {user!r} is not a plain user name (letters, digits, . _ -)"
        )
    if not _SASL_PASSWORD_TEXT.fullmatch(password):
        # Never echo the password itself, not even in an error.
        raise DevstackError(
            "DEVSTACK_KAFKA_SASL_PASSWORD must be 8-128 printable characters without blanks, "
            "quotes, backslashes or ';' (it is written into a JAAS configuration)"
        )
    return user, SecretStr(password)


def load_config(settings: Settings | None = None) -> DevstackConfig:
    """The devstack configuration from taskstream's settings and DEVSTACK_* variables."""
    settings = settings or load_settings()
    env = os.environ
    kafka_host, kafka_port = _host_port(settings.kafka_bootstrap_servers.split(",")[0], 9092)
    es = urlsplit(settings.elasticsearch_url)
    pg = conninfo_to_dict(settings.database_url)
    try:
        sasl_user, sasl_password = _sasl_credentials(env)
        return DevstackConfig(
            settings=settings,
            state_dir=Path(env.get("DEVSTACK_DIR", PROJECT_ROOT / ".devstack")).absolute(),
            kafka_host=kafka_host,
            kafka_port=kafka_port,
            kafka_controller_port=int(env.get("DEVSTACK_KAFKA_CONTROLLER_PORT", kafka_port + 1)),
            kafka_heap=env.get("DEVSTACK_KAFKA_HEAP", "512m"),
            kafka_sasl_port=_sasl_port(env.get("DEVSTACK_KAFKA_SASL_PORT"), kafka_port),
            kafka_sasl_user=sasl_user,
            kafka_sasl_password=sasl_password,
            es_url=settings.elasticsearch_url.rstrip("/"),
            es_host=es.hostname or "127.0.0.1",
            es_port=es.port or 9200,
            es_transport_port=int(env.get("DEVSTACK_ES_TRANSPORT_PORT", (es.port or 9200) + 100)),
            es_heap=env.get("DEVSTACK_ES_HEAP", "512m"),
            pg_host=str(pg.get("host") or "127.0.0.1"),
            pg_port=int(pg.get("port") or 5432),
            pg_user=str(pg.get("user") or "taskstream"),
            pg_database=str(pg.get("dbname") or "taskstream"),
            start_timeout=float(env.get("DEVSTACK_START_TIMEOUT", "180")),
            kafka_brokers=_broker_count(env.get("DEVSTACK_KAFKA_BROKERS")),
        )
    except ValueError as exc:
        raise DevstackError(f"invalid devstack setting: {exc}") from exc
