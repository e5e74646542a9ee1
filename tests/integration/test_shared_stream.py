"""The shared per-process stream of waiting triggers on the real broker: one consumer, one parse."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Callable

import psutil
import pytest
from confluent_kafka import Producer

from airflow_provider_dataworks.filters import EventFilter
from airflow_provider_dataworks.hooks.dataworks import DataWorksHook
from airflow_provider_dataworks.triggers.event import DataWorksEventTrigger
from airflow_provider_dataworks.triggers.stream import active_streams, subscribe

pytestmark = pytest.mark.integration

WORKSPACE = 10001


def _instance_event(instance: int, *, status: int = 6, workspace: int = WORKSPACE) -> bytes:
    return json.dumps(
        {
            "messageId": str(uuid.uuid4()),
            "eventType": "instance-status-changes",
            "eventCategoryType": "instance-status-change",
            "blockBusiness": False,
            "messageBody": {
                "taskId": instance,
                "nodeId": 700000000 + instance,
                "dagId": 1,
                "status": status,
                "appId": workspace,
            },
        }
    ).encode()


class _Publisher:
    def __init__(self, broker, topic: str) -> None:
        self.topic = topic
        self._producer = Producer(broker.plaintext_config())

    def send(self, *values: bytes, timestamp: int = 0, partition: int = 0) -> None:
        for value in values:
            self._producer.produce(self.topic, value=value, timestamp=timestamp, partition=partition)
        assert self._producer.flush(10) == 0


def _broker_connections(broker) -> int:
    return sum(
        1
        for connection in psutil.Process().net_connections(kind="tcp")
        if connection.raddr
        and connection.raddr.port == broker.plaintext_port
        and connection.status == psutil.CONN_ESTABLISHED
    )


async def _eventually(condition: Callable[[], bool], *, timeout: float = 30, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(0.05)


async def _hook(conn_id: str) -> DataWorksHook:
    return DataWorksHook(conn_id, settings=await DataWorksHook.aget_settings(conn_id))


async def _first_payload(trigger: DataWorksEventTrigger) -> dict:
    async for event in trigger.run():
        return event.payload
    raise AssertionError("trigger ended without an event")


def _stream(topic: str):
    return next(stream for (_, stream_topic), stream in active_streams().items() if stream_topic == topic)


async def test_many_waiting_triggers_hold_one_consumer_and_each_gets_its_event(
    kafka_broker, unique_topic, dataworks_conn
):
    conn_id = dataworks_conn(listener="plaintext", topic=unique_topic)
    publisher = _Publisher(kafka_broker, unique_topic)
    publisher.send(_instance_event(0))  # the producer's own connections are open before counting
    baseline = _broker_connections(kafka_broker)
    start_ms = int(time.time() * 1000)

    def waiter(instance: int) -> asyncio.Task[dict]:
        trigger = DataWorksEventTrigger(
            dataworks_conn_id=conn_id, event_filter={"instance_ids": [instance]}, start_time=start_ms
        )
        return asyncio.ensure_future(_first_payload(trigger))

    first = waiter(1)
    await _eventually(lambda: active_streams() and _stream(unique_topic).subscriber_count == 1, what="stream")
    publisher.send(_instance_event(999))
    await _eventually(lambda: _broker_connections(kafka_broker) > baseline, what="the consumer's connections")
    with_one = _broker_connections(kafka_broker) - baseline

    others = [waiter(instance) for instance in range(2, 41)]
    await _eventually(lambda: _stream(unique_topic).subscriber_count == 40, what="40 subscribers")
    with_forty = _broker_connections(kafka_broker) - baseline
    publisher.send(*(_instance_event(instance) for instance in range(40, 0, -1)))
    payloads = await asyncio.wait_for(asyncio.gather(first, *others), 30)

    assert with_forty == with_one
    assert len(active_streams()) <= 1
    assert [payload["event"]["instance_ids"] for payload in payloads] == [[i] for i in range(1, 41)]
    await _eventually(lambda: not active_streams(), what="the stream to stop")
    await _eventually(lambda: _broker_connections(kafka_broker) == baseline, what="the consumer to close")


async def test_subscriptions_receive_the_same_parsed_event_object(kafka_broker, unique_topic, dataworks_conn):
    hook = await _hook(dataworks_conn(listener="plaintext", topic=unique_topic))
    start_ms = int(time.time() * 1000)
    everything = await subscribe(hook, unique_topic, EventFilter(), start_ms)
    workspace = await subscribe(hook, unique_topic, EventFilter(workspace_ids=[WORKSPACE]), start_ms)
    instance = await subscribe(hook, unique_topic, EventFilter(instance_ids=[7]), start_ms)
    try:
        _Publisher(kafka_broker, unique_topic).send(_instance_event(7))

        received = [await subscription.next(timeout=30) for subscription in (everything, workspace, instance)]

        assert received[0] is not None
        assert received[0] is received[1] is received[2]
    finally:
        for subscription in (everything, workspace, instance):
            subscription.close()


async def test_trigger_with_older_start_catches_up_on_its_own_then_takes_live_events(
    kafka_broker, unique_topic, dataworks_conn, caplog
):
    hook = await _hook(dataworks_conn(listener="plaintext", topic=unique_topic))
    publisher = _Publisher(kafka_broker, unique_topic)
    now_ms = int(time.time() * 1000)
    publisher.send(_instance_event(1, status=4), timestamp=now_ms - 60_000)
    running = await subscribe(hook, unique_topic, EventFilter(instance_ids=[1]), now_ms)
    try:
        publisher.send(_instance_event(1, status=5))
        assert (await running.next(timeout=30)).event.status.value == "FAILURE"
        stream = _stream(unique_topic)

        with caplog.at_level(logging.INFO, logger="airflow_provider_dataworks.triggers.stream"):
            late = await subscribe(hook, unique_topic, EventFilter(instance_ids=[1]), now_ms - 120_000)
        publisher.send(_instance_event(1, status=6))
        statuses = [(await late.next(timeout=30)).event.status.value for _ in range(3)]

        assert statuses == ["RUNNING", "FAILURE", "SUCCESS"]
        assert (await running.next(timeout=30)).event.status.value == "SUCCESS"
        assert await running.next(timeout=0.5) is None
        assert _stream(unique_topic) is stream
        assert stream.subscriber_count == 2
        assert [r.getMessage() for r in caplog.records if "Catching up" in r.getMessage()] == [
            f"Catching up on topic {unique_topic} from offsets {{0: 0, 1: 0, 2: 0}} to {{0: 2, 1: 0, 2: 0}} "
            "before joining the shared reader"
        ]
    finally:
        running.close()
        late.close()


async def test_trigger_starting_inside_what_the_stream_read_replays_without_kafka(
    kafka_broker, unique_topic, dataworks_conn, caplog
):
    hook = await _hook(dataworks_conn(listener="plaintext", topic=unique_topic))
    publisher = _Publisher(kafka_broker, unique_topic)
    start_ms = int(time.time() * 1000)
    first = await subscribe(hook, unique_topic, EventFilter(instance_ids=[1]), start_ms)
    try:
        publisher.send(_instance_event(2))
        publisher.send(_instance_event(1))
        await first.next(timeout=30)

        with caplog.at_level(logging.INFO, logger="airflow_provider_dataworks.triggers.stream"):
            replaying = await subscribe(hook, unique_topic, EventFilter(instance_ids=[2]), start_ms)
            from_now = await subscribe(hook, unique_topic, EventFilter(instance_ids=[2]), None)
        publisher.send(_instance_event(2, status=5))

        assert not [record for record in caplog.records if "Catching up" in record.getMessage()]
        replayed = [(await replaying.next(timeout=30)).event.status.value for _ in range(2)]
        assert replayed == ["SUCCESS", "FAILURE"]
        assert (await from_now.next(timeout=30)).event.status.value == "FAILURE"
        assert await from_now.next(timeout=0.5) is None
    finally:
        for subscription in (first, replaying, from_now):
            subscription.close()


async def test_finished_and_cancelled_triggers_leave_without_disturbing_the_others(
    kafka_broker, unique_topic, dataworks_conn
):
    conn_id = dataworks_conn(listener="plaintext", topic=unique_topic)
    publisher = _Publisher(kafka_broker, unique_topic)
    publisher.send(_instance_event(0))
    baseline = _broker_connections(kafka_broker)
    start_ms = int(time.time() * 1000)

    def waiter(instance: int) -> asyncio.Task[dict]:
        trigger = DataWorksEventTrigger(
            dataworks_conn_id=conn_id, event_filter={"instance_ids": [instance]}, start_time=start_ms
        )
        return asyncio.ensure_future(_first_payload(trigger))

    finishing, cancelled, staying = waiter(1), waiter(2), waiter(3)
    await _eventually(
        lambda: active_streams() and _stream(unique_topic).subscriber_count == 3, what="3 waiters"
    )
    stream = _stream(unique_topic)

    publisher.send(_instance_event(1))
    assert (await asyncio.wait_for(finishing, 30))["event"]["instance_ids"] == [1]
    cancelled.cancel()
    await _eventually(lambda: stream.subscriber_count == 1, what="two triggers to leave")
    publisher.send(_instance_event(2), _instance_event(3))

    assert (await asyncio.wait_for(staying, 30))["event"]["instance_ids"] == [3]
    assert cancelled.cancelled()
    await _eventually(lambda: not active_streams(), what="the stream to stop after the last trigger left")
    await _eventually(lambda: _broker_connections(kafka_broker) == baseline, what="the consumer to close")


async def test_trigger_waiting_for_a_starting_stream_keeps_it_when_the_first_trigger_leaves(
    kafka_broker, dataworks_conn, request
):
    # The stream starts while its topic does not exist yet: the reader waits a few seconds for a
    # topic that was just created, so the first trigger can leave while the stream is starting.
    topic = f"test-starting-{uuid.uuid4().hex[:8]}"
    hook = await _hook(dataworks_conn(listener="plaintext", topic=topic))
    start_ms = int(time.time() * 1000)
    starting = asyncio.ensure_future(subscribe(hook, topic, EventFilter(), start_ms))
    joining = asyncio.ensure_future(subscribe(hook, topic, EventFilter(instance_ids=[5]), start_ms))
    # Tasks run in the order they were created: once the stream exists, the second trigger is
    # already waiting for it to finish starting.
    await _eventually(lambda: bool(active_streams()), what="the stream to begin starting")

    starting.cancel()
    kafka_broker.create_topic(topic, num_partitions=3)
    subscription = await asyncio.wait_for(joining, 30)
    try:
        _Publisher(kafka_broker, topic).send(_instance_event(5))

        assert (await subscription.next(timeout=30)).event.instance_ids == (5,)
        assert starting.cancelled()
    finally:
        subscription.close()


async def test_subscription_with_a_later_start_time_skips_earlier_live_events(
    kafka_broker, unique_topic, dataworks_conn
):
    hook = await _hook(dataworks_conn(listener="plaintext", topic=unique_topic))
    now_ms = int(time.time() * 1000)
    early = await subscribe(hook, unique_topic, EventFilter(), now_ms)
    later = await subscribe(hook, unique_topic, EventFilter(), now_ms + 60_000)
    publisher = _Publisher(kafka_broker, unique_topic)

    publisher.send(_instance_event(1), timestamp=now_ms + 1)
    publisher.send(_instance_event(2), timestamp=now_ms + 60_001)
    first_of_early = await early.next(timeout=30)
    first_of_later = await later.next(timeout=30)
    early.close()
    later.close()

    assert first_of_early is not None and first_of_early.event.instance_ids == (1,)
    assert first_of_later is not None and first_of_later.event.instance_ids == (2,)
