"""Shared pytest fixtures: a real Kafka broker, unique topics and groups, emulators, Airflow connections."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

from airflow_provider_dataworks.local.kafka import KafkaBroker
from airflow_provider_dataworks.local.stack import build_connection

if TYPE_CHECKING:
    from airflow_provider_dataworks.local.emulator import DataWorksEmulator


def _slug(text: str, limit: int = 40) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")[:limit] or "test"


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    """
    One real Kafka broker for the whole test session (PLAINTEXT and SASL_SSL listeners).

    Started only when a test asks for it; stopped when the session ends. Tests that stop or
    pause a broker use ``make_kafka_broker`` instead, so that others keep theirs.
    """
    broker = KafkaBroker(state_dir=tmp_path_factory.mktemp("kafka-broker"))
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
def make_kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., KafkaBroker]]:
    """
    Factory for brokers of a single test: ``make_kafka_broker(**KafkaBroker kwargs)`` starts one.

    Every broker made is stopped at the end of the test.
    """
    brokers: list[KafkaBroker] = []

    def make(**kwargs: Any) -> KafkaBroker:
        kwargs.setdefault("state_dir", tmp_path_factory.mktemp("kafka-broker-own"))
        broker = KafkaBroker(**kwargs)
        brokers.append(broker)
        broker.start()
        return broker

    yield make
    for broker in reversed(brokers):
        broker.stop()


@pytest.fixture
def unique_topic(kafka_broker: KafkaBroker, request: pytest.FixtureRequest) -> str:
    """A new topic with 3 partitions on the session broker, named after the test."""
    name = f"test-{_slug(request.node.name)}-{uuid.uuid4().hex[:8]}"
    kafka_broker.create_topic(name, num_partitions=3)
    return name


@pytest.fixture
def unique_group(request: pytest.FixtureRequest) -> str:
    """A consumer-group name no other test uses."""
    return f"group-{_slug(request.node.name, 30)}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def make_emulator(
    kafka_broker: KafkaBroker, request: pytest.FixtureRequest
) -> Iterator[Callable[..., DataWorksEmulator]]:
    """
    Factory for DataWorks emulators publishing through the session broker's PLAINTEXT listener.

    ``make_emulator(envelope="legacy", topic=None, **kwargs)``: ``topic`` defaults to
    ``unique_topic``; other keyword arguments go to ``DataWorksEmulator``. Every emulator made
    is stopped at the end of the test.
    """
    from airflow_provider_dataworks.local.emulator import DataWorksEmulator

    emulators: list[DataWorksEmulator] = []

    def make(*, envelope: str = "legacy", topic: str | None = None, **kwargs: Any) -> DataWorksEmulator:
        emulator = DataWorksEmulator(
            kafka_config=kafka_broker.plaintext_config(),
            topic=topic or request.getfixturevalue("unique_topic"),
            envelope=envelope,
            **kwargs,
        )
        emulators.append(emulator)
        emulator.start()
        return emulator

    yield make
    for emulator in reversed(emulators):
        emulator.stop()


@pytest.fixture
def emulator(make_emulator: Callable[..., DataWorksEmulator], unique_topic: str) -> DataWorksEmulator:
    """A DataWorks emulator publishing legacy envelopes to ``unique_topic``."""
    return make_emulator(envelope="legacy", topic=unique_topic)


@pytest.fixture
def dataworks_conn(
    kafka_broker: KafkaBroker, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> Callable[..., str]:
    """
    Factory for Airflow connections to the session broker; returns the new connection id.

    ``dataworks_conn(listener="sasl_ssl", topic=None, emulator=None, **extra_overrides)`` sets
    ``AIRFLOW_CONN_<ID>`` for the test. ``topic`` defaults to the emulator's topic, else to
    ``unique_topic``. Without ``emulator`` the OpenAPI fields are left out. Each keyword in
    ``extra_overrides`` replaces that key of ``extra``; ``None`` removes it.
    """

    def make(
        listener: str = "sasl_ssl",
        *,
        topic: str | None = None,
        emulator: DataWorksEmulator | None = None,
        **extra_overrides: Any,
    ) -> str:
        if topic is None:
            topic = getattr(emulator, "topic", None) or request.getfixturevalue("unique_topic")
        connection = build_connection(
            broker=kafka_broker,
            listener=listener,
            topic=topic,
            emulator_endpoint=emulator.endpoint if emulator is not None else None,
            access_key_id=emulator.access_key_id if emulator is not None else None,
            access_key_secret=emulator.access_key_secret if emulator is not None else None,
        )
        for key, value in extra_overrides.items():
            if value is None:
                connection["extra"].pop(key, None)
            else:
                connection["extra"][key] = value
        conn_id = f"dataworks_test_{uuid.uuid4().hex[:10]}"
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(connection))
        return conn_id

    return make
