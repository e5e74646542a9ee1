"""DataWorks events: one typed model for every envelope, the event catalogue and instance status codes."""

from __future__ import annotations

import enum
import json
import math
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

Envelope = Literal["legacy", "cloudevents", "function-compute", "message-type"]

MAX_EVENT_BYTES = 1024 * 1024
"""The largest record value :func:`parse` accepts. DataWorks events are a few KB; a bigger record
is not one of them, and would otherwise travel whole into trigger payloads, XCom and asset events."""


class MalformedEventError(ValueError):
    """A Kafka record that is not a DataWorks event in any known envelope."""


class InstanceStatus(str, enum.Enum):
    """
    Status of a DataWorks instance, named as the OpenAPI names it.

    Events carry integers and the OpenAPI carries names; :meth:`from_value` accepts both, and both
    ``0`` and ``1`` mean ``NOT_RUN`` because DataWorks' own documents disagree.
    """

    NOT_RUN = "NOT_RUN"
    WAIT_TIME = "WAIT_TIME"
    WAIT_RESOURCE = "WAIT_RESOURCE"
    RUNNING = "RUNNING"
    FAILURE = "FAILURE"
    SUCCESS = "SUCCESS"
    CHECKING = "CHECKING"
    CHECKING_CONDITION = "CHECKING_CONDITION"
    WAIT_TRIGGER = "WAIT_TRIGGER"

    @property
    def code(self) -> int:
        """The integer the newest event documents use for this status."""
        return _STATUS_CODES[self]

    @property
    def is_final(self) -> bool:
        """Whether the instance stays in this status until somebody reruns it."""
        return self in (InstanceStatus.SUCCESS, InstanceStatus.FAILURE)

    @classmethod
    def from_value(cls, value: int | str | InstanceStatus) -> InstanceStatus:
        """
        Read a status from an event integer, an OpenAPI name or a name with its code.

        :param value: ``6``, ``"6"``, ``"SUCCESS"``, ``"success"`` or ``"SUCCESS(6)"``.
        :raises ValueError: for a value that names no status.
        """
        if isinstance(value, InstanceStatus):
            return value
        if isinstance(value, bool):
            raise ValueError(f"{value!r} is not a DataWorks instance status")
        if isinstance(value, int):
            return _status_from_code(value)

        text = str(value).strip()
        if text.lstrip("-").isdigit():
            return _status_from_code(int(text))
        name = text.split("(", 1)[0].strip().upper().replace("-", "_")
        try:
            return cls(name)
        except ValueError:
            raise ValueError(
                f"{value!r} is not a DataWorks instance status; use one of "
                f"{', '.join(s.value for s in cls)} or its event code"
            ) from None


_STATUS_CODES = {
    InstanceStatus.NOT_RUN: 1,
    InstanceStatus.WAIT_TIME: 2,
    InstanceStatus.WAIT_RESOURCE: 3,
    InstanceStatus.RUNNING: 4,
    InstanceStatus.FAILURE: 5,
    InstanceStatus.SUCCESS: 6,
    InstanceStatus.CHECKING: 7,
    InstanceStatus.CHECKING_CONDITION: 8,
    InstanceStatus.WAIT_TRIGGER: 9,
}
_STATUSES_BY_CODE = {code: status for status, code in _STATUS_CODES.items()} | {0: InstanceStatus.NOT_RUN}


def _status_from_code(code: int) -> InstanceStatus:
    try:
        return _STATUSES_BY_CODE[code]
    except KeyError:
        raise ValueError(f"{code} is not a DataWorks instance status code (0-9)") from None


@dataclass(frozen=True)
class EventType:
    """One entry of the DataWorks event catalogue."""

    code: str
    eventbridge_type: str
    category: str
    module: str
    extension_point: bool

    @property
    def legacy_category(self) -> str:
        """The ``eventCategoryType`` the legacy shared topic uses for this event."""
        return _LEGACY_CATEGORIES.get(self.category, _kebab(self.category))


def _kebab(camel: str) -> str:
    out = []
    for index, char in enumerate(camel):
        if char.isupper() and index and not camel[index - 1].isupper():
            out.append("-")
        out.append(char.lower())
    return "".join(out)


