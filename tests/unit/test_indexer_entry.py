"""`run_indexer` refuses to start in read-only mode, before touching any service."""

import logging

from pipeline.core.settings import Settings
from pipeline.workers.indexer import run_indexer


def test_read_only_mode_refuses_with_exit_code_2(caplog):
    # Addresses nothing listens on: reaching for a service would hang or fail, not return 2.
    settings = Settings(
        taskstream_read_only=True,
        kafka_bootstrap_servers="127.0.0.1:1",
        elasticsearch_url="http://127.0.0.1:1",
    )
    with caplog.at_level(logging.ERROR, logger="taskstream.indexer"):
        assert run_indexer(settings) == 2
    assert "read-only mode" in caplog.text
