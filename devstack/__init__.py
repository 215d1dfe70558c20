"""devstack: real Apache Kafka, Elasticsearch and PostgreSQL on loopback, from official artifacts."""

from devstack.config import DevstackConfig, load_config
from devstack.processes import DevstackError
from devstack.stack import ServiceStatus, down, status, up

__all__ = [
    "DevstackConfig",
    "DevstackError",
    "ServiceStatus",
    "down",
    "load_config",
    "status",
    "up",
]
