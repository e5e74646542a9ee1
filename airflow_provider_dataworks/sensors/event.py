"""The sensor that waits for a DataWorks event matching a filter."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

from airflow.providers.standard.triggers.temporal import DateTimeTrigger
from airflow.sdk import BaseSensorOperator, Context, PokeReturnValue
from airflow.sdk.exceptions import AirflowSensorTimeout

from airflow_provider_dataworks.exceptions import DataWorksError, DataWorksKafkaUnreachableError
from airflow_provider_dataworks.filters import EventFilter
from airflow_provider_dataworks.hooks.dataworks import DataWorksHook
from airflow_provider_dataworks.hooks.instances import epoch_ms_now
from airflow_provider_dataworks.triggers.event import DataWorksEventTrigger
from airflow_provider_dataworks.triggers.reader import EventReader, to_epoch_ms

# A poke reads what the topic held when it began, for at most this long, then returns.
_POKE_READ_SECONDS = 60.0
# A start time less than this ahead of the clock is read as "now" (clocks of hosts differ).
_FUTURE_TOLERANCE_MS = 1_000


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

    Where reading starts: in every partition, at the first record whose timestamp is at or after
    ``start_time`` (Kafka gets it in milliseconds since the epoch, whatever form it was given in).

    * A start time in the future: the task first waits until then (deferred on a timer, holding no
      Kafka consumer; in poke mode, pokes before it return at once), then waits for events from then
      on. An event published before the start time is not taken.
    * A start time older than the topic's retention: reading starts at the oldest record Kafka still
      keeps, and a warning names each partition where records after the start time may have been
      deleted, so lost.
    * The same event delivered twice (one message id at two offsets) ends the wait once: the first
      matching record is returned, later ones are not read.
    * Records that are no DataWorks event (not JSON, empty, larger than 1 MiB, an unknown envelope)
      are skipped with one warning each, naming topic, partition and offset.
    * Kafka brokers that stop answering while the task waits are waited for (logged when they stop
      and when they are back); brokers unreachable when reading starts fail the task after 15 s, so
      that a wrong host shows at once (task retries ride out an outage). A refused login, a failed
      TLS handshake, an unknown, refused or deleted topic fail the task with a message naming the
      cause and the fix.

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
    :param start_time: where to start reading: datetime (naive is UTC), ISO-8601 text, or epoch
        milliseconds (numbers below 10^11 are read as seconds); by default when the task instance
        started (templated).
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
        if start_ms > epoch_ms_now() + _FUTURE_TOLERANCE_MS:
            moment = datetime.fromtimestamp(start_ms / 1000, tz=timezone.utc)
            self.log.info("Start time %s is in the future; waiting for it before reading Kafka", moment)
            self.defer(
                trigger=DateTimeTrigger(moment=moment),
                method_name="execute_at_start_time",
                timeout=timedelta(seconds=self.timeout) if self.timeout else None,
            )
        self._defer_to_trigger(
            event_filter, start_ms, timedelta(seconds=self.timeout) if self.timeout else None
        )

    def execute_at_start_time(self, context: Context, event: Any = None) -> None:
        """Resume when a future start time has come, and wait for events from then on."""
        self._defer_to_trigger(
            self.build_filter(), self.start_time_ms(context), self._remaining_timeout(context)
        )

    def _defer_to_trigger(self, event_filter: EventFilter, start_ms: int, timeout: timedelta | None) -> None:
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
            timeout=timeout,
        )

    def _remaining_timeout(self, context: Context) -> timedelta | None:
        """Return what is left of ``timeout`` since the task instance started (kept across deferrals)."""
        if not self.timeout:
            return None
        started = getattr(context.get("ti"), "start_date", None)
        if started is None:
            return timedelta(seconds=self.timeout)
        left = self.timeout - (datetime.now(tz=timezone.utc) - started).total_seconds()
        if left <= 0:
            raise AirflowSensorTimeout(f"Sensor timed out: {self.timeout:.0f} s passed before its start time")
        return timedelta(seconds=left)

    def poke(self, context: Context) -> PokeReturnValue:
        """Read what the topic holds now, from where the last poke stopped, and look for a match."""
        event_filter = self.build_filter()
        if self._positions is None and self.start_time_ms(context) > epoch_ms_now() + _FUTURE_TOLERANCE_MS:
            return PokeReturnValue(is_done=False)
        try:
            return self._read_for_a_match(context, event_filter)
        except DataWorksKafkaUnreachableError as error:
            # The first poke proves the settings; later ones wait out brokers that went away.
            if self._positions is None:
                raise
            self.log.warning("Kafka cannot be reached; trying again at the next poke: %s", error)
            return PokeReturnValue(is_done=False)

    def _read_for_a_match(self, context: Context, event_filter: EventFilter) -> PokeReturnValue:
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
