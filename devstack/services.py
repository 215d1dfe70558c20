"""The three real services devstack runs: Apache Kafka (KRaft), Elasticsearch and PostgreSQL."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

from devstack.artifacts import elasticsearch_home, find_jdk, kafka_libs
from devstack.config import LOOPBACK, SASL_MECHANISMS, DevstackConfig
from devstack.processes import DevstackError, port_accepts
from devstack.versions import (
    ELASTICSEARCH_VERSION,
    JAVA_MIN_ELASTICSEARCH,
    JAVA_MIN_KAFKA,
    KAFKA_VERSION,
    POSTGRES_MAJOR,
)
from pipeline.core.settings import Settings
from pipeline.health import elasticsearch_health, kafka_health, postgres_health
from pipeline.kafka.clients import kafka_admin

__all__ = [
    "Elasticsearch",
    "Kafka",
    "Launch",
    "Postgres",
    "Probe",
    "Service",
    "all_services",
    "ensure_scram_user",
]


@dataclass(frozen=True)
class Probe:
    """Whether a service answers at its address, and what it said."""

    answering: bool
    detail: str


@dataclass(frozen=True)
class Launch:
    """How to start a prepared service."""

    argv: list[str]
    env: dict[str, str]
    cwd: Path
    user: str | None = None


class Service:
    """A service devstack can probe, prepare and launch."""

    name: str
    version: str
    default_port_variable: str

    def __init__(self, config: DevstackConfig) -> None:
        self.config = config

    @property
    def host(self) -> str:
        raise NotImplementedError

    @property
    def port(self) -> int:
        raise NotImplementedError

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.config.state_dir / "logs" / f"{self.name}.log"

    def probe(self) -> Probe:
        """Ask the service something real (not just a TCP connect), within a few seconds."""
        raise NotImplementedError

    def prepare(self) -> Launch:
        """Fetch artifacts, write configuration, initialise data; return how to launch it."""
        raise NotImplementedError

    def after_start(self) -> None:
        """One-time work once the process answers (e.g. create the database)."""

    def check_startable(self) -> None:
        """Refuse to start a server for an address that is not on this machine."""
        if self.host not in LOOPBACK:
            raise DevstackError(
                f"{self.name} is configured at {self.address}, which is not on this machine, and "
                f"nothing answers there. devstack only starts services on loopback: point "
                f"{self.default_port_variable} at 127.0.0.1 or start {self.name} there."
            )


class Kafka(Service):
    """One Apache Kafka node in KRaft mode, both broker and controller: node `node` of the
    cluster's `config.kafka_brokers`, every one of them a voter of the one controller quorum."""

    version = KAFKA_VERSION
    default_port_variable = "KAFKA_BOOTSTRAP_SERVERS"

    def __init__(self, config: DevstackConfig, node: int = 0) -> None:
        super().__init__(config)
        self.node = node
        self.name = f"kafka-{node}"

    @property
    def host(self) -> str:
        return self.config.kafka_host

    @property
    def port(self) -> int:
        return self.config.kafka_port + 10 * self.node

    @property
    def controller_port(self) -> int:
        return self.config.kafka_controller_port + 10 * self.node

    @property
    def sasl_port(self) -> int | None:
        base = self.config.kafka_sasl_port
        return None if base is None else base + 10 * self.node

    @property
    def home(self) -> Path:
        return self.config.state_dir / self.name

    def probe(self) -> Probe:
        """This node answers and the cluster's metadata lists it (registered, not fenced)."""
        if not port_accepts(self.host, self.port):
            # At once: a metadata request to a closed port would wait out its whole timeout.
            return Probe(False, f"nothing listens on {self.address}")
        own = self.config.settings.replace(kafka_bootstrap_servers=self.address)
        health = kafka_health(own)
        if not health.ok:
            return Probe(False, health.detail)
        if health.broker_ids is not None and self.node not in health.broker_ids:
            return Probe(False, f"answers, but the cluster does not list broker {self.node} yet")
        return Probe(True, f"broker {self.node}; {health.detail}; {self.sasl_detail()}")

    def sasl_detail(self) -> str:
        """The SASL listener in a few words: where, which mechanisms, which user (never the password)."""
        c = self.config
        address = c.kafka_sasl_node_address(self.node)
        if address is None:
            return "SASL listener off"
        where = f"SASL_PLAINTEXT {address}"
        if not port_accepts(c.kafka_host, self.sasl_port or 0):
            return (
                f"{where} not listening (a broker started before devstack had it: "
                "`python -m devstack down kafka && python -m devstack up kafka`)"
            )
        health = kafka_health(
            c.kafka_sasl_settings("PLAIN").replace(kafka_bootstrap_servers=address)
        )
        if health.authentication_failed:
            return (
                f"{where} refuses user '{c.kafka_sasl_user}' (DEVSTACK_KAFKA_SASL_USER or "
                "_PASSWORD changed since Kafka started? `python -m devstack down kafka && "
                "python -m devstack up kafka`)"
            )
        if not health.ok:
            return f"{where}: {health.detail}"
        return f"{where} ({', '.join(SASL_MECHANISMS)}, user '{c.kafka_sasl_user}')"

    def java_command(self, main_class: str, *args: str, heap: str = "256m") -> list[str]:
        """A java command line running main_class from Kafka's jars."""
        jdk = find_jdk(JAVA_MIN_KAFKA)
        libs = kafka_libs()
        tools = self.config.state_dir / "kafka-tools"
        log4j = tools / "log4j2.properties"
        if not log4j.is_file():
            tools.mkdir(parents=True, exist_ok=True)
            log4j.write_text(_LOG4J_TOOLS)
        return [
            str(jdk.java), f"-Xmx{heap}", f"-Dlog4j2.configurationFile={log4j}",
            "-cp", f"{libs}/*", main_class, *args,
        ]  # fmt: skip

    def prepare(self) -> Launch:
        self.check_startable()
        c = self.config
        if self.sasl_port is not None and port_accepts(c.kafka_host, self.sasl_port):
            raise DevstackError(
                f"port {self.sasl_port} on {c.kafka_host}, for Kafka's SASL listener, is taken. "
                "Stop that program, or set DEVSTACK_KAFKA_SASL_PORT to a free port (or to off)."
            )
        jdk = find_jdk(JAVA_MIN_KAFKA)
        libs = kafka_libs()
        data = self.home / "data"
        self.home.mkdir(parents=True, exist_ok=True)
        properties = self.home / "server.properties"
        # It holds the SASL listener's dev password: readable by its owner only.
        properties.touch(mode=0o600)
        properties.chmod(0o600)
        properties.write_text(self._server_properties(data))
        (self.home / "log4j2.properties").write_text(_LOG4J_BROKER)
        if not (data / "meta.properties").is_file():
            # KRaft needs formatted storage with the cluster's id before a node's first start.
            result = subprocess.run(
                self.java_command("kafka.tools.StorageTool", "format",
                                  "--cluster-id", shared_cluster_id(c),
                                  "--config", str(properties)),
                capture_output=True, text=True, timeout=120,
            )  # fmt: skip
            if result.returncode != 0:
                raise DevstackError(
                    f"formatting Kafka's storage in {data} failed:\n{result.stdout}{result.stderr}"
                )
        argv = [
            str(jdk.java), f"-Xms{self.config.kafka_heap}", f"-Xmx{self.config.kafka_heap}",
            "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.home / 'log4j2.properties'}",
            "-cp", f"{libs}/*", "kafka.Kafka", str(properties),
        ]  # fmt: skip
        return Launch(argv=argv, env=dict(os.environ), cwd=self.home)

    def after_start(self) -> None:
        """Give the SASL user its SCRAM-SHA-256 credential (also on data formatted without it)."""
        if self.config.kafka_sasl_port is None:
            return
        try:
            ensure_scram_user(
                self.config.settings.replace(kafka_bootstrap_servers=self.address),
                self.config.kafka_sasl_user,
                self.config.kafka_sasl_password.get_secret_value(),
            )
        except DevstackError as exc:
            # PLAIN still works; SCRAM is the only thing missing, so warn rather than fail `up`.
            print(f"devstack: warning: {exc}", file=sys.stderr, flush=True)

    def _server_properties(self, data: Path) -> str:
        c = self.config
        host = c.kafka_host
        listeners = [
            f"PLAINTEXT://{host}:{self.port}",
            f"CONTROLLER://{host}:{self.controller_port}",
        ]
        advertised = [f"PLAINTEXT://{host}:{self.port}"]
        protocols = ["PLAINTEXT:PLAINTEXT", "CONTROLLER:PLAINTEXT"]
        sasl = ""
        if self.sasl_port is not None:
            listeners.append(f"SASL_PLAINTEXT://{host}:{self.sasl_port}")
            advertised.append(f"SASL_PLAINTEXT://{host}:{self.sasl_port}")
            protocols.append("SASL_PLAINTEXT:SASL_PLAINTEXT")
            password = c.kafka_sasl_password.get_secret_value()
            # Clients authenticate here; brokers and the controller keep talking PLAINTEXT.
            sasl = f"""# The SASL_PLAINTEXT listener: user '{c.kafka_sasl_user}' with PLAIN (from the JAAS line below)
# and SCRAM-SHA-256 (a credential devstack creates through the admin API after each start).
sasl.enabled.mechanisms={",".join(SASL_MECHANISMS)}
listener.name.sasl_plaintext.sasl.enabled.mechanisms={",".join(SASL_MECHANISMS)}
listener.name.sasl_plaintext.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_{c.kafka_sasl_user}="{password}";
listener.name.sasl_plaintext.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
"""
        voters = ",".join(f"{n}@{host}:{c.kafka_controller_port + 10 * n}" for n in c.kafka_nodes)
        rf = c.replication_factor
        min_isr = 2 if rf >= 3 else 1
        return f"""# written by devstack on every start; edit devstack/services.py instead
# Node {self.node} of {c.kafka_brokers}: broker and controller, a voter of the one quorum.
process.roles=broker,controller
node.id={self.node}
controller.quorum.voters={voters}
listeners={",".join(listeners)}
advertised.listeners={",".join(advertised)}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map={",".join(protocols)}
{sasl}log.dirs={data}
num.partitions=1
default.replication.factor={rf}
offsets.topic.replication.factor={rf}
offsets.topic.num.partitions=10
transaction.state.log.replication.factor={rf}
transaction.state.log.min.isr={min_isr}
share.coordinator.state.topic.replication.factor={rf}
share.coordinator.state.topic.min.isr={min_isr}
# A dev cluster: no reason to wait for more members before the first rebalance.
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
delete.topic.enable=true
# ACLs are enforced, as on real clusters, but a resource without any ACL is open to everyone and
# anonymous PLAINTEXT clients (the controller, the brokers, devstack) are super users, so
# nothing changes until an ACL is added: tests add them to see what a refused client sees.
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
allow.everyone.if.no.acl.found=true
super.users=User:ANONYMOUS
log.retention.hours=-1
log.segment.bytes=67108864
"""


