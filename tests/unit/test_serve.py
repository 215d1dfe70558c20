"""The app launcher: loopback by default, the configured address and port, no usage statistics."""

import pytest

from pipeline.serve import is_loopback, server_environment, streamlit_argv
from pipeline.settings import Settings


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
