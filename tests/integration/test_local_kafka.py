"""The local Kafka broker: both listeners, authentication, restart, and the jar cache."""

from __future__ import annotations

import logging
import shutil
import stat
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient

from airflow_provider_dataworks.local.kafka import KafkaBroker, LocalKafkaError, ensure_kafka_jars

if TYPE_CHECKING:
    from airflow_provider_dataworks.local.emulator import DataWorksEmulator

pytestmark = pytest.mark.integration


def _produce(config: dict[str, Any], topic: str, values: list[str]) -> None:
    producer = Producer(config)
    for value in values:
        producer.produce(topic, key=value.encode(), value=value.encode())
    assert producer.flush(30) == 0, "records still queued after 30s"


def _consumer(config: dict[str, Any], topic: str, group: str) -> Consumer:
    consumer = Consumer(
        {
            **config,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 6000,
            "enable.auto.commit": False,
            # Reconnect quickly once a restarted broker is back, instead of backing off up to 10s.
            "reconnect.backoff.max.ms": 1000,
        }
    )
    consumer.subscribe([topic])
    return consumer


def _consume(consumer: Consumer, count: int, *, timeout: float = 30) -> list[str]:
    values: list[str] = []
    deadline = time.monotonic() + timeout
    while len(values) < count and time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is None:
            continue
        assert message.error() is None, message.error()
        values.append(message.value().decode())
    return values


def _round_trip(config: dict[str, Any], topic: str, group: str) -> list[str]:
    values = [f"record-{index}-{uuid.uuid4().hex[:6]}" for index in range(5)]
    _produce(config, topic, values)
    consumer = _consumer(config, topic, group)
    try:
        received = _consume(consumer, len(values))
    finally:
        consumer.close()
    assert sorted(received) == sorted(values)
    return received


def _wait_for_error(
    config: dict[str, Any], wanted: Callable[[KafkaError], bool], timeout: float
) -> list[str]:
    errors: list[KafkaError] = []
    producer = Producer({**config, "error_cb": errors.append})
    deadline = time.monotonic() + timeout
    while not any(wanted(error) for error in errors) and time.monotonic() < deadline:
        producer.poll(0.2)
    return [f"{error.name()}: {error.str()}" for error in errors if wanted(error)]


def test_plaintext_listener_round_trip_delivers_every_record(
    kafka_broker: KafkaBroker, unique_topic: str, unique_group: str
) -> None:
    _round_trip(kafka_broker.plaintext_config(), unique_topic, unique_group)


def test_sasl_ssl_listener_with_ca_and_hostname_check_delivers_every_record(
    kafka_broker: KafkaBroker, unique_topic: str, unique_group: str
) -> None:
    config = kafka_broker.sasl_ssl_config()

    assert config["ssl.endpoint.identification.algorithm"] == "https"
    assert Path(config["ssl.ca.location"]).read_text().startswith("-----BEGIN CERTIFICATE-----")
    _round_trip(config, unique_topic, unique_group)


def test_sasl_ssl_listener_when_password_wrong_reports_authentication_error(
    kafka_broker: KafkaBroker,
) -> None:
    config = {**kafka_broker.sasl_ssl_config(), "sasl.password": "not-the-password"}

    failures = _wait_for_error(config, lambda error: error.code() == KafkaError._AUTHENTICATION, timeout=20)

    assert failures, "no authentication error within 20s"
    assert "not-the-password" not in " ".join(failures)


def test_sasl_ssl_listener_when_ca_not_given_fails_certificate_check(kafka_broker: KafkaBroker) -> None:
    config = {key: value for key, value in kafka_broker.sasl_ssl_config().items() if key != "ssl.ca.location"}

    failures = _wait_for_error(config, lambda error: "certificate verify failed" in error.str(), timeout=20)

    assert failures, "the broker's certificate was accepted without its CA"


def test_broker_state_file_is_private_and_attach_finds_running_broker(kafka_broker: KafkaBroker) -> None:
    state_file = kafka_broker.state_dir / "broker.json"

    attached = KafkaBroker.attach(kafka_broker.state_dir)

    assert stat.S_IMODE(state_file.stat().st_mode) == 0o600
    assert attached.is_running()
    assert attached.pid == kafka_broker.pid
    assert attached.sasl_ssl_config() == kafka_broker.sasl_ssl_config()
    assert attached.plaintext_bootstrap == kafka_broker.plaintext_bootstrap


