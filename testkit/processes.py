"""Running the real app and CLI outside a test: its processes and its own names.

Shared by the integration tests, the browser tests' fixtures (tests/e2e/conftest.py) and the
benchmarks (bench/app_memory.py), so all of them start the app the same way. Nothing here
imports pytest or Playwright (the browser's side is testkit.browser).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO
from urllib.parse import quote

from pipeline.core.settings import Settings

__all__ = [
    "ROOT",
    "STOP_TIMEOUT",
    "AppNames",
    "Worker",
    "answers_health",
    "app_names",
    "free_port",
    "log_tail",
    "run_pipeline",
    "start_worker",
]

ROOT = Path(__file__).resolve().parents[1]  # the repository
STOP_TIMEOUT = 15.0


def free_port() -> int:
    """A loopback port nobody listened on a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def log_tail(path: Path, lines: int = 30) -> str:
    if not path.exists():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def run_pipeline(
    *args: str, env: Mapping[str, str] | None = None, timeout: float = 120.0
) -> subprocess.CompletedProcess[str]:
    """`python -m pipeline <args>` from the repository root, as a user runs it from a shell;
    its output captured as text. Without `env`, the current environment."""
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=None if env is None else dict(env),
    )


@dataclass
class Worker:
    """One OS process of the running app, in its own process group, logging to a file."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    log: IO[bytes]

    def exit_message(self) -> str | None:
        """Why the process is gone (with its log's tail), or None while it runs."""
        code = self.process.poll()
        if code is None:
            return None
        return (
            f"`{self.name}` exited with code {code} while the app was starting; "
            f"its log ({self.log_path}):\n{log_tail(self.log_path)}"
        )

    def stop(self) -> None:
        """SIGTERM to the whole group (a graceful stop), SIGKILL if it does not exit in time."""
        for sig, wait in ((signal.SIGTERM, STOP_TIMEOUT), (signal.SIGKILL, 5.0)):
            if self.process.poll() is not None:
                break
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.process.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                continue
        self.log.close()


def start_worker(name: str, argv: list[str], env: dict[str, str], log_dir: Path) -> Worker:
    """`argv` started from the repository root in a process group of its own, logging to
    `log_dir/<name>.log`."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    log = log_path.open("wb")
    process = subprocess.Popen(
        argv,
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group, so teardown reaches every child
    )
    return Worker(name, process, log_path, log)


@dataclass(frozen=True)
class AppNames:
    """The schema, topic, dead-letter topic, index and indexer group one running app owns."""

    name: str  # the topic's and the index's name
    schema: str
    group: str
    dlq: str
    settings: Settings  # the base settings pointed at these names
    env: dict[str, str]  # the environment for the app's processes


def app_names(base: Settings, prefix: str) -> AppNames:
    """Fresh names `<prefix>-<uuid>` for one app, and its settings and environment over them."""
    suffix = uuid.uuid4().hex[:8]
    name = f"{prefix}-{suffix}"
    schema = f"{prefix.replace('-', '_')}_{suffix}"
    group = f"{name}-indexer"
    url = f"{base.database_url}{'&' if '?' in base.database_url else '?'}"
    url += f"options={quote('-c search_path=' + schema)}"
    own = base.replace(
        database_url=url, kafka_topic=name, elasticsearch_index=name, indexer_group=group,
        taskstream_read_only=False,
    )  # fmt: skip
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "KAFKA_TOPIC": name,
        "ELASTICSEARCH_INDEX": name,
        "INDEXER_GROUP": group,
        "TASKSTREAM_READ_ONLY": "false",
        "PYTHONUNBUFFERED": "1",
    }
    return AppNames(name, schema, group, f"{name}.dlq", own, env)


def answers_health(port: int) -> bool:
    """True when Streamlit on 127.0.0.1:`port` answers its health check."""
    try:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{port}/_stcore/health", timeout=2
        ) as response:
            return response.read() == b"ok"
    except OSError:
        return False
