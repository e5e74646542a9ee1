"""Extension-point operators against the DataWorks emulator, with events read from the real broker."""

from __future__ import annotations

import json
import time
import uuid

import pytest

from airflow_provider_dataworks.events import parse
from airflow_provider_dataworks.exceptions import DataWorksError, DataWorksOpenAPIError
from airflow_provider_dataworks.local.emulator.model import Operation
from airflow_provider_dataworks.operators.extension import (
    DataWorksExtensionVerdictOperator,
    DataWorksGetExtensionEventDetailOperator,
)
from airflow_provider_dataworks.sensors.event import DataWorksEventSensor

pytestmark = pytest.mark.integration

WORKSPACE = 10001
CODE = "ext-under-test"
SQL = "INSERT OVERWRITE TABLE dwd_orders SELECT * FROM ods_orders;"


@pytest.fixture
def workspace_file(emulator) -> dict:
    emulator.add_workspace(workspace_id=WORKSPACE, identifier="demo_ws")
    return emulator.add_file(workspace_id=WORKSPACE, name="dwd_orders", content=SQL)


def _sensor_xcom(conn_id: str, message_id: str, start_ms: int) -> dict:
    """Read the event from Kafka the way the example DAG does, and return the sensor's XCom."""
    sensor = DataWorksEventSensor(
        task_id="wait",
        dataworks_conn_id=conn_id,
        event_filter={"extension_point": None},
        start_time=start_ms,
        deferrable=False,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        result = sensor.poke({})
        if result.is_done and result.xcom_value["event"]["message_id"] == message_id:
            return result.xcom_value
    raise AssertionError(f"event {message_id} not read from Kafka")


def _hold(emulator, event_type: str) -> str:
    """Make the emulator hold an operation for an event type it cannot publish itself."""
    message_id = str(uuid.uuid4())
    with emulator.model.lock:
        emulator.model.operations[message_id] = Operation(
            message_id=message_id, event_type=event_type, workspace_id=WORKSPACE
        )
    return message_id


def _verdicts(emulator) -> list[tuple[str, str, str, str, str]]:
    return [
        (v["message_id"], v["action"], v["check_result"], v["tip"], v["extension_code"])
        for v in emulator.verdicts()
    ]


def _status(emulator, message_id: str) -> str:
    return next(o["status"] for o in emulator.operations() if o["message_id"] == message_id)


@pytest.mark.parametrize("envelope", ["legacy", "cloudevents"])
def test_verdict_fail_on_a_datastudio_deploy_goes_through_update_ide_event_result(
    make_emulator, dataworks_conn, envelope
):
    emulator = make_emulator(envelope=envelope)
    emulator.add_workspace(workspace_id=WORKSPACE, identifier="demo_ws")
    data_file = emulator.add_file(workspace_id=WORKSPACE, name="dwd_orders", content=SQL)
    conn_id = dataworks_conn(listener="sasl_ssl", emulator=emulator)
    start_ms = int(time.time() * 1000)
    held = emulator.publish_file_event(file_id=data_file["id"], event_type="deploy-file", extension=True)
    xcom = _sensor_xcom(conn_id, held, start_ms)

    result = DataWorksExtensionVerdictOperator(
        task_id="verdict",
        dataworks_conn_id=conn_id,
        event=xcom,
        check_result="FAIL",
        reason="Reads ods_orders without a partition filter.",
        extension_code=CODE,
    ).execute({})

    assert _verdicts(emulator) == [
        (held, "UpdateIDEEventResult", "FAIL", "Reads ods_orders without a partition filter.", CODE)
    ]
    assert _status(emulator, held) == "blocked"
    assert result["api"] == "UpdateIDEEventResult"
    assert result["message_id"] == held
    assert result["workspace_id"] == WORKSPACE
    assert result["event_type"] == "deploy-file"
    assert result["request_id"]
    json.dumps(result)


def test_verdict_ok_by_message_id_and_event_type_releases_the_operation(
    emulator, workspace_file, dataworks_conn
):
    conn_id = dataworks_conn(listener="plaintext", emulator=emulator)
    held = emulator.publish_file_event(file_id=workspace_file["id"], event_type="commit-file", extension=True)

    DataWorksExtensionVerdictOperator(
        task_id="verdict",
        dataworks_conn_id=conn_id,
        message_id=held,
        workspace_id=str(WORKSPACE),
        event_type="dataworks:FileChange:CommitFile",
        check_result="ok",
        extension_code=CODE,
    ).execute({})

    assert _verdicts(emulator) == [(held, "UpdateIDEEventResult", "OK", "", CODE)]
    assert _status(emulator, held) == "passed"


def test_verdict_fail_on_an_operation_center_event_sends_the_documented_fail_spelling(
    emulator, dataworks_conn
):
    conn_id = dataworks_conn(listener="plaintext", emulator=emulator)
    emulator.add_workspace(workspace_id=WORKSPACE)
    held = _hold(emulator, "freeze-node")
    event = parse(
        {
            "specversion": "1.0",
            "id": held,
            "source": "acs.dataworks",
            "type": "dataworks:NodeChange:FreezeNode",
            "data": {
                "eventCode": "freeze-node",
                "projectId": WORKSPACE,
                "nodeIds": [1],
                "extensionBizId": "b-1",
            },
        }
    ).to_dict()

    result = DataWorksExtensionVerdictOperator(
        task_id="verdict",
        dataworks_conn_id=conn_id,
        event={"event": event, "record": {}},
        check_result="FAIL",
        reason="Node 1 feeds the finance baseline.",
        extension_code=CODE,
    ).execute({})

    assert _verdicts(emulator) == [
        (held, "UpdateWorkbenchEventResult", "Fail", "Node 1 feeds the finance baseline.", CODE)
    ]
    assert _status(emulator, held) == "blocked"
    assert result["check_result"] == "Fail"


def test_verdict_warn_on_a_tenant_event_goes_through_callback_extension(emulator, dataworks_conn):
    conn_id = dataworks_conn(listener="plaintext", emulator=emulator)
    emulator.add_workspace(workspace_id=WORKSPACE)
    held = _hold(emulator, "upload-data-to-table")

    DataWorksExtensionVerdictOperator(
        task_id="verdict",
        dataworks_conn_id=conn_id,
        message_id=held,
        workspace_id=WORKSPACE,
        event_type="upload-data-to-table",
        check_result="WARN",
        reason="Large upload; please tell the data owner.",
        extension_code=CODE,
    ).execute({})

    assert _verdicts(emulator) == [
        (held, "CallbackExtension", "WARN", "Large upload; please tell the data owner.", CODE)
    ]
    assert _status(emulator, held) == "warned"


def test_verdict_warn_on_an_operation_center_event_is_refused_before_calling(emulator, dataworks_conn):
    conn_id = dataworks_conn(listener="plaintext", emulator=emulator)
    held = _hold(emulator, "backfill-data")

    with pytest.raises(ValueError, match="take only OK or FAIL"):
        DataWorksExtensionVerdictOperator(
            task_id="verdict",
            dataworks_conn_id=conn_id,
            message_id=held,
            event_type="backfill-data",
            check_result="WARN",
            reason="Backfill of 90 days.",
            extension_code=CODE,
        ).execute({})

    assert emulator.verdicts() == []


def test_verdict_on_a_regular_event_is_refused_naming_it(emulator, workspace_file, dataworks_conn):
    conn_id = dataworks_conn(listener="plaintext", emulator=emulator)
    start_ms = int(time.time() * 1000)
    regular = emulator.publish_file_event(
        file_id=workspace_file["id"], event_type="deploy-file", extension=False
    )
    xcom = _sensor_xcom(conn_id, regular, start_ms)

    with pytest.raises(DataWorksError, match="is a regular event, not an extension point") as refused:
        DataWorksExtensionVerdictOperator(
            task_id="verdict", dataworks_conn_id=conn_id, event=xcom, check_result="OK", extension_code=CODE
        ).execute({})

    assert regular in str(refused.value)
    assert emulator.verdicts() == []


def test_verdict_for_an_unknown_message_fails_naming_the_api_and_code(emulator, dataworks_conn):
    conn_id = dataworks_conn(listener="plaintext", emulator=emulator)
    unknown = str(uuid.uuid4())

    with pytest.raises(DataWorksOpenAPIError) as failed:
        DataWorksExtensionVerdictOperator(
            task_id="verdict",
            dataworks_conn_id=conn_id,
            message_id=unknown,
            event_type="deploy-file",
            check_result="OK",
            extension_code=CODE,
        ).execute({})

    assert failed.value.api == "UpdateIDEEventResult"
    assert failed.value.code == "Invalid.Message.NotExists"
    assert "UpdateIDEEventResult" in str(failed.value)


def test_verdict_when_throttled_retries_and_is_recorded_once(emulator, workspace_file, dataworks_conn):
    conn_id = dataworks_conn(listener="plaintext", emulator=emulator)
    held = emulator.publish_file_event(file_id=workspace_file["id"], event_type="run-file")
    emulator.inject_fault("UpdateIDEEventResult", "throttle", count=2, retry_after=50)

    DataWorksExtensionVerdictOperator(
        task_id="verdict",
        dataworks_conn_id=conn_id,
        message_id=held,
        workspace_id=WORKSPACE,
        event_type="run-file",
        check_result="OK",
        extension_code=CODE,
    ).execute({})

    assert [v[0] for v in _verdicts(emulator)] == [held]
    assert emulator.faults()[0]["remaining"] == 0


def test_verdict_when_the_extension_code_renders_empty_fails_naming_the_fix(emulator, dataworks_conn):
    conn_id = dataworks_conn(listener="plaintext", emulator=emulator)
    verdict = DataWorksExtensionVerdictOperator(
        task_id="verdict",
        dataworks_conn_id=conn_id,
        message_id="m-1",
        check_result="OK",
        extension_code="{{ params.extension_code }}",
    )
    verdict.render_template_fields({"params": {"extension_code": ""}})

    with pytest.raises(ValueError, match="Open Platform > Extensions"):
        verdict.execute({})

    assert emulator.verdicts() == []


def test_detail_of_a_deploy_returns_the_code_being_deployed(emulator, workspace_file, dataworks_conn):
    conn_id = dataworks_conn(listener="plaintext", emulator=emulator)
    start_ms = int(time.time() * 1000)
    held = emulator.publish_file_event(file_id=workspace_file["id"], event_type="deploy-file", extension=True)
    xcom = _sensor_xcom(conn_id, held, start_ms)

    result = DataWorksGetExtensionEventDetailOperator(
        task_id="detail", dataworks_conn_id=conn_id, event=xcom
    ).execute({})

    assert result["kind"] == "CommittedFile"
    assert result["content"] == SQL
    assert result["detail"]["CommittedFile"]["FileName"] == "dwd_orders"
    assert result["message_id"] == held
    json.dumps(result)


def test_detail_of_a_table_commit_returns_the_table_model(emulator, dataworks_conn):
    conn_id = dataworks_conn(listener="plaintext", emulator=emulator)
    emulator.add_workspace(workspace_id=WORKSPACE)
    emulator.add_table(workspace_id=WORKSPACE, name="dim_customer", maxcompute_project="mc_prod")
    held = emulator.publish_table_event(workspace_id=WORKSPACE, table_name="dim_customer")

    result = DataWorksGetExtensionEventDetailOperator(
        task_id="detail",
        dataworks_conn_id=conn_id,
        message_id=held,
        workspace_id=WORKSPACE,
        event_type="commit-table",
    ).execute({})

    assert result["kind"] == "TableModel"
    assert result["content"] is None
    assert result["detail"]["TableModel"]["TableName"] == "dim_customer"


def test_detail_in_a_workspace_hidden_from_the_access_key_fails_naming_the_fix(
    emulator, workspace_file, dataworks_conn
):
    conn_id = dataworks_conn(listener="plaintext", emulator=emulator)
    held = emulator.publish_file_event(file_id=workspace_file["id"], event_type="delete-file")
    emulator.set_workspace_visible(WORKSPACE, False)

    with pytest.raises(DataWorksOpenAPIError) as failed:
        DataWorksGetExtensionEventDetailOperator(
            task_id="detail", dataworks_conn_id=conn_id, message_id=held, workspace_id=WORKSPACE
        ).execute({})

    assert failed.value.code == "Forbidden.Access"
    assert "grant the RAM user access to the workspace" in str(failed.value)
