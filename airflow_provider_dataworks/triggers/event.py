"""The deferrable trigger that waits for a DataWorks event matching a filter."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from datetime import datetime
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_dataworks.exceptions import DataWorksError
from airflow_provider_dataworks.filters import EventFilter
from airflow_provider_dataworks.hooks.dataworks import DataWorksHook
from airflow_provider_dataworks.triggers.reader import to_epoch_ms
from airflow_provider_dataworks.triggers.stream import subscribe


class DataWorksEventTrigger(BaseTrigger):
    """
    Wait until a DataWorks event matching ``event_filter`` arrives on Kafka, then fire once.

    Reading starts at ``start_time``: for every partition, the first record at or after that time.
    All triggers of one connection and topic in a triggerer process share one Kafka consumer (see
    :mod:`airflow_provider_dataworks.triggers.stream`). No consumer-group membership is held and no
    offset is committed, so restarting a trigger (a triggerer restart, a retry) reads the same
    records again and misses none.

    The payload is JSON-safe: ``{"status": "matched", "event": {...}, "record": {"topic",
    "partition", "offset", "timestamp", "timestamp_iso"}}``, or ``{"status": "error", "message"}``
    when Kafka fails in a way waiting will not fix.

    .. note::
        This trigger is for deferred tasks only, so it is a plain ``BaseTrigger``: an ``AssetWatcher``
        refuses it when the DAG is parsed. It fires once and commits nothing; a watcher restarted by
        the triggerer would read again from the same start time and schedule the same event twice,
        or from the end of the topic and miss events. Event-driven DAGs use
        :class:`~airflow_provider_dataworks.triggers.asset.DataWorksAssetEventTrigger`, which commits
        consumer-group offsets once Airflow has stored each asset event.

    :param dataworks_conn_id: the ``dataworks`` connection (its id only: no credentials are stored
        with the trigger).
    :param event_filter: which events to wait for, as an :class:`EventFilter` or its dict.
    :param topic: the Kafka topic; defaults to the connection's topic.
    :param start_time: where to start reading (datetime, ISO text or epoch ms); ``None`` starts at
        the end of the topic when the trigger starts.
    """

    def __init__(
        self,
        *,
        dataworks_conn_id: str = DataWorksHook.default_conn_name,
        event_filter: EventFilter | Mapping[str, Any] | None = None,
        topic: str | None = None,
        start_time: datetime | str | int | None = None,
    ) -> None:
        super().__init__()
        self.dataworks_conn_id = dataworks_conn_id
        self.event_filter = EventFilter.from_dict(event_filter)
        self.topic = topic
        self.start_time = to_epoch_ms(start_time)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """Return the classpath and the JSON-safe, deterministic kwargs that rebuild this trigger."""
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "dataworks_conn_id": self.dataworks_conn_id,
                "event_filter": self.event_filter.to_dict(),
                "topic": self.topic,
                "start_time": self.start_time,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Read from ``start_time`` on and yield the first matching event."""
        subscription = None
        try:
            settings = await DataWorksHook.aget_settings(self.dataworks_conn_id)
            hook = DataWorksHook(self.dataworks_conn_id, settings=settings)
            topic = settings.require_topic(self.dataworks_conn_id, self.topic)
            subscription = await subscribe(hook, topic, self.event_filter, self.start_time)
            self.log.info(
                "Waiting for DataWorks events on topic %s matching %s from %s",
                topic,
                self.event_filter.to_dict(),
                self.start_time,
            )

            item = None
            while item is None:
                item = await subscription.next()
            self.log.info(
                "Matched DataWorks event %s (%s) at topic %s partition %d offset %d",
                item.event.message_id,
                item.event.event_type,
                item.record.topic,
                item.record.partition,
                item.record.offset,
            )
            yield TriggerEvent(item.to_payload())
        except DataWorksError as error:
            self.log.error("Stopped waiting for DataWorks events: %s", error)
            yield TriggerEvent({"status": "error", "message": str(error)})
        finally:
            if subscription is not None:
                subscription.close()
