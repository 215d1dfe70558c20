"""The package layering that docs/architecture.md describes, checked on every module's imports.

Each package of `pipeline` may import only the packages listed for it (lazy imports inside
functions count too); pages never touch a driver; `pipeline` never imports Streamlit.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# package -> the other pipeline packages it may import
ALLOWED = {
    "core": set(),
    "kafka": {"core"},
    "elasticsearch": {"core"},
    "service": {"core"},
    "postgres": {"core", "service"},  # implements the service's repository protocol
    "lag": {"core", "kafka", "postgres"},
    "workers": {"core", "kafka", "postgres", "elasticsearch", "lag"},  # the monitor reads lag
    "replay": {"core", "kafka", "postgres", "elasticsearch", "workers"},
    "lab": {"core", "kafka", "postgres"},
}
DRIVERS = {"psycopg", "psycopg_pool", "confluent_kafka", "elasticsearch", "elastic_transport"}


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            if node.module == "pipeline":
                found.update(f"pipeline.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def _package_modules(package: str) -> list[Path]:
    return sorted((ROOT / "pipeline" / package).rglob("*.py"))


def test_every_package_is_listed():
    packages = {p.name for p in (ROOT / "pipeline").iterdir() if (p / "__init__.py").exists()}
    assert packages == set(ALLOWED)


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_only_what_it_may(package):
    wrong = []
    for path in _package_modules(package):
        for module in _imports(path):
            parts = module.split(".")
            if parts[0] in ("ui", "pages", "app", "devstack", "streamlit"):
                wrong.append(f"{path.relative_to(ROOT)} imports {module}")
            elif parts[0] == "pipeline" and len(parts) > 1:
                target = parts[1]
                if target != package and target not in ALLOWED[package]:
                    wrong.append(f"{path.relative_to(ROOT)} imports {module}")
    assert not wrong, "\n".join(wrong)


def test_pipeline_never_imports_streamlit():
    wrong = [
        str(path.relative_to(ROOT))
        for path in (ROOT / "pipeline").rglob("*.py")
        if any(m.split(".")[0] == "streamlit" for m in _imports(path))
    ]
    assert not wrong


def test_pages_never_touch_a_driver():
    wrong = [
        f"{path.relative_to(ROOT)} imports {module}"
        for path in [ROOT / "app.py", *sorted((ROOT / "pages").glob("*.py"))]
        for module in _imports(path)
        if module.split(".")[0] in DRIVERS
    ]
    assert not wrong, "\n".join(wrong)


def test_the_check_sees_a_wrong_import(tmp_path):
    # The walk finds lazy imports inside functions, the form most likely to slip through.
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from pipeline.lag.reader import LagReader\n")
    assert "pipeline.lag.reader" in _imports(module)
