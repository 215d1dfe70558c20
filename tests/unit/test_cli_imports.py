"""`python -m pipeline` starts at once: each command imports only what it needs when it runs.

Each check runs a fresh interpreter and lists the modules it imported, so an eager import
anywhere on the path (pipeline/cli.py or a module a command loads) shows up here. No timings:
the lists are what the start-up time follows (bench/cli_startup.py measures it).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Never needed to list the commands or to read lag: drivers, the app, data frames.
HEAVY = {
    "elasticsearch",
    "elastic_transport",
    "psycopg",
    "psycopg_pool",
    "streamlit",
    "pandas",
    "numpy",
    "pyarrow",
    "tqdm",
    "pydantic",  # the settings are a standard-library dataclass
}
# Not needed before a command runs either: the settings and the Kafka client.
NOT_FOR_HELP = HEAVY | {"dotenv", "confluent_kafka", "orjson"}

# The `lag` command's whole path with the two Kafka round trips stubbed: settings, logging,
# the Kafka credentials check, the report and the JSON output all run as in a real call.
LAG_PATH = """
import contextlib
import sys
from pipeline.core import clock
from pipeline.kafka import clients
from pipeline.lag import reader

clients.checked_admin = lambda settings, timeout: contextlib.nullcontext()
reader.lag_report = lambda settings, groups, admin: reader.LagSnapshot(
    settings.kafka_topic, clock.utcnow(), [], [], []
)
from pipeline.cli import main

code = main(["lag", "--json", *sys.argv[1:]])
print("\\n".join(sorted(sys.modules)), file=sys.stderr)
sys.exit(code)
"""


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("KAFKA_", "DATABASE_", "ELASTICSEARCH_", "TASKSTREAM_"))
    }
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )


def _importtime_names(stderr: str) -> set[str]:
    """Module names from `-X importtime` lines ('import time: self | cumulative | name')."""
    return {
        line.rsplit("|", 1)[1].strip()
        for line in stderr.splitlines()
        if line.startswith("import time:") and line.count("|") == 2
    }


def _importtime_modules(stderr: str) -> set[str]:
    """Top-level package names from `-X importtime` lines."""
    return {name.split(".")[0] for name in _importtime_names(stderr)}


def _packages(names: str) -> set[str]:
    return {name.split(".")[0] for name in names.split()}


def test_help_imports_no_settings_driver_or_data_library(tmp_path):
    done = _run(["-X", "importtime", "-m", "pipeline", "--help"], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage: python -m pipeline" in done.stdout
    imported = _importtime_modules(done.stderr)
    assert "pipeline" in imported  # the parsing above found the import lines
    assert sorted(imported & NOT_FOR_HELP) == []
    assert "pipeline.core.settings" not in _importtime_names(done.stderr)


def test_an_argument_error_imports_no_settings_either(tmp_path):
    done = _run(["-X", "importtime", "-m", "pipeline", "lag", "--no-such-option"], tmp_path)
    assert done.returncode == 2
    imported = _importtime_modules(done.stderr)
    assert sorted(imported & NOT_FOR_HELP) == []
    assert "pipeline.core.settings" not in _importtime_names(done.stderr)


@pytest.mark.parametrize(
    ("args", "allowed"),
    # The lag history is read with one psycopg connection (no pool), opened beside the Kafka
    # reads; --no-history never loads it.
    [(["--no-history"], set()), ([], {"psycopg"})],
)
def test_lag_imports_no_driver_but_kafka_or_data_library(tmp_path, args, allowed):
    done = _run(["-c", LAG_PATH, *args], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert '"groups": []' in done.stdout
    imported = _packages(done.stderr)
    assert "confluent_kafka" in imported  # the listing is complete
    assert "pipeline.core.settings" in done.stderr.split()
    assert sorted(imported & HEAVY - allowed) == []
