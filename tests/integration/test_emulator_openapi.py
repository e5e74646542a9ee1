"""The unmodified DataWorks SDK against the emulator over HTTP: operations, signatures, errors, faults."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from alibabacloud_dataworks_public20200518 import models as dw
from alibabacloud_dataworks_public20200518.client import Client
from alibabacloud_tea_openapi.exceptions import ClientException, ServerException, ThrottlingException
from alibabacloud_tea_openapi.utils_models import Config
from darabonba.exceptions import UnretryableException

from airflow_provider_dataworks.local.emulator import DataWorksEmulator
from airflow_provider_dataworks.local.emulator.model import business_date_ms, format_business_date

pytestmark = pytest.mark.integration


@pytest.fixture
def emulator() -> Iterator[DataWorksEmulator]:
    with DataWorksEmulator(sink=lambda topic, key, value: None) as started:
        started.seed_demo()
        yield started


def _client(emulator: DataWorksEmulator, **overrides: Any) -> Client:
    settings: dict[str, Any] = {
        "access_key_id": emulator.access_key_id,
        "access_key_secret": emulator.access_key_secret,
        "endpoint": emulator.endpoint,
        "protocol": "http",
        "region_id": "cn-hangzhou",
    }
    settings.update(overrides)
    return Client(Config(**settings))


@pytest.fixture
def client(emulator: DataWorksEmulator) -> Client:
    return _client(emulator)


def _control(emulator: DataWorksEmulator, method: str, path: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"{emulator.url}/_emulator/{path}", data=data, method=method)
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def test_get_instance_returns_status_name_and_integer_times(
    emulator: DataWorksEmulator, client: Client
) -> None:
    instance = emulator.add_instance(node_id=700000001, business_date="2024-06-01")
    emulator.set_instance_status(instance["id"], "RUNNING")

    response = client.get_instance(dw.GetInstanceRequest(instance_id=instance["id"], project_env="PROD"))

    data = response.body.data
    assert response.status_code == 200
    assert response.body.success is True
    assert data.instance_id == instance["id"]
    assert data.node_id == 700000001
    assert data.node_name == "ods_orders_di"
    assert data.status == "RUNNING"
    assert data.bizdate == 1717171200000
    assert isinstance(data.begin_running_time, int)
    assert data.finish_time is None
    assert data.dag_type == "DAILY"
    assert data.task_type == "NORMAL"


async def test_get_instance_async_works_like_sync(emulator: DataWorksEmulator, client: Client) -> None:
    instance = emulator.add_instance(node_id=700000002, status="SUCCESS")

    response = await client.get_instance_async(
        dw.GetInstanceRequest(instance_id=instance["id"], project_env="PROD")
    )

    assert response.body.data.status == "SUCCESS"


def test_list_instances_filters_by_business_date_node_and_status(
    emulator: DataWorksEmulator, client: Client
) -> None:
    wanted = emulator.add_instance(node_id=700000001, business_date="2024-06-01", status="SUCCESS")
    emulator.add_instance(node_id=700000001, business_date="2024-06-02", status="SUCCESS")
    emulator.add_instance(node_id=700000002, business_date="2024-06-01", status="SUCCESS")
    emulator.add_instance(node_id=700000001, business_date="2024-06-01", status="FAILURE")

    response = client.list_instances(
        dw.ListInstancesRequest(
            project_id=10001,
            project_env="PROD",
            node_id=700000001,
            bizdate=format_business_date(business_date_ms("2024-06-01")),
            status="SUCCESS",
        )
    )

    data = response.body.data
    assert data.total_count == 1
    assert [i.instance_id for i in data.instances] == [wanted["id"]]


def test_list_instances_pages_newest_first(emulator: DataWorksEmulator, client: Client) -> None:
    ids = [emulator.add_instance(node_id=700000001, business_date=f"2024-06-0{d}")["id"] for d in range(1, 6)]

    second = client.list_instances(
        dw.ListInstancesRequest(project_id=10001, project_env="PROD", page_number=2, page_size=2)
    ).body.data

    assert second.total_count == 5
    assert (second.page_number, second.page_size) == (2, 2)
    assert [i.instance_id for i in second.instances] == sorted(ids, reverse=True)[2:4]


def test_list_instances_without_project_env_is_refused(client: Client) -> None:
    with pytest.raises(ClientException) as caught:
        client.list_instances(dw.ListInstancesRequest(project_id=10001))

    assert caught.value.code == "MissingParameter"
    assert "ProjectEnv" in caught.value.message


def test_get_node_returns_schedule(client: Client) -> None:
    data = client.get_node(dw.GetNodeRequest(node_id=700000002, project_env="PROD")).body.data

    assert (data.node_id, data.node_name, data.project_id) == (700000002, "dwd_orders_di", 10001)
    assert data.cron_express == "00 00 01 * * ?"
    assert data.program_type == "ODPS_SQL"


def test_get_project_by_id_and_by_identifier(client: Client) -> None:
    by_id = client.get_project(dw.GetProjectRequest(project_id=10001)).body
    by_identifier = client.get_project(dw.GetProjectRequest(project_identifier="demo_ws")).body

    assert by_id.success is True
    assert by_id.data.project_identifier == "demo_ws"
    assert by_identifier.data.project_id == 10001
    assert by_id.data.status == 0


def test_list_projects_hides_workspaces_invisible_to_the_access_key(
    emulator: DataWorksEmulator, client: Client
) -> None:
    emulator.add_workspace(workspace_id=20002, identifier="hidden_ws", visible=False)
    emulator.add_workspace(workspace_id=30003, identifier="other_ws")

    page = client.list_projects(dw.ListProjectsRequest(page_number=1, page_size=10)).body.page_result

    assert page.total_count == 2
    assert [(p.project_id, p.project_status_code) for p in page.project_list] == [
        (10001, "AVAILABLE"),
        (30003, "AVAILABLE"),
    ]


def test_unknown_workspace_is_a_client_error(client: Client) -> None:
    with pytest.raises(ClientException) as caught:
        client.get_project(dw.GetProjectRequest(project_id=99999))

    assert caught.value.status_code == 400
    assert caught.value.code == "Invalid.Tenant.ProjectNotExists"
    assert caught.value.data["Success"] is False


def test_invisible_workspace_is_forbidden(emulator: DataWorksEmulator, client: Client) -> None:
    emulator.set_workspace_visible(10001, False)

    with pytest.raises(ClientException) as caught:
        client.list_instances(dw.ListInstancesRequest(project_id=10001, project_env="PROD"))

    assert caught.value.status_code == 403
    assert caught.value.code == "Forbidden.Access"


def test_wrong_access_key_secret_is_rejected_as_signature_mismatch(emulator: DataWorksEmulator) -> None:
    client = _client(emulator, access_key_secret="not-the-secret")

    with pytest.raises(ClientException) as caught:
        client.get_node(dw.GetNodeRequest(node_id=700000001, project_env="PROD"))

    assert caught.value.status_code == 400
    assert caught.value.code == "SignatureDoesNotMatch"
    assert set(caught.value.data) >= {"RequestId", "Code", "Message", "HostId"}


def test_unknown_access_key_id_is_not_found(emulator: DataWorksEmulator) -> None:
    client = _client(emulator, access_key_id="somebody-else")

    with pytest.raises(ClientException) as caught:
        client.get_project(dw.GetProjectRequest(project_id=10001))

    assert caught.value.status_code == 404
    assert caught.value.code == "InvalidAccessKeyId.NotFound"


def test_v2_signed_requests_are_verified(emulator: DataWorksEmulator) -> None:
    good = _client(emulator, signature_algorithm="v2")
    bad = _client(emulator, signature_algorithm="v2", access_key_secret="not-the-secret")

    assert (
        good.get_node(dw.GetNodeRequest(node_id=700000001, project_env="PROD")).body.data.node_id == 700000001
    )
    assert good.get_project(dw.GetProjectRequest(project_id=10001)).body.data.project_id == 10001
    with pytest.raises(ClientException) as caught:
        bad.get_node(dw.GetNodeRequest(node_id=700000001, project_env="PROD"))
    assert caught.value.code == "SignatureDoesNotMatch"


def test_get_file_and_table_metadata(client: Client) -> None:
    data_file = client.get_file(dw.GetFileRequest(node_id=700000001, project_identifier="demo_ws")).body.data
    table = client.get_meta_table_basic_info(
        dw.GetMetaTableBasicInfoRequest(table_guid="odps.mc_demo_prod.dwd_orders_di", data_source_type="odps")
    ).body.data

    assert (data_file.file.file_id, data_file.file.file_name) == (500000001, "ods_orders_di")
    assert data_file.node_configuration.cron_express == "00 30 00 * * ?"
    assert (table.table_name, table.project_id, table.is_partition_table) == ("dwd_orders_di", 10001, True)


def test_ide_event_detail_and_verdicts_are_recorded(emulator: DataWorksEmulator, client: Client) -> None:
    commit = emulator.publish_file_event(file_id=500000002, event_type="commit-file", extension=True)
    run = emulator.publish_file_event(file_id=500000002, event_type="run-file")
    delete = emulator.publish_file_event(file_id=500000002, event_type="delete-file")

    detail = client.get_ideevent_detail(dw.GetIDEEventDetailRequest(message_id=commit, project_id=10001)).body
    ide = client.update_ideevent_result(
        dw.UpdateIDEEventResultRequest(
            message_id=commit, extension_code="ext-1", check_result="OK", check_result_tip="ok"
        )
    ).body
    workbench = client.update_workbench_event_result(
        dw.UpdateWorkbenchEventResultRequest(
            message_id=run, extension_code="ext-1", check_result="FAIL", check_result_tip="not today"
        )
    ).body
    callback = client.callback_extension(
        dw.CallbackExtensionRequest(
            message_id=delete, extension_code="ext-1", check_result="WARN", check_message="hm"
        )
    ).body

    assert detail.event_detail.committed_file.file_name == "dwd_orders_di"
    assert detail.event_detail.committed_file.node_configuration.cron_express == "00 00 01 * * ?"
    assert ide.request_id
    assert workbench.success is True
    assert callback.success == "true"
    assert [(v["message_id"], v["check_result"], v["tip"], v["action"]) for v in emulator.verdicts()] == [
        (commit, "OK", "ok", "UpdateIDEEventResult"),
        (run, "FAIL", "not today", "UpdateWorkbenchEventResult"),
        (delete, "WARN", "hm", "CallbackExtension"),
    ]
    assert {op["message_id"]: op["status"] for op in emulator.operations()} == {
        commit: "passed",
        run: "blocked",
        delete: "warned",
    }


def test_verdict_for_unknown_message_is_a_client_error(client: Client) -> None:
    with pytest.raises(ClientException) as caught:
        client.callback_extension(
            dw.CallbackExtensionRequest(message_id="nope", extension_code="ext-1", check_result="OK")
        )

    assert caught.value.code == "Invalid.Message.NotExists"


def test_throttle_fault_raises_throttling_exception_with_retry_after(
    emulator: DataWorksEmulator, client: Client
) -> None:
    emulator.inject_fault("GetNode", "throttle", count=2, retry_after=1500)
    request = dw.GetNodeRequest(node_id=700000001, project_env="PROD")

    for _ in range(2):
        with pytest.raises(ThrottlingException) as caught:
            client.get_node(request)
        assert caught.value.status_code == 429
        assert caught.value.code == "Throttling.Api"
        assert caught.value.retry_after == 1500

    assert client.get_node(request).body.data.node_id == 700000001
    assert emulator.faults()[0]["served"] == 2


def test_error_fault_raises_server_exception(emulator: DataWorksEmulator, client: Client) -> None:
    emulator.inject_fault("*", "error")

    with pytest.raises(ServerException) as caught:
        client.get_project(dw.GetProjectRequest(project_id=10001))

    assert caught.value.status_code == 500
    assert caught.value.code == "InternalError"


def test_hang_fault_runs_into_the_client_read_timeout(emulator: DataWorksEmulator) -> None:
    emulator.inject_fault("GetProject", "hang", seconds=3)
    client = _client(emulator, read_timeout=300)

    started = time.monotonic()
    with pytest.raises(UnretryableException):
        client.get_project(dw.GetProjectRequest(project_id=10001))

    assert time.monotonic() - started < 2.5
    assert client.get_project(dw.GetProjectRequest(project_id=10001)).body.data.project_id == 10001


def test_control_api_drives_the_emulator_over_http(emulator: DataWorksEmulator, client: Client) -> None:
    assert _control(emulator, "GET", "health")["status"] == "ok"
    _control(emulator, "POST", "workspaces", {"id": 20002, "identifier": "http_ws"})
    _control(emulator, "POST", "nodes", {"id": 820, "workspace": 20002, "name": "http_node"})
    published = _control(emulator, "POST", "publish/instance", {"node": 820, "status": "SUCCESS"})
    _control(emulator, "POST", "faults", {"action": "GetInstance", "kind": "error", "count": 1})

    with pytest.raises(ServerException):
        client.get_instance(dw.GetInstanceRequest(instance_id=published["id"], project_env="PROD"))
    data = client.get_instance(
        dw.GetInstanceRequest(instance_id=published["id"], project_env="PROD")
    ).body.data

    assert data.status == "SUCCESS"
    assert data.bizdate == business_date_ms(None)
    state = _control(emulator, "GET", "state")
    assert 20002 in [w["id"] for w in state["workspaces"]]
    assert state["faults"][0]["remaining"] == 0
    assert _control(emulator, "GET", "published")[-1]["envelope"]["messageBody"]["status"] == 6


def test_control_api_reports_bad_requests_as_json(emulator: DataWorksEmulator) -> None:
    with pytest.raises(urllib.error.HTTPError) as caught:
        _control(emulator, "POST", "instances/123/status", {"status": "SUCCESS"})

    assert caught.value.code == 400
    assert "does not exist" in json.loads(caught.value.read())["error"]


def test_process_mode_serves_the_seeded_demo_until_sigterm() -> None:
    command = [
        sys.executable,
        "-m",
        "airflow_provider_dataworks.local.emulator",
        "--port",
        "0",
        "--seed",
        "demo",
        "--access-key-id",
        "proc-key",
        "--access-key-secret",
        "proc-secret",
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=os.environ.copy())
    try:
        assert process.stdout is not None
        ready = json.loads(process.stdout.readline())
        client = Client(
            Config(
                access_key_id="proc-key",
                access_key_secret="proc-secret",
                endpoint=f"127.0.0.1:{ready['port']}",
                protocol="http",
                region_id="cn-hangzhou",
            )
        )

        assert client.get_node(
            dw.GetNodeRequest(node_id=700000001, project_env="PROD")
        ).body.data.node_name == ("ods_orders_di")
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
        stderr = process.stderr.read().decode() if process.stderr else ""
    assert "proc-secret" not in stderr
