"""Operators that answer DataWorks extension-point events (OK, FAIL, WARN) and read what they hold."""

from __future__ import annotations

import ast
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from airflow.sdk import BaseOperator, Context

from airflow_provider_dataworks.events import EVENT_TYPES, MalformedEventError, canonical_event_type, parse
from airflow_provider_dataworks.exceptions import DataWorksError
from airflow_provider_dataworks.hooks.dataworks import DataWorksHook

CheckResult = Literal["OK", "FAIL", "WARN"]
VerdictApi = Literal["UpdateIDEEventResult", "UpdateWorkbenchEventResult", "CallbackExtension"]

CHECK_RESULTS: tuple[str, ...] = ("OK", "FAIL", "WARN")
VERDICT_APIS: tuple[str, ...] = ("UpdateIDEEventResult", "UpdateWorkbenchEventResult", "CallbackExtension")

_DETAIL_KINDS = ("CommittedFile", "DeletedFile", "FileExecutionCommand", "TableModel")


@dataclass(frozen=True)
class ExtensionEventRef:
    """
    The extension-point event a verdict answers.

    :param message_id: the event's id (legacy ``messageId`` or CloudEvents ``id``).
    :param workspace_id: the workspace (project) the event came from.
    :param event_type: the event's code, when known (it decides which OpenAPI takes the verdict).
    :param extension_point: whether the event holds a DataWorks operation, when known.
    """

    message_id: str
    workspace_id: int | None = None
    event_type: str | None = None
    extension_point: bool | None = None

    @property
    def module(self) -> str | None:
        """The DataWorks module that emitted the event (``DataStudio``, ``OperationCenter``, ...)."""
        known = EVENT_TYPES.get(self.event_type or "")
        return known.module if known else None

    def describe(self) -> str:
        """Return ``message <id> (<event type>, workspace <id>)`` for logs and errors."""
        return (
            f"message {self.message_id!r} ({self.event_type or 'event type unknown'}, "
            f"workspace {self.workspace_id if self.workspace_id is not None else 'unknown'})"
        )


def extension_event_ref(
    event: Mapping[str, Any] | str | None = None,
    *,
    message_id: str | None = None,
    workspace_id: int | str | None = None,
    event_type: str | None = None,
) -> ExtensionEventRef:
    """
    Work out which event to answer, from an event or from its ids.

    :param event: the XCom of :class:`~airflow_provider_dataworks.sensors.event.DataWorksEventSensor`
        (``{"event": {...}, "record": {...}}``), an event dict (``DataWorksEvent.to_dict()``), a raw
        DataWorks envelope, or any of these as JSON text.
    :param message_id: the event's id, when no event is given.
    :param workspace_id: the event's workspace id, when no event is given.
    :param event_type: the event's type, when no event is given.
    :raises ValueError: nothing names a message id, or the event and the ids disagree.
    """
    found: dict[str, Any] = {}
    if event not in (None, ""):
        found = _event_fields(event)

    explicit = {
        "message_id": str(message_id).strip() if message_id not in (None, "") else None,
        "workspace_id": _optional_int(workspace_id, "workspace_id"),
        "event_type": canonical_event_type(event_type) if event_type else None,
    }
    for key, value in explicit.items():
        if value is None:
            continue
        if found.get(key) is not None and found[key] != value:
            raise ValueError(
                f"The event's {key} is {found[key]!r} but {key}={value!r} was given; pass one of them"
            )
        found[key] = value

    if not found.get("message_id"):
        raise ValueError(
            "No extension-point event to answer: pass event= (the DataWorksEventSensor's XCom) or "
            "message_id= with workspace_id="
        )
    return ExtensionEventRef(
        message_id=found["message_id"],
        workspace_id=found.get("workspace_id"),
        event_type=found.get("event_type"),
        extension_point=found.get("extension_point"),
    )


def _event_fields(event: Mapping[str, Any] | str) -> dict[str, Any]:
    data = _decode(event)
    if isinstance(data.get("event"), Mapping):
        data = dict(data["event"])
    if "message_id" not in data and ("messageBody" in data or "specversion" in data):
        try:
            data = parse(data).to_dict()
        except MalformedEventError as error:
            raise ValueError(f"event is not a DataWorks event: {error}") from None
    if "message_id" not in data:
        raise ValueError(
            "event has no message_id: pass the DataWorksEventSensor's XCom, an event dict or a raw envelope; "
            f"got keys {sorted(data)[:10]}"
        )
    return {
        "message_id": str(data["message_id"]),
        "workspace_id": _optional_int(data.get("workspace_id"), "workspace_id"),
        "event_type": canonical_event_type(str(data["event_type"])) if data.get("event_type") else None,
        "extension_point": data.get("extension_point"),
    }


