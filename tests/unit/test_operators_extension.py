"""Extension-point operators without DataWorks: which event, which API, which spelling."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import pytest

from airflow_provider_dataworks.events import parse
from airflow_provider_dataworks.operators.extension import (
    DataWorksExtensionVerdictOperator,
    DataWorksGetExtensionEventDetailOperator,
    ExtensionEventRef,
    extension_event_ref,
    normalise_check_result,
    verdict_api,
)

EXAMPLE_DAG = Path(__file__).resolve().parents[2] / "example_dags" / "example_dataworks_extension_verdict.py"

LEGACY_DEPLOY = {
    "messageId": "m-legacy",
    "eventType": "deploy-file",
    "eventCategoryType": "file-change",
    "blockBusiness": True,
    "messageBody": {"eventCode": "deploy-file", "projectId": 10001, "fileId": 5, "extensionBizId": "b-1"},
}
CLOUD_FREEZE = {
    "specversion": "1.0",
    "id": "m-cloud",
    "source": "acs.dataworks",
    "type": "dataworks:NodeChange:FreezeNode",
    "data": {"eventCode": "freeze-node", "projectId": 10002, "nodeIds": [7], "extensionBizId": "b-2"},
}


def _sensor_xcom(envelope: dict) -> dict:
    return {"event": parse(envelope).to_dict(), "record": {"topic": "t", "partition": 0, "offset": 3}}


def test_ref_from_the_sensor_xcom_reads_id_workspace_type_and_kind():
    assert extension_event_ref(_sensor_xcom(LEGACY_DEPLOY)) == ExtensionEventRef(
        message_id="m-legacy", workspace_id=10001, event_type="deploy-file", extension_point=True
    )


@pytest.mark.parametrize(
    "event",
    [
        parse(CLOUD_FREEZE).to_dict(),
        CLOUD_FREEZE,
        json.dumps(_sensor_xcom(CLOUD_FREEZE)),
        str(_sensor_xcom(CLOUD_FREEZE)),
    ],
    ids=["event-dict", "raw-envelope", "json-text", "python-text"],
)
def test_ref_from_any_form_of_the_event_gives_the_same_answer(event):
    ref = extension_event_ref(event)

    assert (ref.message_id, ref.workspace_id, ref.event_type, ref.extension_point) == (
        "m-cloud",
        10002,
        "freeze-node",
        True,
    )
    assert ref.module == "OperationCenter"


def test_ref_from_ids_canonicalises_the_event_type():
    ref = extension_event_ref(
        message_id="m-1", workspace_id="10001", event_type="dataworks:FileChange:CommitFile"
    )

    assert ref == ExtensionEventRef(message_id="m-1", workspace_id=10001, event_type="commit-file")
    assert ref.describe() == "message 'm-1' (commit-file, workspace 10001)"


def test_ref_when_event_and_ids_disagree_refuses():
    with pytest.raises(ValueError, match="The event's message_id is 'm-legacy' but message_id='other'"):
        extension_event_ref(_sensor_xcom(LEGACY_DEPLOY), message_id="other")


@pytest.mark.parametrize(
    ("event", "message"),
    [
        (None, "pass event= .* or message_id="),
        ({"record": {}}, "event has no message_id"),
        ("not json at all", "neither a dict nor JSON text"),
        ("[1, 2]", "event must be a dict"),
        ({"messageBody": "x"}, "event is not a DataWorks event: not a DataWorks envelope"),
    ],
)
def test_ref_when_nothing_names_an_event_says_what_to_pass(event, message):
    with pytest.raises(ValueError, match=message):
        extension_event_ref(event)


@pytest.mark.parametrize(
    ("event_type", "api"),
    [
        ("deploy-file", "UpdateIDEEventResult"),
        ("commit-table", "UpdateIDEEventResult"),
        ("dataworks:FileChange:RunFile", "UpdateIDEEventResult"),
        ("backfill-data", "UpdateWorkbenchEventResult"),
        ("pre-kill-instance", "UpdateWorkbenchEventResult"),
        ("upload-data-to-table", "CallbackExtension"),
        ("batch-create-data-quality-rules", "CallbackExtension"),
        ("start-diJob", "CallbackExtension"),
        ("some-future-event", "CallbackExtension"),
        (None, "CallbackExtension"),
    ],
)
def test_verdict_api_follows_the_module_of_the_event(event_type, api):
    assert verdict_api(event_type) == api


@pytest.mark.parametrize(
    ("check_result", "api", "sent"),
    [
        ("ok", "UpdateIDEEventResult", "OK"),
        ("FAIL", "UpdateIDEEventResult", "FAIL"),
        (" warn ", "CallbackExtension", "WARN"),
        ("OK", "UpdateWorkbenchEventResult", "OK"),
        ("fail", "UpdateWorkbenchEventResult", "Fail"),
    ],
)
def test_check_result_is_spelt_the_way_each_api_documents(check_result, api, sent):
    assert normalise_check_result(check_result, api) == sent


def test_check_result_warn_for_operation_center_and_unknown_results_are_refused():
    with pytest.raises(ValueError, match="take only OK or FAIL"):
        normalise_check_result("WARN", "UpdateWorkbenchEventResult")
    with pytest.raises(ValueError, match="check_result must be one of OK, FAIL, WARN, not 'PASS'"):
        normalise_check_result("PASS", "CallbackExtension")


def test_verdict_operator_checks_static_arguments_when_the_dag_is_parsed():
    with pytest.raises(ValueError, match="check_result must be one of"):
        DataWorksExtensionVerdictOperator(
            task_id="v", message_id="m", check_result="maybe", extension_code="x"
        )
    with pytest.raises(ValueError, match="api must be one of"):
        DataWorksExtensionVerdictOperator(
            task_id="v", message_id="m", check_result="OK", extension_code="x", api="Whatever"
        )
    with pytest.raises(ValueError, match="needs event="):
        DataWorksExtensionVerdictOperator(task_id="v", check_result="OK", extension_code="x")
    with pytest.raises(TypeError, match="keyword arguments"):
        DataWorksExtensionVerdictOperator("v", check_result="OK", extension_code="x")


def test_verdict_operator_without_extension_code_anywhere_names_both_places(monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_DW_NO_CODE", '{"conn_type": "dataworks", "extra": {"access_key_id": "ak"}}'
    )
    verdict = DataWorksExtensionVerdictOperator(
        task_id="v",
        message_id="m",
        workspace_id=1,
        event_type="deploy-file",
        check_result="OK",
        dataworks_conn_id="dw_no_code",
    )

    with pytest.raises(
        ValueError, match=r"pass extension_code= or set the extension_code field of connection"
    ):
        verdict.execute({})


def test_verdict_operator_leaves_a_templated_check_result_for_execute():
    verdict = DataWorksExtensionVerdictOperator(
        task_id="v",
        message_id="m",
        check_result="{{ ti.xcom_pull('check')['check_result'] }}",
        extension_code="{{ params.extension_code }}",
    )

    assert verdict.dataworks_conn_id == "dataworks_default"
    assert set(verdict.template_fields) == {
        "event",
        "message_id",
        "workspace_id",
        "event_type",
        "check_result",
        "reason",
        "extension_code",
    }


def test_detail_operator_templates_the_event_and_its_ids():
    assert DataWorksGetExtensionEventDetailOperator.template_fields == (
        "event",
        "message_id",
        "workspace_id",
        "event_type",
    )


def test_example_dag_waits_fetches_checks_and_answers_in_that_order():
    dag = runpy.run_path(str(EXAMPLE_DAG))["dag"]

    upstream = {task.task_id: sorted(task.upstream_task_ids) for task in dag.tasks}
    assert upstream == {
        "wait_for_deploy": [],
        "get_deploy_detail": ["wait_for_deploy"],
        "check_sql": ["get_deploy_detail"],
        "report_verdict": ["check_sql", "wait_for_deploy"],
    }
    sensor = dag.get_task("wait_for_deploy")
    assert sensor.event_filter.extension_point is True
    assert sensor.event_types == ["deploy-file"]
