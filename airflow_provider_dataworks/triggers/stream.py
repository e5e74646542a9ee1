"""One Kafka consumer per (connection, topic) per triggerer process, fanning events out to waiting triggers."""

from __future__ import annotations

import asyncio
import collections
import logging
import weakref
from collections.abc import Iterable
from typing import TYPE_CHECKING

from airflow_provider_dataworks.exceptions import DataWorksError
from airflow_provider_dataworks.triggers.executor import run_blocking
from airflow_provider_dataworks.triggers.reader import EventReader, ReceivedEvent

if TYPE_CHECKING:
    from airflow_provider_dataworks.filters import EventFilter
    from airflow_provider_dataworks.hooks.dataworks import DataWorksHook

log = logging.getLogger(__name__)

# How many recent events a stream keeps for triggers that join a little after their start time
# (a sensor's default start is the moment its task started, seconds before its trigger runs).
_RECENT_EVENTS = 20_000
_POLL_SECONDS = 0.2
_BATCH = 1_000

_streams: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[str, str], SharedEventStream]] = (
    weakref.WeakKeyDictionary()
)


class Subscription:
    """One waiting trigger's share of a stream: the matching events, in arrival order."""

    def __init__(self, stream: SharedEventStream, event_filter: EventFilter) -> None:
        self.stream = stream
        self.event_filter = event_filter
        self._queue: asyncio.Queue[ReceivedEvent | BaseException] = asyncio.Queue()
        self._seen: set[tuple[int, int]] = set()
        self._held: list[ReceivedEvent] | None = None
        self.closed = False

    def offer(self, item: ReceivedEvent) -> None:
        """Queue ``item`` if it passes this subscription's filter (called by the stream)."""
        key = (item.record.partition, item.record.offset)
        if key in self._seen or not self.event_filter.matches(item.event):
            return
        self._seen.add(key)
        if self._held is not None:
            self._held.append(item)
        else:
            self._queue.put_nowait(item)

    def hold(self) -> None:
        """Keep live events aside while older ones are caught up, so they arrive in order."""
        self._held = []

    def release(self) -> None:
        """Queue the live events kept aside by :meth:`hold`."""
        held, self._held = self._held or [], None
        for item in held:
            self._queue.put_nowait(item)

    def fail(self, error: BaseException) -> None:
        """Hand a stream-wide error to the waiting trigger."""
        self._queue.put_nowait(error)

    async def next(self, timeout: float | None = None) -> ReceivedEvent | None:
        """
        Return the next matching event, or ``None`` when ``timeout`` seconds pass without one.

        :raises DataWorksError: when the stream failed (credentials, TLS, topic deleted).
        """
        try:
            item = await asyncio.wait_for(self._queue.get(), timeout)
        except TimeoutError:
            return None
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        """Leave the stream; the last subscription to leave stops its consumer."""
        if not self.closed:
            self.closed = True
            self.stream.leave(self)


class _Index:
    """Subscriptions by the most selective field of their filter, so an event meets only likely takers."""

    _FIELDS = ("instance_ids", "node_ids", "file_ids", "workspace_ids", "event_types")

    def __init__(self) -> None:
        self._by_field: dict[str, dict[object, set[Subscription]]] = {f: {} for f in self._FIELDS}
        self._everything: set[Subscription] = set()

    def _slot(self, subscription: Subscription) -> tuple[str | None, tuple[object, ...]]:
        for field in self._FIELDS:
            values = getattr(subscription.event_filter, field)
            if values:
                return field, tuple(values)
        return None, ()

    def add(self, subscription: Subscription) -> None:
        field, values = self._slot(subscription)
        if field is None:
            self._everything.add(subscription)
            return
        for value in values:
            self._by_field[field].setdefault(value, set()).add(subscription)

    def remove(self, subscription: Subscription) -> None:
        field, values = self._slot(subscription)
        if field is None:
            self._everything.discard(subscription)
            return
        for value in values:
            bucket = self._by_field[field].get(value)
            if bucket is not None:
                bucket.discard(subscription)
                if not bucket:
                    del self._by_field[field][value]

    def candidates(self, item: ReceivedEvent) -> Iterable[Subscription]:
        event = item.event
        keys: dict[str, Iterable[object]] = {
            "instance_ids": event.instance_ids,
            "node_ids": event.node_ids,
            "file_ids": (event.file_id,),
            "workspace_ids": (event.workspace_id,),
            "event_types": (event.event_type,),
        }
        found: set[Subscription] = set(self._everything)
        for field, values in keys.items():
            index = self._by_field[field]
            if index:
                for value in values:
                    found.update(index.get(value, ()))
        return found


