"""Trigger and sensor contracts that need no broker: serialization, deferral, completion."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from airflow.sdk.exceptions import TaskDeferred
from airflow.sdk.serde import deserialize, serialize

from airflow_provider_dataworks.exceptions import DataWorksError
from airflow_provider_dataworks.filters import PredicateImportError
from airflow_provider_dataworks.sensors.event import DataWorksEventSensor
from airflow_provider_dataworks.triggers.event import DataWorksEventTrigger
from airflow_provider_dataworks.triggers.reader import to_epoch_ms

START = datetime(2026, 12, 1, 8, 0, tzinfo=timezone.utc)


def test_trigger_serialize_is_plain_json_without_credentials():
    trigger = DataWorksEventTrigger(
        dataworks_conn_id="dw", event_filter={"node_ids": [2, 1], "statuses": ["SUCCESS"]}, start_time=START
    )

    classpath, kwargs = trigger.serialize()

    assert classpath == "airflow_provider_dataworks.triggers.event.DataWorksEventTrigger"
    assert kwargs == {
        "dataworks_conn_id": "dw",
        "event_filter": {"node_ids": [1, 2], "statuses": ["SUCCESS"]},
        "topic": None,
        "start_time": 1796112000000,
    }
    assert json.loads(json.dumps(kwargs)) == kwargs


def test_trigger_round_trips_through_airflow_serde():
    _, kwargs = DataWorksEventTrigger(event_filter={"event_types": ["deploy-file"]}, topic="t").serialize()

    rebuilt = DataWorksEventTrigger(**deserialize(serialize(kwargs)))

    assert rebuilt.serialize()[1] == kwargs


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (START, 1796112000000),
        ("2026-12-01T08:00:00Z", 1796112000000),
        ("2026-12-01T16:00:00+08:00", 1796112000000),
        (1796112000000, 1796112000000),
        (1796112000, 1796112000000),
        (None, None),
    ],
)
def test_to_epoch_ms_gives_milliseconds_for_every_form(value, expected):
    assert to_epoch_ms(value) == expected


class _TI:
    start_date = START


def test_sensor_defers_with_filter_start_time_and_timeout():
    sensor = DataWorksEventSensor(
        task_id="wait",
        dataworks_conn_id="dw",
        event_types="instance-status-change",
        node_ids=[700000001],
        statuses=["SUCCESS"],
        timeout=600,
    )

    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute({"ti": _TI()})

    trigger = deferred.value.trigger
    assert isinstance(trigger, DataWorksEventTrigger)
    assert trigger.start_time == 1796112000000
    assert trigger.event_filter.to_dict() == {
        "event_types": ["instance-status-changes"],
        "node_ids": [700000001],
        "statuses": ["SUCCESS"],
    }
    assert deferred.value.timeout == timedelta(seconds=600)
    assert deferred.value.method_name == "execute_complete"


def test_sensor_when_predicate_not_importable_fails_before_deferring():
    sensor = DataWorksEventSensor(task_id="wait", event_filter={"predicate": "dags.my_dag.check"})

    with pytest.raises(PredicateImportError):
        sensor.execute({"ti": _TI()})


def test_execute_complete_returns_event_and_record():
    sensor = DataWorksEventSensor(task_id="wait")
    payload = {"status": "matched", "event": {"message_id": "m"}, "record": {"topic": "t", "offset": 3}}

    assert sensor.execute_complete({}, payload) == {
        "event": {"message_id": "m"},
        "record": {"topic": "t", "offset": 3},
    }


def test_execute_complete_when_trigger_failed_raises_its_message():
    sensor = DataWorksEventSensor(task_id="wait")

    with pytest.raises(DataWorksError, match="topic 'x' does not exist"):
        sensor.execute_complete({}, {"status": "error", "message": "Kafka topic 'x' does not exist"})