def _decode(event: Mapping[str, Any] | str) -> dict[str, Any]:
    if isinstance(event, Mapping):
        return dict(event)
    text = str(event).strip()
    try:
        decoded = json.loads(text)
    except json.JSONDecodeError:
        # A Jinja template renders a dict XCom as Python text rather than JSON.
        try:
            decoded = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            raise ValueError(f"event is neither a dict nor JSON text: {text[:80]!r}") from None
    if not isinstance(decoded, Mapping):
        raise ValueError(f"event must be a dict, not {type(decoded).__name__}")
    return dict(decoded)


def _optional_int(value: Any, name: str) -> int | None:
    if value in (None, "") or isinstance(value, bool):
        return None
    try:
        return int(str(value).strip())
    except ValueError:
        raise ValueError(f"{name} must be an integer, not {value!r}") from None


def verdict_api(event_type: str | None) -> VerdictApi:
    """
    Return the OpenAPI operation that takes verdicts for an event type.

    DataStudio events go to ``UpdateIDEEventResult``, Operation Center events to
    ``UpdateWorkbenchEventResult``, everything else (and unknown types) to ``CallbackExtension``.
    """
    known = EVENT_TYPES.get(canonical_event_type(event_type)) if event_type else None
    module = known.module if known else None
    if module == "DataStudio":
        return "UpdateIDEEventResult"
    if module == "OperationCenter":
        return "UpdateWorkbenchEventResult"
    return "CallbackExtension"


def normalise_check_result(check_result: str, api: VerdictApi) -> str:
    """
    Return the check result as ``api`` spells it (``OK``/``FAIL``/``WARN``; ``Fail`` for Operation Center).

    :raises ValueError: for a result other than OK, FAIL or WARN, or WARN for Operation Center,
        whose API documents only OK and Fail.
    """
    result = str(check_result).strip().upper()
    if result not in CHECK_RESULTS:
        raise ValueError(f"check_result must be one of {', '.join(CHECK_RESULTS)}, not {check_result!r}")
    if api == "UpdateWorkbenchEventResult":
        if result == "WARN":
            raise ValueError(
                "Operation Center extension points take only OK or FAIL (UpdateWorkbenchEventResult "
                "documents no WARN); answer OK with the warning in the reason, or FAIL"
            )
        return "Fail" if result == "FAIL" else "OK"
    return result


def send_extension_verdict(
    hook: DataWorksHook,
    ref: ExtensionEventRef,
    *,
    check_result: str,
    reason: str = "",
    extension_code: str,
    api: VerdictApi | None = None,
) -> dict[str, Any]:
    """
    Report an extension's verdict on an extension-point event through the DataWorks OpenAPI.

    :param hook: the hook whose connection holds the AccessKey.
    :param ref: the event, from :func:`extension_event_ref`.
    :param check_result: ``OK`` lets the operation go on, ``FAIL`` stops it, ``WARN`` lets it go on
        with a warning (not for Operation Center events).
    :param reason: the text DataWorks shows the user; required for FAIL and WARN.
    :param extension_code: the extension's code from DataWorks Open Platform > Extensions.
    :param api: the OpenAPI operation; chosen from the event type by default (:func:`verdict_api`).
    :return: JSON-safe ``{"message_id", "workspace_id", "event_type", "api", "check_result",
        "reason", "extension_code", "request_id"}``.
    :raises ValueError: a bad check result, a missing reason, or an unknown ``api``.
    :raises DataWorksError: the event is known not to be an extension point.
    :raises DataWorksOpenAPIError: DataWorks refused the verdict.
    """
    from alibabacloud_dataworks_public20200518 import models

    chosen: VerdictApi = api or verdict_api(ref.event_type)
    if chosen not in VERDICT_APIS:
        raise ValueError(f"api must be one of {', '.join(VERDICT_APIS)}, not {chosen!r}")
    sent_result = normalise_check_result(check_result, chosen)
    reason = (reason or "").strip()
    if sent_result.upper() != "OK" and not reason:
        raise ValueError(f"A {sent_result.upper()} verdict needs a reason: DataWorks shows it to the user")
    if ref.extension_point is False:
        raise DataWorksError(
            f"DataWorks event {ref.describe()} is a regular event, not an extension point: no DataWorks "
            "operation waits for a verdict. Wait for extension-point events only, e.g. with "
            "DataWorksEventSensor(event_filter={'extension_point': True})"
        )

    client = hook.get_openapi_client()
    if chosen == "UpdateIDEEventResult":
        request: Any = models.UpdateIDEEventResultRequest(
            message_id=ref.message_id,
            extension_code=extension_code,
            check_result=sent_result,
            check_result_tip=reason,
        )
        response = hook.call_openapi(chosen, lambda: client.update_ideevent_result(request))
    elif chosen == "UpdateWorkbenchEventResult":
        request = models.UpdateWorkbenchEventResultRequest(
            message_id=ref.message_id,
            extension_code=extension_code,
            check_result=sent_result,
            check_result_tip=reason,
        )
        response = hook.call_openapi(chosen, lambda: client.update_workbench_event_result(request))
    else:
        request = models.CallbackExtensionRequest(
            message_id=ref.message_id,
            extension_code=extension_code,
            check_result=sent_result,
            check_message=reason,
        )
        response = hook.call_openapi(chosen, lambda: client.callback_extension(request))

    return {
        "message_id": ref.message_id,
        "workspace_id": ref.workspace_id,
        "event_type": ref.event_type,
        "api": chosen,
        "check_result": sent_result,
        "reason": reason,
        "extension_code": extension_code,
        "request_id": getattr(response.body, "request_id", None),
    }


