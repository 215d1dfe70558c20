"""The Streamlit app: every page renders against the real services, and `streamlit run` answers."""

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from streamlit.testing.v1 import AppTest

from pipeline.core.settings import load_settings
from testkit.processes import free_port

ROOT = Path(__file__).resolve().parents[2]


def test_overview_shows_every_service_answering(admin, es, pg):
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    assert not at.exception
    assert at.title[0].value == "taskstream"
    sidebar = " ".join(m.value for m in at.sidebar.markdown)
    for name in ("Kafka", "Elasticsearch", "PostgreSQL"):
        assert f":green[●] **{name}**" in sidebar
    table = at.dataframe[0].value
    assert list(table["answers"]) == ["yes", "yes", "yes"]
    assert not at.error
    # The diagram names this deployment's topic, dead-letter topic, index and indexer group.
    [diagram] = at.get("graphviz_chart")
    config = load_settings()
    for name in (config.kafka_topic, config.dlq_topic, config.elasticsearch_index,
                 config.indexer_group):  # fmt: skip
        assert name in diagram.proto.spec, name


def test_streamlit_server_answers_on_its_port():
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.address", "127.0.0.1",
         "--server.port", str(port), "--server.headless", "true",
         "--browser.gatherUsageStats", "false"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=dict(os.environ),
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        health = page = None
        while time.monotonic() < deadline and health != b"ok":
            try:
                health = urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health").read()
                page = urllib.request.urlopen(f"http://127.0.0.1:{port}/").read()
            except OSError:
                time.sleep(0.5)
        assert health == b"ok"
        assert b"<title>Streamlit</title>" in page or b"streamlit" in page.lower()
    finally:
        server.terminate()
        server.wait(timeout=20)
