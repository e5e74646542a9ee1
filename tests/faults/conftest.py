"""Fixtures of the fault suite: producing records, running triggers with deadlines, Airflow homes."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from airflow_provider_dataworks.local.kafka import KafkaBroker
from airflow_provider_dataworks.local.stack import build_connection
from airflow_provider_dataworks.triggers.stream import active_streams

# run_dag_test runs `airflow dags test`; it uses the airflow_home fixture below.
from tests.e2e.conftest import run_dag_test  # noqa: F401

FAULT_DAGS = Path(__file__).resolve().parent / "dags"
AIRFLOW = str(Path(sys.executable).with_name("airflow"))

NODE = 700000001
WORKSPACE = 10001


def instance_event(
    *,
    instance: int = 900000001,
    node: int = NODE,
    status: int = 6,
    workspace: int = WORKSPACE,
    message_id: str | None = None,
) -> bytes:
    """Return a legacy-envelope ``instance-status-changes`` record value."""
    return json.dumps(
        {
            "messageId": message_id or str(uuid.uuid4()),
            "eventType": "instance-status-changes",
            "eventCategoryType": "instance-status-change",
            "blockBusiness": False,
            "messageBody": {
                "taskId": instance,
                "nodeId": node,
                "dagId": 1,
                "status": status,
                "appId": workspace,
            },
        }
    ).encode()


class Publisher:
    """Write record values to one topic through the broker's PLAINTEXT listener, flushed each time."""

    def __init__(self, broker: KafkaBroker, topic: str, **config: Any) -> None:
        self.topic = topic
        # Level 2 keeps this test producer's own reconnect lines out of the output of outage tests.
        self._producer = Producer({**broker.plaintext_config(), "log_level": 2, **config})

    def send(self, *values: bytes | None, partition: int = 0, timestamp: int = 0) -> None:
        for value in values:
            self._producer.produce(self.topic, value=value, partition=partition, timestamp=timestamp)
        assert self._producer.flush(30) == 0, "the broker did not take the records"

    def close(self) -> None:
        # pytest keeps fixture values until the session ends; the producer must not outlive its broker.
        self._producer.flush(5)
        del self._producer


@pytest.fixture
def publisher(kafka_broker: KafkaBroker, unique_topic: str) -> Iterator[Publisher]:
    """A publisher to ``unique_topic`` on the session broker."""
    publisher = Publisher(kafka_broker, unique_topic)
    yield publisher
    publisher.close()


@pytest.fixture
def admin(kafka_broker: KafkaBroker) -> AdminClient:
    """An admin client of the session broker (quiet: pytest keeps it until after the broker stopped)."""
    return AdminClient({**kafka_broker.plaintext_config(), "log_level": 2})


def create_topic(broker: KafkaBroker, name: str, *, partitions: int = 1, **config: str) -> str:
    """Create a topic with topic-level settings and wait until every partition has a leader."""
    admin = AdminClient(broker.plaintext_config())
    admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1, config=config)])[
        name
    ].result(30)
    broker.create_topic(name, num_partitions=partitions)
    return name


async def first_payload(trigger: Any, timeout: float = 60) -> dict[str, Any]:
    """Run a trigger until its first event and return the payload; fail after ``timeout`` seconds."""

    async def first() -> dict[str, Any]:
        async for event in trigger.run():
            return event.payload
        raise AssertionError("the trigger ended without an event")

    return await asyncio.wait_for(first(), timeout)


async def all_payloads(trigger: Any, timeout: float = 60) -> list[dict[str, Any]]:
    """Run a trigger to its end and return every payload it yielded."""

    async def run() -> list[dict[str, Any]]:
        return [event.payload async for event in trigger.run()]

    return await asyncio.wait_for(run(), timeout)


async def until(condition: Callable[[], object], *, timeout: float, message: str, every: float = 0.05) -> Any:
    """Wait (without blocking the loop) until ``condition()`` is truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"after {timeout:.0f} s: {message}"
        await asyncio.sleep(every)


def wait_for(condition: Callable[[], object], *, timeout: float, message: str, every: float = 0.2) -> Any:
    """Blocking twin of :func:`until`, for code outside an event loop."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"after {timeout:.0f} s: {message}"
        time.sleep(every)


@pytest.fixture
async def no_stream_left() -> AsyncIterator[None]:
    """Fail the test if a shared stream of this event loop is still reading when it ends."""
    yield
    await until(lambda: not active_streams(), timeout=10, message=f"streams left open: {active_streams()}")


@pytest.fixture(scope="session")
def migrated_airflow_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated Airflow SQLite database, copied by every test that needs an Airflow home."""
    home = tmp_path_factory.mktemp("airflow-template")
    env = _airflow_env(home)
    migrated = subprocess.run(
        [AIRFLOW, "db", "migrate"], env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert migrated.returncode == 0, migrated.stdout[-3000:] + migrated.stderr[-3000:]
    return home / "airflow.db"


@pytest.fixture
def airflow_home(migrated_airflow_db: Path, tmp_path: Path) -> Path:
    """An AIRFLOW_HOME of this test alone, with a migrated database (used by ``run_dag_test`` too)."""
    home = tmp_path / "airflow-home"
    home.mkdir()
    shutil.copy(migrated_airflow_db, home / "airflow.db")
    return home


def _airflow_env(home: Path) -> dict[str, str]:
    """The environment of an Airflow command: this home, the fault DAGs, nothing of the caller's Airflow."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW__", "AIRFLOW_CONN_"))}
    env.pop("AIRFLOW_CONFIG", None)
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(FAULT_DAGS),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            "PYTHONPATH": os.pathsep.join(
                filter(None, [str(Path(__file__).resolve().parents[2]), env.get("PYTHONPATH")])
            ),
        }
    )
    return env


@pytest.fixture
def own_broker(make_kafka_broker: Callable[..., KafkaBroker]) -> Iterator[KafkaBroker]:
    """A broker of this test alone, for faults that stop, pause or reconfigure it."""
    broker = make_kafka_broker()
    yield broker
    if broker.is_running():
        # A test that failed while the broker was paused must not leave the JVM frozen.
        broker.resume()


def write_foreign_ca(path: Path) -> Path:
    """Write a CA certificate (PEM) that signed nothing the local broker presents."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "a CA the broker does not know")])
    now = datetime.now(tz=timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return path


def set_connection_field(monkeypatch: pytest.MonkeyPatch, conn_id: str, **fields: Any) -> None:
    """Change top-level fields (``password``, ``login``, ``host``) of a test connection."""
    variable = f"AIRFLOW_CONN_{conn_id.upper()}"
    connection = json.loads(os.environ[variable])
    monkeypatch.setenv(variable, json.dumps({**connection, **fields}))


def connect_to(
    monkeypatch: pytest.MonkeyPatch,
    broker: KafkaBroker,
    topic: str,
    *,
    listener: str = "sasl_ssl",
    **extra: Any,
) -> str:
    """Set a ``dataworks`` connection to ``broker`` (not the session broker) and return its id."""
    connection = build_connection(broker=broker, listener=listener, topic=topic)
    connection["extra"].update(extra)
    conn_id = f"dataworks_own_{uuid.uuid4().hex[:10]}"
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(connection))
    return conn_id
