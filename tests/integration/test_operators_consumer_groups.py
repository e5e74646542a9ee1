"""Consumer-group operators on the real broker, checked through independent Kafka clients."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from airflow_provider_dataworks.exceptions import DataWorksKafkaError
from airflow_provider_dataworks.hooks.groups import ConsumerGroupRefusedError, describe_position
from airflow_provider_dataworks.local.stack import build_connection
from airflow_provider_dataworks.operators.consumer_groups import (
    DataWorksCreateConsumerGroupOperator,
    DataWorksDeleteConsumerGroupOperator,
    DataWorksResetConsumerGroupOperator,
)

pytestmark = pytest.mark.integration

PARTITIONS = (0, 1, 2)


def _produce(kafka_broker, topic: str, *, per_partition: int, timestamp: int = 0) -> None:
    producer = Producer(kafka_broker.plaintext_config())
    for partition in PARTITIONS:
        for index in range(per_partition):
            producer.produce(topic, value=b'{"n": %d}' % index, partition=partition, timestamp=timestamp)
    assert producer.flush(10) == 0


def _committed(kafka_broker, group: str, topic: str) -> dict[int, int | None]:
    consumer = Consumer({**kafka_broker.plaintext_config(), "group.id": group, "enable.auto.commit": False})
    try:
        found = consumer.committed([TopicPartition(topic, p) for p in PARTITIONS], timeout=10)
    finally:
        consumer.close()
    return {tp.partition: (tp.offset if tp.offset >= 0 else None) for tp in found}


def _listed_groups(kafka_broker) -> set[str]:
    admin = AdminClient(kafka_broker.plaintext_config())
    return {group.group_id for group in admin.list_consumer_groups(request_timeout=10).result(15).valid}


class _Member:
    """A real consumer in the group, polling on its own thread, remembering what it read."""

    def __init__(self, kafka_broker, group: str, topic: str, client_id: str) -> None:
        self.received: list[tuple[int, int]] = []
        self.assigned = threading.Event()
        self._stop = threading.Event()
        self._consumer = Consumer(
            {
                **kafka_broker.plaintext_config(),
                "group.id": group,
                "client.id": client_id,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "session.timeout.ms": 6000,
                "heartbeat.interval.ms": 500,
            }
        )
        self._consumer.subscribe([topic], on_assign=lambda _c, _p: self.assigned.set())
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            message = self._consumer.poll(0.2)
            if message is not None and message.error() is None:
                self.received.append((message.partition(), message.offset()))

    def wait_for(self, condition, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, "condition not reached in time"
            time.sleep(0.05)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self._consumer.close()


@pytest.fixture
def member(kafka_broker) -> Iterator:
    members: list[_Member] = []

    def start(group: str, topic: str, client_id: str = "member-under-test") -> _Member:
        started = _Member(kafka_broker, group, topic, client_id)
        members.append(started)
        started.wait_for(started.assigned.is_set)
        return started

    yield start
    for started in members:
        started.close()


@pytest.mark.parametrize("listener", ["plaintext", "sasl_ssl"])
def test_create_group_at_earliest_commits_the_start_of_every_partition(
    kafka_broker, unique_topic, unique_group, dataworks_conn, listener
):
    conn_id = dataworks_conn(listener=listener, topic=unique_topic)
    _produce(kafka_broker, unique_topic, per_partition=2)

    result = DataWorksCreateConsumerGroupOperator(
        task_id="create", dataworks_conn_id=conn_id, group_id=unique_group, position="earliest"
    ).execute({})

    assert _committed(kafka_broker, unique_group, unique_topic) == {0: 0, 1: 0, 2: 0}
    assert unique_group in _listed_groups(kafka_broker)
    assert result == {
        "group_id": unique_group,
        "topic": unique_topic,
        "position": "earliest",
        "offsets": [{"partition": p, "offset": 0} for p in PARTITIONS],
        "created": True,
    }


def test_create_group_at_latest_commits_the_end_of_every_partition(
    kafka_broker, unique_topic, unique_group, dataworks_conn
):
    conn_id = dataworks_conn(listener="plaintext", topic=unique_topic)
    _produce(kafka_broker, unique_topic, per_partition=3)

    DataWorksCreateConsumerGroupOperator(
        task_id="create", dataworks_conn_id=conn_id, group_id=unique_group
    ).execute({})

    assert _committed(kafka_broker, unique_group, unique_topic) == {0: 3, 1: 3, 2: 3}


def test_create_group_at_a_time_commits_the_first_record_at_or_after_it(
    kafka_broker, unique_topic, unique_group, dataworks_conn
):
    conn_id = dataworks_conn(listener="plaintext", topic=unique_topic)
    now_ms = int(time.time() * 1000)
    _produce(kafka_broker, unique_topic, per_partition=2, timestamp=now_ms - 3_600_000)
    producer = Producer(kafka_broker.plaintext_config())
    producer.produce(unique_topic, value=b"{}", partition=1, timestamp=now_ms - 60_000)
    assert producer.flush(10) == 0

    result = DataWorksCreateConsumerGroupOperator(
        task_id="create",
        dataworks_conn_id=conn_id,
        group_id=unique_group,
        position=now_ms - 600_000,
    ).execute({})

    # Partition 1 has a record after the time; the others start at their end.
    assert _committed(kafka_broker, unique_group, unique_topic) == {0: 2, 1: 2, 2: 2}
    assert result["position"] == describe_position(now_ms - 600_000)


def test_create_group_when_it_already_has_offsets_leaves_them(
    kafka_broker, unique_topic, unique_group, dataworks_conn
):
    conn_id = dataworks_conn(listener="plaintext", topic=unique_topic)
    _produce(kafka_broker, unique_topic, per_partition=2)
    create = DataWorksCreateConsumerGroupOperator(
        task_id="create", dataworks_conn_id=conn_id, group_id=unique_group, position="earliest"
    )
    create.execute({})

    again = DataWorksCreateConsumerGroupOperator(
        task_id="create_again", dataworks_conn_id=conn_id, group_id=unique_group, position="latest"
    ).execute({})

    assert again["created"] is False
    assert again["offsets"] == [{"partition": p, "offset": 0} for p in PARTITIONS]
    assert _committed(kafka_broker, unique_group, unique_topic) == {0: 0, 1: 0, 2: 0}


def test_create_group_beyond_own_group_plus_five_refuses_naming_the_groups(
    kafka_broker, unique_topic, unique_group, dataworks_conn
):
    conn_id = dataworks_conn(listener="plaintext", topic=unique_topic, consumer_group=unique_group)
    extras = [f"{unique_group}-extra-{index}" for index in range(5)]
    for group in [unique_group, *extras]:
        DataWorksCreateConsumerGroupOperator(
            task_id="create", dataworks_conn_id=conn_id, group_id=group
        ).execute({})
    sixth = f"{unique_group}-extra-5"

    with pytest.raises(ConsumerGroupRefusedError) as refused:
        DataWorksCreateConsumerGroupOperator(
            task_id="create", dataworks_conn_id=conn_id, group_id=sixth
        ).execute({})

    assert refused.value.reason == "group_limit"
    message = str(refused.value)
    assert f"Cannot create consumer group {sixth!r} on topic {unique_topic!r}" in message
    assert f"own group {unique_group!r}" in message
    assert all(group in message for group in extras)
    assert "at most 5 are allowed" in message
    assert "DataWorksDeleteConsumerGroupOperator" in message
    assert _committed(kafka_broker, sixth, unique_topic) == {0: None, 1: None, 2: None}


def test_create_group_with_a_lower_limit_counts_only_groups_on_the_topic(
    kafka_broker, unique_topic, unique_group, dataworks_conn
):
    conn_id = dataworks_conn(listener="plaintext", topic=unique_topic, consumer_group=unique_group)
    other_topic = f"{unique_topic}-other"
    kafka_broker.create_topic(other_topic, num_partitions=1)
    consumer = Consumer({**kafka_broker.plaintext_config(), "group.id": f"{unique_group}-elsewhere"})
    consumer.commit(offsets=[TopicPartition(other_topic, 0, 0)], asynchronous=False)
    consumer.close()

    result = DataWorksCreateConsumerGroupOperator(
        task_id="create", dataworks_conn_id=conn_id, group_id=f"{unique_group}-a", max_extra_groups=1
    ).execute({})
    with pytest.raises(ConsumerGroupRefusedError, match="at most 1 are allowed"):
        DataWorksCreateConsumerGroupOperator(
            task_id="create", dataworks_conn_id=conn_id, group_id=f"{unique_group}-b", max_extra_groups=1
        ).execute({})

    assert result["created"] is True


def test_reset_group_to_earliest_after_reading_moves_its_offsets_back(
    kafka_broker, unique_topic, unique_group, dataworks_conn
):
    conn_id = dataworks_conn(listener="sasl_ssl", topic=unique_topic)
    _produce(kafka_broker, unique_topic, per_partition=4)
    DataWorksCreateConsumerGroupOperator(
        task_id="create", dataworks_conn_id=conn_id, group_id=unique_group, position="latest"
    ).execute({})

    result = DataWorksResetConsumerGroupOperator(
        task_id="reset", dataworks_conn_id=conn_id, group_id=unique_group, position="earliest"
    ).execute({})

    assert _committed(kafka_broker, unique_group, unique_topic) == {0: 0, 1: 0, 2: 0}
    assert result["previous"] == [{"partition": p, "offset": 4} for p in PARTITIONS]
    assert result["offsets"] == [{"partition": p, "offset": 0} for p in PARTITIONS]
    assert result["forced"] is False


def test_reset_group_to_a_time_replays_from_the_first_record_after_it(
    kafka_broker, unique_topic, unique_group, dataworks_conn
):
    conn_id = dataworks_conn(listener="plaintext", topic=unique_topic)
    now_ms = int(time.time() * 1000)
    _produce(kafka_broker, unique_topic, per_partition=2, timestamp=now_ms - 7_200_000)
    _produce(kafka_broker, unique_topic, per_partition=1, timestamp=now_ms - 1_800_000)
    DataWorksCreateConsumerGroupOperator(
        task_id="create", dataworks_conn_id=conn_id, group_id=unique_group
    ).execute({})

    DataWorksResetConsumerGroupOperator(
        task_id="reset", dataworks_conn_id=conn_id, group_id=unique_group, position=str(now_ms - 3_600_000)
    ).execute({})

    assert _committed(kafka_broker, unique_group, unique_topic) == {0: 2, 1: 2, 2: 2}


def test_reset_group_with_an_active_member_refuses_naming_it(
    kafka_broker, unique_topic, unique_group, dataworks_conn, member
):
    conn_id = dataworks_conn(listener="plaintext", topic=unique_topic)
    _produce(kafka_broker, unique_topic, per_partition=2)
    DataWorksCreateConsumerGroupOperator(
        task_id="create", dataworks_conn_id=conn_id, group_id=unique_group, position="latest"
    ).execute({})
    member(unique_group, unique_topic, client_id="replayer-under-test")

    with pytest.raises(ConsumerGroupRefusedError) as refused:
        DataWorksResetConsumerGroupOperator(
            task_id="reset", dataworks_conn_id=conn_id, group_id=unique_group, position="earliest"
        ).execute({})

    assert refused.value.reason == "active_members"
    assert "1 active member(s) (replayer-under-test@127.0.0.1)" in str(refused.value)
    assert "force=True" in str(refused.value)
    assert _committed(kafka_broker, unique_group, unique_topic) == {0: 2, 1: 2, 2: 2}


def test_reset_group_with_an_active_member_and_force_makes_the_member_read_again(
    kafka_broker, unique_topic, unique_group, dataworks_conn, member
):
    conn_id = dataworks_conn(listener="plaintext", topic=unique_topic)
    _produce(kafka_broker, unique_topic, per_partition=2)
    DataWorksCreateConsumerGroupOperator(
        task_id="create", dataworks_conn_id=conn_id, group_id=unique_group, position="latest"
    ).execute({})
    running = member(unique_group, unique_topic)

    result = DataWorksResetConsumerGroupOperator(
        task_id="reset",
        dataworks_conn_id=conn_id,
        group_id=unique_group,
        position="earliest",
        force=True,
        join_timeout=30,
    ).execute({})

    assert result["forced"] is True
    assert result["members"] == 1
    assert _committed(kafka_broker, unique_group, unique_topic) == {0: 0, 1: 0, 2: 0}
    everything = {(p, o) for p in PARTITIONS for o in (0, 1)}
    running.wait_for(lambda: everything <= set(running.received))


def test_reset_group_without_offsets_on_the_topic_refuses(unique_topic, unique_group, dataworks_conn):
    conn_id = dataworks_conn(listener="plaintext", topic=unique_topic)

    with pytest.raises(ConsumerGroupRefusedError, match="has no committed offsets on topic") as refused:
        DataWorksResetConsumerGroupOperator(
            task_id="reset", dataworks_conn_id=conn_id, group_id=unique_group, position="earliest"
        ).execute({})

    assert refused.value.reason == "unknown_group"
    assert "DataWorksCreateConsumerGroupOperator" in str(refused.value)


def test_delete_group_removes_it_and_deleting_again_reports_nothing_deleted(
    kafka_broker, unique_topic, unique_group, dataworks_conn
):
    conn_id = dataworks_conn(listener="sasl_ssl", topic=unique_topic)
    DataWorksCreateConsumerGroupOperator(
        task_id="create", dataworks_conn_id=conn_id, group_id=unique_group
    ).execute({})
    delete = DataWorksDeleteConsumerGroupOperator(
        task_id="delete", dataworks_conn_id=conn_id, group_id=unique_group
    )

    first = delete.execute({})
    second = delete.execute({})

    assert first == {"group_id": unique_group, "deleted": True}
    assert second == {"group_id": unique_group, "deleted": False}
    assert unique_group not in _listed_groups(kafka_broker)
    assert _committed(kafka_broker, unique_group, unique_topic) == {0: None, 1: None, 2: None}


def test_delete_connection_group_refuses_unless_allowed(
    kafka_broker, unique_topic, unique_group, dataworks_conn
):
    conn_id = dataworks_conn(listener="plaintext", topic=unique_topic, consumer_group=unique_group)
    DataWorksCreateConsumerGroupOperator(
        task_id="create", dataworks_conn_id=conn_id, group_id=unique_group
    ).execute({})

    with pytest.raises(ConsumerGroupRefusedError) as refused:
        DataWorksDeleteConsumerGroupOperator(
            task_id="delete", dataworks_conn_id=conn_id, group_id=unique_group
        ).execute({})
    assert refused.value.reason == "connection_group"
    assert f"consumer group of connection {conn_id!r}" in str(refused.value)
    assert "allow_connection_group=True" in str(refused.value)
    assert unique_group in _listed_groups(kafka_broker)

    result = DataWorksDeleteConsumerGroupOperator(
        task_id="delete", dataworks_conn_id=conn_id, group_id=unique_group, allow_connection_group=True
    ).execute({})
    assert result["deleted"] is True
    assert unique_group not in _listed_groups(kafka_broker)


def test_delete_group_with_an_active_member_refuses_naming_it(
    kafka_broker, unique_topic, unique_group, dataworks_conn, member
):
    conn_id = dataworks_conn(listener="plaintext", topic=unique_topic)
    member(unique_group, unique_topic, client_id="busy-consumer")

    with pytest.raises(ConsumerGroupRefusedError) as refused:
        DataWorksDeleteConsumerGroupOperator(
            task_id="delete", dataworks_conn_id=conn_id, group_id=unique_group
        ).execute({})

    assert refused.value.reason == "active_members"
    assert "busy-consumer@127.0.0.1" in str(refused.value)
    assert unique_group in _listed_groups(kafka_broker)


def test_create_group_on_a_missing_topic_fails_naming_the_topic(unique_group, dataworks_conn):
    missing = f"missing-{uuid.uuid4().hex[:8]}"
    conn_id = dataworks_conn(listener="plaintext", topic=missing)

    with pytest.raises(Exception, match=f"Kafka topic '{missing}' does not exist"):
        DataWorksCreateConsumerGroupOperator(
            task_id="create", dataworks_conn_id=conn_id, group_id=unique_group, kafka_timeout=10
        ).execute({})


def test_create_group_when_the_sasl_password_is_wrong_fails_fast_without_the_password(
    kafka_broker, unique_topic, unique_group, monkeypatch
):
    connection = build_connection(broker=kafka_broker, listener="sasl_ssl", topic=unique_topic)
    connection["password"] = "wrong-password-123"
    conn_id = f"dataworks_wrong_{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(connection))
    started = time.monotonic()

    with pytest.raises(DataWorksKafkaError) as failed:
        DataWorksCreateConsumerGroupOperator(
            task_id="create", dataworks_conn_id=conn_id, group_id=unique_group
        ).execute({})

    assert "refused the SASL user" in str(failed.value)
    assert "SASL password" in str(failed.value)
    assert "wrong-password-123" not in str(failed.value)
    assert time.monotonic() - started < 15
