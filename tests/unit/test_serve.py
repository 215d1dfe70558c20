"""The app launcher: loopback by default, the configured address and port, no usage statistics."""

import os
import signal
import sys
from pathlib import Path

import pytest

from pipeline.core.settings import Settings
from pipeline.serve import MAX_RESTARTS, is_loopback, server_environment, streamlit_argv, supervise


@pytest.mark.parametrize("address", ["127.0.0.1", "127.8.9.10", "::1", "[::1]", "localhost"])
def test_loopback_addresses(address: str) -> None:
    assert is_loopback(address)


@pytest.mark.parametrize("address", ["0.0.0.0", "::", "10.1.2.3", "192.168.0.4", "app.example"])
def test_addresses_others_can_reach(address: str) -> None:
    assert not is_loopback(address)


def test_defaults_serve_on_loopback_without_usage_statistics() -> None:
    argv = streamlit_argv(Settings())
    options = dict(zip(argv[5::2], argv[6::2], strict=True))
    assert argv[1:5] == ["-m", "streamlit", "run", "app.py"]
    assert options["--server.address"] == "127.0.0.1"
    assert options["--server.port"] == "8501"
    assert options["--browser.gatherUsageStats"] == "false"


def test_settings_choose_address_and_port_and_extra_arguments_follow() -> None:
    settings = Settings(app_address="0.0.0.0", app_port=9000)
    argv = streamlit_argv(settings, ["--server.baseUrlPath", "taskstream"])
    assert argv[argv.index("--server.address") + 1] == "0.0.0.0"
    assert argv[argv.index("--server.port") + 1] == "9000"
    assert argv[-2:] == ["--server.baseUrlPath", "taskstream"]


def test_a_port_outside_the_range_is_refused() -> None:
    with pytest.raises(ValueError, match="app_port"):
        Settings(app_port=70000)


def test_the_server_gets_the_allocator_settings_unless_told_otherwise() -> None:
    assert server_environment({"PATH": "/usr/bin"}) == {
        "PATH": "/usr/bin",
        "MALLOC_ARENA_MAX": "2",
        "ARROW_DEFAULT_MEMORY_POOL": "system",
    }
    chosen = {"MALLOC_ARENA_MAX": "8", "ARROW_DEFAULT_MEMORY_POOL": "mimalloc"}
    assert server_environment(chosen) == chosen


def _anonymous_kb() -> int:
    status = dict(
        line.split(":", 1)
        for line in Path("/proc/self/status").read_text().splitlines()
        if ":" in line
    )
    return int(status["RssAnon"].split()[0])


def test_releasing_free_memory_hands_fragmented_heap_pages_back() -> None:
    from pipeline.serve import release_free_memory

    # 40 MB of malloc'd 4 KB blocks; keep every tenth so the freed 36 MB stay inside the heap
    # (nothing at its top to shrink), as under Streamlit's reruns.
    blocks = [bytes(4000) + bytes([i % 256]) for i in range(10_000)]
    kept = blocks[::10]
    del blocks
    before = _anonymous_kb()
    assert release_free_memory()
    released = before - _anonymous_kb()
    assert released > 20_000, f"only {released} KB handed back"
    assert len(kept) == 1000


def test_the_trimmer_runs_in_a_daemon_thread_until_stopped() -> None:
    import threading

    from pipeline.serve import start_memory_trimmer

    stop = start_memory_trimmer(interval=0.01)
    assert stop is not None
    [thread] = [t for t in threading.enumerate() if t.name == "malloc-trim"]
    assert thread.daemon
    stop.set()
    thread.join(timeout=5)
    assert not thread.is_alive()


# -- the supervisor: a crashed server is started again -------------------------------------------

CRASH_ONCE = """
import os, pathlib, sys
marker = pathlib.Path(sys.argv[1])
runs = int(marker.read_text()) if marker.exists() else 0
marker.write_text(str(runs + 1))
if runs == 0:
    os.abort()  # as librdkafka's failed assertion does
sys.exit(0)
"""


def test_a_server_that_crashes_is_started_again(tmp_path) -> None:
    marker = tmp_path / "runs"
    assert supervise([sys.executable, "-c", CRASH_ONCE, str(marker)], dict(os.environ)) == 0
    assert marker.read_text() == "2"


def test_a_server_that_exits_by_itself_is_not_restarted(tmp_path) -> None:
    script = "import sys; open(sys.argv[1], 'a').write('x'); sys.exit(3)"
    marker = tmp_path / "runs"
    assert supervise([sys.executable, "-c", script, str(marker)], dict(os.environ)) == 3
    assert marker.read_text() == "x"


def test_a_server_that_keeps_crashing_is_given_up(tmp_path) -> None:
    script = "import os, sys; open(sys.argv[1], 'a').write('x'); os.abort()"
    marker = tmp_path / "runs"
    code = supervise([sys.executable, "-c", script, str(marker)], dict(os.environ))
    assert code == 128 + signal.SIGABRT
    assert marker.read_text() == "x" * (MAX_RESTARTS + 1)
