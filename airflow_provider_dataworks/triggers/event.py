"""The deferrable trigger that waits for a DataWorks event matching a filter."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any, TypeVar

from airflow.triggers.base import BaseEventTrigger, TriggerEvent

from airflow_provider_dataworks.exceptions import DataWorksError
from airflow_provider_dataworks.filters import EventFilter
from airflow_provider_dataworks.hooks.dataworks import DataWorksHook
from airflow_provider_dataworks.triggers.reader import EventReader, to_epoch_ms

T = TypeVar("T")

# Kafka calls block; they run on this pool and never on the triggerer's event loop, nor on the
# one thread that asgiref's default sync_to_async shares with every other provider.
_KAFKA_EXECUTOR = ThreadPoolExecutor(max_workers=32, thread_name_prefix="dataworks-kafka")


async def run_blocking(function: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """Run a blocking Kafka or SDK call on the provider's own thread pool."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_KAFKA_EXECUTOR, functools.partial(function, *args, **kwargs))


class DataWorksEventTrigger(BaseEventTrigger):
    """
    Wait until a DataWorks event matching ``event_filter`` arrives on Kafka, then fire once.

    Reading starts at ``start_time``: for every partition, the first record at or after that time.
    The trigger holds no consumer-group membership and commits no offsets, so restarting it (a
    triggerer restart, a retry) reads the same records again and misses none.

    The payload is JSON-safe: ``{"status": "matched", "event": {...}, "record": {"topic",
    "partition", "offset", "timestamp", "timestamp_iso"}}``, or ``{"status": "error", "message"}``
    when Kafka fails in a way waiting will not fix.

    :param dataworks_conn_id: the ``dataworks`` connection (its id only: no credentials are stored
        with the trigger).
    :param event_filter: which events to wait for, as an :class:`EventFilter` or its dict.
    :param topic: the Kafka topic; defaults to the connection's topic.
    :param start_time: where to start reading (datetime, ISO text or epoch ms); ``None`` starts at
        the end of the topic when the trigger starts.
    :param poll_timeout: seconds one Kafka poll may wait for records.
    """

    def __init__(
        self,
        *,
        dataworks_conn_id: str = DataWorksHook.default_conn_name,
        event_filter: EventFilter | Mapping[str, Any] | None = None,
        topic: str | None = None,
        start_time: datetime | str | int | None = None,
        poll_timeout: float = 1.0,
    ) -> None:
        super().__init__()
        self.dataworks_conn_id = dataworks_conn_id
        self.event_filter = EventFilter.from_dict(event_filter)
        self.topic = topic
        self.start_time = to_epoch_ms(start_time)
        self.poll_timeout = float(poll_timeout)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """Return the classpath and the JSON-safe, deterministic kwargs that rebuild this trigger."""
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "dataworks_conn_id": self.dataworks_conn_id,
                "event_filter": self.event_filter.to_dict(),
                "topic": self.topic,
                "start_time": self.start_time,
                "poll_timeout": self.poll_timeout,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Read from ``start_time`` on and yield the first matching event."""
        reader: EventReader | None = None
        try:
            settings = await DataWorksHook.aget_settings(self.dataworks_conn_id)
            hook = DataWorksHook(self.dataworks_conn_id, settings=settings)
            topic = settings.require_topic(self.dataworks_conn_id, self.topic)
            reader = await run_blocking(EventReader, hook, topic)
            starts = await run_blocking(reader.seek_to_time, self.start_time)
            self.log.info(
                "Waiting for DataWorks events on topic %s matching %s, from offsets %s",
                topic,
                self.event_filter.to_dict(),
                starts,
            )

            while True:
                received = await run_blocking(reader.read, timeout=self.poll_timeout)
                for item in received:
                    if self.event_filter.matches(item.event):
                        self.log.info(
                            "Matched DataWorks event %s (%s) at topic %s partition %d offset %d",
                            item.event.message_id,
                            item.event.event_type,
                            item.record.topic,
                            item.record.partition,
                            item.record.offset,
                        )
                        yield TriggerEvent(item.to_payload())
                        return
        except DataWorksError as error:
            self.log.error("Stopped waiting for DataWorks events: %s", error)
            yield TriggerEvent({"status": "error", "message": str(error)})
        finally:
            if reader is not None:
                await run_blocking(reader.close)