def get_extension_event_detail(hook: DataWorksHook, ref: ExtensionEventRef) -> dict[str, Any]:
    """
    Fetch what a DataStudio extension-point event is about (``GetIDEEventDetail``).

    DataWorks keeps a snapshot for file commits, deploys, deletions and runs (the code) and for
    table commits and deploys (the table model).

    :return: JSON-safe ``{"message_id", "workspace_id", "event_type", "kind", "content", "detail"}``:
        ``kind`` names the filled part of the detail (``CommittedFile``, ``DeletedFile``,
        ``FileExecutionCommand`` or ``TableModel``), ``content`` is the code of a file event, and
        ``detail`` is the whole ``EventDetail`` as DataWorks names its fields.
    :raises ValueError: the workspace id is unknown, or the event is not a DataStudio event.
    :raises DataWorksOpenAPIError: DataWorks does not know the event or refused the call.
    """
    from alibabacloud_dataworks_public20200518 import models

    if ref.workspace_id is None:
        raise ValueError(f"GetIDEEventDetail needs the workspace of {ref.describe()}: pass workspace_id=")
    if ref.module not in (None, "DataStudio"):
        raise ValueError(
            f"GetIDEEventDetail knows DataStudio extension-point events only; {ref.describe()} comes from "
            f"{ref.module}"
        )

    client = hook.get_openapi_client()
    request = models.GetIDEEventDetailRequest(message_id=ref.message_id, project_id=ref.workspace_id)
    response = hook.call_openapi("GetIDEEventDetail", lambda: client.get_ideevent_detail(request))
    detail = response.body.event_detail.to_map() if response.body.event_detail else {}
    kind = next((name for name in _DETAIL_KINDS if detail.get(name)), None)
    content = detail[kind].get("Content") if kind else None
    return {
        "message_id": ref.message_id,
        "workspace_id": ref.workspace_id,
        "event_type": ref.event_type,
        "kind": kind,
        "content": content,
        "detail": detail,
    }


