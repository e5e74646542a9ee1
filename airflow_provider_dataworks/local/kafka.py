"""A real Apache Kafka broker (KRaft, one node, loopback only) started from its release jars."""

from __future__ import annotations

import base64
import datetime
import fcntl
import ipaddress
import json
import logging
import os
import re
import secrets
import shutil
import signal
import subprocess
import time
from functools import lru_cache
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from airflow_provider_dataworks.local._process import (
    LOOPBACK,
    free_port,
    last_lines,
    port_accepts,
    port_is_free,
    process_alive,
    read_tail,
    signal_group,
    stop_group,
    wait_exit,
    write_private,
)

log = logging.getLogger(__name__)

KAFKA_VERSION = "4.1.1"
"""The Apache Kafka release the local broker runs."""

_LOG4J_VERSION = "2.24.3"
_SASL_LISTENER = "SASL_SSL"
_SAFE_USERNAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_UNSAFE_PASSWORD_CHARS = re.compile(r'["\\\s]')

_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.airflow-provider-dataworks</groupId>
  <artifactId>kafka-broker-jars</artifactId>
  <version>{kafka}</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_2.13</artifactId>
      <version>{kafka}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId>
      <version>{log4j}</version>
    </dependency>
  </dependencies>
</project>
"""

# Kafka logs through slf4j 1.7; this routes it to log4j2 and from there to the broker's log file.
_LOG4J2_PROPERTIES = """status = warn
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.out.ref = OUT
logger.state.name = state.change.logger
logger.state.level = warn
logger.request.name = kafka.request.logger
logger.request.level = warn
"""


class LocalKafkaError(RuntimeError):
    """The local Kafka broker could not be fetched, started, stopped or found."""


def default_cache_dir() -> Path:
    """
    Return the folder where downloaded broker jars are kept.

    ``$DATAWORKS_LOCAL_CACHE`` wins, then ``$XDG_CACHE_HOME/airflow-provider-dataworks``, then
    ``~/.cache/airflow-provider-dataworks``.
    """
    explicit = os.environ.get("DATAWORKS_LOCAL_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "airflow-provider-dataworks"


def ensure_kafka_jars(cache_dir: Path | None = None) -> Path:
    """
    Download the Kafka broker jars from Maven Central once and return the folder holding them.

    Safe to call from several processes at once: a file lock serialises the download, and a
    finished download is marked so that later calls return at once.

    :param cache_dir: base cache folder; ``default_cache_dir()`` if not given. The jars land in
        ``<cache_dir>/kafka-<version>/libs``.
    :raises LocalKafkaError: Maven or Java is missing, or the download failed.
    """
    base = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    home = base / f"kafka-{KAFKA_VERSION}"
    libs = home / "libs"
    marker = home / "libs.complete"
    if marker.exists() and libs.is_dir():
        return libs

    home.mkdir(parents=True, exist_ok=True)
    with open(home / ".lock", "w") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        if marker.exists() and libs.is_dir():
            return libs
        _java_executable()
        _download_jars(home, libs)
        marker.write_text(KAFKA_VERSION + "\n")
    return libs


def _download_jars(home: Path, libs: Path) -> None:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise LocalKafkaError(
            "Maven ('mvn') is not on PATH; it is needed once to fetch the Kafka broker jars. "
            "Install it (Debian/Ubuntu: apt-get install maven) and retry."
        )
    (home / "pom.xml").write_text(_POM.format(kafka=KAFKA_VERSION, log4j=_LOG4J_VERSION))
    staging = home / f"libs.partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)

    log.info("Fetching Kafka %s broker jars into %s", KAFKA_VERSION, libs)
    started = time.monotonic()
    result = subprocess.run(
        [
            mvn,
            "-q",
            "-B",
            "-f",
            str(home / "pom.xml"),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={staging}",
        ],
        cwd=home,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0 or not any(staging.glob("kafka_2.13-*.jar")):
        shutil.rmtree(staging, ignore_errors=True)
        detail = last_lines(result.stdout + result.stderr, 15)
        raise LocalKafkaError(
            f"Maven could not fetch org.apache.kafka:kafka_2.13:{KAFKA_VERSION} (exit {result.returncode}); "
            f"check that Maven Central is reachable. Maven said:\n{detail}"
        )

    shutil.rmtree(libs, ignore_errors=True)
    staging.rename(libs)
    log.info("Fetched Kafka %s broker jars in %.1fs", KAFKA_VERSION, time.monotonic() - started)


@lru_cache(maxsize=1)
def _java_executable() -> str:
    java_home = os.environ.get("JAVA_HOME")
    candidate = Path(java_home) / "bin" / "java" if java_home else None
    java = str(candidate) if candidate and candidate.exists() else shutil.which("java")
    if java is None:
        raise LocalKafkaError(
            "Java is not installed; the local Kafka broker needs Java 17 or newer. "
            "Install it (Debian/Ubuntu: apt-get install openjdk-17-jre-headless) and retry."
        )
    result = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
    match = re.search(r'version "(\d+)', result.stderr + result.stdout)
    if match is None or int(match.group(1)) < 17:
        found = match.group(1) if match else "unknown"
        raise LocalKafkaError(
            f"{java} is Java {found}; Kafka {KAFKA_VERSION} needs Java 17 or newer. "
            "Install a newer JDK/JRE or point JAVA_HOME at one."
        )
    return java


class KafkaBroker:
    """
    A single-node Apache Kafka broker (combined broker and controller, KRaft) on loopback.

    It offers two listeners: ``PLAINTEXT`` and ``SASL_SSL`` with the PLAIN mechanism, the way
    ApsaraMQ for Kafka serves the DataWorks topic. The TLS certificate is signed by a CA made for
    this broker; its SANs are ``127.0.0.1`` and ``localhost``, so hostname verification works.

    Everything the broker needs lives in ``state_dir``: ``broker.json`` (ports, pid, credentials,
    paths; mode 0600), ``server.properties``, ``data/``, ``tls/`` and ``kafka.log``. Stopping and
    starting again keeps the data, the ports and the cluster id.

    :param state_dir: folder for the broker's state; created if missing.
    :param plaintext_port: port of the PLAINTEXT listener; 0 picks a free one.
    :param sasl_ssl_port: port of the SASL_SSL listener; 0 picks a free one.
    :param controller_port: port of the KRaft controller listener; 0 picks a free one.
    :param sasl_username: the PLAIN user the broker accepts.
    :param sasl_password: that user's password; a random token if not given.
    :param num_partitions: partitions of auto-created topics.
    :param heap: maximum Java heap, as for ``-Xmx``.
    """

    def __init__(
        self,
        *,
        state_dir: Path,
        plaintext_port: int = 0,
        sasl_ssl_port: int = 0,
        controller_port: int = 0,
        sasl_username: str = "dataworks",
        sasl_password: str | None = None,
        num_partitions: int = 3,
        heap: str = "512m",
    ) -> None:
        if not _SAFE_USERNAME.match(sasl_username):
            raise ValueError("sasl_username may hold only letters, digits, '.', '_' and '-' (1-64 chars)")
        if sasl_password is not None and (not sasl_password or _UNSAFE_PASSWORD_CHARS.search(sasl_password)):
            raise ValueError("sasl_password must be non-empty and hold no quote, backslash or whitespace")
        self.state_dir = Path(state_dir).resolve()
        self._plaintext_port = plaintext_port
        self._sasl_ssl_port = sasl_ssl_port
        self._controller_port = controller_port
        self._sasl_username = sasl_username
        self._sasl_password = sasl_password or secrets.token_urlsafe(24)
        self.num_partitions = num_partitions
        self.heap = heap
        self._cluster_id: str | None = None
        self._pid: int | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @classmethod
    def load(cls, state_dir: Path) -> KafkaBroker:
        """
        Rebuild a broker from the ``broker.json`` in ``state_dir``, running or not.

        :raises LocalKafkaError: there is no readable ``broker.json``.
        """
        state_file = Path(state_dir) / "broker.json"
        try:
            state = json.loads(state_file.read_text())
        except (OSError, ValueError) as err:
            raise LocalKafkaError(f"No Kafka broker state in {state_file}: {err}") from None
        broker = cls(
            state_dir=Path(state_dir),
            plaintext_port=state["plaintext_port"],
            sasl_ssl_port=state["sasl_ssl_port"],
            controller_port=state["controller_port"],
            sasl_username=state["sasl_username"],
            sasl_password=state["sasl_password"],
            num_partitions=state["num_partitions"],
            heap=state["heap"],
        )
        broker._cluster_id = state.get("cluster_id")
        broker._pid = state.get("pid")
        return broker

    @classmethod
    def attach(cls, state_dir: Path) -> KafkaBroker:
        """
        Return a handle on a broker that another process started in ``state_dir``.

        :raises LocalKafkaError: no broker state there, or its broker is not running.
        """
        broker = cls.load(state_dir)
        if not broker.is_running():
            raise LocalKafkaError(
                f"The Kafka broker of {broker.state_dir} is not running; start it (dataworks-local up)."
            )
        return broker

    @property
    def plaintext_bootstrap(self) -> str:
        """``127.0.0.1:PORT`` of the PLAINTEXT listener."""
        return f"{LOOPBACK}:{self._require_port(self._plaintext_port)}"

    @property
    def sasl_ssl_bootstrap(self) -> str:
        """``127.0.0.1:PORT`` of the SASL_SSL listener."""
        return f"{LOOPBACK}:{self._require_port(self._sasl_ssl_port)}"

    @property
    def plaintext_port(self) -> int:
        """Port of the PLAINTEXT listener (0 until first started when picked automatically)."""
        return self._plaintext_port

    @property
    def sasl_ssl_port(self) -> int:
        """Port of the SASL_SSL listener (0 until first started when picked automatically)."""
        return self._sasl_ssl_port

    @property
    def controller_port(self) -> int:
        """Port of the KRaft controller listener (0 until first started when picked automatically)."""
        return self._controller_port

    @property
    def ca_path(self) -> Path:
        """PEM file of the CA that signed the SASL_SSL listener's certificate."""
        return self.state_dir / "tls" / "ca.pem"

    @property
    def log_path(self) -> Path:
        """The broker's own log (Java stdout and stderr)."""
        return self.state_dir / "kafka.log"

    @property
    def sasl_username(self) -> str:
        """The PLAIN user of the SASL_SSL listener."""
        return self._sasl_username

    @property
    def sasl_password(self) -> str:
        """The PLAIN password of the SASL_SSL listener."""
        return self._sasl_password

    @property
    def cluster_id(self) -> str | None:
        """The KRaft cluster id, once storage is formatted."""
        return self._cluster_id

    @property
    def pid(self) -> int | None:
        """Process id of the broker's JVM, if it was started."""
        return self._pid

    def plaintext_config(self) -> dict[str, Any]:
        """Return a confluent-kafka client config for the PLAINTEXT listener."""
        return {"bootstrap.servers": self.plaintext_bootstrap, "security.protocol": "PLAINTEXT"}

    def sasl_ssl_config(self) -> dict[str, Any]:
        """Return a confluent-kafka client config for the SASL_SSL listener, hostname verification on."""
        return {
            "bootstrap.servers": self.sasl_ssl_bootstrap,
            "security.protocol": "SASL_SSL",
            "sasl.mechanisms": "PLAIN",
            "sasl.username": self._sasl_username,
            "sasl.password": self._sasl_password,
            "ssl.ca.location": str(self.ca_path),
            "ssl.endpoint.identification.algorithm": "https",
        }

    def is_running(self) -> bool:
        """Return whether the broker's JVM is alive (a paused broker counts as running)."""
        if self._process is not None:
            return self._process.poll() is None
        return process_alive(self._pid, "kafka.Kafka", str(self._config_path))

    def start(self, timeout: float = 90) -> None:
        """
        Start the broker and wait until clients see it through both listeners.

        The first start picks free ports where 0 was given, formats the storage and makes the
        certificates; later starts reuse them.

        :param timeout: seconds to wait for the broker to answer on both listeners.
        :raises LocalKafkaError: the broker did not come up; the message quotes its log.
        """
        if self.is_running():
            raise LocalKafkaError(
                f"The Kafka broker of {self.state_dir} is already running (pid {self._pid})."
            )

        started = time.monotonic()
        libs = ensure_kafka_jars()
        java = _java_executable()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._assign_ports()
        self._ensure_certificates()
        self._write_config()
        self._ensure_formatted(java, libs)
        self._write_state()

        log.info(
            "Starting Kafka broker (state_dir=%s, plaintext=%s, sasl_ssl=%s)",
            self.state_dir,
            self.plaintext_bootstrap,
            self.sasl_ssl_bootstrap,
        )
        with open(self.log_path, "ab") as log_file:
            self._process = subprocess.Popen(
                self._java_command(java, libs, "kafka.Kafka", str(self._config_path)),
                cwd=self.state_dir,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._pid = self._process.pid
        self._write_state()

        try:
            self._wait_until_ready(started + timeout)
        except BaseException:
            self._kill_quietly()
            raise
        log.info("Kafka broker ready in %.1fs (pid %s)", time.monotonic() - started, self._pid)

    def stop(self, timeout: float = 30) -> None:
        """
        Stop the broker: SIGTERM for a clean shutdown, SIGKILL after ``timeout`` seconds.

        Does nothing when it is not running. Data, ports and cluster id stay for the next start.
        """
        if not self.is_running():
            self._forget_process()
            return
        pid = self._pid
        assert pid is not None
        killed = stop_group(
            pid, "kafka.Kafka", str(self._config_path), process=self._process, timeout=timeout
        )
        self._forget_process()
        how = "killed after ignoring SIGTERM" if killed else "stopped"
        log.info("Kafka broker %s (pid %s, state_dir=%s)", how, pid, self.state_dir)

    def create_topic(self, name: str, *, num_partitions: int | None = None, timeout: float = 30) -> None:
        """
        Create a topic (nothing happens if it exists) and wait until every partition has a leader.

        :param name: topic name.
        :param num_partitions: partitions; the broker's ``num_partitions`` if not given.
        :param timeout: seconds to wait for the topic to be usable.
        :raises LocalKafkaError: the broker refused the topic or it did not become usable in time.
        """
        partitions = num_partitions or self.num_partitions
        admin = AdminClient(self.plaintext_config())
        future = admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])[name]
        try:
            future.result(timeout=timeout)
        except KafkaException as err:
            if err.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise LocalKafkaError(f"Could not create topic {name!r}: {err.args[0].str()}") from None

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            topic = admin.list_topics(topic=name, timeout=max(0.1, deadline - time.monotonic())).topics.get(
                name
            )
            if topic is not None and topic.error is None and topic.partitions:
                if all(partition.leader >= 0 for partition in topic.partitions.values()):
                    return
            time.sleep(0.05)
        raise LocalKafkaError(f"Topic {name!r} has no leader for every partition after {timeout:.0f}s.")

    def pause(self) -> None:
        """Freeze the broker (SIGSTOP): connections stay open but nothing is answered."""
        if not self.is_running():
            raise LocalKafkaError(f"The Kafka broker of {self.state_dir} is not running; nothing to pause.")
        signal_group(self._pid, signal.SIGSTOP)
        log.info("Paused Kafka broker (pid %s)", self._pid)

    def resume(self) -> None:
        """Let a paused broker run again (SIGCONT)."""
        if not self.is_running():
            raise LocalKafkaError(f"The Kafka broker of {self.state_dir} is not running; nothing to resume.")
        signal_group(self._pid, signal.SIGCONT)
        log.info("Resumed Kafka broker (pid %s)", self._pid)

    @property
    def _config_path(self) -> Path:
        return self.state_dir / "server.properties"

    @property
    def _data_dir(self) -> Path:
        return self.state_dir / "data"

    @property
    def _server_pem_path(self) -> Path:
        return self.state_dir / "tls" / "server.pem"

    def _require_port(self, port: int) -> int:
        if port == 0:
            raise LocalKafkaError("The broker's ports are picked on its first start; start it first.")
        return port

    def _assign_ports(self) -> None:
        taken: set[int] = set()
        ports = []
        for port in (self._plaintext_port, self._sasl_ssl_port, self._controller_port):
            if port == 0:
                port = free_port(exclude=taken)
            elif not port_is_free(port):
                raise LocalKafkaError(
                    f"Port {port} on {LOOPBACK} is in use; stop what holds it or choose other ports."
                )
            taken.add(port)
            ports.append(port)
        self._plaintext_port, self._sasl_ssl_port, self._controller_port = ports

    def _ensure_certificates(self) -> None:
        if self.ca_path.exists() and self._server_pem_path.exists():
            return
        tls_dir = self.ca_path.parent
        tls_dir.mkdir(parents=True, exist_ok=True)
        ca_pem, server_pem = _make_certificates()
        self.ca_path.write_bytes(ca_pem)
        write_private(self._server_pem_path, server_pem)

    def _write_config(self) -> None:
        plain_port, sasl_port, controller_port = (
            self._plaintext_port,
            self._sasl_ssl_port,
            self._controller_port,
        )
        jaas = (
            "org.apache.kafka.common.security.plain.PlainLoginModule required "
            f'user_{self._sasl_username}="{self._sasl_password}";'
        )
        settings = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@{LOOPBACK}:{controller_port}",
            "controller.listener.names": "CONTROLLER",
            "listeners": (
                f"PLAINTEXT://{LOOPBACK}:{plain_port},{_SASL_LISTENER}://{LOOPBACK}:{sasl_port},"
                f"CONTROLLER://{LOOPBACK}:{controller_port}"
            ),
            "advertised.listeners": f"PLAINTEXT://{LOOPBACK}:{plain_port},{_SASL_LISTENER}://{LOOPBACK}:{sasl_port}",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.name.sasl_ssl.sasl.enabled.mechanisms": "PLAIN",
            "listener.name.sasl_ssl.plain.sasl.jaas.config": jaas,
            "listener.name.sasl_ssl.ssl.keystore.type": "PEM",
            "listener.name.sasl_ssl.ssl.keystore.location": str(self._server_pem_path),
            "listener.name.sasl_ssl.ssl.truststore.type": "PEM",
            "listener.name.sasl_ssl.ssl.truststore.location": str(self.ca_path),
            "listener.name.sasl_ssl.ssl.client.auth": "none",
            "log.dirs": str(self._data_dir),
            "num.partitions": str(self.num_partitions),
            "auto.create.topics.enable": "true",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "5",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "5",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            # Short group timeouts keep joins and failovers to a few seconds in tests.
            "group.min.session.timeout.ms": "1000",
            "group.consumer.min.session.timeout.ms": "1000",
            "group.consumer.session.timeout.ms": "6000",
            "group.consumer.min.heartbeat.interval.ms": "500",
            "group.consumer.heartbeat.interval.ms": "1000",
        }
        text = "".join(f"{key}={value}\n" for key, value in settings.items())
        write_private(self._config_path, text.encode())
        (self.state_dir / "log4j2.properties").write_text(_LOG4J2_PROPERTIES)

    def _ensure_formatted(self, java: str, libs: Path) -> None:
        meta = self._data_dir / "meta.properties"
        if meta.exists():
            match = re.search(r"^cluster\.id=(\S+)$", meta.read_text(), re.MULTILINE)
            if match:
                self._cluster_id = match.group(1)
            return

        self._cluster_id = self._cluster_id or _random_cluster_id()
        result = subprocess.run(
            self._java_command(
                java,
                libs,
                "kafka.tools.StorageTool",
                "format",
                "-t",
                self._cluster_id,
                "-c",
                str(self._config_path),
            ),
            cwd=self.state_dir,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            detail = last_lines(result.stdout + result.stderr, 10)
            raise LocalKafkaError(f"Formatting Kafka storage in {self._data_dir} failed:\n{detail}")
        log.info("Formatted Kafka storage in %s (cluster id %s)", self._data_dir, self._cluster_id)

    def _java_command(self, java: str, libs: Path, main: str, *args: str) -> list[str]:
        return [
            java,
            f"-Xmx{self.heap}",
            "-Xms64m",
            "-Xss1m",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:ActiveProcessorCount=2",
            "-Djava.awt.headless=true",
            # Kafka logs its own shutdown; log4j's hook would silence it half way.
            "-Dlog4j2.shutdownHookEnabled=false",
            f"-Dlog4j2.configurationFile={self.state_dir / 'log4j2.properties'}",
            "-cp",
            f"{libs}/*",
            main,
            *args,
        ]

    def _wait_until_ready(self, deadline: float) -> None:
        for port in (self._plaintext_port, self._sasl_ssl_port):
            while not port_accepts(port):
                self._check_alive()
                if time.monotonic() > deadline:
                    raise self._startup_error(f"port {port} did not open")
                time.sleep(0.1)
        for listener, config in (
            ("PLAINTEXT", self.plaintext_config()),
            ("SASL_SSL", self.sasl_ssl_config()),
        ):
            self._wait_listed(listener, config, deadline)

    def _wait_listed(self, listener: str, config: dict[str, Any], deadline: float) -> None:
        last_error = "no answer"
        errors: list[str] = []
        admin_config: dict[str, Any] = {
            **config,
            "reconnect.backoff.ms": 100,
            "reconnect.backoff.max.ms": 500,
            "error_cb": lambda err: errors.append(str(err)),
        }
        admin = AdminClient(admin_config)
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                metadata = admin.list_topics(timeout=min(2.0, max(0.1, deadline - time.monotonic())))
            except Exception as err:  # KafkaException while the broker is still coming up
                last_error = str(err)
                continue
            if any(
                broker.port in (self._plaintext_port, self._sasl_ssl_port)
                for broker in metadata.brokers.values()
            ):
                return
            last_error = "metadata listed no broker"
        reason = errors[-1] if errors else last_error
        raise self._startup_error(f"the {listener} listener did not answer ({reason})")

    def _check_alive(self) -> None:
        if not self.is_running():
            raise self._startup_error("the JVM exited")

    def _startup_error(self, reason: str) -> LocalKafkaError:
        tail = read_tail(self.log_path, lines=20).replace(self._sasl_password, "***")
        return LocalKafkaError(f"Kafka broker in {self.state_dir} did not start: {reason}. Log tail:\n{tail}")

    def _kill_quietly(self) -> None:
        if self._pid is not None:
            signal_group(self._pid, signal.SIGKILL)
            wait_exit(self._pid, process=self._process, deadline=time.monotonic() + 10)
        self._forget_process()

    def _forget_process(self) -> None:
        self._process = None
        self._pid = None
        if (self.state_dir / "broker.json").exists():
            self._write_state()

    def _write_state(self) -> None:
        state = {
            "kafka_version": KAFKA_VERSION,
            "cluster_id": self._cluster_id,
            "pid": self._pid,
            "plaintext_port": self._plaintext_port,
            "sasl_ssl_port": self._sasl_ssl_port,
            "controller_port": self._controller_port,
            "sasl_username": self._sasl_username,
            "sasl_password": self._sasl_password,
            "num_partitions": self.num_partitions,
            "heap": self.heap,
            "ca_path": str(self.ca_path),
            "config_path": str(self._config_path),
            "data_dir": str(self._data_dir),
            "log_path": str(self.log_path),
        }
        write_private(self.state_dir / "broker.json", json.dumps(state, indent=2).encode())

    def __repr__(self) -> str:
        return f"KafkaBroker(state_dir={str(self.state_dir)!r}, pid={self._pid})"


def _make_certificates() -> tuple[bytes, bytes]:
    """Return (CA certificate PEM, server private key + certificate chain PEM)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    not_before = now - datetime.timedelta(days=1)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "airflow-provider-dataworks local CA")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(now + datetime.timedelta(days=825))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(LOOPBACK))]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(server_key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    ca_pem = ca_cert.public_bytes(serialization.Encoding.PEM)
    # Kafka's PEM key store wants an unencrypted PKCS#8 key followed by the certificate chain.
    key_pem = server_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return ca_pem, key_pem + server_cert.public_bytes(serialization.Encoding.PEM) + ca_pem


def _random_cluster_id() -> str:
    # Kafka's Uuid text form: 16 random bytes, URL-safe base64 without padding, not starting with '-'.
    while True:
        text = base64.urlsafe_b64encode(secrets.token_bytes(16)).decode().rstrip("=")
        if not text.startswith("-"):
            return text


__all__ = ["KAFKA_VERSION", "KafkaBroker", "LocalKafkaError", "default_cache_dir", "ensure_kafka_jars"]
