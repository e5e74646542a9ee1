"""Asking the DataWorks OpenAPI about scheduled instances: by id, or by node and business date."""

from __future__ import annotations

import functools
from datetime import date, datetime, timezone
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, field_validator

from airflow_provider_dataworks.events import InstanceStatus

if TYPE_CHECKING:
    from airflow_provider_dataworks.hooks.dataworks import DataWorksHook

DEFAULT_TIMEZONE = "Asia/Shanghai"
"""The time zone DataWorks business dates and cycle times are counted in, unless the task says otherwise."""

_PAGE_SIZE = 100


class InstanceTarget(BaseModel):
    """
    Which instance(s) to wait for: one instance id, or a node's instances of one business date.

    :param instance_id: the instance id (event ``taskId``).
    :param workspace_id: the workspace (project) id, with ``node_id`` and ``business_date``.
    :param node_id: the node id.
    :param business_date: the business date, ``YYYY-MM-DD`` (usually the day before the run).
    :param cycle_time: for nodes that run several times a day, the scheduled time of one run,
        ``HH:MM`` or ``YYYY-MM-DD HH:MM[:SS]``; without it every instance of the date counts.
    :param timezone: the time zone of business dates and cycle times (DataWorks' region).
    """

    model_config = ConfigDict(frozen=True)

    instance_id: int | None = None
    workspace_id: int | None = None
    node_id: int | None = None
    business_date: date | None = None
    cycle_time: str | None = None
    timezone: str = DEFAULT_TIMEZONE

    @field_validator("business_date", mode="before")
    @classmethod
    def _date(cls, value: Any) -> Any:
        if isinstance(value, datetime):
            return value.date()
        if isinstance(value, str) and value.strip():
            return date.fromisoformat(value.strip()[:10])
        return value or None

    @field_validator("cycle_time", mode="before")
    @classmethod
    def _cycle_time(cls, value: Any) -> Any:
        if value in (None, ""):
            return None
        text = str(value).strip()
        clock = text[-8:] if len(text) > 8 else text
        parts = clock.split(":")
        if len(parts) not in (2, 3) or not all(part.isdigit() for part in parts):
            raise ValueError(f"cycle_time {value!r} must look like HH:MM or YYYY-MM-DD HH:MM[:SS]")
        return text

    def model_post_init(self, _context: Any) -> None:
        by_node = (self.workspace_id, self.node_id, self.business_date)
        if self.instance_id is None and None in by_node:
            raise ValueError(
                "name the instance by instance_id, or by workspace_id + node_id + business_date "
                f"(got workspace_id={self.workspace_id}, node_id={self.node_id}, "
                f"business_date={self.business_date})"
            )
        ZoneInfo(self.timezone)

    def describe(self) -> str:
        """Return how a person would name this target in a log line."""
        if self.instance_id is not None:
            return f"instance {self.instance_id}"
        cycle = f" cycle time {self.cycle_time}" if self.cycle_time else ""
        return (
            f"node {self.node_id} of workspace {self.workspace_id}, business date {self.business_date}{cycle}"
        )

    def accepts(self, instance: InstanceInfo) -> bool:
        """Return whether ``instance`` is one of the instances this target names."""
        if self.instance_id is not None:
            return instance.instance_id == self.instance_id
        if instance.node_id != self.node_id:
            return False
        if instance.business_date(self.timezone) != self.business_date:
            return False
        return self.cycle_time is None or _same_cycle(instance.cycle_datetime(self.timezone), self.cycle_time)


def _same_cycle(cycle: datetime | None, wanted: str) -> bool:
    if cycle is None:
        return False
    if len(wanted) > 8:
        return cycle.strftime("%Y-%m-%d %H:%M:%S").startswith(
            wanted if wanted.count(":") == 2 else wanted + ":"
        )
    return cycle.strftime("%H:%M:%S").startswith(wanted if wanted.count(":") == 2 else wanted + ":")


