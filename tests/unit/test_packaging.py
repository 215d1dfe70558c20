"""pyproject.toml declares what requirements.txt pins, and every pin satisfies the declaration."""

from __future__ import annotations

import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line and not line.startswith("-"):
            requirement = Requirement(line)
            (version,) = [spec.version for spec in requirement.specifier]
            pins[canonicalize_name(requirement.name)] = version
    return pins


def _declared(group: list[str]) -> dict[str, Requirement]:
    return {canonicalize_name(r.name): r for r in map(Requirement, group)}


def test_runtime_dependencies_match_the_pins():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = _declared(project["dependencies"])
    pins = _pins(ROOT / "requirements.txt")
    assert declared.keys() == pins.keys()
    for name, requirement in declared.items():
        assert requirement.specifier.contains(pins[name]), f"{name}=={pins[name]} vs {requirement}"


def test_dev_dependencies_match_the_pins():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = _declared(project["optional-dependencies"]["dev"])
    pins = _pins(ROOT / "requirements-dev.txt")
    assert declared.keys() == pins.keys()
    for name, requirement in declared.items():
        assert requirement.specifier.contains(pins[name]), f"{name}=={pins[name]} vs {requirement}"