class SharedEventStream:
    """
    Read one topic once and hand every event to each subscription whose filter matches.

    The stream starts at the first subscriber's start time and keeps the most recent events, so a
    trigger whose start time the stream already covers replays them without touching Kafka. A
    trigger that needs older records catches up with a consumer of its own, up to where the
    stream stood when it joined, and then takes events from the stream.
    """

    def __init__(self, hook: DataWorksHook, topic: str) -> None:
        self.hook = hook
        self.topic = topic
        self._index = _Index()
        self._subscriptions: set[Subscription] = set()
        self._recent: collections.deque[ReceivedEvent] = collections.deque(maxlen=_RECENT_EVENTS)
        self._covered_since: int | None = None
        self._positions: dict[int, int] = {}
        self._reader: EventReader | None = None
        self._pump: asyncio.Task[None] | None = None
        self._started = False
        self._stopping = False
        self._ready = asyncio.Event()
        self._failure: BaseException | None = None

    @property
    def subscriber_count(self) -> int:
        """How many triggers share this stream now."""
        return len(self._subscriptions)

    async def _start(self, start_ms: int | None) -> None:
        try:
            self._reader = await run_blocking(EventReader, self.hook, self.topic)
            self._positions = await run_blocking(self._reader.seek_to_time, start_ms)
        except BaseException as error:
            self._failure = error
            self._ready.set()
            raise
        self._covered_since = start_ms
        log.info(
            "Reading topic %s for waiting triggers (connection %s) from offsets %s",
            self.topic,
            self.hook.dataworks_conn_id,
            self._positions,
        )
        self._pump = asyncio.get_running_loop().create_task(self._run(), name=f"dataworks-stream-{self.topic}")
        self._ready.set()

    async def join(self, event_filter: EventFilter, start_ms: int | None) -> Subscription:
        """Subscribe a trigger that waits for events matching ``event_filter`` from ``start_ms`` on."""
        subscription = Subscription(self, event_filter)
        if not self._started:
            self._started = True
            self._add(subscription)
            try:
                await self._start(start_ms)
            except BaseException:
                subscription.close()
                raise
            return subscription

        await self._ready.wait()
        if self._failure is not None:
            raise self._failure
        covered = self._covered_since
        replay = start_ms is None or (covered is not None and start_ms >= covered)
        join_positions = dict(self._positions)
        self._add(subscription)

        if replay:
            for item in self._recent:
                if start_ms is None or (item.record.timestamp or 0) >= start_ms:
                    subscription.offer(item)
            return subscription

        subscription.hold()
        try:
            await self._catch_up(subscription, start_ms, join_positions)
        except BaseException:
            subscription.close()
            raise
        subscription.release()
        return subscription

    def _add(self, subscription: Subscription) -> None:
        self._subscriptions.add(subscription)
        self._index.add(subscription)

    async def _catch_up(self, subscription: Subscription, start_ms: int | None, until: dict[int, int]) -> None:
        reader = await run_blocking(EventReader, self.hook, self.topic)
        try:
            starts = await run_blocking(reader.seek_to_time, start_ms)
            log.info(
                "Catching up on topic %s from offsets %s to %s before joining the shared reader",
                self.topic,
                starts,
                until,
            )
            while any(reader.positions.get(p, 0) < end for p, end in until.items()):
                for item in await run_blocking(reader.read, max_records=_BATCH, timeout=_POLL_SECONDS):
                    if item.record.offset < until.get(item.record.partition, 0):
                        subscription.offer(item)
        finally:
            await run_blocking(reader.close)

    def leave(self, subscription: Subscription) -> None:
        """Remove a subscription; the reader stops after its current poll when none is left."""
        if subscription in self._subscriptions:
            self._subscriptions.discard(subscription)
            self._index.remove(subscription)
        if not self._subscriptions:
            self._stopping = True
            self._unregister()

    def _unregister(self) -> None:
        streams = _streams.get(asyncio.get_running_loop(), {})
        if streams.get((self.hook.dataworks_conn_id, self.topic)) is self:
            del streams[(self.hook.dataworks_conn_id, self.topic)]

    async def _run(self) -> None:
        assert self._reader is not None
        reader = self._reader
        try:
            while not self._stopping:
                batch = await run_blocking(reader.read, max_records=_BATCH, timeout=_POLL_SECONDS)
                self._dispatch(batch)
        except DataWorksError as error:
            log.error("Shared reader of topic %s failed: %s", self.topic, error)
            self._failure = error
            for subscription in list(self._subscriptions):
                subscription.fail(error)
        finally:
            self._stopping = True
            self._unregister()
            self._reader = None
            await run_blocking(reader.close)
            log.info("Stopped reading topic %s: no trigger is waiting", self.topic)

    def _dispatch(self, batch: list[ReceivedEvent]) -> None:
        for item in batch:
            if len(self._recent) == self._recent.maxlen:
                evicted = self._recent[0]
                self._covered_since = (evicted.record.timestamp or 0) + 1
            self._recent.append(item)
            for subscription in self._index.candidates(item):
                subscription.offer(item)
        if self._reader is not None:
            self._positions = dict(self._reader.positions)


async def subscribe(
    hook: DataWorksHook, topic: str, event_filter: EventFilter, start_ms: int | None
) -> Subscription:
    """
    Join the shared stream of ``(connection, topic)`` in this process, starting it if needed.

    :param hook: a hook whose settings are already loaded (the stream never reads connections).
    :param topic: the Kafka topic.
    :param event_filter: which events the caller wants.
    :param start_ms: the caller's start time in epoch ms (``None``: from now on).
    """
    loop = asyncio.get_running_loop()
    streams = _streams.setdefault(loop, {})
    key = (hook.dataworks_conn_id, topic)
    stream = streams.get(key)
    if stream is None or stream._stopping:
        stream = SharedEventStream(hook, topic)
        streams[key] = stream
    return await stream.join(event_filter, start_ms)


def active_streams() -> dict[tuple[str, str], SharedEventStream]:
    """Return this event loop's streams (for tests and diagnostics)."""
    return dict(_streams.get(asyncio.get_running_loop(), {}))
