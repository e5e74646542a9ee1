"""The local stack: one Kafka broker and one DataWorks emulator, managed together from a state folder."""

from __future__ import annotations

import json
import logging
import os
import secrets
import shlex
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from airflow_provider_dataworks.local._process import (
    LOOPBACK,
    free_port,
    port_is_free,
    process_alive,
    read_tail,
    stop_group,
    write_private,
)
from airflow_provider_dataworks.local.kafka import KafkaBroker, LocalKafkaError

log = logging.getLogger(__name__)

DEFAULT_TOPIC = "dataworks-events"
DEFAULT_CONSUMER_GROUP = "airflow-dataworks"
DEFAULT_REGION_ID = "cn-hangzhou"
DEFAULT_CONN_ID = "dataworks_default"
ENVELOPES = ("legacy", "cloudevents")
LISTENERS = ("sasl_ssl", "plaintext")

_EMULATOR_MODULE = "airflow_provider_dataworks.local.emulator"
_STACK_FILE = "stack.json"
_CONNECTION_FILE = "connection.json"
_ENV_FILE = "airflow.env"
_EMULATOR_LOG = "emulator.log"
_KAFKA_DIR = "kafka"
_EMULATOR_SECRET_ENV = "DATAWORKS_EMULATOR_ACCESS_KEY_SECRET"


class LocalStackError(RuntimeError):
    """The local stack could not be brought up, reached or taken down."""


@dataclass(frozen=True)
class StackPorts:
    """
    Loopback ports of the local stack; 0 picks a free port.

    :param plaintext: Kafka PLAINTEXT listener.
    :param sasl_ssl: Kafka SASL_SSL listener (what the Airflow connection uses).
    :param controller: Kafka KRaft controller listener.
    :param emulator: DataWorks emulator (OpenAPI and control API).
    """

    plaintext: int = 19092
    sasl_ssl: int = 19093
    controller: int = 19094
    emulator: int = 18080

    @classmethod
    def auto(cls) -> StackPorts:
        """Return ports that are all picked freely when the stack comes up."""
        return cls(plaintext=0, sasl_ssl=0, controller=0, emulator=0)


DEFAULT_PORTS = StackPorts()


def default_state_dir() -> Path:
    """Return ``$DATAWORKS_LOCAL_HOME``, or ``./.dataworks-local`` when it is not set."""
    return Path(os.environ.get("DATAWORKS_LOCAL_HOME") or ".dataworks-local").expanduser().resolve()


def build_connection(
    *,
    broker: KafkaBroker,
    listener: str = "sasl_ssl",
    topic: str = DEFAULT_TOPIC,
    consumer_group: str = DEFAULT_CONSUMER_GROUP,
    emulator_endpoint: str | None = None,
    access_key_id: str | None = None,
    access_key_secret: str | None = None,
    region_id: str = DEFAULT_REGION_ID,
) -> dict[str, Any]:
    """
    Return an Airflow connection (Airflow's JSON connection format) for a local broker and emulator.

    :param broker: the broker; its ports must be known (started once).
    :param listener: ``"sasl_ssl"`` (SASL_SSL + PLAIN, CA file, hostname verification on) or
        ``"plaintext"`` (no login, password or CA).
    :param topic: the DataWorks event topic.
    :param consumer_group: the consumer group the provider uses by default.
    :param emulator_endpoint: ``host:port`` of the DataWorks emulator; without it the OpenAPI
        fields (endpoint, AccessKey) are left out.
    :param access_key_id: the emulator's AccessKey id.
    :param access_key_secret: the emulator's AccessKey secret.
    :param region_id: the region reported to the SDK.
    """
    if listener not in LISTENERS:
        raise ValueError(f"listener must be one of {', '.join(LISTENERS)}, not {listener!r}")
    connection: dict[str, Any] = {"conn_type": "dataworks"}
    extra: dict[str, Any]
    if listener == "sasl_ssl":
        connection.update(
            host=broker.sasl_ssl_bootstrap,
            port=broker.sasl_ssl_port,
            login=broker.sasl_username,
            password=broker.sasl_password,
        )
        extra = {
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "PLAIN",
            "ssl_ca": str(broker.ca_path),
            "ssl_verify_hostname": True,
        }
    else:
        connection.update(host=broker.plaintext_bootstrap, port=broker.plaintext_port)
        extra = {"security_protocol": "PLAINTEXT"}
    extra.update(topic=topic, consumer_group=consumer_group)
    if emulator_endpoint is not None:
        extra.update(
            access_key_id=access_key_id,
            access_key_secret=access_key_secret,
            region_id=region_id,
            endpoint=emulator_endpoint,
            protocol="http",
        )
    else:
        extra["region_id"] = region_id
    connection["extra"] = extra
    return connection


