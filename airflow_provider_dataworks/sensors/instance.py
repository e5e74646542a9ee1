"""The sensor that waits until a DataWorks instance (a node's run for a business date) succeeds."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import date, timedelta
from typing import Any

from airflow.sdk import BaseSensorOperator, Context, PokeReturnValue

from airflow_provider_dataworks.events import InstanceStatus
from airflow_provider_dataworks.exceptions import DataWorksError
from airflow_provider_dataworks.hooks.dataworks import DataWorksHook
from airflow_provider_dataworks.hooks.instances import (
    DEFAULT_TIMEZONE,
    InstanceInfo,
    InstanceTarget,
    epoch_ms_now,
    judge,
    list_instances,
)
from airflow_provider_dataworks.triggers.instance import DataWorksInstanceTrigger


class DataWorksInstanceFailedError(DataWorksError):
    """A DataWorks instance the task waits for reached a failure status."""


class DataWorksInstanceSensor(BaseSensorOperator):
    """
    Wait until a DataWorks instance reaches a target status (by default SUCCESS).

    The instance is named by ``instance_id``, or by ``workspace_id`` + ``node_id`` +
    ``business_date`` (and ``cycle_time`` for nodes that run several times a day; without it every
    instance of that date must succeed). The sensor asks the OpenAPI first: an instance that already
    succeeded ends the task at once, one that failed fails it. Otherwise it defers; the trigger reads
    status events from shortly before that question, and asks the OpenAPI again every
    ``recheck_interval`` as a safety net for events that never come.

    Reruns: the task follows the newest status it has seen. A SUCCESS releases the task even if
    DataWorks reruns the instance later; an instance already rerunning when the task starts is
    waited for until the rerun settles. A failure status fails the task at once (retries of the
    task ask again, so a rerun that succeeds lets a retry pass); leave ``FAILURE`` out of
    ``failure_statuses`` to keep waiting through DataWorks' automatic reruns instead.

    Faults: events are read from ``event_overlap`` before the first OpenAPI question (in epoch
    milliseconds, as Kafka wants them); if the topic's retention already deleted records from then,
    reading starts at the oldest record kept, with a warning, and the OpenAPI checks cover the gap.
    The same event delivered twice counts once (by message id). OpenAPI calls that get no answer
    within the connection's ``openapi_timeout_seconds``, are throttled or fail with a 5xx are
    retried with backoff, off the triggerer's event loop; a rejected AccessKey or a workspace the
    AccessKey cannot see fails the task with a message naming the fix.

    Returns as XCom ``{"instances": [{"instance_id", "node_id", "node_name", "status",
    "business_date", "cycle_time"}], "source": "openapi" | "event"}``.

    :param dataworks_conn_id: the ``dataworks`` connection.
    :param instance_id: the instance id (templated).
    :param workspace_id: the workspace (project) id (templated).
    :param node_id: the node id (templated).
    :param business_date: the business date, ``YYYY-MM-DD`` (templated, e.g. ``"{{ ds }}"``).
    :param cycle_time: ``HH:MM`` or ``YYYY-MM-DD HH:MM`` of one run of an hourly node (templated).
    :param timezone: the time zone of business dates and cycle times.
    :param target_statuses: statuses that end the wait successfully.
    :param failure_statuses: statuses that fail the task at once.
    :param recheck_interval: how often the waiting trigger asks the OpenAPI again.
    :param event_overlap: how far before the first OpenAPI question event reading starts, to cover
        clock differences between DataWorks and Airflow.
    :param topic: the Kafka topic; defaults to the connection's (templated).
    :param deferrable: defer to the triggerer (default), or poke the OpenAPI from the worker.
    """

    template_fields: Sequence[str] = (
        "instance_id",
        "workspace_id",
        "dataworks_node_id",
        "business_date",
        "cycle_time",
        "topic",
    )
    ui_color = "#ff6a00"

    def __init__(
        self,
        *,
        dataworks_conn_id: str = DataWorksHook.default_conn_name,
        instance_id: int | str | None = None,
        workspace_id: int | str | None = None,
        node_id: int | str | None = None,
        business_date: date | str | None = None,
        cycle_time: str | None = None,
        timezone: str = DEFAULT_TIMEZONE,
        target_statuses: Iterable[str | int] = ("SUCCESS",),
        failure_statuses: Iterable[str | int] = ("FAILURE",),
        recheck_interval: timedelta | float = timedelta(minutes=5),
        event_overlap: timedelta = timedelta(minutes=1),
        topic: str | None = None,
        deferrable: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.dataworks_conn_id = dataworks_conn_id
        self.instance_id = instance_id
        self.workspace_id = workspace_id
        # BaseOperator already has a node_id (its place in the DAG's graph).
        self.dataworks_node_id = node_id
        self.business_date = business_date
        self.cycle_time = cycle_time
        self.timezone = timezone
        self.target_statuses = frozenset(InstanceStatus.from_value(s) for s in target_statuses)
        self.failure_statuses = frozenset(InstanceStatus.from_value(s) for s in failure_statuses)
        if self.target_statuses & self.failure_statuses:
            raise ValueError(
                "target_statuses and failure_statuses overlap: "
                f"{sorted(s.value for s in self.target_statuses & self.failure_statuses)}"
            )
        self.recheck_interval = (
            recheck_interval.total_seconds()
            if isinstance(recheck_interval, timedelta)
            else float(recheck_interval)
        )
        self.event_overlap = event_overlap
        self.topic = topic
        self.deferrable = deferrable

    def build_target(self) -> InstanceTarget:
        """Return the instance(s) this task waits for, from the rendered arguments."""
        return InstanceTarget.model_validate(
            {
                "instance_id": _optional_int(self.instance_id),
                "workspace_id": _optional_int(self.workspace_id),
                "node_id": _optional_int(self.dataworks_node_id),
                "business_date": self.business_date,
                "cycle_time": self.cycle_time,
                "timezone": self.timezone,
            }
        )

    def _settle(
        self, target: InstanceTarget, instances: list[InstanceInfo], source: str
    ) -> dict[str, Any] | None:
        verdict = judge(
            instances, target_statuses=self.target_statuses, failure_statuses=self.failure_statuses
        )
        if verdict == "waiting":
            return None
        if verdict == "failure":
            raise DataWorksInstanceFailedError(_failure_message(target, instances, self.failure_statuses))
        self.log.info("%s reached %s (%s)", target.describe(), _statuses(instances), source)
        return {"instances": [i.to_dict(target.timezone) for i in instances], "source": source}

    def execute(self, context: Context) -> Any:
        target = self.build_target()
        hook = DataWorksHook(self.dataworks_conn_id)
        asked_at = epoch_ms_now()
        instances = list_instances(hook, target)
        self.log.info("OpenAPI says %s: %s", target.describe(), _statuses(instances) or "no instance yet")

        done = self._settle(target, instances, "openapi")
        if done is not None:
            return done
        if not self.deferrable:
            return super().execute(context)

        self.defer(
            trigger=DataWorksInstanceTrigger(
                dataworks_conn_id=self.dataworks_conn_id,
                target=target,
                target_statuses=[s.value for s in self.target_statuses],
                failure_statuses=[s.value for s in self.failure_statuses],
                start_time=asked_at - int(self.event_overlap.total_seconds() * 1000),
                recheck_interval=self.recheck_interval,
                topic=self.topic,
            ),
            method_name="execute_complete",
            timeout=timedelta(seconds=self.timeout) if self.timeout else None,
        )

    def poke(self, context: Context) -> PokeReturnValue:
        """Ask the OpenAPI (the non-deferrable mode needs no Kafka)."""
        target = self.build_target()
        done = self._settle(target, list_instances(DataWorksHook(self.dataworks_conn_id), target), "openapi")
        return PokeReturnValue(is_done=done is not None, xcom_value=done)

    def execute_complete(self, context: Context, event: Mapping[str, Any]) -> dict[str, Any]:
        """Return the instances as XCom, or fail with the trigger's message."""
        status = event.get("status")
        if status == "success":
            self.log.info("%s (%s)", event.get("message"), event.get("source"))
            return {"instances": list(event.get("instances") or []), "source": event.get("source")}
        if status == "failure":
            raise DataWorksInstanceFailedError(f"DataWorks instance failed: {event.get('message')}")
        raise DataWorksError(str(event.get("message") or f"Unexpected trigger event: {dict(event)!r}"))


def _optional_int(value: int | str | None) -> int | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return int(value)


def _statuses(instances: list[InstanceInfo]) -> str:
    return ", ".join(f"{i.instance_id}={i.status.value if i.status else 'unknown'}" for i in instances)


def _failure_message(
    target: InstanceTarget, instances: list[InstanceInfo], failure_statuses: frozenset[InstanceStatus]
) -> str:
    failed = [i for i in instances if i.status in failure_statuses]
    details = "; ".join(
        f"instance {i.instance_id} of node {i.node_id} ({i.node_name or 'unnamed'}), business date "
        f"{i.business_date(target.timezone)}, is {i.status.value if i.status else 'unknown'}"
        for i in failed
    )
    return f"DataWorks instance failed: {details}"
