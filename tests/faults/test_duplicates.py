"""The same DataWorks event delivered twice (one message id, two offsets): a sensor fires once."""

from __future__ import annotations

import asyncio
import time

import pytest
from airflow.sdk.exceptions import TaskDeferred

from airflow_provider_dataworks.sensors.event import DataWorksEventSensor
from airflow_provider_dataworks.triggers.event import DataWorksEventTrigger
from airflow_provider_dataworks.triggers.stream import active_streams
from tests.faults.conftest import NODE, all_payloads, instance_event, until

pytestmark = pytest.mark.integration


async def test_trigger_when_event_delivered_twice_yields_once_the_first_delivery(
    publisher, unique_topic, dataworks_conn, no_stream_left
):
    conn_id = dataworks_conn(listener="plaintext", topic=unique_topic)
    start_ms = int(time.time() * 1000)
    twice = instance_event(node=NODE, message_id="delivered-twice")
    publisher.send(twice, instance_event(node=NODE + 1), twice)

    payloads = await all_payloads(
        DataWorksEventTrigger(
            dataworks_conn_id=conn_id, event_filter={"node_ids": [NODE]}, start_time=start_ms
        )
    )

    assert [(p["event"]["message_id"], p["record"]["offset"]) for p in payloads] == [("delivered-twice", 0)]


async def test_sensors_waiting_together_each_complete_once_on_a_twice_delivered_event(
    publisher, unique_topic, dataworks_conn, no_stream_left
):
    conn_id = dataworks_conn(listener="plaintext", topic=unique_topic)
    sensors = [
        DataWorksEventSensor(
            task_id=f"wait_{index}",
            dataworks_conn_id=conn_id,
            node_ids=[NODE],
            start_time=int(time.time() * 1000),
        )
        for index in range(3)
    ]
    triggers = []
    for sensor in sensors:
        with pytest.raises(TaskDeferred) as deferred:
            sensor.execute({})
        triggers.append(deferred.value.trigger)
    running = [asyncio.ensure_future(all_payloads(trigger)) for trigger in triggers]
    await until(lambda: _streams_reading(), timeout=30, message="the triggers never started reading")

    twice = instance_event(node=NODE, message_id="delivered-twice")
    publisher.send(twice)
    publisher.send(twice, partition=1)
    results = await asyncio.gather(*running)

    xcoms = []
    for sensor, payloads in zip(sensors, results, strict=True):
        assert len(payloads) == 1, payloads
        xcoms.append(sensor.execute_complete({}, payloads[0]))
    # Every sensor took the same delivery, whichever of the two the shared reader met first.
    assert len({(x["record"]["partition"], x["record"]["offset"]) for x in xcoms}) == 1
    assert {x["event"]["message_id"] for x in xcoms} == {"delivered-twice"}


def test_poke_when_event_delivered_twice_returns_the_first_delivery(publisher, unique_topic, dataworks_conn):
    conn_id = dataworks_conn(listener="plaintext", topic=unique_topic)
    sensor = DataWorksEventSensor(
        task_id="wait",
        dataworks_conn_id=conn_id,
        node_ids=[NODE],
        start_time=int(time.time() * 1000),
        deferrable=False,
    )
    twice = instance_event(node=NODE, message_id="delivered-twice")
    publisher.send(instance_event(node=NODE + 1), twice, twice)

    result = sensor.poke({})

    assert result.is_done
    assert (result.xcom_value["event"]["message_id"], result.xcom_value["record"]["offset"]) == (
        "delivered-twice",
        1,
    )


def _streams_reading() -> bool:
    return any(stream.subscriber_count == 3 for stream in active_streams().values())