def export_line(connection: dict[str, Any], *, conn_id: str = DEFAULT_CONN_ID) -> str:
    """Return the shell line that hands ``connection`` to Airflow as ``AIRFLOW_CONN_<CONN_ID>``."""
    value = json.dumps(connection, separators=(",", ":"))
    return f"export AIRFLOW_CONN_{conn_id.upper()}={shlex.quote(value)}"


@dataclass(frozen=True)
class StackStatus:
    """What of the local stack runs where. Holds no password or secret."""

    state_dir: Path
    broker_running: bool
    broker_pid: int | None
    plaintext_bootstrap: str | None
    sasl_ssl_bootstrap: str | None
    sasl_username: str | None
    ca_path: Path | None
    topic: str | None
    envelope: str | None
    emulator_running: bool
    emulator_healthy: bool
    emulator_pid: int | None
    emulator_endpoint: str | None
    connection_file: Path | None

    @property
    def up(self) -> bool:
        """Whether the broker runs and the emulator answers."""
        return self.broker_running and self.emulator_healthy

    def lines(self) -> list[str]:
        """Return a human-readable description, one fact a line."""

        def state(running: bool, pid: int | None) -> str:
            return f"running (pid {pid})" if running else "stopped"

        emulator_state = state(self.emulator_running, self.emulator_pid)
        if self.emulator_running and not self.emulator_healthy:
            emulator_state += ", not answering"
        return [
            f"state dir:        {self.state_dir}",
            f"kafka broker:     {state(self.broker_running, self.broker_pid)}",
            f"  plaintext:      {self.plaintext_bootstrap or '-'}",
            f"  sasl_ssl:       {self.sasl_ssl_bootstrap or '-'} (user {self.sasl_username or '-'})",
            f"  ca file:        {self.ca_path or '-'}",
            f"  topic:          {self.topic or '-'}",
            f"emulator:         {emulator_state}",
            f"  endpoint:       {self.emulator_endpoint or '-'}",
            f"  envelope:       {self.envelope or '-'}",
            f"connection file:  {self.connection_file or '-'}",
        ]


