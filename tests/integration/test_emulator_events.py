"""The emulator publishes DataWorks events to a real Kafka topic; read them back with a real consumer."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from alibabacloud_dataworks_public20200518 import models as dw
from alibabacloud_dataworks_public20200518.client import Client
from alibabacloud_tea_openapi.utils_models import Config
from confluent_kafka import Consumer, Message, TopicPartition

from airflow_provider_dataworks.events import InstanceStatus, parse
from airflow_provider_dataworks.local.emulator import DataWorksEmulator

pytestmark = pytest.mark.integration


def _read(kafka_broker: Any, topic: str, count: int, timeout: float = 30.0) -> list[Message]:
    """Read ``count`` records of a topic from the beginning, failing after ``timeout`` seconds."""
    consumer = Consumer(
        {
            **kafka_broker.plaintext_config(),
            "group.id": f"emulator-test-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    records: list[Message] = []
    deadline = time.monotonic() + timeout
    try:
        while len(records) < count and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None or message.error():
                continue
            records.append(message)
    finally:
        consumer.close()
    assert len(records) == count, f"read {len(records)} of {count} records from {topic} in {timeout}s"
    return records


def _record_count(kafka_broker: Any, topic: str) -> int:
    """Return how many records the topic holds, summed over its partitions."""
    consumer = Consumer({**kafka_broker.plaintext_config(), "group.id": f"count-{uuid.uuid4().hex[:8]}"})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        total = 0
        for partition in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
            total += high - low
        return total
    finally:
        consumer.close()


def test_played_instance_publishes_every_status_in_order_keyed_by_instance(
    kafka_broker: Any, unique_topic: str, make_emulator: Callable[..., DataWorksEmulator]
) -> None:
    emulator = make_emulator(envelope="legacy", topic=unique_topic)
    emulator.seed_demo()
    instance = emulator.add_instance(node_id=700000001)

    emulator.play_instance(instance["id"], delay=0, step=0.05)

    records = _read(kafka_broker, unique_topic, 4)
    assert {record.key() for record in records} == {str(instance["id"]).encode()}
    assert len({record.partition() for record in records}) == 1
    events = [parse(record.value()) for record in records]
    assert [event.status for event in events] == [
        InstanceStatus.WAIT_TIME,
        InstanceStatus.WAIT_RESOURCE,
        InstanceStatus.RUNNING,
        InstanceStatus.SUCCESS,
    ]
    assert all(event.envelope == "legacy" and event.workspace_id == 10001 for event in events)


def test_cloudevents_extension_event_is_answered_through_the_openapi(
    kafka_broker: Any, unique_topic: str, make_emulator: Callable[..., DataWorksEmulator]
) -> None:
    emulator = make_emulator(envelope="cloudevents", topic=unique_topic)
    emulator.seed_demo()
    emulator.publish_file_event(file_id=500000001, event_type="commit-file", extension=True)

    (record,) = _read(kafka_broker, unique_topic, 1)
    document = json.loads(record.value())
    assert document["type"] == "dataworks:FileChange:CommitFile"
    assert document["data"]["blockBusiness"] is True
    client = Client(
        Config(
            access_key_id=emulator.access_key_id,
            access_key_secret=emulator.access_key_secret,
            endpoint=emulator.endpoint,
            protocol="http",
            region_id="cn-hangzhou",
        )
    )
    client.update_ideevent_result(
        dw.UpdateIDEEventResultRequest(
            message_id=document["id"], extension_code="ext-1", check_result="OK", check_result_tip="reviewed"
        )
    )

    assert [(op["message_id"], op["status"]) for op in emulator.operations()] == [(document["id"], "passed")]


def test_subscription_keeps_uncovered_events_out_of_the_topic(
    kafka_broker: Any, unique_topic: str, make_emulator: Callable[..., DataWorksEmulator]
) -> None:
    emulator = make_emulator(envelope="legacy", topic=unique_topic)
    emulator.seed_demo()
    emulator.add_workspace(workspace_id=20002, identifier="other_ws")
    emulator.add_node(node_id=820, workspace_id=20002, name="other_node")
    emulator.set_subscription(workspaces=[10001], event_types=["instance-status-changes"])

    emulator.publish_instance(node_id=820, status="SUCCESS")
    emulator.publish_node_event(node_id=700000001)
    emulator.publish_instance(node_id=700000001, status="SUCCESS")

    assert _record_count(kafka_broker, unique_topic) == 1
    (record,) = _read(kafka_broker, unique_topic, 1)
    assert json.loads(record.value())["messageBody"]["appId"] == 10001


def test_raw_records_arrive_byte_for_byte(
    kafka_broker: Any, unique_topic: str, make_emulator: Callable[..., DataWorksEmulator]
) -> None:
    emulator = make_emulator(topic=unique_topic)

    emulator.publish_raw(b"\x00not a DataWorks event", key=b"raw-key")

    (record,) = _read(kafka_broker, unique_topic, 1)
    assert (record.key(), record.value()) == (b"raw-key", b"\x00not a DataWorks event")
