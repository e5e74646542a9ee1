"""The emulator's JSON control API under ``/_emulator/``: the Python control methods for other processes.

========  ===================================  =====================================================
method    path                                 body / answer
========  ===================================  =====================================================
GET       health                               ``{"status": "ok", "url", "topic", "envelope", ...}``
GET       state                                everything (workspaces ... faults)
GET       verdicts / operations / faults       lists
GET       published                            every record written (topic, key, envelope or raw)
GET       instances/<id>                       one instance
POST      workspaces                           ``{id, identifier?, name?, visible?}``
POST      workspaces/<id>/visibility           ``{visible}``
POST      nodes                                ``{id, workspace, name, program_type?, cron?, publish?}``
POST      files                                ``{workspace, name, id?, file_type?, content?, node?}``
POST      tables                               ``{workspace, name, maxcompute_project, columns?}``
POST      instances                            ``{node, business_date?, status?, id?, publish?}``
POST      instances/<id>/status                ``{status, publish?}``
POST      instances/<id>/play                  ``{statuses?, delay?, step?}``
POST      instances/<id>/rerun                 ``{outcome?, delay?, step?}``
POST      publish/instance                     ``{node, status, business_date?, workspace?}``
POST      publish/file                         ``{file, event_type?, extension?, change_type?}``
POST      publish/table                        ``{workspace, table, event_type?, maxcompute_project?}``
POST      publish/node                         ``{node, event_type?}``
POST      publish/raw                          ``{value}`` or ``{value_base64}``, ``key?``
POST      seed/demo                            seeds the demo workspace
POST      play/demo                            ``{delay?, step?}``
POST      subscription                         ``{enabled?, workspaces?, event_types?, consumer_groups?}``
POST      faults                               ``{action?, kind, count?, retry_after?, seconds?, ...}``
POST      extension-timeout                    ``{seconds, outcome?}`` (seconds null: wait forever)
DELETE    faults                               drops every fault
========  ===================================  =====================================================
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any

from airflow_provider_dataworks.local.emulator.model import EmulatorError

if TYPE_CHECKING:
    from airflow_provider_dataworks.local.emulator.app import DataWorksEmulator


def _pick(payload: dict[str, Any], *names: str) -> dict[str, Any]:
    return {name: payload[name] for name in names if name in payload}


def _need(payload: dict[str, Any], name: str, *aliases: str) -> Any:
    for key in (name, *aliases):
        if key in payload:
            return payload[key]
    raise EmulatorError(f"The body needs {name!r}.")


def dispatch(emulator: DataWorksEmulator, method: str, parts: list[str], payload: Any) -> tuple[int, Any]:
    """Run one control request and return ``(http_status, json_body)``.

    :raises EmulatorError: a bad request or an unknown object.
    """
    if not isinstance(payload, dict):
        raise EmulatorError("The body must be a JSON object.")
    route = "/".join(parts)
    if method == "GET":
        return 200, _get(emulator, parts, route)
    if method == "DELETE" and route == "faults":
        emulator.clear_faults()
        return 200, []
    if method != "POST":
        raise EmulatorError(f"{method} /_emulator/{route} is not supported.", http_status=405)
    if len(parts) == 3 and parts[0] == "instances":
        return 200, _instance_action(emulator, int(parts[1]), parts[2], payload)
    if len(parts) == 3 and parts[0] == "workspaces" and parts[2] == "visibility":
        return 200, emulator.set_workspace_visible(int(parts[1]), bool(_need(payload, "visible")))
    handler = _POSTS.get(route)
    if handler is None:
        raise EmulatorError(f"POST /_emulator/{route} is not a control endpoint.", http_status=404)
    return 200, handler(emulator, payload)


def _get(emulator: DataWorksEmulator, parts: list[str], route: str) -> Any:
    if route == "health":
        return {
            "status": "ok",
            "url": emulator.url,
            "topic": emulator.topic,
            "envelope": emulator.envelope,
            "access_key_id": emulator.access_key_id,
        }
    if len(parts) == 2 and parts[0] == "instances":
        return emulator.instance(int(parts[1]))
    getters = {
        "state": emulator.state,
        "verdicts": emulator.verdicts,
        "operations": emulator.operations,
        "faults": emulator.faults,
        "published": emulator.published,
        "subscription": emulator.subscription,
    }
    if route not in getters:
        raise EmulatorError(f"GET /_emulator/{route} is not a control endpoint.", http_status=404)
    return getters[route]()


def _instance_action(
    emulator: DataWorksEmulator, instance_id: int, action: str, payload: dict[str, Any]
) -> Any:
    if action == "status":
        return emulator.set_instance_status(
            instance_id, _need(payload, "status"), publish=bool(payload.get("publish", True))
        )
    if action == "play":
        statuses = emulator.play_instance(instance_id, **_pick(payload, "statuses", "delay", "step"))
        return {"instance": emulator.instance(instance_id), "statuses": statuses}
    if action == "rerun":
        statuses = emulator.rerun_instance(instance_id, **_pick(payload, "outcome", "delay", "step"))
        return {"instance": emulator.instance(instance_id), "statuses": statuses}
    raise EmulatorError(
        f"POST /_emulator/instances/{instance_id}/{action} is not a control endpoint.", http_status=404
    )


def _add_workspace(emulator: DataWorksEmulator, payload: dict[str, Any]) -> Any:
    return emulator.add_workspace(
        workspace_id=int(_need(payload, "id", "workspace_id")),
        **_pick(payload, "identifier", "name", "visible", "tenant_id"),
    )


def _add_node(emulator: DataWorksEmulator, payload: dict[str, Any]) -> Any:
    return emulator.add_node(
        node_id=int(_need(payload, "id", "node_id")),
        workspace_id=int(_need(payload, "workspace", "workspace_id")),
        name=str(_need(payload, "name")),
        **_pick(payload, "program_type", "cron", "owner", "file_id", "publish"),
    )


def _add_file(emulator: DataWorksEmulator, payload: dict[str, Any]) -> Any:
    extra = _pick(payload, "file_type", "owner", "content", "node_id")
    if "id" in payload or "file_id" in payload:
        extra["file_id"] = int(_need(payload, "id", "file_id"))
    if "node" in payload:
        extra["node_id"] = int(payload["node"])
    return emulator.add_file(
        workspace_id=int(_need(payload, "workspace", "workspace_id")),
        name=str(_need(payload, "name")),
        **extra,
    )


def _add_table(emulator: DataWorksEmulator, payload: dict[str, Any]) -> Any:
    return emulator.add_table(
        workspace_id=int(_need(payload, "workspace", "workspace_id")),
        name=str(_need(payload, "name")),
        maxcompute_project=str(_need(payload, "maxcompute_project")),
        **_pick(payload, "columns", "partition_keys", "comment"),
    )


def _add_instance(emulator: DataWorksEmulator, payload: dict[str, Any]) -> Any:
    extra = _pick(payload, "business_date", "status", "publish")
    if "id" in payload or "instance_id" in payload:
        extra["instance_id"] = int(_need(payload, "id", "instance_id"))
    return emulator.add_instance(node_id=int(_need(payload, "node", "node_id")), **extra)


def _publish_instance(emulator: DataWorksEmulator, payload: dict[str, Any]) -> Any:
    extra = _pick(payload, "business_date")
    if "workspace" in payload or "workspace_id" in payload:
        extra["workspace_id"] = int(_need(payload, "workspace", "workspace_id"))
    return emulator.publish_instance(
        node_id=int(_need(payload, "node", "node_id")), status=_need(payload, "status"), **extra
    )


def _publish_file(emulator: DataWorksEmulator, payload: dict[str, Any]) -> Any:
    message_id = emulator.publish_file_event(
        file_id=int(_need(payload, "file", "file_id")),
        **_pick(payload, "event_type", "extension", "change_type", "message_id"),
    )
    return {"message_id": message_id}


def _publish_table(emulator: DataWorksEmulator, payload: dict[str, Any]) -> Any:
    message_id = emulator.publish_table_event(
        workspace_id=int(_need(payload, "workspace", "workspace_id")),
        table_name=str(_need(payload, "table", "table_name")),
        **_pick(payload, "event_type", "maxcompute_project", "message_id"),
    )
    return {"message_id": message_id}


def _publish_node(emulator: DataWorksEmulator, payload: dict[str, Any]) -> Any:
    message_id = emulator.publish_node_event(
        node_id=int(_need(payload, "node", "node_id")), **_pick(payload, "event_type")
    )
    return {"message_id": message_id}


def _publish_raw(emulator: DataWorksEmulator, payload: dict[str, Any]) -> Any:
    if "value_base64" in payload:
        value: bytes | str = base64.b64decode(payload["value_base64"])
    else:
        value = str(_need(payload, "value"))
    emulator.publish_raw(value, key=payload.get("key"))
    return {"published": True}


def _subscription(emulator: DataWorksEmulator, payload: dict[str, Any]) -> Any:
    return emulator.set_subscription(
        **_pick(payload, "enabled", "workspaces", "event_types", "consumer_groups")
    )


def _fault(emulator: DataWorksEmulator, payload: dict[str, Any]) -> Any:
    return emulator.inject_fault(
        **_pick(payload, "action", "kind", "count", "retry_after", "seconds", "http_status", "code")
    )


_POSTS = {
    "workspaces": _add_workspace,
    "nodes": _add_node,
    "files": _add_file,
    "tables": _add_table,
    "instances": _add_instance,
    "publish/instance": _publish_instance,
    "publish/file": _publish_file,
    "publish/table": _publish_table,
    "publish/node": _publish_node,
    "publish/raw": _publish_raw,
    "seed/demo": lambda emulator, payload: emulator.seed_demo(),
    "play/demo": lambda emulator, payload: emulator.play_demo(**_pick(payload, "delay", "step")),
    "subscription": _subscription,
    "faults": _fault,
    "extension-timeout": lambda emulator, payload: emulator.set_extension_timeout(
        payload.get("seconds"), **_pick(payload, "outcome")
    ),
}
