"""The subscription report on the real broker and the DataWorks emulator."""

from __future__ import annotations

import json
import threading
import time

import pytest
from confluent_kafka import Consumer, Producer

from airflow_provider_dataworks.operators.consumer_groups import DataWorksCreateConsumerGroupOperator
from airflow_provider_dataworks.operators.subscription import (
    DataWorksDescribeSubscriptionOperator,
    format_report,
)

pytestmark = pytest.mark.integration

VISIBLE, HIDDEN, MISSING = 10001, 10002, 10003
NODE = 700000001


@pytest.fixture
def joined_member(kafka_broker):
    consumers: list[Consumer] = []

    def join(group: str, topic: str, client_id: str) -> None:
        assigned = threading.Event()
        consumer = Consumer(
            {
                **kafka_broker.plaintext_config(),
                "group.id": group,
                "client.id": client_id,
                "session.timeout.ms": 6000,
            }
        )
        consumer.subscribe([topic], on_assign=lambda _c, _p: assigned.set())
        consumers.append(consumer)
        deadline = time.monotonic() + 30
        while not assigned.is_set():
            assert time.monotonic() < deadline, "consumer did not join"
            consumer.poll(0.1)

    yield join
    for consumer in consumers:
        consumer.close()


def test_describe_reports_groups_events_workspaces_and_event_types(
    kafka_broker, emulator, unique_group, dataworks_conn, joined_member
):
    conn_id = dataworks_conn(listener="sasl_ssl", emulator=emulator, consumer_group=unique_group)
    emulator.add_workspace(workspace_id=VISIBLE, identifier="demo_ws")
    emulator.add_workspace(workspace_id=HIDDEN, identifier="hidden_ws", visible=False)
    emulator.add_node(node_id=NODE, workspace_id=VISIBLE, name="ods_orders")
    hidden_file = emulator.add_file(workspace_id=HIDDEN, name="secret_job")
    start_ms = int(time.time() * 1000) - 1000

    emulator.publish_instance(node_id=NODE, status="RUNNING")
    emulator.publish_instance(node_id=NODE, status="SUCCESS")
    emulator.publish_file_event(file_id=hidden_file["id"], event_type="commit-file", extension=True)
    emulator.publish_raw(
        json.dumps(
            {
                "messageId": "m-mystery",
                "eventType": "mystery-event",
                "blockBusiness": False,
                "messageBody": {"projectId": VISIBLE},
            }
        )
    )
    # In one partition, after a record of the window: a malformed record, then one stamped before the
    # window; both lie between the window's offsets and neither is counted as an event.
    producer = Producer(kafka_broker.plaintext_config())
    producer.produce(emulator.topic, value=b"not a DataWorks event", partition=0)
    producer.produce(
        emulator.topic,
        value=b'{"messageId": "old", "messageBody": {}}',
        partition=0,
        timestamp=start_ms - 3_600_000,
    )
    assert producer.flush(10) == 0

    replay_group = f"{unique_group}-replay"
    DataWorksCreateConsumerGroupOperator(
        task_id="create", dataworks_conn_id=conn_id, group_id=replay_group, position="earliest"
    ).execute({})
    joined_member(unique_group, emulator.topic, "subscription-app")

    report = DataWorksDescribeSubscriptionOperator(
        task_id="describe",
        dataworks_conn_id=conn_id,
        start_time=start_ms,
        workspace_ids=f"{VISIBLE},{MISSING}",
        event_types=["instance-status-changes", "dataworks:TableChange:DeployTable"],
    ).execute({})

    json.dumps(report)
    assert report["topic"] == emulator.topic
    assert sum(p["latest"] for p in report["partitions"]) == 6

    groups = {group["group_id"]: group for group in report["groups"]}
    assert set(groups) == {unique_group, replay_group}
    assert groups[replay_group]["lag"] == 6
    assert groups[replay_group]["state"] == "EMPTY"
    assert groups[replay_group]["members"] == []
    assert groups[unique_group]["connection_group"] is True
    assert groups[unique_group]["lag"] is None
    assert [(m["client_id"], m["partitions"]) for m in groups[unique_group]["members"]] == [
        ("subscription-app", [0, 1, 2])
    ]

    counts = {
        (e["workspace_id"], e["event_type"]): (e["count"], e["extension_points"]) for e in report["events"]
    }
    assert counts == {
        (VISIBLE, "instance-status-changes"): (2, 0),
        (VISIBLE, "mystery-event"): (1, 0),
        (HIDDEN, "commit-file"): (1, 1),
    }
    assert all(e["last_time"] for e in report["events"])
    assert report["window"]["records"] == 6
    assert report["window"]["events"] == 4
    assert report["window"]["complete"] is True

    workspaces = {w["workspace_id"]: w for w in report["workspaces"]}
    assert workspaces[VISIBLE]["visible"] is True
    assert workspaces[VISIBLE]["identifier"] == "demo_ws"
    assert workspaces[VISIBLE]["events"] == 3
    assert (workspaces[HIDDEN]["exists"], workspaces[HIDDEN]["visible"]) == (True, False)
    assert (workspaces[MISSING]["exists"], workspaces[MISSING]["expected"]) == (False, True)

    types = {t["event_type"]: t for t in report["event_types"]}
    assert (types["instance-status-changes"]["module"], types["instance-status-changes"]["events"]) == (
        "OperationCenter",
        2,
    )
    assert (types["deploy-table"]["expected"], types["deploy-table"]["events"]) == (True, 0)
    assert types["mystery-event"]["known"] is False

    warnings = "\n".join(report["warnings"])
    assert f"Workspace {HIDDEN} is not visible to the connection's AccessKey" in warnings
    assert f"Workspace {MISSING} does not exist in DataWorks" in warnings
    assert f"Workspace {MISSING} sent no events in the window" in warnings
    assert "No deploy-table events in the window" in warnings
    assert "Event type 'mystery-event' is not in the DataWorks event catalogue" in warnings
    assert "2 record(s) in the window are not counted" in warnings
    assert f"consumer group {unique_group!r} has no committed offsets" in warnings
    table = format_report(report)
    assert f"{replay_group}" in table and "subscription-app" not in table