class Elasticsearch(Service):
    """Elasticsearch, one node, security off, loopback only, from the integ-test distribution."""

    name = "elasticsearch"
    version = ELASTICSEARCH_VERSION
    default_port_variable = "ELASTICSEARCH_URL"

    @property
    def host(self) -> str:
        return self.config.es_host

    @property
    def port(self) -> int:
        return self.config.es_port

    def probe(self) -> Probe:
        health = elasticsearch_health(self.config.settings)
        return Probe(health.ok, health.detail)

    def prepare(self) -> Launch:
        self.check_startable()
        jdk = find_jdk(JAVA_MIN_ELASTICSEARCH)
        home = elasticsearch_home()
        base = self.config.private_dir("elasticsearch")
        conf = base / "config"
        if not conf.is_dir():
            shutil.copytree(home / "config", conf)
        (conf / "elasticsearch.yml").write_text(self._settings(base))
        (base / "tmp").mkdir(exist_ok=True)
        self.config.chown(base)
        heap = self.config.es_heap
        env = {
            **os.environ,
            "ES_JAVA_HOME": str(jdk.home),
            "ES_PATH_CONF": str(conf),
            "ES_TMPDIR": str(base / "tmp"),
            "ES_JAVA_OPTS": f"-Xms{heap} -Xmx{heap}",
        }
        env.pop("JAVA_HOME", None)  # Elasticsearch warns about it and ignores it anyway
        if self.config.service_user:
            env["HOME"] = str(base)
        return Launch(
            argv=[str(home / "bin" / "elasticsearch")], env=env, cwd=base,
            user=self.config.service_user,
        )  # fmt: skip

    def _settings(self, base: Path) -> str:
        c = self.config
        return f"""# written by devstack on every start; edit devstack/services.py instead
cluster.name: taskstream-devstack
node.name: devstack
network.host: {c.es_host}
http.port: {c.es_port}
transport.port: {c.es_transport_port}
discovery.type: single-node
path.data: {base / "data"}
path.logs: {base / "logs"}
xpack.security.enabled: false
# A dev node on a shared disk: don't turn read-only when the disk is fuller than 85-95 %.
cluster.routing.allocation.disk.threshold_enabled: false
"""


