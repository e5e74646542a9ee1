"""The subscription report operator without a broker: arguments and the logged table."""

from __future__ import annotations

import json
import re
import runpy
from datetime import timedelta
from pathlib import Path

import pytest

from airflow_provider_dataworks.operators.subscription import (
    DataWorksDescribeSubscriptionOperator,
    format_report,
)

EXAMPLE_DAG = Path(__file__).resolve().parents[2] / "example_dags" / "example_dataworks_subscription.py"

# Nothing listens there: the checks under test must fail before any Kafka call.
UNREACHABLE_CONNECTION = json.dumps(
    {
        "conn_type": "dataworks",
        "host": "127.0.0.1:9",
        "extra": {"topic": "t", "security_protocol": "PLAINTEXT"},
    }
)

REPORT = {
    "topic": "dataworks-events",
    "partitions": [{"partition": 0, "earliest": 0, "latest": 12}],
    "window": {
        "start": "2026-12-01T00:00:00.000+00:00",
        "end": "2026-12-02T00:00:00.000+00:00",
        "records": 12,
        "events": 11,
        "complete": True,
    },
    "groups": [
        {"group_id": "dw-default", "connection_group": True, "state": "STABLE", "members": [{}], "lag": 0},
        {"group_id": "replay", "connection_group": False, "state": "EMPTY", "members": [], "lag": None},
    ],
    "events": [
        {"workspace_id": None, "event_type": "project-deleted", "count": 1, "last_time": None},
        {
            "workspace_id": 10001,
            "event_type": "instance-status-changes",
            "count": 10,
            "last_time": "2026-12-01T23:59:00.000+00:00",
        },
    ],
    "warnings": ["Workspace 10003 sent no events in the window."],
}


def test_format_report_prints_aligned_group_and_event_tables_then_warnings():
    assert format_report(REPORT).splitlines() == [
        "DataWorks subscription on topic dataworks-events (1 partitions), "
        "window 2026-12-01T00:00:00.000+00:00 to 2026-12-02T00:00:00.000+00:00: 11 events in 12 records",
        "GROUP                    STATE   MEMBERS  LAG",
        "dw-default (connection)  STABLE  1        0",
        "replay                   EMPTY   0        -",
        "WORKSPACE  EVENT TYPE               COUNT  LAST EVENT",
        "-          project-deleted          1      -",
        "10001      instance-status-changes  10     2026-12-01T23:59:00.000+00:00",
        "WARNING: Workspace 10003 sent no events in the window.",
    ]


def test_describe_defaults_to_a_day_on_the_connection_topic():
    describe = DataWorksDescribeSubscriptionOperator(task_id="describe")

    assert describe.window_seconds == 86400
    assert describe.topic is None
    assert describe.dataworks_conn_id == "dataworks_default"
    assert set(describe.template_fields) == {
        "topic",
        "start_time",
        "end_time",
        "workspace_ids",
        "event_types",
        "group_ids",
    }


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"window": timedelta(0)}, "window must be positive"),
        ({"window": -5}, "window must be positive"),
        ({"max_records": 0}, "must be positive"),
        ({"read_timeout": 0}, "must be positive"),
    ],
)
def test_describe_when_arguments_cannot_work_fails_at_parse_time(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DataWorksDescribeSubscriptionOperator(task_id="describe", **kwargs)


def test_describe_with_an_end_before_the_start_fails_naming_both(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_DATAWORKS_DEFAULT", UNREACHABLE_CONNECTION)
    describe = DataWorksDescribeSubscriptionOperator(
        task_id="describe", start_time="2026-12-02T00:00:00Z", end_time="2026-12-01T00:00:00Z"
    )

    with pytest.raises(ValueError, match=re.escape("start 2026-12-02T00:00:00.000+00:00 is not before end")):
        describe.execute({})


def test_describe_with_workspace_ids_that_are_not_numbers_fails_naming_them(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_DATAWORKS_DEFAULT", UNREACHABLE_CONNECTION)
    describe = DataWorksDescribeSubscriptionOperator(task_id="describe", workspace_ids="10001,demo_ws")

    with pytest.raises(ValueError, match="workspace_ids must be workspace ids"):
        describe.execute({})


def test_example_subscription_dag_keeps_the_group_before_describing():
    dag = runpy.run_path(str(EXAMPLE_DAG))["dag"]

    describe = dag.get_task("describe_subscription")
    assert sorted(describe.upstream_task_ids) == ["ensure_group"]
    describe.render_template_fields({"params": {"group_id": "replay"}, "data_interval_end": None})
    assert describe.group_ids == ["replay"]
    assert describe.end_time == ""