_LEGACY_CATEGORIES = {"InstanceStatusChanges": "instance-status-change"}

_CATALOGUE_ROWS = (
    # module, event code, EventBridge type suffix (Category:Action), extension point
    ("DataStudio", "node-change-created", "NodeChange:NodeChangeCreated", False),
    ("DataStudio", "node-change-updated", "NodeChange:NodeChangeUpdated", False),
    ("DataStudio", "delete-file", "FileChange:DeleteFile", True),
    ("DataStudio", "commit-file", "FileChange:CommitFile", True),
    ("DataStudio", "deploy-file", "FileChange:DeployFile", True),
    ("DataStudio", "run-file", "FileChange:RunFile", True),
    ("DataStudio", "review-file", "FileChange:ReviewFile", False),
    ("DataStudio", "commit-table", "TableChange:CommitTable", True),
    ("DataStudio", "deploy-table", "TableChange:DeployTable", True),
    ("DataIntegration", "start-diJob", "NodeChange:StartDiJob", True),
    ("DataIntegration", "batch-start-diJob", "NodeChange:BatchStartDiJob", True),
    ("OperationCenter", "node-change-deleted", "NodeChange:NodeChangeDeleted", False),
    ("OperationCenter", "undeploy-node", "NodeChange:UndeployNode", True),
    ("OperationCenter", "freeze-node", "NodeChange:FreezeNode", True),
    ("OperationCenter", "unfreeze-node", "NodeChange:UnFreezeNode", True),
    ("OperationCenter", "backfill-data", "BackfillDataOperate:BackfillData", True),
    ("OperationCenter", "instance-status-changes", "InstanceStatusChanges:InstanceStatusChanges", False),
    ("OperationCenter", "freeze-instance", "InstanceChange:FreezeInstance", False),
    ("OperationCenter", "unfreeze-instance", "InstanceChange:UnfreezeInstance", False),
    ("OperationCenter", "kill-instance", "InstanceChange:KillInstance", False),
    ("OperationCenter", "rerun-instance", "InstanceChange:RerunInstance", False),
    ("OperationCenter", "set-instance-success", "InstanceChange:SetInstanceSuccess", False),
    (
        "OperationCenter",
        "delete-task-instance-dependencies",
        "InstanceChange:DeleteTaskInstanceDependencies",
        False,
    ),
    ("OperationCenter", "pre-freeze-instance", "InstanceChange:PreFreezeInstance", True),
    ("OperationCenter", "pre-unfreeze-instance", "InstanceChange:PreUnfreezeInstance", True),
    ("OperationCenter", "pre-rerun-instance", "InstanceChange:PreRerunInstance", True),
    ("OperationCenter", "pre-set-instance-success", "InstanceChange:PreSetInstanceSuccess", True),
    ("OperationCenter", "pre-kill-instance", "InstanceChange:PreKillInstance", True),
    (
        "OperationCenter",
        "expired-task-instances-deleted",
        "InstanceChange:ExpiredTaskInstancesDeleted",
        False,
    ),
    ("OperationCenter", "dag-status-changes", "DagStatusChanges:DagStatusChanges", False),
    ("OperationCenter", "workbench-monitor-alert", "MonitorAlert:WorkbenchMonitorAlert", False),
    ("SecurityCenter", "approval-change-created", "ApprovalChange:ApprovalChangeCreated", False),
    ("SecurityCenter", "approval-change-finished", "ApprovalChange:ApprovalChangeFinished", False),
    ("SecurityCenter", "approval-change-before-create", "ApprovalChange:ApprovalChangeBeforeCreate", True),
    ("DataQuality", "dqc-check-feedback-event", "DqcCheck:DqcCheckFeedbackEvent", False),
    ("DataQuality", "dqc-check-finished-event", "DqcCheck:DqcCheckFinishedEvent", False),
    ("DataQuality", "batch-create-data-quality-rules", "DqcCheck:BatchCreateDataQualityRules", True),
    ("DataQuality", "batch-update-data-quality-rules", "DqcCheck:BatchUpdateDataQualityRules", True),
    ("DataQuality", "batch-delete-data-quality-rules", "DqcCheck:BatchDeleteDataQualityRules", True),
    ("DataQuality", "update-data-quality-rule", "DqcCheck:UpdateDataQualityRule", True),
    (
        "DataQuality",
        "create-data-quality-evaluation-task",
        "DqcCheck:CreateDataQualityEvaluationTask",
        True,
    ),
    (
        "DataQuality",
        "update-data-quality-evaluation-task",
        "DqcCheck:UpdateDataQualityEvaluationTask",
        True,
    ),
    (
        "DataQuality",
        "clone-data-quality-evaluation-task",
        "DqcCheck:CloneDataQualityEvaluationTask",
        True,
    ),
    (
        "DataQuality",
        "batch-delete-data-quality-evaluation-tasks",
        "DqcCheck:BatchDeleteDataQualityEvaluationTasks",
        True,
    ),
    (
        "DataQuality",
        "create-data-quality-evaluation-task-notification",
        "DqcCheck:CreateDataQualityEvaluationTaskNotification",
        True,
    ),
    (
        "DataQuality",
        "update-data-quality-evaluation-task-notification",
        "DqcCheck:UpdateDataQualityEvaluationTaskNotification",
        True,
    ),
    (
        "DataQuality",
        "delete-data-quality-evaluation-task-notification",
        "DqcCheck:DeleteDataQualityEvaluationTaskNotification",
        True,
    ),
    ("Tenant", "delete-project", "ProjectChange:DeleteProject", True),
    ("Tenant", "project-deleted", "ProjectChange:ProjectDeleted", False),
    ("Tenant", "download-resources", "ResourcesDownload:DownloadResources", True),
    ("Tenant", "download-resources-execute", "ResourcesDownload:DownloadResourcesExecute", True),
    ("Tenant", "upload-data-to-table", "ResourcesUpload:UploadDataToTable", True),
)