def test_broker_when_stopped_and_started_keeps_ports_cluster_topic_records_and_offsets(
    make_kafka_broker: Callable[..., KafkaBroker], unique_group: str
) -> None:
    broker = make_kafka_broker()
    topic = f"restart-{uuid.uuid4().hex[:8]}"
    broker.create_topic(topic)
    ports = (broker.plaintext_port, broker.sasl_ssl_port, broker.controller_port)
    cluster_id = broker.cluster_id
    _produce(broker.plaintext_config(), topic, ["before-1", "before-2", "before-3"])
    surviving = _consumer(broker.plaintext_config(), topic, unique_group)
    try:
        assert sorted(_consume(surviving, 3)) == ["before-1", "before-2", "before-3"]
        surviving.commit(asynchronous=False)

        broker.stop()
        assert not broker.is_running()
        with pytest.raises(LocalKafkaError, match="not running"):
            KafkaBroker.attach(broker.state_dir)
        broker.start()

        assert (broker.plaintext_port, broker.sasl_ssl_port, broker.controller_port) == ports
        assert broker.cluster_id == cluster_id
        _produce(broker.plaintext_config(), topic, ["after-1"])
        assert _consume(surviving, 1, timeout=60) == ["after-1"]
    finally:
        surviving.close()

    fresh = _consumer(broker.sasl_ssl_config(), topic, f"{unique_group}-fresh")
    try:
        assert sorted(_consume(fresh, 4)) == ["after-1", "before-1", "before-2", "before-3"]
    finally:
        fresh.close()


def test_broker_when_paused_stops_answering_until_resumed(kafka_broker: KafkaBroker) -> None:
    admin = AdminClient(kafka_broker.plaintext_config())
    admin.list_topics(timeout=10)

    kafka_broker.pause()
    try:
        with pytest.raises(KafkaException):
            admin.list_topics(timeout=1)
        assert kafka_broker.is_running()
    finally:
        kafka_broker.resume()

    assert admin.list_topics(timeout=10).brokers


def test_ensure_kafka_jars_when_maven_missing_names_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "bin-without-maven"
    bin_dir.mkdir()
    java = shutil.which("java")
    assert java is not None
    (bin_dir / "java").symlink_to(java)
    monkeypatch.setenv("PATH", str(bin_dir))

    with pytest.raises(LocalKafkaError, match=r"Maven \('mvn'\) is not on PATH.*apt-get install maven"):
        ensure_kafka_jars(tmp_path / "cache")


def test_ensure_kafka_jars_when_called_concurrently_downloads_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    results: list[Path] = []
    caplog.set_level(logging.INFO, logger="airflow_provider_dataworks.local.kafka")

    threads = [threading.Thread(target=lambda: results.append(ensure_kafka_jars(tmp_path))) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=240)

    fetches = [record for record in caplog.records if record.getMessage().startswith("Fetching Kafka")]
    assert len(results) == 2
    assert results[0] == results[1] == tmp_path / "kafka-4.1.1" / "libs"
    assert len(fetches) == 1
    assert any(results[0].glob("kafka_2.13-*.jar"))
    assert not any(results[0].glob("kafka-tools-4*.jar"))
    assert not any(results[0].glob("jetty-*.jar"))
    assert ensure_kafka_jars(tmp_path) == results[0]


def test_broker_log_never_holds_the_sasl_password(kafka_broker: KafkaBroker) -> None:
    assert kafka_broker.sasl_password not in kafka_broker.log_path.read_text(errors="replace")


def test_dataworks_conn_fixture_reads_emulator_events_through_sasl_ssl(
    emulator: DataWorksEmulator, dataworks_conn: Callable[..., str], unique_group: str
) -> None:
    from airflow.models.connection import Connection

    conn_id = dataworks_conn("sasl_ssl", emulator=emulator)
    connection = Connection.get_connection_from_secrets(conn_id)
    extra = connection.extra_dejson
    emulator.seed_demo()
    instance = emulator.publish_instance(node_id=700000001, status="SUCCESS")

    consumer = _consumer(
        {
            "bootstrap.servers": connection.host,
            "security.protocol": extra["security_protocol"],
            "sasl.mechanisms": extra["sasl_mechanism"],
            "sasl.username": connection.login,
            "sasl.password": connection.password,
            "ssl.ca.location": extra["ssl_ca"],
        },
        extra["topic"],
        unique_group,
    )
    try:
        values = _consume(consumer, 1)
    finally:
        consumer.close()

    assert len(values) == 1
    assert extra["endpoint"] == emulator.endpoint
    assert extra["access_key_id"] == emulator.access_key_id
    assert str(instance["id"]) in values[0]
