"""The event model: every documented envelope parses into the right event."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from airflow_provider_dataworks.events import (
    EVENT_TYPES,
    InstanceStatus,
    MalformedEventError,
    canonical_event_type,
    parse,
)

REFERENCE = Path(__file__).resolve().parents[3] / "shared" / "reference" / "dataworks-openevent.md"


def _reference_examples() -> list[dict]:
    text = REFERENCE.read_text()
    section = text.split("## 13.", 1)[1].split("## 14.", 1)[0]
    return [json.loads(line) for line in section.splitlines() if line.strip().startswith("{")]


# (envelope, event type, workspace, instance ids, node ids, status, file id, table, extension point)
EXPECTED = [
    ("legacy", "instance-status-changes", 10001, (900000001,), (700000001,), "RUNNING", None, None, False),
    ("legacy", "instance-status-changes", 10001, (900000001,), (700000001,), "SUCCESS", None, None, False),
    ("legacy", "commit-file", 10001, (), (), None, 500000001, None, True),
    ("legacy", "deploy-file", 10001, (), (), None, 500000001, None, False),
    ("legacy", "commit-table", 10001, (), (), None, None, "dim_customer", True),
    ("function-compute", "upload-data-to-table", 10001, (), (), None, None, None, True),
    (
        "cloudevents",
        "instance-status-changes",
        10001,
        (900000002,),
        (700000002,),
        "WAIT_RESOURCE",
        None,
        None,
        False,
    ),
    (
        "cloudevents",
        "instance-status-changes",
        10001,
        (900000002,),
        (700000002,),
        "FAILURE",
        None,
        None,
        False,
    ),
    ("cloudevents", "dag-status-changes", 10001, (), (), None, None, None, False),
    ("cloudevents", "node-change-created", 10001, (), (700000003,), None, None, None, False),
    ("cloudevents", "commit-file", 10001, (), (), None, 500000002, None, True),
    ("cloudevents", "deploy-table", 10001, (), (), None, None, "dwd_orders_di", True),
    ("cloudevents", "freeze-instance", 10001, (900000004, 900000005), (), None, None, None, False),
    ("cloudevents", "pre-kill-instance", 10001, (900000006,), (), None, None, None, True),
    ("cloudevents", "workbench-monitor-alert", 10001, (900000001,), (700000001,), None, None, None, False),
    ("cloudevents", "dqc-check-finished-event", 10001, (), (), None, None, "dwd_orders_di", False),
    ("cloudevents", "backfill-data", 10001, (), (700000001,), None, None, None, True),
    ("cloudevents", "project-deleted", 10009, (), (), None, None, None, False),
]


def test_reference_examples_when_parsed_give_type_workspace_and_ids():
    examples = _reference_examples()
    assert len(examples) == len(EXPECTED)

    for message, expected in zip(examples, EXPECTED, strict=True):
        event = parse(json.dumps(message).encode())
        envelope, event_type, workspace, instances, nodes, status, file_id, table, extension = expected
        assert event.envelope == envelope
        assert event.event_type == event_type
        assert event.known
        assert event.workspace_id == workspace
        assert event.instance_ids == instances
        assert event.node_ids == nodes
        assert event.status == (InstanceStatus(status) if status else None)
        assert event.file_id == file_id
        assert event.table_name == table
        assert event.extension_point is extension
        assert event.message_id == (message.get("id") or message.get("messageId"))
        assert event.raw == message


@pytest.mark.parametrize("value", [0, 1, "0", "NOT_RUN", "not_run", "NOT_RUN(1)"])
def test_instance_status_when_not_run_code_is_zero_or_one_reads_not_run(value):
    assert InstanceStatus.from_value(value) is InstanceStatus.NOT_RUN


def test_instance_status_when_unknown_raises_with_the_choices():
    with pytest.raises(ValueError, match="SUCCESS"):
        InstanceStatus.from_value("DONE")


def test_canonical_event_type_accepts_every_spelling():
    assert canonical_event_type("instance-status-change") == "instance-status-changes"
    assert canonical_event_type("dataworks:FileChange:DeployFile") == "deploy-file"
    assert canonical_event_type("DEPLOY-FILE") == "deploy-file"
    assert canonical_event_type("some-future-event") == "some-future-event"


def test_catalogue_has_one_eventbridge_type_per_code():
    types = [event.eventbridge_type for event in EVENT_TYPES.values()]
    assert len(types) == len(set(types))
    assert EVENT_TYPES["instance-status-changes"].legacy_category == "instance-status-change"


def test_parse_when_event_type_unknown_keeps_it_as_unknown_kind():
    message = {"messageId": "m1", "eventType": "brand-new-event", "messageBody": {"projectId": 5, "x": 1}}

    event = parse(json.dumps(message))

    assert event.event_type == "brand-new-event"
    assert not event.known
    assert event.workspace_id == 5
    assert event.payload == {"projectId": 5, "x": 1}


def test_parse_when_legacy_instance_event_lacks_event_type_routes_on_payload_shape():
    message = {"messageId": "m2", "messageBody": {"taskId": 1, "status": 0, "dagId": 2, "appId": 3}}

    event = parse(message)

    assert event.event_type == "instance-status-changes"
    assert event.status is InstanceStatus.NOT_RUN


def test_parse_when_older_message_type_envelope_reads_it():
    event = parse(
        {"messageId": "m3", "messageType": "SCHEDULE_TASK", "messageBody": {"taskId": 9, "status": 6}}
    )

    assert event.envelope == "message-type"
    assert event.event_type == "instance-status-changes"
    assert event.status is InstanceStatus.SUCCESS


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"not json", "not UTF-8 JSON"),
        (b"\xff\xfe", "not UTF-8 JSON"),
        (None, "tombstone"),
        (b"[1, 2]", "not an object"),
        (b'{"hello": "world"}', "not a DataWorks envelope"),
    ],
)
def test_parse_when_value_is_malformed_raises_with_reason(value, reason):
    with pytest.raises(MalformedEventError, match=reason):
        parse(value)


def test_event_to_dict_is_json_safe():
    event = parse(_reference_examples()[6])

    data = event.to_dict()

    assert json.loads(json.dumps(data)) == data
    assert data["status"] == "WAIT_RESOURCE"
    assert data["time"].startswith("2024-06-02T08:00:01")