class LocalStack:
    """
    A Kafka broker and a DataWorks emulator for running DAGs locally, kept in ``state_dir``.

    ``up`` starts both (the emulator as a background process publishing to the broker's
    PLAINTEXT listener), creates the event topic and writes ``connection.json`` and
    ``airflow.env`` (``export AIRFLOW_CONN_DATAWORKS_DEFAULT=...``; mode 0600). Both processes
    outlive the caller; ``down`` stops them. Credentials (SASL password, AccessKey) and the
    broker's data stay in ``state_dir`` between ``down`` and ``up`` unless purged.

    :param state_dir: where state, logs and connection files live; ``default_state_dir()`` if
        not given.
    """

    def __init__(self, *, state_dir: Path | None = None) -> None:
        self.state_dir = Path(state_dir).resolve() if state_dir is not None else default_state_dir()

    @property
    def connection_path(self) -> Path:
        """The Airflow connection of the stack, in Airflow's JSON connection format."""
        return self.state_dir / _CONNECTION_FILE

    @property
    def env_path(self) -> Path:
        """Shell file that exports ``AIRFLOW_CONN_DATAWORKS_DEFAULT``."""
        return self.state_dir / _ENV_FILE

    @property
    def kafka_dir(self) -> Path:
        """State folder of the Kafka broker."""
        return self.state_dir / _KAFKA_DIR

    def up(
        self,
        *,
        ports: StackPorts = DEFAULT_PORTS,
        topic: str = DEFAULT_TOPIC,
        envelope: str = "legacy",
        listener: str = "sasl_ssl",
        num_partitions: int = 3,
        timeout: float = 120,
    ) -> StackStatus:
        """
        Start the broker and the emulator, create the topic, write the connection files.

        Calling it on a stack that is already up with the same topic and envelope only rewrites
        the connection files.

        :param ports: loopback ports; ``StackPorts.auto()`` picks free ones.
        :param topic: the event topic the emulator publishes to.
        :param envelope: ``"legacy"`` (shared-topic envelope) or ``"cloudevents"`` (EventBridge).
        :param listener: which Kafka listener the written connection uses: ``"sasl_ssl"`` or
            ``"plaintext"``.
        :param num_partitions: partitions of the topic.
        :param timeout: seconds to wait for each of the broker and the emulator.
        :raises LocalStackError: something did not come up; the message says what and why.
        """
        if envelope not in ENVELOPES:
            raise LocalStackError(f"Unknown envelope {envelope!r}; choose one of {', '.join(ENVELOPES)}.")
        if listener not in LISTENERS:
            raise LocalStackError(f"Unknown listener {listener!r}; choose one of {', '.join(LISTENERS)}.")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        state = self._read_state()
        running = self.status()
        if running.broker_running or running.emulator_running:
            if (state.get("topic"), state.get("envelope")) != (topic, envelope):
                raise LocalStackError(
                    f"The stack in {self.state_dir} is already up with topic {state.get('topic')!r} and "
                    f"envelope {state.get('envelope')!r}; run 'dataworks-local down' first to change them."
                )
            if running.up:
                state["listener"] = listener
                self._write_state(state)
                self._write_connection_files(state)
                log.info("Local stack in %s is already up", self.state_dir)
                return self.status()

        state.update(topic=topic, envelope=envelope, listener=listener)
        state.setdefault("access_key_id", "LTAI" + secrets.token_hex(8))
        state.setdefault("access_key_secret", secrets.token_urlsafe(24))

        # An emulator that does not answer, or that publishes to a broker about to get new ports,
        # is started again.
        if running.emulator_running and not (running.emulator_healthy and running.broker_running):
            self._stop_emulator(state)
            running = self.status()

        started: KafkaBroker | None = None
        try:
            broker = self._running_broker()
            if broker is None:
                broker = started = self._new_broker(ports, num_partitions)
                broker.start(timeout=timeout)
            broker.create_topic(topic, num_partitions=num_partitions)
            if not running.emulator_running:
                state["emulator"] = self._start_emulator(broker, state, ports.emulator, timeout)
        except (LocalKafkaError, LocalStackError, OSError) as err:
            if started is not None:
                started.stop()
            if isinstance(err, LocalStackError):
                raise
            raise LocalStackError(str(err)) from None

        self._write_state(state)
        self._write_connection_files(state)
        log.info("Local stack up in %s (topic %s, envelope %s)", self.state_dir, topic, envelope)
        return self.status()

    def down(self, *, purge: bool = False) -> None:
        """
        Stop the emulator and the broker; nothing happens for parts that are not running.

        :param purge: also delete the broker's data, the credentials and the connection files.
        """
        state = self._read_state()
        self._stop_emulator(state)

        if (self.kafka_dir / "broker.json").exists():
            KafkaBroker.load(self.kafka_dir).stop()

        if purge:
            shutil.rmtree(self.kafka_dir, ignore_errors=True)
            for name in (_STACK_FILE, _CONNECTION_FILE, _ENV_FILE, _EMULATOR_LOG):
                (self.state_dir / name).unlink(missing_ok=True)
            log.info("Purged local stack state in %s", self.state_dir)

    def status(self) -> StackStatus:
        """Return what runs where, without any secret."""
        state = self._read_state()
        broker = self._load_broker()
        broker_running = broker is not None and broker.is_running()
        has_ports = broker is not None and broker.plaintext_port != 0

        emulator = state.get("emulator") or {}
        port = emulator.get("port")
        emulator_running = process_alive(emulator.get("pid"), _EMULATOR_MODULE, str(port))
        endpoint = f"{LOOPBACK}:{port}" if port else None
        healthy = emulator_running and endpoint is not None and _emulator_healthy(endpoint, timeout=2)
        return StackStatus(
            state_dir=self.state_dir,
            broker_running=broker_running,
            broker_pid=broker.pid if broker_running and broker is not None else None,
            plaintext_bootstrap=broker.plaintext_bootstrap if broker is not None and has_ports else None,
            sasl_ssl_bootstrap=broker.sasl_ssl_bootstrap if broker is not None and has_ports else None,
            sasl_username=broker.sasl_username if broker is not None else None,
            ca_path=broker.ca_path if broker is not None and broker.ca_path.exists() else None,
            topic=state.get("topic"),
            envelope=state.get("envelope"),
            emulator_running=emulator_running,
            emulator_healthy=healthy,
            emulator_pid=emulator.get("pid") if emulator_running else None,
            emulator_endpoint=endpoint,
            connection_file=self.connection_path if self.connection_path.exists() else None,
        )

    def connection(self, *, listener: str | None = None) -> dict[str, Any]:
        """
        Return the stack's Airflow connection.

        :param listener: ``"sasl_ssl"`` or ``"plaintext"``; the one chosen at ``up`` if not given.
        :raises LocalStackError: the stack was never brought up in ``state_dir``.
        """
        state = self._read_state()
        broker = self._load_broker()
        if not state or broker is None or broker.plaintext_port == 0:
            raise LocalStackError(f"No local stack in {self.state_dir}; run 'dataworks-local up' first.")
        emulator = state.get("emulator") or {}
        port = emulator.get("port") or state.get("last_emulator_port")
        return build_connection(
            broker=broker,
            listener=listener or state.get("listener", "sasl_ssl"),
            topic=state["topic"],
            emulator_endpoint=f"{LOOPBACK}:{port}" if port else None,
            access_key_id=state.get("access_key_id"),
            access_key_secret=state.get("access_key_secret"),
        )

    def env_line(self, *, listener: str | None = None, conn_id: str = DEFAULT_CONN_ID) -> str:
        """Return ``export AIRFLOW_CONN_<CONN_ID>='<connection json>'`` for the stack."""
        return export_line(self.connection(listener=listener), conn_id=conn_id)

    def control(self, method: str, path: str, payload: Any = None, *, timeout: float = 30) -> Any:
        """
        Call the emulator's control API (``/_emulator/<path>``) and return its JSON answer.

        :raises LocalStackError: the emulator is not running, or it refused the request.
        """
        emulator = self._read_state().get("emulator") or {}
        port = emulator.get("port")
        if not process_alive(emulator.get("pid"), _EMULATOR_MODULE, str(port)):
            raise LocalStackError(
                f"The DataWorks emulator of {self.state_dir} is not running; run 'dataworks-local up' first."
            )
        return emulator_control(f"{LOOPBACK}:{port}", method, path, payload, timeout=timeout)

    def _new_broker(self, ports: StackPorts, num_partitions: int) -> KafkaBroker:
        previous = self._load_broker()
        return KafkaBroker(
            state_dir=self.kafka_dir,
            plaintext_port=ports.plaintext,
            sasl_ssl_port=ports.sasl_ssl,
            controller_port=ports.controller,
            sasl_username=previous.sasl_username if previous else "dataworks",
            sasl_password=previous.sasl_password if previous else None,
            num_partitions=num_partitions,
        )

    def _load_broker(self) -> KafkaBroker | None:
        if not (self.kafka_dir / "broker.json").exists():
            return None
        try:
            return KafkaBroker.load(self.kafka_dir)
        except LocalKafkaError:
            return None

    def _running_broker(self) -> KafkaBroker | None:
        broker = self._load_broker()
        return broker if broker is not None and broker.is_running() else None

    def _start_emulator(
        self, broker: KafkaBroker, state: dict[str, Any], port: int, timeout: float
    ) -> dict[str, Any]:
        if port == 0:
            port = free_port()
        elif not port_is_free(port):
            raise LocalStackError(
                f"Port {port} on {LOOPBACK} is in use; stop what holds it or use 'up --ports auto'."
            )
        command = [
            sys.executable,
            "-m",
            _EMULATOR_MODULE,
            "--host",
            LOOPBACK,
            "--port",
            str(port),
            "--topic",
            state["topic"],
            "--envelope",
            state["envelope"],
            "--kafka-config-json",
            json.dumps(broker.plaintext_config()),
            "--access-key-id",
            state["access_key_id"],
            "--seed",
            "demo",
        ]
        # The secret goes through the environment so that it does not show in the process list.
        env = {**os.environ, _EMULATOR_SECRET_ENV: state["access_key_secret"]}
        log_path = self.state_dir / _EMULATOR_LOG
        log.info("Starting DataWorks emulator on %s:%s (topic %s)", LOOPBACK, port, state["topic"])
        with open(log_path, "ab") as log_file:
            process = subprocess.Popen(
                command,
                cwd=self.state_dir,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=env,
            )

        endpoint = f"{LOOPBACK}:{port}"
        deadline = time.monotonic() + timeout
        while not _emulator_healthy(endpoint, timeout=1):
            if process.poll() is not None or time.monotonic() > deadline:
                reason = (
                    f"exited with code {process.returncode}" if process.poll() is not None else "no answer"
                )
                stop_group(process.pid, process=process, timeout=5)
                tail = read_tail(log_path, lines=15).replace(state["access_key_secret"], "***")
                raise LocalStackError(
                    f"The DataWorks emulator did not come up on {endpoint} ({reason}). Log tail:\n{tail}"
                )
            time.sleep(0.1)
        log.info("DataWorks emulator ready on %s (pid %s)", endpoint, process.pid)
        return {"pid": process.pid, "port": port}

    def _stop_emulator(self, state: dict[str, Any]) -> None:
        emulator = state.get("emulator") or {}
        pid, port = emulator.get("pid"), str(emulator.get("port"))
        if pid is not None and process_alive(pid, _EMULATOR_MODULE, port):
            stop_group(pid, _EMULATOR_MODULE, port, timeout=15)
            log.info("Stopped DataWorks emulator (pid %s)", pid)
        if state:
            state["emulator"] = None
            self._write_state(state)

    def _write_connection_files(self, state: dict[str, Any]) -> None:
        connection = self.connection(listener=state.get("listener"))
        write_private(self.connection_path, json.dumps(connection, indent=2) + "\n")
        write_private(self.env_path, export_line(connection) + "\n")

    def _read_state(self) -> dict[str, Any]:
        try:
            state: dict[str, Any] = json.loads((self.state_dir / _STACK_FILE).read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as err:
            raise LocalStackError(f"Unreadable stack state {self.state_dir / _STACK_FILE}: {err}") from None
        return state

    def _write_state(self, state: dict[str, Any]) -> None:
        emulator = state.get("emulator")
        if emulator and emulator.get("port"):
            state["last_emulator_port"] = emulator["port"]
        write_private(self.state_dir / _STACK_FILE, json.dumps(state, indent=2) + "\n")


def emulator_control(
    endpoint: str, method: str, path: str, payload: Any = None, *, timeout: float = 30
) -> Any:
    """
    Call ``/_emulator/<path>`` on the emulator at ``endpoint`` (``host:port``); return the JSON answer.

    :raises LocalStackError: the emulator could not be reached or answered with an error status.
    """
    url = f"http://{endpoint}/_emulator/{path.lstrip('/')}"
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(url, data=data, method=method.upper())
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read()
    except urllib.error.HTTPError as err:
        raise LocalStackError(
            f"The emulator refused {method.upper()} /_emulator/{path.lstrip('/')} (HTTP {err.code}): "
            f"{_error_text(err.read())}"
        ) from None
    except (urllib.error.URLError, OSError) as err:
        raise LocalStackError(
            f"The emulator at {endpoint} cannot be reached ({err}); is the stack up?"
        ) from None
    return json.loads(body) if body.strip() else None


def _error_text(body: bytes) -> str:
    text = body.decode("utf-8", "replace").strip()
    try:
        document = json.loads(text)
    except ValueError:
        return text
    if isinstance(document, dict):
        return str(document.get("error") or document.get("message") or text)
    return text


def _emulator_healthy(endpoint: str, *, timeout: float) -> bool:
    try:
        with urllib.request.urlopen(f"http://{endpoint}/_emulator/health", timeout=timeout) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False
