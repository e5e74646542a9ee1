"""Event filters: data only, deterministic, and matching what they say."""

from __future__ import annotations

import json

import pytest

from airflow_provider_dataworks.events import parse
from airflow_provider_dataworks.filters import EventFilter, PredicateImportError


def _instance_event(*, status=6, node=700000001, workspace=10001, instance=900000001):
    return parse(
        {
            "messageId": f"m-{status}-{node}",
            "eventType": "instance-status-changes",
            "eventCategoryType": "instance-status-change",
            "blockBusiness": False,
            "messageBody": {
                "taskId": instance,
                "nodeId": node,
                "dagId": 1,
                "status": status,
                "appId": workspace,
            },
        }
    )


def _file_event(name="ods_orders_di", code="deploy-file"):
    return parse(
        {
            "id": "f1",
            "specversion": "1.0",
            "type": "dataworks:FileChange:DeployFile",
            "data": {"eventCode": code, "fileName": name, "fileId": 5, "projectId": 10001, "operator": "u1"},
        }
    )


def test_to_dict_when_same_filter_written_differently_serializes_the_same():
    one = EventFilter(event_types=["instance-status-change"], node_ids=[3, 1, 3], statuses=["success", 5])
    two = EventFilter(
        event_types=["dataworks:InstanceStatusChanges:InstanceStatusChanges"],
        node_ids=[1, 3],
        statuses=["FAILURE", "SUCCESS(6)"],
    )

    assert json.dumps(one.to_dict()) == json.dumps(two.to_dict())
    assert one.to_dict() == {
        "event_types": ["instance-status-changes"],
        "node_ids": [1, 3],
        "statuses": ["FAILURE", "SUCCESS"],
    }


def test_from_dict_round_trips():
    original = EventFilter(
        workspace_ids=[1], table_names=["ods_*"], extension_point=True, predicate="json.dumps"
    )

    assert EventFilter.from_dict(original.to_dict()) == original


def test_matches_when_every_field_agrees():
    flt = EventFilter(
        event_types=["instance-status-changes"],
        workspace_ids=[10001],
        node_ids=[700000001],
        statuses=["SUCCESS"],
    )

    assert flt.matches(_instance_event())
    assert not flt.matches(_instance_event(status=4))
    assert not flt.matches(_instance_event(node=2))
    assert not flt.matches(_instance_event(workspace=2))
    assert not flt.matches(_file_event())


def test_matches_when_statuses_set_and_event_has_no_status_rejects():
    assert not EventFilter(statuses=["SUCCESS"]).matches(_file_event())


def test_matches_file_name_globs_and_operators():
    assert EventFilter(file_names=["ods_*"], operators=["u1"]).matches(_file_event())
    assert not EventFilter(file_names=["dwd_*"]).matches(_file_event())
    assert not EventFilter(operators=["u2"]).matches(_file_event())


def test_empty_filter_matches_everything():
    assert EventFilter().matches(_file_event())
    assert EventFilter().to_dict() == {}


def test_merged_adds_to_lists():
    merged = EventFilter(node_ids=[1]).merged(node_ids=2, statuses=None, event_types=["deploy-file"])

    assert merged.node_ids == (1, 2)
    assert merged.event_types == ("deploy-file",)


def test_predicate_when_importable_is_applied():
    flt = EventFilter(predicate="tests.unit.predicates.only_ods_files")

    assert flt.matches(_file_event("ods_a"))
    assert not flt.matches(_file_event("dwd_a"))


def test_check_predicate_when_not_importable_names_the_path_and_the_fix():
    flt = EventFilter(predicate="no_such_module.check")

    with pytest.raises(
        PredicateImportError, match=r"no_such_module\.check.*installed in the Airflow environment"
    ):
        flt.check_predicate()


def test_predicate_when_not_dotted_is_refused():
    with pytest.raises(ValueError, match="dotted path"):
        EventFilter(predicate="check")


def test_unknown_field_is_refused():
    with pytest.raises(ValueError, match="node_id"):
        EventFilter(node_id=[1])