EVENT_TYPES: Mapping[str, EventType] = {
    code: EventType(
        code=code,
        eventbridge_type=f"dataworks:{suffix}",
        category=suffix.split(":", 1)[0],
        module=module,
        extension_point=extension_point,
    )
    for module, code, suffix, extension_point in _CATALOGUE_ROWS
}
"""Every event DataWorks documents, by its ``eventCode``."""

INSTANCE_STATUS_CHANGES = "instance-status-changes"

_ALIASES: dict[str, str] = {
    "instance-status-change": INSTANCE_STATUS_CHANGES,
    "schedule_task": INSTANCE_STATUS_CHANGES,
    "file_submit_extension": "commit-file",
}
_ALIASES.update({event.eventbridge_type.lower(): code for code, event in EVENT_TYPES.items()})
_CODES_BY_LOWER = {code.lower(): code for code in EVENT_TYPES}


def canonical_event_type(name: str) -> str:
    """
    Return the catalogue's ``eventCode`` for any name DataWorks uses for an event type.

    Accepts the code itself (``deploy-file``), the EventBridge type
    (``dataworks:FileChange:DeployFile``) and the legacy spellings (``instance-status-change``).
    A name the catalogue does not know is returned stripped and unchanged, so that events DataWorks
    adds later still pass through.
    """
    text = name.strip()
    lowered = text.lower()
    if lowered in _CODES_BY_LOWER:
        return _CODES_BY_LOWER[lowered]
    return _ALIASES.get(lowered, text)


class DataWorksEvent(BaseModel):
    """
    One DataWorks event, whatever envelope carried it.

    Identifiers are read from the payload under the names each event family uses (``appId`` or
    ``projectId`` for the workspace, ``taskId`` for the instance); the whole payload and the raw
    message are kept, so nothing DataWorks sends is lost.
    """

    model_config = ConfigDict(frozen=True)

    message_id: str
    event_type: str
    category: str | None = None
    envelope: Envelope
    known: bool
    extension_point: bool = False
    time: datetime | None = None
    workspace_id: int | None = None
    tenant_id: str | None = None
    instance_ids: tuple[int, ...] = ()
    node_ids: tuple[int, ...] = ()
    dag_id: int | None = None
    status: InstanceStatus | None = None
    file_id: int | None = None
    file_name: str | None = None
    table_name: str | None = None
    operator: str | None = None
    extension_biz_id: str | None = None
    payload: dict[str, Any]
    raw: dict[str, Any]

    @property
    def instance_id(self) -> int | None:
        """The instance the event is about, when it is about exactly one."""
        return self.instance_ids[0] if len(self.instance_ids) == 1 else None

    @property
    def node_id(self) -> int | None:
        """The node the event is about, when it is about exactly one."""
        return self.node_ids[0] if len(self.node_ids) == 1 else None

    def to_dict(self) -> dict[str, Any]:
        """Return the event as a JSON-safe dict (what sensors push to XCom)."""
        return self.model_dump(mode="json")


