"""Start times: milliseconds in every Kafka call; in the future, and older than the topic's retention."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime, timedelta, timezone

import pytest
from airflow.sdk.exceptions import TaskDeferred
from confluent_kafka import TopicPartition

from airflow_provider_dataworks.hooks.dataworks import DataWorksHook
from airflow_provider_dataworks.sensors.event import DataWorksEventSensor
from airflow_provider_dataworks.triggers.event import DataWorksEventTrigger
from airflow_provider_dataworks.triggers.reader import EventReader, to_epoch_ms
from tests.faults.conftest import NODE, first_payload, instance_event, wait_for

pytestmark = pytest.mark.integration

# A whole second ten minutes ago, so that every form below can say it exactly.
T0 = (int(time.time()) - 600) * 1000
T1 = T0 + 1_000
T1_UTC = datetime.fromtimestamp(T1 / 1000, tz=timezone.utc)

SAME_INSTANT = {
    "epoch milliseconds": T1,
    "epoch milliseconds as text": str(T1),
    "epoch seconds": T1 // 1000,
    "epoch seconds as a float": T1 / 1000,
    "aware datetime": T1_UTC,
    "aware datetime in Shanghai": T1_UTC.astimezone(timezone(timedelta(hours=8))),
    "naive datetime, read as UTC": T1_UTC.replace(tzinfo=None),
    "ISO text with Z": T1_UTC.isoformat().replace("+00:00", "Z"),
    "ISO text with an offset": T1_UTC.astimezone(timezone(timedelta(hours=8))).isoformat(),
}


@pytest.fixture
def three_seconds(publisher) -> None:
    """Records at T0, T0 + 1 s and T0 + 2 s in partition 0 (offsets 0, 1, 2)."""
    for offset in range(3):
        publisher.send(
            instance_event(node=NODE, message_id=f"at-offset-{offset}"), timestamp=T0 + offset * 1000
        )


@pytest.mark.parametrize("form", list(SAME_INSTANT))
def test_every_form_of_a_start_time_reaches_kafka_as_the_same_milliseconds(
    form, three_seconds, unique_topic, dataworks_conn
):
    reader = EventReader(
        DataWorksHook(dataworks_conn(listener="plaintext", topic=unique_topic)), unique_topic
    )
    try:
        starts = reader.seek_to_time(to_epoch_ms(SAME_INSTANT[form]))
    finally:
        reader.close()

    assert to_epoch_ms(SAME_INSTANT[form]) == T1
    assert starts[0] == 1


async def test_trigger_and_sensor_start_times_become_milliseconds(
    three_seconds, unique_topic, dataworks_conn
):
    conn_id = dataworks_conn(listener="plaintext", topic=unique_topic)
    sensor = DataWorksEventSensor(
        task_id="wait", dataworks_conn_id=conn_id, start_time=SAME_INSTANT["ISO text with Z"]
    )
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute({})
    assert deferred.value.trigger.start_time == T1

    payload = await first_payload(deferred.value.trigger)

    assert payload["record"]["offset"] == 1
    assert payload["record"]["timestamp"] == T1


def test_sensor_without_start_time_starts_at_its_task_start_in_milliseconds():
    class _TaskInstance:
        start_date = T1_UTC

    sensor = DataWorksEventSensor(task_id="wait", dataworks_conn_id="unused")

    assert sensor.start_time_ms({"ti": _TaskInstance()}) == T1


@pytest.mark.parametrize(
    "before_1970", [-1, "-5", datetime(1969, 12, 31, tzinfo=timezone.utc), "1969-12-31T00:00:00Z"]
)
def test_start_time_before_1970_is_refused_instead_of_meaning_the_end_of_the_topic(before_1970):
    with pytest.raises(ValueError, match="before 1970"):
        to_epoch_ms(before_1970)


async def test_deferred_sensor_with_future_start_time_waits_for_it_then_takes_only_later_events(
    publisher, unique_topic, dataworks_conn, no_stream_left
):
    conn_id = dataworks_conn(listener="plaintext", topic=unique_topic)
    start = datetime.now(tz=timezone.utc) + timedelta(seconds=3)
    sensor = DataWorksEventSensor(
        task_id="wait", dataworks_conn_id=conn_id, node_ids=[NODE], start_time=start
    )
    with pytest.raises(TaskDeferred) as timer:
        sensor.execute({})
    assert timer.value.method_name == "execute_at_start_time"
    publisher.send(instance_event(node=NODE, message_id="before-the-start-time"))

    timer_event = await first_payload(timer.value.trigger, timeout=30)
    assert datetime.now(tz=timezone.utc) >= start
    with pytest.raises(TaskDeferred) as reading:
        sensor.execute_at_start_time({}, timer_event)
    assert reading.value.trigger.start_time == to_epoch_ms(start)
    waiting = asyncio.ensure_future(first_payload(reading.value.trigger))
    publisher.send(instance_event(node=NODE, message_id="after-the-start-time"))
    payload = await waiting

    assert sensor.execute_complete({}, payload)["event"]["message_id"] == "after-the-start-time"


def test_poking_sensor_with_future_start_time_takes_only_events_from_then_on(
    publisher, unique_topic, dataworks_conn
):
    conn_id = dataworks_conn(listener="plaintext", topic=unique_topic)
    start = datetime.now(tz=timezone.utc) + timedelta(seconds=2)
    sensor = DataWorksEventSensor(
        task_id="wait", dataworks_conn_id=conn_id, node_ids=[NODE], start_time=start, deferrable=False
    )
    publisher.send(instance_event(node=NODE, message_id="before-the-start-time"))
    assert not sensor.poke({}).is_done

    wait_for(lambda: datetime.now(tz=timezone.utc) >= start, timeout=30, message="the start time never came")
    assert not sensor.poke({}).is_done
    publisher.send(instance_event(node=NODE, message_id="after-the-start-time"))
    result = sensor.poke({})

    assert result.is_done
    assert result.xcom_value["event"]["message_id"] == "after-the-start-time"


def _delete_records_before(admin, topic: str, partition: int, offset: int) -> None:
    """Do what retention does: drop the records of a partition before ``offset``."""
    [future] = admin.delete_records([TopicPartition(topic, partition, offset)]).values()
    future.result(30)


async def test_start_time_older_than_retention_starts_at_the_oldest_record_kept_and_warns(
    three_seconds, admin, unique_topic, dataworks_conn, caplog, no_stream_left
):
    conn_id = dataworks_conn(listener="plaintext", topic=unique_topic)
    _delete_records_before(admin, unique_topic, 0, 2)

    with caplog.at_level(logging.WARNING):
        payload = await first_payload(
            DataWorksEventTrigger(dataworks_conn_id=conn_id, event_filter={"node_ids": [NODE]}, start_time=T0)
        )

    assert payload["record"]["offset"] == 2
    [warning] = [r.getMessage() for r in caplog.records if "retention" in r.getMessage()]
    assert (
        f"older than the oldest record Kafka keeps in topic {unique_topic} partition 0 (offset 2," in warning
    )
    assert "may have been lost" in warning


def test_start_time_within_retention_after_deletions_gives_no_warning(
    three_seconds, admin, unique_topic, dataworks_conn, caplog
):
    _delete_records_before(admin, unique_topic, 0, 2)
    reader = EventReader(
        DataWorksHook(dataworks_conn(listener="plaintext", topic=unique_topic)), unique_topic
    )
    try:
        with caplog.at_level(logging.WARNING):
            starts = reader.seek_to_time(T0 + 2_000)
    finally:
        reader.close()

    assert starts[0] == 2
    assert not [r for r in caplog.records if "retention" in r.getMessage()]
