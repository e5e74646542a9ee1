"""The sensor that waits for a DataWorks event matching a filter."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

from airflow.sdk import BaseSensorOperator, Context, PokeReturnValue

from airflow_provider_dataworks.exceptions import DataWorksError
from airflow_provider_dataworks.filters import EventFilter
from airflow_provider_dataworks.hooks.dataworks import DataWorksHook
from airflow_provider_dataworks.triggers.event import DataWorksEventTrigger
from airflow_provider_dataworks.triggers.reader import EventReader, to_epoch_ms

# A poke reads what the topic held when it began, for at most this long, then returns.
_POKE_READ_SECONDS = 60.0


class DataWorksEventSensor(BaseSensorOperator):
    """
    Wait until a DataWorks event matching a filter arrives on Kafka, and return it as XCom.

    By default the task defers: it holds no worker slot while it waits, and the triggerer reads
    Kafka. Reading starts at ``start_time`` (by default when this task instance started), so an
    event published after the task started but before the triggerer began reading is not missed.
    No consumer-group offsets are committed.

    The returned XCom is ``{"event": {...}, "record": {"topic", "partition", "offset", "timestamp",
    "timestamp_iso"}}``; ``event`` is :meth:`DataWorksEvent.to_dict` (typed fields, the payload and
    the raw message).

    .. note::
        Events carry no business date. To wait for the instance of one business date, use
        :class:`~airflow_provider_dataworks.sensors.instance.DataWorksInstanceSensor`, which also asks
        the OpenAPI.

    :param dataworks_conn_id: the ``dataworks`` connection.
    :param event_types: event codes, EventBridge types or legacy names to accept (templated).
    :param workspace_ids: workspace (project) ids to accept (templated).
    :param node_ids: node ids to accept (templated).
    :param instance_ids: instance ids to accept (templated).
    :param statuses: instance statuses to accept, by name or code (templated).
    :param event_filter: further conditions as an :class:`EventFilter` or its dict; the lists above
        are added to it.
    :param topic: the Kafka topic; defaults to the connection's (templated).
    :param start_time: where to start reading: datetime, ISO text or epoch ms (templated).
    :param deferrable: defer to the triggerer (default) or poke from the worker.
    :param poll_timeout: seconds one Kafka poll may wait.
    """

    template_fields: Sequence[str] = (
        "event_types",
        "workspace_ids",
        "node_ids",
        "instance_ids",
        "statuses",
        "topic",
        "start_time",
    )
    ui_color = "#ff6a00"

    def __init__(
        self,
        *,
        dataworks_conn_id: str = DataWorksHook.default_conn_name,
        event_types: Sequence[str] | str | None = None,
        workspace_ids: Sequence[int] | int | None = None,
        node_ids: Sequence[int] | int | None = None,
        instance_ids: Sequence[int] | int | None = None,
        statuses: Sequence[str | int] | str | int | None = None,
        event_filter: EventFilter | Mapping[str, Any] | None = None,
        topic: str | None = None,
        start_time: datetime | str | int | None = None,
        deferrable: bool = True,
        poll_timeout: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.dataworks_conn_id = dataworks_conn_id
        self.event_types = event_types
        self.workspace_ids = workspace_ids
        self.node_ids = node_ids
        self.instance_ids = instance_ids
        self.statuses = statuses
        self.event_filter = EventFilter.from_dict(event_filter)
        self.topic = topic
        self.start_time = start_time
        self.deferrable = deferrable
        self.poll_timeout = poll_timeout
        self._positions: dict[int, int] | None = None

    def build_filter(self) -> EventFilter:
        """Return the filter this task waits for: ``event_filter`` plus the list arguments."""
        return self.event_filter.merged(
            event_types=self.event_types,
            workspace_ids=self.workspace_ids,
            node_ids=self.node_ids,
            instance_ids=self.instance_ids,
            statuses=self.statuses,
        )

    def start_time_ms(self, context: Context) -> int:
        """Return where reading starts: ``start_time``, else when this task instance started."""
        explicit = to_epoch_ms(self.start_time)
        if explicit is not None:
            return explicit
        ti = context.get("ti")
        started = getattr(ti, "start_date", None) or datetime.now(tz=timezone.utc)
        return to_epoch_ms(started) or 0

    def execute(self, context: Context) -> Any:
        event_filter = self.build_filter()
        event_filter.check_predicate()
        if not self.deferrable:
            return super().execute(context)

        start_ms = self.start_time_ms(context)
        self.log.info(
            "Deferring until a DataWorks event matches %s (from %d ms)", event_filter.to_dict(), start_ms
        )
        self.defer(
            trigger=DataWorksEventTrigger(
                dataworks_conn_id=self.dataworks_conn_id,
                event_filter=event_filter,
                topic=self.topic,
                start_time=start_ms,
            ),
            method_name="execute_complete",
            timeout=timedelta(seconds=self.timeout) if self.timeout else None,
        )

    def poke(self, context: Context) -> PokeReturnValue:
        """Read what the topic holds now, from where the last poke stopped, and look for a match."""
        event_filter = self.build_filter()
        hook = DataWorksHook(self.dataworks_conn_id)
        reader = EventReader(hook, hook.settings.require_topic(self.dataworks_conn_id, self.topic))
        try:
            if self._positions is None:
                starts = reader.seek_to_time(self.start_time_ms(context))
                self.log.info("Reading DataWorks events from offsets %s", starts)
            else:
                reader.assign(self._positions)
            self._positions = reader.positions

            ends = reader.end_offsets()
            deadline = time.monotonic() + _POKE_READ_SECONDS
            while any(reader.positions[p] < end for p, end in ends.items()) and time.monotonic() < deadline:
                for item in reader.read(timeout=self.poll_timeout):
                    if event_filter.matches(item.event):
                        self.log.info(
                            "Matched DataWorks event %s (%s)", item.event.message_id, item.event.event_type
                        )
                        payload = item.to_payload()
                        return PokeReturnValue(is_done=True, xcom_value=_xcom(payload))
            return PokeReturnValue(is_done=False)
        finally:
            reader.close()

    def execute_complete(self, context: Context, event: Mapping[str, Any]) -> dict[str, Any]:
        """Return the matched event as XCom, or fail with the trigger's message."""
        if event.get("status") != "matched":
            raise DataWorksError(str(event.get("message") or f"Unexpected trigger event: {dict(event)!r}"))
        self.log.info("DataWorks event %s arrived", event["event"]["message_id"])
        return _xcom(event)


def _xcom(payload: Mapping[str, Any]) -> dict[str, Any]:
    return {"event": payload["event"], "record": payload["record"]}