def parse(value: bytes | str | Mapping[str, Any] | None) -> DataWorksEvent:
    """
    Parse a Kafka record value into a :class:`DataWorksEvent`.

    :param value: the record value: UTF-8 JSON bytes or text, or an already decoded object.
    :raises MalformedEventError: when the value is empty, larger than :data:`MAX_EVENT_BYTES`, not
        strict JSON, not a JSON object, no known envelope, or an envelope whose fields cannot be read.
    """
    message = _decode(value)

    try:
        if "specversion" in message and isinstance(message.get("data"), Mapping):
            return _from_cloudevent(message)
        if isinstance(message.get("messageBody"), Mapping):
            return _from_flat(message)
    except MalformedEventError:
        raise
    # Whatever a producer put into the fields, one bad record must not stop the reader that meets it.
    except (ValueError, TypeError, OverflowError, RecursionError) as error:
        raise MalformedEventError(
            f"a DataWorks envelope whose fields cannot be read ({type(error).__name__}: {_short(error)})"
        ) from None
    raise MalformedEventError(
        "not a DataWorks envelope: expected CloudEvents keys (specversion, type, data) or legacy keys "
        f"(messageId, eventType, messageBody); got keys {sorted(message)[:10]}"
    )


def _decode(value: bytes | str | Mapping[str, Any] | None) -> dict[str, Any]:
    if value is None:
        raise MalformedEventError("record has no value (a tombstone)")
    if isinstance(value, Mapping):
        return dict(value)

    size = len(value.encode("utf-8") if isinstance(value, str) else value)
    if size > MAX_EVENT_BYTES:
        raise MalformedEventError(
            f"value is {size} bytes, more than the {MAX_EVENT_BYTES} a DataWorks event can be"
        )
    try:
        text = value.decode("utf-8") if isinstance(value, bytes | bytearray) else value
        message = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise MalformedEventError(f"value is not UTF-8 JSON ({error})") from None
    except RecursionError:
        raise MalformedEventError("value is JSON nested too deeply to be a DataWorks event") from None
    if not isinstance(message, dict):
        raise MalformedEventError(f"value is JSON but not an object (a {type(message).__name__})")
    return message


def _refuse_constant(name: str) -> Any:
    # NaN and Infinity are not JSON; kept, they would break the JSON columns the payload ends up in.
    raise MalformedEventError(f"value is not strict JSON (it holds {name})")


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise MalformedEventError(f"value is not strict JSON (it holds {text}, beyond a float's range)")
    return number


def _short(error: BaseException, limit: int = 200) -> str:
    text = str(error)
    return text if len(text) <= limit else text[:limit] + "..."


def _from_cloudevent(message: dict[str, Any]) -> DataWorksEvent:
    data = dict(message["data"])
    type_name = str(message.get("type") or "")
    code = data.get("eventCode") or type_name
    parts = type_name.split(":")
    category = parts[1] if len(parts) == 3 else None
    return _build(
        message=message,
        payload=data,
        envelope="cloudevents",
        message_id=str(message.get("id") or ""),
        code=str(code),
        category=category,
        block_business=data.get("blockBusiness"),
        time=_parse_time(message.get("time")),
    )


def _from_flat(message: dict[str, Any]) -> DataWorksEvent:
    body = dict(message["messageBody"])
    if "messageType" in message and "eventType" not in message:
        code = str(message["messageType"])
        envelope: Envelope = "message-type"
    else:
        code = str(
            message.get("eventType") or body.get("eventCode") or message.get("eventCategoryType") or ""
        )
        envelope = "function-compute" if "extensionBizId" in message else "legacy"
    if code.lower() == "instance-status-change" or (not code and _looks_like_instance_status(body)):
        code = INSTANCE_STATUS_CHANGES
    return _build(
        message=message,
        payload=body,
        envelope=envelope,
        message_id=str(message.get("messageId") or ""),
        code=code,
        category=message.get("eventCategoryType"),
        block_business=message.get("blockBusiness", body.get("blockBusiness")),
        time=_parse_time(body.get("modifyTime") or body.get("operationTime") or body.get("timestamp")),
    )


