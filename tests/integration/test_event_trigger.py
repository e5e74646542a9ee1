"""The event trigger and sensor on the real broker, through both listeners."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
import uuid

import pytest
from confluent_kafka import Producer

from airflow_provider_dataworks.sensors.event import DataWorksEventSensor
from airflow_provider_dataworks.triggers.event import DataWorksEventTrigger

pytestmark = pytest.mark.integration

NODE = 700000001


def _instance_message(*, node: int = NODE, status: int = 6, instance: int = 900000001) -> bytes:
    return json.dumps(
        {
            "messageId": str(uuid.uuid4()),
            "eventType": "instance-status-changes",
            "eventCategoryType": "instance-status-change",
            "blockBusiness": False,
            "messageBody": {"taskId": instance, "nodeId": node, "dagId": 1, "status": status, "appId": 10001},
        }
    ).encode()


def _produce(kafka_broker, topic: str, *values: bytes | None, partition: int = 0, timestamp: int = 0) -> None:
    producer = Producer(kafka_broker.plaintext_config())
    for value in values:
        producer.produce(topic, value=value, partition=partition, timestamp=timestamp)
    assert producer.flush(10) == 0


def _replace_password(monkeypatch, conn_id: str, password: str) -> None:
    variable = f"AIRFLOW_CONN_{conn_id.upper()}"
    connection = json.loads(os.environ[variable])
    monkeypatch.setenv(variable, json.dumps({**connection, "password": password}))


async def _first_event(trigger: DataWorksEventTrigger, timeout: float = 60) -> dict:
    async def first():
        async for event in trigger.run():
            return event.payload
        raise AssertionError("trigger ended without an event")

    return await asyncio.wait_for(first(), timeout)


@pytest.mark.parametrize("listener", ["plaintext", "sasl_ssl"])
async def test_trigger_when_matching_event_published_before_it_started_fires(
    kafka_broker, unique_topic, dataworks_conn, listener
):
    conn_id = dataworks_conn(listener=listener, topic=unique_topic)
    start_ms = int(time.time() * 1000)
    _produce(kafka_broker, unique_topic, _instance_message(status=4), _instance_message(status=6))

    payload = await _first_event(
        DataWorksEventTrigger(
            dataworks_conn_id=conn_id,
            event_filter={"node_ids": [NODE], "statuses": ["SUCCESS"]},
            start_time=start_ms,
        )
    )

    assert payload["status"] == "matched"
    assert payload["event"]["status"] == "SUCCESS"
    assert payload["record"]["topic"] == unique_topic
    assert payload["record"]["offset"] == 1
    assert payload["record"]["timestamp"] >= start_ms


async def test_trigger_ignores_events_before_its_start_time(kafka_broker, unique_topic, dataworks_conn):
    conn_id = dataworks_conn(listener="plaintext", topic=unique_topic)
    start_ms = int(time.time() * 1000)
    _produce(kafka_broker, unique_topic, _instance_message(instance=1), timestamp=start_ms - 60_000)
    trigger = DataWorksEventTrigger(
        dataworks_conn_id=conn_id, event_filter={"statuses": ["SUCCESS"]}, start_time=start_ms
    )
    task = asyncio.ensure_future(_first_event(trigger))

    _produce(kafka_broker, unique_topic, _instance_message(instance=2))
    payload = await task

    assert payload["event"]["instance_ids"] == [2]


async def test_trigger_when_malformed_record_precedes_match_warns_once_and_fires(
    kafka_broker, unique_topic, dataworks_conn, caplog
):
    conn_id = dataworks_conn(listener="plaintext", topic=unique_topic)
    start_ms = int(time.time() * 1000)
    _produce(kafka_broker, unique_topic, b"this is not json", _instance_message())

    with caplog.at_level(logging.WARNING):
        payload = await _first_event(
            DataWorksEventTrigger(
                dataworks_conn_id=conn_id, event_filter={"node_ids": [NODE]}, start_time=start_ms
            )
        )

    assert payload["record"]["offset"] == 1
    warnings = [r.getMessage() for r in caplog.records if "malformed" in r.getMessage()]
    assert warnings == [
        f"Skipping malformed record at topic {unique_topic} partition 0 offset 0: "
        "value is not UTF-8 JSON (Expecting value: line 1 column 1 (char 0))"
    ]


async def test_trigger_when_topic_unknown_fails_fast_naming_the_topic(dataworks_conn):
    conn_id = dataworks_conn(listener="plaintext", topic=f"missing-{uuid.uuid4().hex}")
    started = time.monotonic()

    payload = await _first_event(DataWorksEventTrigger(dataworks_conn_id=conn_id), timeout=60)

    assert payload["status"] == "error"
    assert "does not exist" in payload["message"]
    assert "topic field" in payload["message"]
    assert time.monotonic() - started < 30


async def test_trigger_when_sasl_password_wrong_fails_fast_without_the_password(
    dataworks_conn, unique_topic, monkeypatch
):
    conn_id = dataworks_conn(listener="sasl_ssl", topic=unique_topic)
    _replace_password(monkeypatch, conn_id, "wrong-password-123")
    started = time.monotonic()

    payload = await _first_event(DataWorksEventTrigger(dataworks_conn_id=conn_id), timeout=60)

    assert payload["status"] == "error"
    assert "SASL username and SASL password" in payload["message"]
    assert "wrong-password-123" not in payload["message"]
    assert time.monotonic() - started < 30


def test_sensor_poke_when_event_on_topic_returns_it(kafka_broker, unique_topic, dataworks_conn):
    conn_id = dataworks_conn(listener="sasl_ssl", topic=unique_topic)
    sensor = DataWorksEventSensor(
        task_id="wait",
        dataworks_conn_id=conn_id,
        node_ids=[NODE],
        statuses=["SUCCESS"],
        start_time=int(time.time() * 1000),
        deferrable=False,
    )

    assert not sensor.poke({}).is_done
    _produce(kafka_broker, unique_topic, b"{}", _instance_message(status=4), _instance_message(status=6))
    result = sensor.poke({})

    assert result.is_done
    assert result.xcom_value["event"]["status"] == "SUCCESS"
    assert result.xcom_value["record"]["offset"] == 2