class InstanceInfo(BaseModel):
    """What the OpenAPI says about one instance."""

    model_config = ConfigDict(frozen=True)

    instance_id: int
    node_id: int | None = None
    node_name: str | None = None
    status: InstanceStatus | None = None
    bizdate: int | None = None
    cyc_time: int | None = None
    modify_time: int | None = None

    @field_validator("status", mode="before")
    @classmethod
    def _status(cls, value: Any) -> Any:
        return InstanceStatus.from_value(value) if value not in (None, "") else None

    def business_date(self, zone: str = DEFAULT_TIMEZONE) -> date | None:
        """Return the business date in ``zone`` (DataWorks sends it as epoch ms of its midnight)."""
        if self.bizdate is None:
            return None
        return datetime.fromtimestamp(self.bizdate / 1000, tz=ZoneInfo(zone)).date()

    def cycle_datetime(self, zone: str = DEFAULT_TIMEZONE) -> datetime | None:
        """Return the cycle (scheduled) time in ``zone``."""
        if self.cyc_time is None:
            return None
        return datetime.fromtimestamp(self.cyc_time / 1000, tz=ZoneInfo(zone))

    def to_dict(self, zone: str = DEFAULT_TIMEZONE) -> dict[str, Any]:
        """Return a JSON-safe summary (what the instance sensor pushes to XCom)."""
        business_date = self.business_date(zone)
        cycle = self.cycle_datetime(zone)
        return {
            "instance_id": self.instance_id,
            "node_id": self.node_id,
            "node_name": self.node_name,
            "status": self.status.value if self.status else None,
            "business_date": business_date.isoformat() if business_date else None,
            "cycle_time": cycle.isoformat() if cycle else None,
        }


def get_instance(hook: DataWorksHook, instance_id: int) -> InstanceInfo | None:
    """Return one instance, or ``None`` when DataWorks does not know it."""
    from alibabacloud_dataworks_public20200518 import models

    client = hook.get_openapi_client()
    request = models.GetInstanceRequest(instance_id=instance_id, project_env=hook.settings.project_env)
    response = hook.call_openapi("GetInstance", lambda: client.get_instance(request))
    data = response.body.data
    if data is None or data.instance_id is None:
        return None
    return _info(data)


def list_instances(hook: DataWorksHook, target: InstanceTarget) -> list[InstanceInfo]:
    """Return the instances ``target`` names, as the OpenAPI sees them now."""
    if target.instance_id is not None:
        found = get_instance(hook, target.instance_id)
        return [found] if found else []

    from alibabacloud_dataworks_public20200518 import models

    client = hook.get_openapi_client()
    assert target.business_date is not None
    instances: list[InstanceInfo] = []
    for page in range(1, 101):
        request = models.ListInstancesRequest(
            project_id=target.workspace_id,
            node_id=target.node_id,
            project_env=hook.settings.project_env,
            bizdate=f"{target.business_date.isoformat()} 00:00:00",
            page_number=page,
            page_size=_PAGE_SIZE,
        )
        response = hook.call_openapi("ListInstances", functools.partial(client.list_instances, request))
        data = response.body.data
        batch = [_info(item) for item in (data.instances or [])] if data else []
        instances.extend(item for item in batch if target.accepts(item))
        if len(batch) < _PAGE_SIZE:
            return instances
    return instances


def _info(data: Any) -> InstanceInfo:
    return InstanceInfo(
        instance_id=data.instance_id,
        node_id=data.node_id,
        node_name=data.node_name,
        status=data.status,
        bizdate=data.bizdate,
        cyc_time=data.cyc_time,
        modify_time=data.modify_time,
    )


def epoch_ms_now() -> int:
    """Return the current time in epoch milliseconds."""
    return int(datetime.now(tz=timezone.utc).timestamp() * 1000)


def judge(
    instances: list[InstanceInfo],
    *,
    target_statuses: frozenset[InstanceStatus],
    failure_statuses: frozenset[InstanceStatus],
) -> str:
    """
    Decide what a set of instances means for a waiting task.

    :return: ``"failure"`` when any instance is in a failure status, ``"success"`` when there is at
        least one instance and all are in a target status, else ``"waiting"``.
    """
    if any(instance.status in failure_statuses for instance in instances):
        return "failure"
    if instances and all(instance.status in target_statuses for instance in instances):
        return "success"
    return "waiting"