class Postgres(Service):
    """PostgreSQL from Debian's packages, a cluster of the project's own."""

    name = "postgres"
    version = POSTGRES_MAJOR
    default_port_variable = "DATABASE_URL"

    @property
    def host(self) -> str:
        return self.config.pg_host

    @property
    def port(self) -> int:
        return self.config.pg_port

    def probe(self) -> Probe:
        health = postgres_health(self.config.settings)
        return Probe(health.ok, health.detail)

    def bin_dir(self) -> Path:
        """The PostgreSQL server binaries, installed from Debian's packages when missing."""
        found = self._find_bin()
        if found:
            return found
        if os.geteuid() != 0 or not shutil.which("apt-get"):
            raise DevstackError(
                "the PostgreSQL server is not installed. Install Debian's package "
                f"(sudo apt-get install postgresql-{POSTGRES_MAJOR}) and run again."
            )
        print(f"  installing PostgreSQL {POSTGRES_MAJOR} from Debian's packages …", flush=True)
        # Debian's package would create and start a 'main' cluster on 5432; we run our own.
        conf = Path("/etc/postgresql-common/createcluster.d")
        conf.mkdir(parents=True, exist_ok=True)
        (conf / "taskstream-devstack.conf").write_text("create_main_cluster = false\n")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for argv in (["apt-get", "update", "-q"],
                     ["apt-get", "install", "-y", "-q", f"postgresql-{POSTGRES_MAJOR}"]):  # fmt: skip
            try:
                subprocess.run(argv, check=True, env=env, capture_output=True, timeout=900)
            except (OSError, subprocess.SubprocessError) as exc:
                detail = getattr(exc, "stderr", b"") or b""
                raise DevstackError(
                    f"{' '.join(argv)} failed: {exc}\n{detail.decode(errors='replace')[-2000:]}"
                ) from exc
        found = self._find_bin()
        if not found:
            raise DevstackError("apt-get installed PostgreSQL but no server binary was found")
        return found

    @staticmethod
    def _find_bin() -> Path | None:
        versions = sorted(
            Path("/usr/lib/postgresql").glob("*/bin/postgres"),
            key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
        )
        return versions[-1].parent if versions else None

    def prepare(self) -> Launch:
        self.check_startable()
        bindir = self.bin_dir()
        base = self.config.private_dir("postgres")
        data = base / "data"
        user = self.config.service_user
        if not (data / "PG_VERSION").is_file():
            result = subprocess.run(
                [str(bindir / "initdb"), "-D", str(data), "-U", self.config.pg_user,
                 "--auth=trust", "--encoding=UTF8", "--no-locale"],
                capture_output=True, text=True, timeout=300, cwd=base,
                user=user, group=user, extra_groups=[] if user else None,
            )  # fmt: skip
            if result.returncode != 0:
                raise DevstackError(f"initdb failed in {data}:\n{result.stdout}{result.stderr}")
        argv = [
            str(bindir / "postgres"), "-D", str(data),
            "-c", f"listen_addresses={self.config.pg_host}",
            "-c", f"port={self.config.pg_port}",
            "-c", f"unix_socket_directories={base}",
            "-c", "max_connections=300",
            "-c", "shared_buffers=128MB",
        ]  # fmt: skip
        env = {**os.environ, "LC_ALL": "C"}
        return Launch(argv=argv, env=env, cwd=base, user=user)

    def maintenance_probe(self) -> Probe:
        """Answering on the 'postgres' database: the server is up even if ours is missing."""
        health = postgres_health(self.config.settings, dbname="postgres")
        return Probe(health.ok, health.detail)

    def after_start(self) -> None:
        import psycopg
        from psycopg import sql

        url = self.config.settings.database_url
        with psycopg.connect(url, dbname="postgres", autocommit=True, connect_timeout=10) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (self.config.pg_database,)
            ).fetchone()
            if not exists:
                conn.execute(
                    sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.config.pg_database))
                )