class _ExtensionEventOperator(BaseOperator):
    """Shared arguments of the operators that handle one extension-point event."""

    template_fields: Sequence[str] = ("event", "message_id", "workspace_id", "event_type")
    ui_color = "#ff6a00"

    def __init__(
        self,
        *,
        event: Mapping[str, Any] | str | None = None,
        message_id: str | None = None,
        workspace_id: int | str | None = None,
        event_type: str | None = None,
        dataworks_conn_id: str = DataWorksHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if event is None and message_id is None:
            raise ValueError(
                f"Task {kwargs.get('task_id')!r} needs event= (the DataWorksEventSensor's XCom) or "
                "message_id="
            )
        self.event = event
        self.message_id = message_id
        self.workspace_id = workspace_id
        self.event_type = event_type
        self.dataworks_conn_id = dataworks_conn_id

    def _ref(self) -> ExtensionEventRef:
        return extension_event_ref(
            self.event, message_id=self.message_id, workspace_id=self.workspace_id, event_type=self.event_type
        )


class DataWorksExtensionVerdictOperator(_ExtensionEventOperator):
    """
    Answer a DataWorks extension-point event: let the held operation go on (OK, WARN) or stop it (FAIL).

    The verdict goes through the OpenAPI operation of the module that emitted the event:
    ``UpdateIDEEventResult`` for DataStudio events (file and table commits, deploys, runs,
    deletions), ``UpdateWorkbenchEventResult`` for Operation Center events (which documents only
    ``OK`` and ``Fail``; WARN is refused), and ``CallbackExtension`` for the others.

    Returns ``{"message_id", "workspace_id", "event_type", "api", "check_result", "reason",
    "extension_code", "request_id"}``.

    .. seealso::
        ``example_dags/example_dataworks_extension_verdict.py``: wait for a deploy, check its
        code, answer.

    :param check_result: ``OK``, ``FAIL`` or ``WARN`` (templated).
    :param reason: what DataWorks shows the user; required for FAIL and WARN (templated).
    :param extension_code: the extension's code from DataWorks Open Platform > Extensions
        (templated); defaults to the connection's ``extension_code``.
    :param event: the DataWorksEventSensor's XCom (``sensor.output``), an event dict, or a raw
        envelope (templated).
    :param message_id: the event's id, instead of ``event`` (templated).
    :param workspace_id: the event's workspace id, instead of ``event`` (templated).
    :param event_type: the event's type, instead of ``event``; it picks the API (templated).
    :param api: force the OpenAPI operation (``UpdateIDEEventResult``,
        ``UpdateWorkbenchEventResult`` or ``CallbackExtension``).
    :param dataworks_conn_id: the ``dataworks`` connection.
    """

    template_fields: Sequence[str] = (
        *_ExtensionEventOperator.template_fields,
        "check_result",
        "reason",
        "extension_code",
    )

    def __init__(
        self,
        *,
        check_result: str,
        extension_code: str | None = None,
        reason: str = "",
        event: Mapping[str, Any] | str | None = None,
        message_id: str | None = None,
        workspace_id: int | str | None = None,
        event_type: str | None = None,
        api: VerdictApi | None = None,
        dataworks_conn_id: str = DataWorksHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            event=event,
            message_id=message_id,
            workspace_id=workspace_id,
            event_type=event_type,
            dataworks_conn_id=dataworks_conn_id,
            **kwargs,
        )
        if api is not None and api not in VERDICT_APIS:
            raise ValueError(f"api must be one of {', '.join(VERDICT_APIS)}, not {api!r}")
        if isinstance(check_result, str) and "{{" not in check_result:
            normalise_check_result(check_result, "UpdateIDEEventResult")
        self.check_result = check_result
        self.reason = reason
        self.extension_code = extension_code
        self.api = api

    def execute(self, context: Context) -> dict[str, Any]:
        ref = self._ref()
        hook = DataWorksHook(self.dataworks_conn_id)
        extension_code = str(self.extension_code or hook.settings.extension_code or "").strip()
        if not extension_code:
            raise ValueError(
                f"Task {self.task_id!r} has no extension code: pass extension_code= or set the "
                f"extension_code field of connection {self.dataworks_conn_id!r} (the code of your extension "
                "in DataWorks Open Platform > Extensions)"
            )
        result = send_extension_verdict(
            hook,
            ref,
            check_result=str(self.check_result),
            reason=str(self.reason or ""),
            extension_code=extension_code,
            api=self.api,
        )
        self.log.info(
            "Answered DataWorks extension-point %s with %s through %s (request id %s): %s",
            ref.describe(),
            result["check_result"],
            result["api"],
            result["request_id"],
            result["reason"] or "no reason given",
        )
        return result


class DataWorksGetExtensionEventDetailOperator(_ExtensionEventOperator):
    """
    Fetch what a DataStudio extension-point event is about: the code being committed, deployed,
    run or deleted, or the table model being committed or deployed (``GetIDEEventDetail``).

    Returns ``{"message_id", "workspace_id", "event_type", "kind", "content", "detail"}`` where
    ``content`` is the file's code (``None`` for table events) and ``detail`` the whole
    ``EventDetail`` with DataWorks' field names.

    :param event: the DataWorksEventSensor's XCom (``sensor.output``), an event dict, or a raw
        envelope (templated).
    :param message_id: the event's id, instead of ``event`` (templated).
    :param workspace_id: the event's workspace id, instead of ``event`` (templated).
    :param event_type: the event's type, instead of ``event`` (templated).
    :param dataworks_conn_id: the ``dataworks`` connection.
    """

    def execute(self, context: Context) -> dict[str, Any]:
        ref = self._ref()
        result = get_extension_event_detail(DataWorksHook(self.dataworks_conn_id), ref)
        self.log.info(
            "Fetched the %s detail of DataWorks extension-point %s", result["kind"] or "empty", ref.describe()
        )
        return result


__all__ = [
    "DataWorksExtensionVerdictOperator",
    "DataWorksGetExtensionEventDetailOperator",
    "ExtensionEventRef",
    "extension_event_ref",
    "get_extension_event_detail",
    "send_extension_verdict",
    "verdict_api",
]