def _looks_like_instance_status(body: Mapping[str, Any]) -> bool:
    return {"taskId", "status", "dagId"} <= body.keys()


def _build(
    *,
    message: dict[str, Any],
    payload: dict[str, Any],
    envelope: Envelope,
    message_id: str,
    code: str,
    category: str | None,
    block_business: Any,
    time: datetime | None,
) -> DataWorksEvent:
    event_type = canonical_event_type(code) if code else "unknown"
    catalogued = EVENT_TYPES.get(event_type)
    if block_business is None:
        extension_point = bool(catalogued and catalogued.extension_point and "extensionBizId" in payload)
    else:
        extension_point = bool(block_business)

    return DataWorksEvent(
        message_id=message_id or str(uuid.uuid5(uuid.NAMESPACE_OID, json.dumps(message, sort_keys=True))),
        event_type=event_type,
        category=category or (catalogued.category if catalogued else None),
        envelope=envelope,
        known=catalogued is not None,
        extension_point=extension_point,
        time=time,
        workspace_id=_as_int(_first(payload, "appId", "projectId", "rootNodeProjectId", "queryDwProjectId")),
        tenant_id=_as_str(payload.get("tenantId")),
        instance_ids=_ids(
            payload, single=("taskId", "taskInstanceId"), many=("taskIds",), event_type=event_type
        ),
        node_ids=_ids(payload, single=("nodeId", "rootNodeId"), many=("nodeIds",), event_type=event_type),
        dag_id=_as_int(payload.get("dagId")),
        status=_status(payload.get("status")) if event_type == INSTANCE_STATUS_CHANGES else None,
        file_id=_as_int(payload.get("fileId")),
        file_name=_as_str(payload.get("fileName")),
        table_name=_as_str(payload.get("tableName")),
        operator=_as_str(_first(payload, "operator", "operatorUid", "owner")),
        extension_biz_id=_as_str(message.get("extensionBizId") or payload.get("extensionBizId")),
        payload=payload,
        raw=message,
    )


_NON_INSTANCE_TASK_IDS = {"dqc-check-feedback-event", "dqc-check-finished-event"}


def _ids(
    payload: Mapping[str, Any], *, single: tuple[str, ...], many: tuple[str, ...], event_type: str
) -> tuple[int, ...]:
    if event_type in _NON_INSTANCE_TASK_IDS and "taskId" in single:
        return ()
    found: list[int] = []
    for key in single:
        value = _as_int(payload.get(key))
        if value is not None:
            found.append(value)
            break
    for key in many:
        values = payload.get(key)
        if isinstance(values, str):
            values = [part for part in values.split(",") if part.strip()]
        if isinstance(values, list):
            found.extend(v for v in (_as_int(item) for item in values) if v is not None)
    return tuple(dict.fromkeys(found))


def _first(payload: Mapping[str, Any], *keys: str) -> Any:
    for key in keys:
        if payload.get(key) not in (None, ""):
            return payload[key]
    return None


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value
    try:
        return int(str(value).strip())
    except ValueError:
        return None


def _as_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _status(value: Any) -> InstanceStatus | None:
    if value is None:
        return None
    try:
        return InstanceStatus.from_value(value)
    except ValueError:
        return None


def _parse_time(value: Any) -> datetime | None:
    if value in (None, "") or isinstance(value, bool):
        return None
    try:
        if isinstance(value, int | float):
            return datetime.fromtimestamp(value / 1000, tz=timezone.utc)
        text = str(value).strip()
        if text.isdigit():
            return datetime.fromtimestamp(int(text) / 1000, tz=timezone.utc)
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (ValueError, OverflowError, OSError):
        # A time no calendar holds (year 10000, epoch ms beyond the platform's range): unknown.
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