def ensure_scram_user(
    settings: Settings, user: str, password: str, *, timeout: float = 15.0
) -> None:
    """Create or update user's SCRAM-SHA-256 credential through the admin API (idempotent).

    KRaft keeps SCRAM credentials in the metadata log; this works on a running broker whatever
    its storage was formatted with, which `kafka-storage format --add-scram` would not.
    """
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import (
        ScramCredentialInfo,
        ScramMechanism,
        UserScramCredentialUpsertion,
    )

    upsert = UserScramCredentialUpsertion(
        user, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 4096), password.encode()
    )
    admin = kafka_admin(settings)
    try:
        futures = admin.alter_user_scram_credentials([upsert], request_timeout=timeout)
        futures[user].result(timeout=timeout + 5)
    except (KafkaException, TimeoutError) as exc:
        detail = exc.args[0].str() if isinstance(exc, KafkaException) else "no answer in time"
        raise DevstackError(
            f"creating the SCRAM-SHA-256 credential of Kafka user '{user}' failed ({detail}); "
            "SASL PLAIN still works"
        ) from None


def shared_cluster_id(config: DevstackConfig) -> str:
    """The cluster id every node is formatted with: read from a node already formatted, else
    made once and kept in .devstack/kafka-cluster-id."""
    for node in config.kafka_nodes:
        meta = config.state_dir / f"kafka-{node}" / "data" / "meta.properties"
        if meta.is_file():
            for line in meta.read_text().splitlines():
                if line.startswith("cluster.id="):
                    return line.split("=", 1)[1].strip()
    kept = config.state_dir / "kafka-cluster-id"
    if kept.is_file() and kept.read_text().strip():
        return kept.read_text().strip()
    cluster_id = kafka_cluster_id()
    config.state_dir.mkdir(parents=True, exist_ok=True)
    kept.write_text(cluster_id + "\n")
    return cluster_id


def kafka_cluster_id() -> str:
    """A random cluster id as Kafka's Uuid.randomUuid() makes one: URL-safe base64 of 16 bytes.

    Like Kafka, never one starting with "-": the storage tool would read it as an option.
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def all_services(config: DevstackConfig) -> list[Service]:
    """The services in start order (slowest first, so they start in parallel)."""
    brokers = [Kafka(config, node) for node in config.kafka_nodes]
    return [Elasticsearch(config), *brokers, Postgres(config)]


_LOG4J_BROKER = """# written by devstack
status = warn
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.stdout.ref = STDOUT
logger.kafka.name = kafka
logger.kafka.level = info
logger.state.name = state.change.logger
logger.state.level = warn
logger.request.name = kafka.request.logger
logger.request.level = warn
"""

_LOG4J_TOOLS = """# written by devstack: Kafka's CLI tools log warnings to stderr only
status = warn
appender.stderr.type = Console
appender.stderr.name = STDERR
appender.stderr.target = SYSTEM_ERR
appender.stderr.layout.type = PatternLayout
appender.stderr.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = warn
rootLogger.appenderRef.stderr.ref = STDERR
"""
