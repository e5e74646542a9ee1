"""Cancelled or timed-out waits close their Kafka consumer within a bound and leave no group behind."""

from __future__ import annotations

import asyncio
import time

import psutil
import pytest
from airflow.sdk.exceptions import TaskDeferred
from confluent_kafka.admin import AdminClient

from airflow_provider_dataworks.sensors.event import DataWorksEventSensor
from airflow_provider_dataworks.sensors.instance import DataWorksInstanceSensor
from airflow_provider_dataworks.triggers.event import DataWorksEventTrigger
from airflow_provider_dataworks.triggers.stream import active_streams
from tests.faults.conftest import NODE, WORKSPACE, first_payload, instance_event, until

pytestmark = pytest.mark.integration

CLOSE_WITHIN_SECONDS = 5


def sasl_connections(broker) -> int:
    """Count this process's TCP connections to the broker's SASL_SSL listener (the tests' connections)."""
    return sum(
        1
        for connection in psutil.Process().net_connections(kind="tcp")
        if connection.raddr
        and connection.raddr.port == broker.sasl_ssl_port
        and connection.status == "ESTABLISHED"
    )


def group_members(broker, group: str) -> tuple[bool, int]:
    """Return whether the broker lists ``group``, and how many members it has."""
    admin = AdminClient(broker.plaintext_config())
    listed = {g.group_id for g in admin.list_consumer_groups(request_timeout=10).result().valid}
    [described] = admin.describe_consumer_groups([group], request_timeout=10).values()
    try:
        members = len(described.result().members)
    except Exception:  # newer brokers answer GROUP_ID_NOT_FOUND for a group nobody ever used
        members = 0
    return group in listed, members


async def _reading(broker, baseline: int) -> None:
    await until(lambda: active_streams(), timeout=30, message="no stream started")
    await until(
        lambda: sasl_connections(broker) > baseline, timeout=30, message="the consumer never connected"
    )


async def _closed(broker, baseline: int) -> float:
    started = time.monotonic()
    await until(
        lambda: not active_streams(), timeout=CLOSE_WITHIN_SECONDS, message="the stream is still open"
    )
    await until(
        lambda: sasl_connections(broker) <= baseline,
        timeout=CLOSE_WITHIN_SECONDS,
        message="the consumer still holds connections to the broker",
    )
    return time.monotonic() - started


@pytest.mark.parametrize("how", ["cancelled", "timed out"])
async def test_waiting_event_trigger_closes_its_consumer_within_seconds_and_joins_no_group(
    how, kafka_broker, unique_topic, unique_group, dataworks_conn
):
    conn_id = dataworks_conn(listener="sasl_ssl", topic=unique_topic, consumer_group=unique_group)
    baseline = sasl_connections(kafka_broker)
    trigger = DataWorksEventTrigger(
        dataworks_conn_id=conn_id, event_filter={"node_ids": [NODE]}, start_time=int(time.time() * 1000)
    )

    if how == "cancelled":
        waiting = asyncio.ensure_future(first_payload(trigger))
        await _reading(kafka_broker, baseline)
        assert group_members(kafka_broker, unique_group) == (False, 0)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
    else:
        # The triggerer ends a timed-out trigger the same way: it cancels the task running it.
        with pytest.raises(TimeoutError):
            await first_payload(trigger, timeout=3)

    assert await _closed(kafka_broker, baseline) < CLOSE_WITHIN_SECONDS
    assert group_members(kafka_broker, unique_group) == (False, 0)


async def test_cancelled_instance_trigger_closes_its_consumer_while_the_openapi_hangs(
    kafka_broker, make_emulator, unique_group, dataworks_conn
):
    emulator = make_emulator()
    emulator.add_workspace(workspace_id=WORKSPACE)
    emulator.add_node(node_id=NODE, workspace_id=WORKSPACE, name="ods_orders_di")
    instance = emulator.add_instance(node_id=NODE, business_date="2026-12-01", status="RUNNING")
    conn_id = dataworks_conn(emulator=emulator, consumer_group=unique_group, openapi_timeout_seconds=1)
    with pytest.raises(TaskDeferred) as deferred:
        DataWorksInstanceSensor(
            task_id="wait", dataworks_conn_id=conn_id, instance_id=instance["id"], recheck_interval=3600
        ).execute({})
    baseline = sasl_connections(kafka_broker)
    emulator.inject_fault("GetInstance", "hang", count=100, seconds=30)

    waiting = asyncio.ensure_future(first_payload(deferred.value.trigger))
    await _reading(kafka_broker, baseline)
    await until(lambda: emulator.faults()[0]["served"] > 0, timeout=30, message="the OpenAPI never hung")
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting

    assert await _closed(kafka_broker, baseline) < CLOSE_WITHIN_SECONDS
    assert group_members(kafka_broker, unique_group) == (False, 0)
    # The attempt in flight ends at its 1 s timeout; no retry follows it (one would come within 2.5 s).
    attempts = emulator.faults()[0]["served"]
    quiet_until = time.monotonic() + 3
    while time.monotonic() < quiet_until:
        assert emulator.faults()[0]["served"] == attempts, "the cancelled trigger kept calling the OpenAPI"
        await asyncio.sleep(0.2)


def test_poke_closes_its_consumer_before_returning_and_joins_no_group(
    kafka_broker, unique_topic, unique_group, dataworks_conn, publisher
):
    conn_id = dataworks_conn(listener="sasl_ssl", topic=unique_topic, consumer_group=unique_group)
    baseline = sasl_connections(kafka_broker)
    sensor = DataWorksEventSensor(
        task_id="wait",
        dataworks_conn_id=conn_id,
        node_ids=[NODE],
        start_time=int(time.time() * 1000),
        deferrable=False,
    )

    assert not sensor.poke({}).is_done
    assert sasl_connections(kafka_broker) <= baseline
    publisher.send(instance_event(node=NODE))
    assert sensor.poke({}).is_done

    assert sasl_connections(kafka_broker) <= baseline
    assert group_members(kafka_broker, unique_group) == (False, 0)
