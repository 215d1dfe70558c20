"""Where and how devstack runs each service: addresses from taskstream's settings, the rest from DEVSTACK_*."""

from __future__ import annotations

import hashlib
import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from psycopg.conninfo import conninfo_to_dict

from devstack.processes import DevstackError
from pipeline.settings import Settings, load_settings

__all__ = ["DevstackConfig", "load_config"]

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SERVICE_USER = "taskstream"
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


@dataclass(frozen=True)
class DevstackConfig:
    """Everything devstack needs to start, find and stop the three services."""

    settings: Settings
    state_dir: Path
    kafka_host: str
    kafka_port: int
    kafka_controller_port: int
    kafka_heap: str
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


def load_config(settings: Settings | None = None) -> DevstackConfig:
    """The devstack configuration from taskstream's settings and DEVSTACK_* variables."""
    settings = settings or load_settings()
    env = os.environ
    kafka_host, kafka_port = _host_port(settings.kafka_bootstrap_servers.split(",")[0], 9092)
    es = urlsplit(settings.elasticsearch_url)
    pg = conninfo_to_dict(settings.database_url)
    try:
        return DevstackConfig(
            settings=settings,
            state_dir=Path(env.get("DEVSTACK_DIR", PROJECT_ROOT / ".devstack")).absolute(),
            kafka_host=kafka_host,
            kafka_port=kafka_port,
            kafka_controller_port=int(env.get("DEVSTACK_KAFKA_CONTROLLER_PORT", kafka_port + 1)),
            kafka_heap=env.get("DEVSTACK_KAFKA_HEAP", "512m"),
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
        )
    except ValueError as exc:
        raise DevstackError(f"invalid devstack setting: {exc}") from exc
