"""DataWorks OpenAPI 2020-05-18 operations of the emulator: parameters in, response bodies out.

Errors follow what the SDK turns into exceptions: HTTP 4xx with ``{"RequestId", "Code", "Message",
"HostId"}`` becomes ``ClientException`` with ``code`` set. Business errors also carry the DataWorks fields
``Success: false``, ``ErrorCode``, ``ErrorMessage`` and ``HttpStatusCode``. The emulator answers:

========================================  ====  ===============================================
situation                                 HTTP  Code
========================================  ====  ===============================================
unknown workspace (ProjectId/Identifier)  400   ``Invalid.Tenant.ProjectNotExists``
workspace not visible to the AccessKey    403   ``Forbidden.Access``
unknown instance / node / file / table    400   ``Invalid.Instance.NotExists`` (``Node``, ``File``,
                                                ``Table`` likewise)
unknown extension message id              400   ``Invalid.Message.NotExists``
check result not OK / FAIL / WARN         400   ``Invalid.Param.CheckResult``
missing required parameter                400   ``MissingParameter``
bad parameter value                       400   ``InvalidParameter``
unknown action                            404   ``InvalidAction.NotFound``
========================================  ====  ===============================================
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from airflow_provider_dataworks.local.emulator.model import (
    STATUS_NAMES,
    DataFile,
    EmulatorError,
    Instance,
    Model,
    Node,
    Table,
    Verdict,
    Workspace,
    business_date_ms,
    parse_status,
)

HOST_ID = "dataworks.cn-hangzhou.aliyuncs.com"
API_VERSION = "2020-05-18"

Params = Mapping[str, str]


def _required(params: Params, name: str) -> str:
    value = params.get(name)
    if value is None or value == "":
        raise EmulatorError(
            f'The input parameter "{name}" that is mandatory for processing this request is not supplied.',
            code="MissingParameter",
        )
    return value


def _as_int(name: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise EmulatorError(f"The parameter {name}={value!r} must be an integer.") from None


def _required_int(params: Params, name: str) -> int:
    return _as_int(name, _required(params, name))


def _optional_int(params: Params, name: str) -> int | None:
    value = params.get(name)
    return None if value in (None, "") else _as_int(name, value)


def _project_env(params: Params) -> str:
    env = _required(params, "ProjectEnv").upper()
    if env not in ("PROD", "DEV"):
        raise EmulatorError(f"ProjectEnv {env!r} is not valid; use PROD or DEV.")
    return env


def _page(params: Params) -> tuple[int, int]:
    number = _optional_int(params, "PageNumber") or 1
    size = _optional_int(params, "PageSize") or 10
    if not 1 <= size <= 100:
        raise EmulatorError(f"PageSize {size} is not valid; use 1 to 100.")
    if number < 1:
        raise EmulatorError(f"PageNumber {number} is not valid; it starts at 1.")
    return number, size


def envelope(data: Any = None, **extra: Any) -> dict[str, Any]:
    """Return the common DataWorks success body around ``Data``."""
    body: dict[str, Any] = {"Success": True, "HttpStatusCode": 200, "ErrorCode": "", "ErrorMessage": ""}
    if data is not None:
        body["Data"] = data
    body.update(extra)
    return body


def error_body(error: EmulatorError, request_id: str, *, business: bool = True) -> dict[str, Any]:
    """Return the JSON error body DataWorks sends with a 4xx/5xx status."""
    body: dict[str, Any] = {
        "RequestId": request_id,
        "Code": error.code,
        "Message": str(error),
        "HostId": HOST_ID,
    }
    if business:
        body.update(
            Success=False, HttpStatusCode=error.http_status, ErrorCode=error.code, ErrorMessage=str(error)
        )
    return body


def instance_data(instance: Instance, node: Node) -> dict[str, Any]:
    """Return GetInstance ``Data`` (also one ListInstances entry) for an instance."""
    return {
        "InstanceId": instance.id,
        "NodeId": instance.node_id,
        "NodeName": node.name,
        "DagId": instance.dag_id,
        "DagType": instance.dag_type_name,
        "TaskType": instance.task_type_name,
        "Status": instance.status_name,
        "BusinessId": 1,
        "RelatedFlowId": instance.flow_id,
        "BaselineId": 0,
        "Bizdate": instance.bizdate,
        "CycTime": instance.cyc_time,
        "BeginWaitTimeTime": instance.begin_wait_time_time,
        "BeginWaitResTime": instance.begin_wait_res_time,
        "BeginRunningTime": instance.begin_running_time,
        "FinishTime": instance.finish_time,
        "CreateTime": instance.create_time,
        "ModifyTime": instance.modify_time,
        "CreateUser": instance.owner,
        "Owner": instance.owner,
        "ParamValues": "",
        "Priority": node.priority,
        "PeriodNumber": 1,
        "Connection": "odps_first",
        "Repeatability": True,
        "RepeatInterval": 0,
        "TaskRerunTime": 0,
        "DqcType": 1,
        "DqcDescription": "",
    }


def node_data(node: Node) -> dict[str, Any]:
    """Return GetNode ``Data`` for a node."""
    return {
        "NodeId": node.id,
        "NodeName": node.name,
        "ProjectId": node.workspace_id,
        "OwnerId": node.owner,
        "Description": node.description,
        "ProgramType": node.program_type,
        "FileType": 10,
        "FileId": node.file_id,
        "FileVersion": 1,
        "BusinessId": 1,
        "RelatedFlowId": 1,
        "CronExpress": node.cron,
        "SchedulerType": node.scheduler_type,
        "Priority": node.priority,
        "ParamValues": "",
        "BaselineId": 0,
        "RepeatInterval": 0,
        "RepeatMode": 1,
        "Repeatability": "true",
        "ResGroupIdentifier": node.resource_group,
        "ResGroupName": node.resource_group,
        "Connection": "odps_first",
        "DqcType": 0,
        "DqcDescription": "",
        "CreateTime": node.create_time,
        "ModifyTime": node.modify_time,
        "DeployDate": node.modify_time,
    }


def project_data(workspace: Workspace) -> dict[str, Any]:
    """Return GetProject ``Data`` for a workspace."""
    return {
        "ProjectId": workspace.id,
        "ProjectIdentifier": workspace.identifier,
        "ProjectName": workspace.name,
        "ProjectDescription": workspace.description,
        "ProjectOwnerBaseId": workspace.owner,
        "TenantId": workspace.tenant_id,
        "Status": 0,
        "ProjectMode": workspace.mode,
        "EnvTypes": ["DEV", "PROD"] if workspace.mode == 3 else ["PROD"],
        "IsDefault": 0,
        "ProtectedMode": 0,
        "TablePrivacyMode": 0,
        "DisableDevelopment": False,
        "IsAllowDownload": 1,
        "UseProxyOdpsAccount": True,
        "SchedulerMaxRetryTimes": 3,
        "SchedulerRetryInterval": 120000,
        "ResidentArea": "cn-hangzhou",
        "ResourceManagerResourceGroupId": "rg-emulator",
        "DefaultDiResourceGroupIdentifier": "group_default",
        "Tags": [],
    }


def project_list_entry(workspace: Workspace) -> dict[str, Any]:
    """Return one ListProjects ``ProjectList`` entry."""
    return {
        "ProjectId": workspace.id,
        "ProjectIdentifier": workspace.identifier,
        "ProjectName": workspace.name,
        "ProjectDescription": workspace.description,
        "ProjectOwnerBaseId": workspace.owner,
        "ProjectStatus": 0,
        "ProjectStatusCode": "AVAILABLE",
        "IsDefault": 0,
        "DisableDevelopment": False,
        "TablePrivacyMode": 0,
        "UseProxyOdpsAccount": True,
        "ResourceManagerResourceGroupId": "rg-emulator",
        "Tags": [],
    }


def node_configuration(node: Node | None) -> dict[str, Any]:
    """Return the scheduling part of GetFile / GetIDEEventDetail for a node (or defaults)."""
    return {
        "CronExpress": node.cron if node else "00 00 00 * * ?",
        "CycleType": "DAY",
        "SchedulerType": node.scheduler_type if node else "NORMAL",
        "ParaValue": "",
        "RerunMode": "ALL_ALLOWED",
        "AutoRerunTimes": 3,
        "AutoRerunIntervalMillis": 120000,
        "DependentType": "NONE",
        "DependentNodeIdList": "",
        "InputList": [],
        "OutputList": [],
        "ResourceGroupId": 0,
    }


def file_data(data_file: DataFile, node: Node | None) -> dict[str, Any]:
    """Return GetFile ``Data`` for a file."""
    return {
        "File": {
            "FileId": data_file.id,
            "FileName": data_file.name,
            "FileType": data_file.file_type,
            "FileDescription": "",
            "FileFolderId": data_file.folder_id,
            "ParentId": 0,
            "BusinessId": data_file.business_id,
            "NodeId": data_file.node_id,
            "UseType": "NORMAL",
            "Content": data_file.content,
            "ConnectionName": data_file.data_source_name,
            "CurrentVersion": data_file.version,
            "CommitStatus": 1,
            "DeletedStatus": "NORMAL",
            "Owner": data_file.owner,
            "CreateUser": data_file.owner,
            "LastEditUser": data_file.owner,
            "CreateTime": data_file.create_time,
            "LastEditTime": data_file.modify_time,
            "AutoParsing": True,
            "IsMaxCompute": data_file.file_type == 10,
        },
        "NodeConfiguration": {**node_configuration(node), "Stop": False, "StartEffectDate": 0},
    }


def table_data(table: Table, workspace: Workspace) -> dict[str, Any]:
    """Return GetMetaTableBasicInfo ``Data`` for a table."""
    return {
        "TableGuid": table.guid,
        "TableName": table.name,
        "Caption": table.name,
        "Comment": table.comment,
        "ProjectId": workspace.id,
        "ProjectName": table.maxcompute_project,
        "TenantId": workspace.tenant_id,
        "OwnerId": table.owner,
        "DatabaseName": table.maxcompute_project,
        "ColumnCount": len(table.columns),
        "DataSize": 0,
        "IsPartitionTable": bool(table.partition_keys),
        "IsView": False,
        "PartitionKeys": ",".join(table.partition_keys),
        "IsVisible": 0,
        "EnvType": 1,
        "LifeCycle": table.lifecycle,
        "CreateTime": table.create_time,
        "LastAccessTime": table.create_time,
        "LastDdlTime": table.create_time,
        "LastModifyTime": table.create_time,
    }


class OpenApi:
    """Answers the DataWorks operations the provider uses from the emulator's model."""

    def __init__(self, model: Model) -> None:
        self._model = model
        self._handlers: dict[str, Callable[[Params], dict[str, Any]]] = {
            "GetInstance": self._get_instance,
            "ListInstances": self._list_instances,
            "GetNode": self._get_node,
            "GetProject": self._get_project,
            "ListProjects": self._list_projects,
            "GetFile": self._get_file,
            "GetMetaTableBasicInfo": self._get_meta_table_basic_info,
            "GetIDEEventDetail": self._get_ide_event_detail,
            "UpdateIDEEventResult": self._update_ide_event_result,
            "UpdateWorkbenchEventResult": self._update_workbench_event_result,
            "CallbackExtension": self._callback_extension,
        }

    @property
    def actions(self) -> list[str]:
        """Return the names of the supported operations."""
        return sorted(self._handlers)

    def knows(self, action: str) -> bool:
        """Return whether an operation is supported."""
        return action in self._handlers

    def call(self, action: str, params: Params) -> dict[str, Any]:
        """Run one operation and return its body without ``RequestId``.

        :raises EmulatorError: the request is not valid or names something unknown or hidden.
        """
        handler = self._handlers.get(action)
        if handler is None:
            raise EmulatorError(
                f"Specified api {action!r} is not found; the emulator serves {self.actions}.",
                code="InvalidAction.NotFound",
                http_status=404,
            )
        with self._model.lock:
            return handler(params)

    def _visible(self, workspace_id: int) -> Workspace:
        workspace = self._model.workspace(workspace_id)
        if not workspace.visible:
            raise EmulatorError(
                f"You are not authorized to access the workspace {workspace_id}: the AccessKey's user is "
                "not a member of it.",
                code="Forbidden.Access",
                http_status=403,
            )
        return workspace

    def _workspace_by_id_or_identifier(self, params: Params) -> Workspace:
        project_id = _optional_int(params, "ProjectId")
        if project_id is not None:
            return self._visible(project_id)
        identifier = params.get("ProjectIdentifier")
        if not identifier:
            _required(params, "ProjectId")
        for workspace in self._model.workspaces.values():
            if workspace.identifier == identifier:
                return self._visible(workspace.id)
        raise EmulatorError(
            f"The workspace {identifier!r} does not exist.", code="Invalid.Tenant.ProjectNotExists"
        )

    def _get_instance(self, params: Params) -> dict[str, Any]:
        instance_id = _required_int(params, "InstanceId")
        _project_env(params)
        instance = self._model.instance(instance_id)
        self._visible(instance.workspace_id)
        return envelope(instance_data(instance, self._model.node(instance.node_id)))

    def _list_instances(self, params: Params) -> dict[str, Any]:
        workspace = self._visible(_required_int(params, "ProjectId"))
        _project_env(params)
        number, size = _page(params)
        matches = [i for i in self._model.instances.values() if i.workspace_id == workspace.id]
        matches = [i for i in matches if self._matches(i, params)]
        if params.get("OrderBy", "INSTANCE_ID_DESC") == "CREATE_TIME_DESC":
            matches.sort(key=lambda i: (i.create_time, i.id), reverse=True)
        else:
            matches.sort(key=lambda i: i.id, reverse=True)
        page = matches[(number - 1) * size : number * size]
        entries = [instance_data(i, self._model.node(i.node_id)) for i in page]
        return envelope(
            {"PageNumber": number, "PageSize": size, "TotalCount": len(matches), "Instances": entries}
        )

    def _matches(self, instance: Instance, params: Params) -> bool:
        node = self._model.node(instance.node_id)
        checks = [
            ("NodeId", lambda v: instance.node_id == _as_int("NodeId", v)),
            ("NodeName", lambda v: node.name == v),
            ("DagId", lambda v: instance.dag_id == _as_int("DagId", v)),
            ("Bizdate", lambda v: instance.bizdate == business_date_ms(v)),
            ("BeginBizdate", lambda v: instance.bizdate >= business_date_ms(v)),
            ("EndBizdate", lambda v: instance.bizdate <= business_date_ms(v)),
            ("Owner", lambda v: instance.owner == v),
            ("ProgramType", lambda v: node.program_type == v),
            ("Status", lambda v: instance.status == parse_status(v)),
        ]
        return all(test(params[name]) for name, test in checks if params.get(name))

    def _get_node(self, params: Params) -> dict[str, Any]:
        node = self._model.node(_required_int(params, "NodeId"))
        _project_env(params)
        self._visible(node.workspace_id)
        return envelope(node_data(node))

    def _get_project(self, params: Params) -> dict[str, Any]:
        workspace = self._workspace_by_id_or_identifier(params)
        return {"Success": True, "HttpStatusCode": 200, "Data": project_data(workspace)}

    def _list_projects(self, params: Params) -> dict[str, Any]:
        number, size = _page(params)
        tags = json.loads(params["Tags"]) if params.get("Tags") else []
        if tags:
            # The emulator's workspaces carry no tags, so a tag filter matches none of them.
            visible: list[Workspace] = []
        else:
            visible = sorted((w for w in self._model.workspaces.values() if w.visible), key=lambda w: w.id)
        page = visible[(number - 1) * size : number * size]
        return {
            "PageResult": {
                "PageNumber": number,
                "PageSize": size,
                "TotalCount": len(visible),
                "ProjectList": [project_list_entry(w) for w in page],
            }
        }

    def _get_file(self, params: Params) -> dict[str, Any]:
        workspace = self._workspace_by_id_or_identifier(params)
        file_id = _optional_int(params, "FileId")
        node_id = _optional_int(params, "NodeId")
        if file_id is None and node_id is None:
            _required(params, "FileId")
        if file_id is None:
            node = self._model.node(node_id or 0)
            found = [f for f in self._model.files.values() if f.node_id == node.id]
            if not found and node.file_id is None:
                raise EmulatorError(f"The node {node_id} has no file.", code="Invalid.File.NotExists")
            data_file = found[0] if found else self._model.file(node.file_id or 0)
        else:
            data_file = self._model.file(file_id)
        if data_file.workspace_id != workspace.id:
            raise EmulatorError(
                f"The file {data_file.id} does not exist in workspace {workspace.id}.",
                code="Invalid.File.NotExists",
            )
        return envelope(file_data(data_file, self._model.nodes.get(data_file.node_id or -1)))

    def _get_meta_table_basic_info(self, params: Params) -> dict[str, Any]:
        guid = params.get("TableGuid")
        if not guid:
            database, name = params.get("DatabaseName"), params.get("TableName")
            if not (database and name):
                _required(params, "TableGuid")
            guid = f"odps.{database}.{name}"
        table = self._model.tables.get(guid)
        if table is None:
            raise EmulatorError(f"The table {guid!r} does not exist.", code="Invalid.Table.NotExists")
        workspace = self._visible(table.workspace_id)
        return envelope(table_data(table, workspace))

    def _get_ide_event_detail(self, params: Params) -> dict[str, Any]:
        message_id = _required(params, "MessageId")
        workspace = self._visible(_required_int(params, "ProjectId"))
        detail = self._model.event_details.get(message_id)
        if detail is None or detail["workspace_id"] != workspace.id:
            raise EmulatorError(
                f"The message {message_id!r} is not a DataStudio extension event of "
                f"workspace {workspace.id}.",
                code="Invalid.Message.NotExists",
            )
        return {"EventDetail": detail["EventDetail"]}

    def _verdict(self, params: Params, *, action: str, tip_field: str) -> None:
        verdict = Verdict(
            message_id=_required(params, "MessageId"),
            extension_code=_required(params, "ExtensionCode"),
            check_result=_required(params, "CheckResult"),
            tip=params.get(tip_field, ""),
            action=action,
        )
        waiting = self._model.operations.get(verdict.message_id)
        if waiting is not None and waiting.workspace_id is not None:
            self._visible(waiting.workspace_id)
        self._model.record_verdict(verdict)

    def _update_ide_event_result(self, params: Params) -> dict[str, Any]:
        self._verdict(params, action="UpdateIDEEventResult", tip_field="CheckResultTip")
        return {}

    def _update_workbench_event_result(self, params: Params) -> dict[str, Any]:
        self._verdict(params, action="UpdateWorkbenchEventResult", tip_field="CheckResultTip")
        return {"Success": True}

    def _callback_extension(self, params: Params) -> dict[str, Any]:
        self._verdict(params, action="CallbackExtension", tip_field="CheckMessage")
        return {"Success": "true"}


__all__ = ["API_VERSION", "STATUS_NAMES", "OpenApi", "envelope", "error_body"]
