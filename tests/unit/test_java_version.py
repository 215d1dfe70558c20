"""devstack reads Java versions from `release` files and `java -version` output."""

import pytest

from devstack.artifacts import parse_java_version


@pytest.mark.parametrize(
    ("text", "version"),
    [
        ('JAVA_VERSION="17.0.15"', 17),
        ('IMPLEMENTOR="Eclipse Adoptium"\nJAVA_VERSION="25.0.1"\n', 25),
        ('openjdk version "21.0.4" 2024-07-16', 21),
        ('java version "1.8.0_412"', 8),
        ('JAVA_VERSION="25"', 25),
        ("no version here", None),
    ],
)
def test_parse_java_version(text, version):
    assert parse_java_version(text) == version
