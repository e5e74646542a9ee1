"""Topics under readers: just created, deleted (fatal), given partitions, written in transactions."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from airflow.sdk.exceptions import TaskDeferred
from confluent_kafka import Producer
from confluent_kafka.admin import NewPartitions, NewTopic

from airflow_provider_dataworks.exceptions import DataWorksError
from airflow_provider_dataworks.hooks.dataworks import DataWorksHook
from airflow_provider_dataworks.sensors.event import DataWorksEventSensor
from airflow_provider_dataworks.triggers.event import DataWorksEventTrigger
from airflow_provider_dataworks.triggers.reader import EventReader
from airflow_provider_dataworks.triggers.stream import active_streams
from tests.faults.conftest import NODE, Publisher, first_payload, instance_event, until

pytestmark = pytest.mark.integration

# librdkafka's metadata refresh, which also paces the reader's topic checks: 1 s keeps these tests short.
FAST_METADATA = {"kafka_config": {"topic.metadata.refresh.interval.ms": 1000}}


def _deferred(conn_id: str, node: int = NODE) -> tuple[DataWorksEventSensor, object]:
    sensor = DataWorksEventSensor(
        task_id="wait", dataworks_conn_id=conn_id, node_ids=[node], start_time=int(time.time() * 1000)
    )
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute({})
    return sensor, deferred.value.trigger


async def test_topic_deleted_while_sensor_waits_fails_it_naming_the_subscription(
    admin, publisher, unique_topic, dataworks_conn, no_stream_left
):
    conn_id = dataworks_conn(listener="sasl_ssl", topic=unique_topic, **FAST_METADATA)
    sensor, trigger = _deferred(conn_id)
    _, probe = _deferred(conn_id, NODE + 99)
    waiting = asyncio.ensure_future(first_payload(trigger))
    probing = asyncio.ensure_future(first_payload(probe))
    publisher.send(instance_event(node=NODE + 99))
    await asyncio.wait_for(probing, 30)

    admin.delete_topics([unique_topic])[unique_topic].result(30)
    started = time.monotonic()
    payload = await waiting

    assert time.monotonic() - started < 30
    assert payload["status"] == "error"
    with pytest.raises(DataWorksError) as failure:
        sensor.execute_complete({}, payload)
    assert f"Kafka topic {unique_topic!r} was deleted" in str(failure.value)
    assert "check that the DataWorks event subscription is still switched on" in str(failure.value)


async def test_partitions_added_while_sensor_waits_are_read(
    admin, kafka_broker, publisher, unique_topic, dataworks_conn, no_stream_left
):
    conn_id = dataworks_conn(listener="plaintext", topic=unique_topic, **FAST_METADATA)
    sensor, trigger = _deferred(conn_id)
    _, probe = _deferred(conn_id, NODE + 99)
    waiting = asyncio.ensure_future(first_payload(trigger))
    probing = asyncio.ensure_future(first_payload(probe))
    publisher.send(instance_event(node=NODE + 99))
    await asyncio.wait_for(probing, 30)

    admin.create_partitions([NewPartitions(unique_topic, 5)])[unique_topic].result(30)
    # A new producer, which knows the new partitions from its first metadata.
    Publisher(kafka_broker, unique_topic).send(
        instance_event(node=NODE, message_id="on-a-new-partition"), partition=4
    )
    payload = await asyncio.wait_for(waiting, 30)

    xcom = sensor.execute_complete({}, payload)
    assert (xcom["event"]["message_id"], xcom["record"]["partition"]) == ("on-a-new-partition", 4)


def test_reading_a_topic_created_a_moment_ago_waits_out_its_leader_election(admin, dataworks_conn):
    # Right after creation a partition's leader answers "not leader" for a moment (about one time
    # in three on the local broker); ten fresh topics, read at once, meet that moment.
    for _ in range(10):
        topic = f"faults-fresh-{uuid.uuid4().hex[:8]}"
        reader = EventReader(DataWorksHook(dataworks_conn(listener="plaintext", topic=topic)), topic)
        try:
            admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])[topic].result(30)
            starts = reader.seek_to_time(int(time.time() * 1000) + 60_000)
        finally:
            reader.close()
        assert starts == {0: 0, 1: 0, 2: 0}


async def test_topic_written_in_transactions_is_read_to_its_end(
    kafka_broker, unique_topic, dataworks_conn, no_stream_left
):
    conn_id = dataworks_conn(listener="plaintext", topic=unique_topic)
    before = int(time.time() * 1000)
    producer = Producer(
        {**kafka_broker.plaintext_config(), "transactional.id": uuid.uuid4().hex, "log_level": 2}
    )
    producer.init_transactions(30)
    for value in (instance_event(node=NODE + 1), instance_event(node=NODE, message_id="in-a-transaction")):
        # Each commit writes a marker that takes an offset but is never handed to a consumer.
        producer.begin_transaction()
        producer.produce(unique_topic, value=value, partition=0)
        producer.commit_transaction(30)

    poking = DataWorksEventSensor(
        task_id="poke", dataworks_conn_id=conn_id, node_ids=[NODE + 2], start_time=before, deferrable=False
    )
    started = time.monotonic()
    assert not poking.poke({}).is_done
    assert time.monotonic() - started < 10, "the poke kept reading for the offsets of the markers"

    # The later trigger starts the shared reader; the earlier one catches up to it with its own.
    late = asyncio.ensure_future(
        first_payload(
            DataWorksEventTrigger(
                dataworks_conn_id=conn_id,
                event_filter={"node_ids": [NODE + 3]},
                start_time=int(time.time() * 1000),
            )
        )
    )
    await until(lambda: active_streams(), timeout=30, message="the shared reader never started")
    early = await first_payload(
        DataWorksEventTrigger(
            dataworks_conn_id=conn_id, event_filter={"node_ids": [NODE]}, start_time=before
        ),
        timeout=30,
    )
    late.cancel()

    assert early["event"]["message_id"] == "in-a-transaction"
