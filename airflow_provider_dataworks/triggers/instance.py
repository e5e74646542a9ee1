"""The trigger that waits for DataWorks instances to reach a status: events first, OpenAPI as safety net."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_dataworks.events import INSTANCE_STATUS_CHANGES, InstanceStatus
from airflow_provider_dataworks.exceptions import DataWorksError
from airflow_provider_dataworks.filters import EventFilter
from airflow_provider_dataworks.hooks.dataworks import DataWorksHook
from airflow_provider_dataworks.hooks.instances import (
    InstanceInfo,
    InstanceTarget,
    get_instance,
    judge,
    list_instances,
)
from airflow_provider_dataworks.triggers.executor import run_blocking
from airflow_provider_dataworks.triggers.reader import ReceivedEvent, to_epoch_ms
from airflow_provider_dataworks.triggers.stream import Subscription, subscribe


class DataWorksInstanceTrigger(BaseTrigger):
    """
    Fire when the named instances reach a target status, or one reaches a failure status.

    It reads instance status events from ``start_time`` on, and asks the OpenAPI when it starts
    and again every ``recheck_interval`` seconds, so an instance that finished while events were not
    flowing (subscription switched off, retention passed) is still seen. Events about an instance it
    has not met yet are checked against the target with one GetInstance call, since events carry no
    business date. An event counts once per message id, and an event older than what the OpenAPI
    already said about the instance is ignored.

    Payload: ``{"status": "success" | "failure" | "error", "instances": [...], "source": "event" |
    "openapi", "message": str}``.

    :param dataworks_conn_id: the ``dataworks`` connection.
    :param target: the :class:`InstanceTarget` (or its dict).
    :param target_statuses: statuses that end the wait successfully.
    :param failure_statuses: statuses that end it with a failure.
    :param start_time: where reading events starts (epoch ms, datetime or ISO text).
    :param recheck_interval: seconds between OpenAPI checks.
    :param topic: the Kafka topic; defaults to the connection's.
    """

    def __init__(
        self,
        *,
        dataworks_conn_id: str = DataWorksHook.default_conn_name,
        target: InstanceTarget | Mapping[str, Any],
        target_statuses: Iterable[str] = ("SUCCESS",),
        failure_statuses: Iterable[str] = ("FAILURE",),
        start_time: int | str | None = None,
        recheck_interval: float = 300.0,
        topic: str | None = None,
    ) -> None:
        super().__init__()
        self.dataworks_conn_id = dataworks_conn_id
        self.target = target if isinstance(target, InstanceTarget) else InstanceTarget(**target)
        self.target_statuses = frozenset(InstanceStatus.from_value(s) for s in target_statuses)
        self.failure_statuses = frozenset(InstanceStatus.from_value(s) for s in failure_statuses)
        self.start_time = to_epoch_ms(start_time)
        self.recheck_interval = float(recheck_interval)
        self.topic = topic

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """Return the classpath and JSON-safe kwargs (no credentials)."""
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "dataworks_conn_id": self.dataworks_conn_id,
                "target": self.target.model_dump(mode="json", exclude_defaults=True),
                "target_statuses": sorted(s.value for s in self.target_statuses),
                "failure_statuses": sorted(s.value for s in self.failure_statuses),
                "start_time": self.start_time,
                "recheck_interval": self.recheck_interval,
                "topic": self.topic,
            },
        )

    def _event_filter(self) -> EventFilter:
        if self.target.instance_id is not None:
            return EventFilter.from_dict(
                {"event_types": [INSTANCE_STATUS_CHANGES], "instance_ids": [self.target.instance_id]}
            )
        return EventFilter.from_dict(
            {
                "event_types": [INSTANCE_STATUS_CHANGES],
                "workspace_ids": [self.target.workspace_id],
                "node_ids": [self.target.node_id],
            }
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Wait on events and periodic OpenAPI checks until the instances settle."""
        subscription: Subscription | None = None
        hook: DataWorksHook | None = None
        try:
            settings = await DataWorksHook.aget_settings(self.dataworks_conn_id)
            hook = DataWorksHook(self.dataworks_conn_id, settings=settings)
            topic = settings.require_topic(self.dataworks_conn_id, self.topic)
            subscription = await subscribe(hook, topic, self._event_filter(), self.start_time)
            self.log.info(
                "Waiting for %s on topic %s from %s", self.target.describe(), topic, self.start_time
            )

            state = _InstanceState(self.target)
            state.replace(await run_blocking(list_instances, hook, self.target))
            next_check = time.monotonic() + self.recheck_interval
            source = "openapi"

            while True:
                verdict = judge(
                    state.instances(),
                    target_statuses=self.target_statuses,
                    failure_statuses=self.failure_statuses,
                )
                if verdict != "waiting":
                    yield self._finish(verdict, state.instances(), source)
                    return

                if time.monotonic() >= next_check:
                    self.log.info(
                        "Asking the DataWorks OpenAPI about %s (safety net)", self.target.describe()
                    )
                    state.replace(await run_blocking(list_instances, hook, self.target))
                    next_check = time.monotonic() + self.recheck_interval
                    source = "openapi"
                    continue

                item = await subscription.next(timeout=max(0.0, next_check - time.monotonic()))
                if item is not None and await self._apply(hook, state, item):
                    source = "event"
        except DataWorksError as error:
            self.log.error("Stopped waiting for %s: %s", self.target.describe(), error)
            yield TriggerEvent({"status": "error", "message": str(error), "instances": [], "source": "error"})
        finally:
            if hook is not None:
                hook.cancel_openapi_calls()
            if subscription is not None:
                subscription.close()

    async def _apply(self, hook: DataWorksHook, state: _InstanceState, item: ReceivedEvent) -> bool:
        event = item.event
        if not state.first_time(event.message_id) or event.instance_id is None or event.status is None:
            return False
        if not state.knows(event.instance_id):
            found = await run_blocking(get_instance, hook, event.instance_id)
            if not state.meet(event.instance_id, found):
                zone = self.target.timezone
                self.log.info(
                    "Ignoring events of instance %s: it is %s, not one of %s",
                    event.instance_id,
                    f"node {found.node_id}, business date {found.business_date(zone)}"
                    if found
                    else "unknown",
                    self.target.describe(),
                )
        changed = state.update(event.instance_id, event.status, _modify_time(event.payload))
        if changed:
            self.log.info(
                "Instance %s is %s (event %s at partition %d offset %d)",
                event.instance_id,
                event.status.value,
                event.message_id,
                item.record.partition,
                item.record.offset,
            )
        return changed

    def _finish(self, verdict: str, instances: list[InstanceInfo], source: str) -> TriggerEvent:
        zone = self.target.timezone
        summary = ", ".join(
            f"instance {i.instance_id} (node {i.node_id}, business date {i.business_date(zone)}) is "
            f"{i.status.value if i.status else 'unknown'}"
            for i in instances
        )
        self.log.info("%s settled with %s: %s", self.target.describe(), verdict, summary)
        return TriggerEvent(
            {
                "status": verdict,
                "instances": [i.to_dict(zone) for i in instances],
                "source": source,
                "message": f"{self.target.describe()}: {summary}",
            }
        )


