"""The Kafka broker goes away while sensors wait: 30 s down, frozen, back with another password."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from airflow.sdk.exceptions import TaskDeferred

from airflow_provider_dataworks.exceptions import DataWorksError
from airflow_provider_dataworks.sensors.event import DataWorksEventSensor
from airflow_provider_dataworks.triggers.stream import active_streams
from tests.faults.conftest import NODE, Publisher, connect_to, first_payload, instance_event, until

pytestmark = pytest.mark.integration

OUTAGE_SECONDS = 30
NODES = (NODE, NODE + 1, NODE + 2)
POKED_NODE = NODE + 3


def _deferred(conn_id: str, node: int) -> tuple[DataWorksEventSensor, object]:
    sensor = DataWorksEventSensor(
        task_id=f"wait_for_{node}",
        dataworks_conn_id=conn_id,
        node_ids=[node],
        start_time=int(time.time() * 1000),
    )
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute({})
    return sensor, deferred.value.trigger


async def _reading(publisher: Publisher, probe: asyncio.Future, message_id: str) -> None:
    """Return once the shared reader demonstrably reads: a probe trigger got a probe event."""
    await until(lambda: active_streams(), timeout=30, message="no stream started")
    publisher.send(instance_event(node=NODE + 99, message_id=message_id))
    await asyncio.wait_for(probe, 30)


def _records(caplog: pytest.LogCaptureFixture, logger: str, text: str = "") -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == logger and text in r.getMessage()]


async def test_waiting_sensors_resume_and_fire_after_the_broker_was_down_for_30_seconds(
    own_broker, monkeypatch, caplog, no_stream_left
):
    topic = "outage"
    own_broker.create_topic(topic, num_partitions=3)
    conn_id = connect_to(monkeypatch, own_broker, topic)
    publisher = Publisher(own_broker, topic)
    sensors = [_deferred(conn_id, node) for node in NODES]
    _, probe_trigger = _deferred(conn_id, NODE + 99)
    poking = DataWorksEventSensor(
        task_id="poke",
        dataworks_conn_id=conn_id,
        node_ids=[POKED_NODE],
        start_time=int(time.time() * 1000),
        deferrable=False,
    )
    assert not poking.poke({}).is_done

    with caplog.at_level(logging.INFO):
        waiting = [asyncio.ensure_future(first_payload(trigger, timeout=300)) for _, trigger in sensors]
        await _reading(publisher, asyncio.ensure_future(first_payload(probe_trigger)), "probe")
        # One event before the outage, so that one sensor is done and two wait through it.
        publisher.send(instance_event(node=NODES[0], message_id="before-the-outage"))
        await asyncio.wait_for(asyncio.shield(waiting[0]), 30)

        own_broker.stop()
        down_until = time.monotonic() + OUTAGE_SECONDS
        poke_while_down = asyncio.ensure_future(asyncio.to_thread(poking.poke, {}))
        while time.monotonic() < down_until:
            assert not any(task.done() for task in waiting[1:]), [t.result() for t in waiting[1:] if t.done()]
            await asyncio.sleep(0.5)
        assert not (await asyncio.wait_for(poke_while_down, 30)).is_done
        own_broker.start()
        publisher.send(instance_event(node=NODES[1], message_id="after-the-outage"))
        publisher.send(instance_event(node=NODES[2], message_id="also-after-the-outage"), partition=2)
        publisher.send(instance_event(node=POKED_NODE, message_id="poked-after-the-outage"), partition=1)
        payloads = await asyncio.wait_for(asyncio.gather(*waiting), 60)
        poked = await asyncio.to_thread(poking.poke, {})

    xcoms = [
        sensor.execute_complete({}, payload) for (sensor, _), payload in zip(sensors, payloads, strict=True)
    ]
    assert [x["event"]["message_id"] for x in xcoms] == [
        "before-the-outage",
        "after-the-outage",
        "also-after-the-outage",
    ]
    assert poked.is_done
    assert poked.xcom_value["event"]["message_id"] == "poked-after-the-outage"
    # The outage is logged as a state change: down once, back once; librdkafka's many reconnect
    # attempts are held back to a few lines.
    # One line per reader that met the outage: the triggers' shared reader and the poke's own.
    assert len(_records(caplog, "airflow_provider_dataworks.triggers.reader", "Cannot reach Kafka")) == 2
    assert len(_records(caplog, "airflow_provider_dataworks.triggers.reader", "answers again for topic")) == 1
    assert len(_records(caplog, "airflow_provider_dataworks.kafka")) < 20, _records(
        caplog, "airflow_provider_dataworks.kafka"
    )
    assert not [
        r for r in caplog.records if r.levelno >= logging.ERROR and r.name.startswith("airflow_provider")
    ]


async def test_broker_back_with_another_password_fails_the_waiting_sensor_naming_the_fix(
    own_broker, make_kafka_broker, monkeypatch, no_stream_left
):
    topic = "rotation"
    own_broker.create_topic(topic, num_partitions=1)
    conn_id = connect_to(monkeypatch, own_broker, topic)
    sensor, trigger = _deferred(conn_id, NODE)
    _, probe_trigger = _deferred(conn_id, NODE + 99)
    waiting = asyncio.ensure_future(first_payload(trigger, timeout=120))
    await _reading(Publisher(own_broker, topic), asyncio.ensure_future(first_payload(probe_trigger)), "probe")

    own_broker.stop()
    make_kafka_broker(
        state_dir=own_broker.state_dir,
        plaintext_port=own_broker.plaintext_port,
        sasl_ssl_port=own_broker.sasl_ssl_port,
        controller_port=own_broker.controller_port,
        sasl_password="rotated-" + own_broker.sasl_password,
    )
    started = time.monotonic()
    payload = await waiting

    assert time.monotonic() - started < 30
    assert payload["status"] == "error"
    with pytest.raises(DataWorksError) as failure:
        sensor.execute_complete({}, payload)
    assert "refused the SASL user 'dataworks'" in str(failure.value)
    assert "check the SASL username and SASL password" in str(failure.value)
    assert own_broker.sasl_password not in str(failure.value)


async def test_frozen_broker_does_not_hold_up_closing_a_cancelled_trigger(own_broker, monkeypatch):
    topic = "frozen"
    own_broker.create_topic(topic, num_partitions=3)
    conn_id = connect_to(monkeypatch, own_broker, topic)
    _, trigger = _deferred(conn_id, NODE)
    _, probe_trigger = _deferred(conn_id, NODE + 99)
    waiting = asyncio.ensure_future(first_payload(trigger))
    await _reading(Publisher(own_broker, topic), asyncio.ensure_future(first_payload(probe_trigger)), "probe")

    own_broker.pause()
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    started = time.monotonic()
    await until(lambda: not active_streams(), timeout=5, message="closing hung on the frozen broker")

    assert time.monotonic() - started < 5
    own_broker.resume()