def test_describe_without_an_access_key_reports_workspaces_unchecked(emulator, unique_group, dataworks_conn):
    conn_id = dataworks_conn(listener="plaintext", topic=emulator.topic, consumer_group=unique_group)
    emulator.add_workspace(workspace_id=VISIBLE)
    emulator.add_node(node_id=NODE, workspace_id=VISIBLE, name="ods_orders")
    emulator.publish_instance(node_id=NODE, status="SUCCESS")

    report = DataWorksDescribeSubscriptionOperator(
        task_id="describe", dataworks_conn_id=conn_id, window=600, group_ids="never-used-group"
    ).execute({})

    assert report["workspaces"] == [
        {"workspace_id": VISIBLE, "events": 1, "expected": False, "checked": False}
    ]
    assert any("the connection has no DataWorks AccessKey" in w for w in report["warnings"])
    assert [(g["group_id"], g["state"], g["lag"]) for g in report["groups"]] == [
        (unique_group, "DEAD", None),
        ("never-used-group", "DEAD", None),
    ]


def test_describe_with_a_small_record_budget_says_the_window_is_incomplete(emulator, dataworks_conn):
    conn_id = dataworks_conn(listener="plaintext", emulator=emulator)
    emulator.add_workspace(workspace_id=VISIBLE)
    emulator.add_node(node_id=NODE, workspace_id=VISIBLE, name="ods_orders")
    for status in ("WAIT_TIME", "WAIT_RESOURCE", "RUNNING", "SUCCESS"):
        emulator.publish_instance(node_id=NODE, status=status)

    report = DataWorksDescribeSubscriptionOperator(
        task_id="describe", dataworks_conn_id=conn_id, window=600, max_records=1, check_workspaces=False
    ).execute({})

    assert report["window"]["complete"] is False
    assert any("Stopped reading the window at max_records (1)" in w for w in report["warnings"])