def _modify_time(payload: Mapping[str, Any]) -> int | None:
    value = payload.get("modifyTime")
    return (
        int(value) if isinstance(value, int | float) or (isinstance(value, str) and value.isdigit()) else None
    )


class _InstanceState:
    """What the trigger knows about the target's instances, from the OpenAPI and from events."""

    def __init__(self, target: InstanceTarget) -> None:
        self._target = target
        self._instances: dict[int, InstanceInfo] = {}
        self._strangers: set[int] = set()
        self._seen_messages: set[str] = set()

    def instances(self) -> list[InstanceInfo]:
        return [self._instances[key] for key in sorted(self._instances)]

    def replace(self, instances: list[InstanceInfo]) -> None:
        self._instances = {instance.instance_id: instance for instance in instances}

    def first_time(self, message_id: str) -> bool:
        if message_id in self._seen_messages:
            return False
        self._seen_messages.add(message_id)
        return True

    def knows(self, instance_id: int) -> bool:
        return instance_id in self._instances or instance_id in self._strangers

    def meet(self, instance_id: int, found: InstanceInfo | None) -> bool:
        """Remember an instance met through an event; return whether it is one of the target's."""
        if found is not None and self._target.accepts(found):
            self._instances[instance_id] = found
            return True
        self._strangers.add(instance_id)
        return False

    def update(self, instance_id: int, status: InstanceStatus, modify_time: int | None) -> bool:
        known = self._instances.get(instance_id)
        if known is None:
            return False
        if modify_time is not None and known.modify_time is not None and modify_time < known.modify_time:
            return False
        self._instances[instance_id] = known.model_copy(update={"status": status, "modify_time": modify_time})
        return True
