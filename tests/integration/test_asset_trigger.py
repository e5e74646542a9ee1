"""Asset watchers on the real broker, driven by Airflow's own shared-stream manager like the triggerer."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from airflow.triggers.shared_stream import SharedStreamManager
from confluent_kafka import Consumer, ConsumerGroupState, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from tenacity import retry, retry_if_exception, stop_after_delay, wait_fixed

from airflow_provider_dataworks.exceptions import DataWorksConnectionConfigError
from airflow_provider_dataworks.local.emulator.publisher import build_envelope, encode, event_kind
from airflow_provider_dataworks.triggers.asset import DataWorksAssetEventTrigger

pytestmark = pytest.mark.integration

WORKSPACE = 10001
ODS_DEPLOYS = {"event_types": ["deploy-file"], "workspace_ids": [WORKSPACE], "file_names": ["ods_*"]}
ODS_TABLES = {"event_types": ["commit-table"], "table_names": ["ods_*"]}


def _file_deploy(file_name: str, *, workspace: int = WORKSPACE, message_id: str | None = None) -> bytes:
    body = {"fileId": 501, "fileName": file_name, "projectId": workspace, "tenantId": 1, "operator": "u1"}
    return encode(
        build_envelope(
            "legacy", kind=event_kind("deploy-file"), body=body, block_business=False, message_id=message_id
        )
    )


def _table_commit(table_name: str) -> bytes:
    body = {"tableName": table_name, "projectId": WORKSPACE, "tenantId": 1, "operator": "u1"}
    return encode(build_envelope("legacy", kind=event_kind("commit-table"), body=body, block_business=True))


def _retriable(error: BaseException) -> bool:
    # The group coordinator moves or loads now and then; asking again is the documented answer.
    return isinstance(error, KafkaException) and error.args[0].retriable()


@dataclass
class _Fired:
    trigger_id: int
    payload: dict
    seq: int | None


class _Triggerer:
    """
    What the triggerer does with asset watchers, around Airflow's real ``SharedStreamManager``.

    The test plays the supervisor: :meth:`store` confirms that Airflow stored the fired events.
    """

    def __init__(self, *, ack_timeout: float = 300.0) -> None:
        self.manager = SharedStreamManager(ack_timeout=ack_timeout)
        self.fired: list[_Fired] = []
        self.failures: dict[int, BaseException] = {}
        self._stored = 0
        self._tasks: dict[int, asyncio.Task[None]] = {}

    def watch(self, trigger_id: int, trigger: DataWorksAssetEventTrigger) -> None:
        key = trigger.shared_stream_key()
        stream = self.manager.subscribe(trigger_id=trigger_id, trigger=trigger, key=key)

        async def run() -> None:
            try:
                async for event in trigger.filter_shared_stream(stream):
                    seq = self.manager.bind_pending_event(trigger_id=trigger_id, key=key)
                    self.fired.append(_Fired(trigger_id, event.payload, seq))
            except Exception as error:
                self.failures[trigger_id] = error
            finally:
                await self.manager.unsubscribe(trigger_id, key)

        self._tasks[trigger_id] = asyncio.ensure_future(run())

    def store(self) -> None:
        """Confirm every event fired so far as stored in the metadata database."""
        seqs = [fired.seq for fired in self.fired[self._stored :] if fired.seq is not None]
        self._stored = len(self.fired)
        self.manager.confirm_persisted(seqs)

    def messages(self, trigger_id: int | None = None) -> list[str]:
        return [
            fired.payload["event"]["message_id"]
            for fired in self.fired
            if trigger_id is None or fired.trigger_id == trigger_id
        ]

    async def stop(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        await self.manager.stop_all()


@retry(retry=retry_if_exception(_retriable), stop=stop_after_delay(30), wait=wait_fixed(0.2), reraise=True)
def _committed(broker, topic: str, group: str) -> dict[int, int]:
    consumer = Consumer({**broker.plaintext_config(), "group.id": group, "enable.auto.commit": False})
    try:
        offsets = consumer.committed([TopicPartition(topic, p) for p in range(3)], timeout=10)
    finally:
        consumer.close()
    return {tp.partition: tp.offset for tp in offsets}


def _group_is_empty(broker, group: str) -> bool:
    admin = AdminClient(broker.plaintext_config())
    [future] = admin.describe_consumer_groups([group], request_timeout=10).values()
    try:
        return future.result().state == ConsumerGroupState.EMPTY
    except KafkaException as error:
        if _retriable(error):
            return False
        raise


def _publish(broker, topic: str, *values: bytes) -> None:
    producer = Producer(broker.plaintext_config())
    for value in values:
        producer.produce(topic, value=value, partition=0)
    assert producer.flush(10) == 0


async def _eventually(condition: Callable[[], bool], *, timeout: float = 45, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(0.05)


async def _wait_until_group_started(broker, topic: str, group: str) -> None:
    def started() -> bool:
        return all(offset >= 0 for offset in _committed(broker, topic, group).values())

    await _eventually(started, what="the consumer group to commit its starting offsets")


@pytest.fixture
def conn_id(dataworks_conn, unique_topic, unique_group) -> str:
    return dataworks_conn(listener="plaintext", topic=unique_topic, consumer_group=unique_group)


async def test_watchers_fire_once_per_matching_event_and_commit_after_airflow_stored_them(
    kafka_broker, unique_topic, unique_group, conn_id
):
    triggerer = _Triggerer()
    triggerer.watch(1, DataWorksAssetEventTrigger(dataworks_conn_id=conn_id, event_filter=ODS_DEPLOYS))
    triggerer.watch(2, DataWorksAssetEventTrigger(dataworks_conn_id=conn_id, event_filter=ODS_TABLES))
    try:
        await _wait_until_group_started(kafka_broker, unique_topic, unique_group)
        deploy_id = str(uuid.uuid4())
        _publish(
            kafka_broker,
            unique_topic,
            _file_deploy("ods_orders", message_id=deploy_id),
            _file_deploy("ods_orders", workspace=10002),
            _table_commit("dim_users"),
            _table_commit("ods_users"),
            _file_deploy("dwd_orders"),
        )

        await _eventually(lambda: len(triggerer.fired) == 2, what="two matching events")
        assert triggerer.messages(1) == [deploy_id]
        [table] = [fired.payload for fired in triggerer.fired if fired.trigger_id == 2]
        assert table["event"]["table_name"] == "ods_users"
        assert table["record"] == {**table["record"], "topic": unique_topic, "partition": 0, "offset": 3}
        assert _committed(kafka_broker, unique_topic, unique_group)[0] == 0

        triggerer.store()
        await _eventually(
            lambda: _committed(kafka_broker, unique_topic, unique_group)[0] == 5,
            what="the commit after Airflow stored the events",
        )
        assert len(triggerer.fired) == 2
        assert not triggerer.failures
    finally:
        await triggerer.stop()


async def test_event_delivered_twice_fires_once(kafka_broker, unique_topic, unique_group, conn_id):
    triggerer = _Triggerer()
    triggerer.watch(1, DataWorksAssetEventTrigger(dataworks_conn_id=conn_id, event_filter=ODS_DEPLOYS))
    try:
        await _wait_until_group_started(kafka_broker, unique_topic, unique_group)
        twice = _file_deploy("ods_orders")
        _publish(kafka_broker, unique_topic, twice, twice, _file_deploy("ods_items"))

        await _eventually(lambda: len(triggerer.fired) == 2, what="two distinct events")
        triggerer.store()
        await _eventually(
            lambda: _committed(kafka_broker, unique_topic, unique_group)[0] == 3, what="the commit"
        )

        assert [fired.payload["record"]["offset"] for fired in triggerer.fired] == [0, 2]
    finally:
        await triggerer.stop()


async def test_restarted_triggerer_gets_unstored_and_missed_events_but_not_stored_ones(
    kafka_broker, unique_topic, unique_group, conn_id
):
    before = _Triggerer()
    before.watch(1, DataWorksAssetEventTrigger(dataworks_conn_id=conn_id, event_filter=ODS_DEPLOYS))
    try:
        await _wait_until_group_started(kafka_broker, unique_topic, unique_group)
        stored, unstored, missed = (str(uuid.uuid4()) for _ in range(3))
        _publish(kafka_broker, unique_topic, _file_deploy("ods_a", message_id=stored))
        await _eventually(lambda: len(before.fired) == 1, what="the first event")
        before.store()
        await _eventually(
            lambda: _committed(kafka_broker, unique_topic, unique_group)[0] == 1, what="the first commit"
        )
        _publish(kafka_broker, unique_topic, _file_deploy("ods_b", message_id=unstored))
        await _eventually(lambda: len(before.fired) == 2, what="the second event")
    finally:
        await before.stop()

    _publish(kafka_broker, unique_topic, _file_deploy("ods_c", message_id=missed))
    after = _Triggerer()
    after.watch(1, DataWorksAssetEventTrigger(dataworks_conn_id=conn_id, event_filter=ODS_DEPLOYS))
    try:
        await _eventually(lambda: len(after.fired) == 2, what="the events after the restart")
        after.store()
        await _eventually(
            lambda: _committed(kafka_broker, unique_topic, unique_group)[0] == 3, what="the commit"
        )

        assert before.messages() == [stored, unstored]
        assert after.messages() == [unstored, missed]
    finally:
        await after.stop()


async def test_new_consumer_group_starts_at_the_end_of_the_topic(
    kafka_broker, unique_topic, unique_group, conn_id
):
    _publish(kafka_broker, unique_topic, _file_deploy("ods_history"))
    triggerer = _Triggerer()
    triggerer.watch(1, DataWorksAssetEventTrigger(dataworks_conn_id=conn_id, event_filter=ODS_DEPLOYS))
    try:
        await _wait_until_group_started(kafka_broker, unique_topic, unique_group)
        assert _committed(kafka_broker, unique_topic, unique_group) == {0: 1, 1: 0, 2: 0}

        new = str(uuid.uuid4())
        _publish(kafka_broker, unique_topic, _file_deploy("ods_new", message_id=new))
        await _eventually(lambda: len(triggerer.fired) == 1, what="the new event")

        assert triggerer.messages() == [new]
    finally:
        await triggerer.stop()


async def test_event_airflow_never_stored_stays_uncommitted(
    kafka_broker, unique_topic, unique_group, conn_id
):
    triggerer = _Triggerer(ack_timeout=1.0)
    triggerer.watch(1, DataWorksAssetEventTrigger(dataworks_conn_id=conn_id, event_filter=ODS_DEPLOYS))
    try:
        await _wait_until_group_started(kafka_broker, unique_topic, unique_group)
        _publish(kafka_broker, unique_topic, _file_deploy("ods_orders"), _file_deploy("dwd_orders"))

        await _eventually(lambda: 1 in triggerer.failures, what="the ack timeout")
        await _eventually(lambda: _group_is_empty(kafka_broker, unique_group), what="the consumer to leave")

        assert type(triggerer.failures[1]).__name__ == "AckTimeout"
        assert len(triggerer.fired) == 1
        assert _committed(kafka_broker, unique_topic, unique_group)[0] == 0
    finally:
        await triggerer.stop()


async def test_same_group_spelled_two_ways_fails_naming_the_fix(
    kafka_broker, unique_topic, unique_group, conn_id
):
    triggerer = _Triggerer()
    triggerer.watch(1, DataWorksAssetEventTrigger(dataworks_conn_id=conn_id, event_filter=ODS_DEPLOYS))
    try:
        await _wait_until_group_started(kafka_broker, unique_topic, unique_group)
        triggerer.watch(
            2,
            DataWorksAssetEventTrigger(
                dataworks_conn_id=conn_id,
                event_filter=ODS_TABLES,
                topic=unique_topic,
                consumer_group=unique_group,
            ),
        )

        await _eventually(lambda: 2 in triggerer.failures, what="the second stream to fail")

        assert isinstance(triggerer.failures[2], DataWorksConnectionConfigError)
        assert "would split its partitions" in str(triggerer.failures[2])
        assert 1 not in triggerer.failures
    finally:
        await triggerer.stop()
