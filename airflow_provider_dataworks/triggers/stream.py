"""One Kafka consumer per (connection, topic) per triggerer process, fanning events out to triggers."""

from __future__ import annotations

import asyncio
import collections
import logging
import pickle
import threading
import weakref
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Final, TypeVar

from airflow_provider_dataworks.events import parse
from airflow_provider_dataworks.exceptions import DataWorksError, DataWorksKafkaError
from airflow_provider_dataworks.triggers.executor import run_blocking, submit_blocking
from airflow_provider_dataworks.triggers.reader import EventReader, ReceivedEvent, RecordInfo

if TYPE_CHECKING:
    from airflow_provider_dataworks.filters import EventFilter
    from airflow_provider_dataworks.hooks.dataworks import DataWorksHook

log = logging.getLogger(__name__)

T = TypeVar("T")

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

    def __init__(
        self, stream: SharedEventStream, event_filter: EventFilter, start_ms: int | None = None
    ) -> None:
        self.stream = stream
        self.event_filter = event_filter
        self.start_ms = start_ms
        self._queue: asyncio.Queue[ReceivedEvent | BaseException] = asyncio.Queue()
        self._seen: set[tuple[int, int]] = set()
        self._held: list[ReceivedEvent] | None = None
        self.closed = False

    def offer(self, item: ReceivedEvent) -> None:
        """Queue ``item`` if it passes this subscription's filter (called by the stream)."""
        key = (item.record.partition, item.record.offset)
        # A stream that started earlier also carries records from before this trigger's start time.
        if self.start_ms is not None and (item.record.timestamp or 0) < self.start_ms:
            return
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

    def slot(self, subscription: Subscription) -> tuple[str | None, tuple[object, ...]]:
        """Return the filter field a subscription is indexed by, and its values (``None``: every event)."""
        for field in self._FIELDS:
            values = getattr(subscription.event_filter, field)
            if values:
                return field, tuple(values)
        return None, ()

    def add(self, subscription: Subscription) -> None:
        field, values = self.slot(subscription)
        if field is None:
            self._everything.add(subscription)
            return
        for value in values:
            self._by_field[field].setdefault(value, set()).add(subscription)

    def remove(self, subscription: Subscription) -> None:
        field, values = self.slot(subscription)
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
        """Return the subscriptions that may want ``item``: a superset of those whose filter matches."""
        event = item.event
        by_field = self._by_field
        found: list[Iterable[Subscription]] = []
        if self._everything:
            found.append(self._everything)
        # Most events name one instance, one node and so on: a few dict lookups per event, whatever
        # the number of subscriptions.
        if by_field["instance_ids"]:
            found.extend(by_field["instance_ids"].get(value, ()) for value in event.instance_ids)
        if by_field["node_ids"]:
            found.extend(by_field["node_ids"].get(value, ()) for value in event.node_ids)
        if by_field["file_ids"] and event.file_id is not None:
            found.append(by_field["file_ids"].get(event.file_id, ()))
        if by_field["workspace_ids"] and event.workspace_id is not None:
            found.append(by_field["workspace_ids"].get(event.workspace_id, ()))
        if by_field["event_types"]:
            found.append(by_field["event_types"].get(event.event_type, ()))
        found = [bucket for bucket in found if bucket]
        if not found:
            return ()
        if len(found) == 1:
            # Copied: a subscription may leave while the stream hands out this event.
            return list(found[0])
        return set().union(*found)


# A recently read event, kept compact for replay: a plain tuple of (sequence, record timestamp or -1,
# partition, offset, pickled envelope, instance ids, node ids, file id, workspace id, event type).
# Holding only bytes, numbers and strings, an exact tuple is untracked by the garbage collector and
# costs a few hundred bytes; thousands of parsed events would cost megabytes and long collections.
_Recent = tuple[int, int, int, int, bytes, tuple[int, ...], tuple[int, ...], int | None, int | None, str]
_SEQUENCE: Final = 0
_TIMESTAMP: Final = 1
_PARTITION: Final = 2
_OFFSET: Final = 3
_ENVELOPE: Final = 4
_INSTANCE_IDS: Final = 5
_NODE_IDS: Final = 6
_FIELD_POSITIONS = {"instance_ids": 5, "node_ids": 6, "file_ids": 7, "workspace_ids": 8, "event_types": 9}


def _compact(item: ReceivedEvent, sequence: int) -> _Recent:
    event, record = item.event, item.record
    return (
        sequence,
        record.timestamp if record.timestamp is not None else -1,
        record.partition,
        record.offset,
        pickle.dumps(event.raw, protocol=pickle.HIGHEST_PROTOCOL),
        event.instance_ids,
        event.node_ids,
        event.file_id,
        event.workspace_id,
        event.event_type,
    )


def _expand(recent: _Recent, topic: str) -> ReceivedEvent:
    # The envelope was parsed once already and was pickled by this process: it parses again.
    event = parse(pickle.loads(recent[_ENVELOPE]))
    timestamp = recent[_TIMESTAMP] if recent[_TIMESTAMP] >= 0 else None
    return ReceivedEvent(event, RecordInfo(topic, recent[_PARTITION], recent[_OFFSET], timestamp))


def _field_values(recent: _Recent, field: str) -> tuple[object, ...]:
    value = recent[_FIELD_POSITIONS[field]]
    return value if isinstance(value, tuple) else (value,)


class _RecentEvents:
    """
    The last ``size`` events a stream read, with instance and node ids indexed.

    A sensor that joins a busy stream replays the few recent events about its instance or node
    without looking at the thousands of others.
    """

    def __init__(self, size: int) -> None:
        self._size = size
        self._events: collections.deque[_Recent] = collections.deque()
        self._by_instance: dict[int, tuple[_Recent, ...]] = {}
        self._by_node: dict[int, tuple[_Recent, ...]] = {}
        self._sequence = 0

    def append(self, item: ReceivedEvent) -> int | None:
        """Keep ``item``; return the record timestamp of the event it pushed out (-1: none known)."""
        recent = _compact(item, self._sequence)
        self._sequence += 1
        self._events.append(recent)
        _index(self._by_instance, recent[_INSTANCE_IDS], recent)
        _index(self._by_node, recent[_NODE_IDS], recent)
        if len(self._events) <= self._size:
            return None

        oldest = self._events.popleft()
        _unindex(self._by_instance, oldest[_INSTANCE_IDS])
        _unindex(self._by_node, oldest[_NODE_IDS])
        return oldest[_TIMESTAMP]

    def matching(self, field: str | None, values: tuple[object, ...]) -> list[_Recent]:
        """Return the kept events whose ``field`` holds one of ``values`` (all for ``None``), oldest first."""
        if field is None:
            return list(self._events)
        index = {"instance_ids": self._by_instance, "node_ids": self._by_node}.get(field)
        if index is None:
            wanted = frozenset(values)
            return [recent for recent in self._events if not wanted.isdisjoint(_field_values(recent, field))]
        found = {
            recent[_SEQUENCE]: recent
            for value in values
            if isinstance(value, int)
            for recent in index.get(value, ())
        }
        return [found[sequence] for sequence in sorted(found)]


def _index(index: dict[int, tuple[_Recent, ...]], values: tuple[int, ...], recent: _Recent) -> None:
    for value in values:
        index[value] = (*index.get(value, ()), recent)


def _unindex(index: dict[int, tuple[_Recent, ...]], values: tuple[int, ...]) -> None:
    # Called for the oldest event, which is the first of every index entry it is in.
    for value in values:
        rest = index[value][1:]
        if rest:
            index[value] = rest
        else:
            del index[value]


class SharedEventStream:
    """
    Read one topic once and hand every event to each subscription whose filter matches.

    The stream starts at the first subscriber's start time and keeps the most recent events, so a
    trigger whose start time the stream already covers replays them without touching Kafka. A
    trigger that needs older records catches up with a consumer of its own, up to where the
    stream stood when it joined, and then takes events from the stream. A trigger without a start
    time takes events from the moment it joins. The stream stops when its last trigger leaves.
    """

    def __init__(self, hook: DataWorksHook, topic: str) -> None:
        self.hook = hook
        self.topic = topic
        self._index = _Index()
        self._subscriptions: set[Subscription] = set()
        self._joining = 0
        self._recent = _RecentEvents(_RECENT_EVENTS)
        self._covered_since: int | None = None
        self._positions: dict[int, int] = {}
        self._reader: EventReader | None = None
        # Reads, the catch-up and close run on pool threads; the lock keeps a close from racing a
        # read that a cancelled task left running.
        self._reader_lock = threading.Lock()
        self._pump: asyncio.Task[None] | None = None
        self._starting: asyncio.Task[None] | None = None
        self._stopping = False
        self._failure: BaseException | None = None

    @property
    def subscriber_count(self) -> int:
        """How many triggers share this stream now."""
        return len(self._subscriptions)

    @property
    def is_stopping(self) -> bool:
        """Whether the stream stops (or stopped) reading; new triggers then start a new stream."""
        return self._stopping

    async def _start(self, start_ms: int | None) -> None:
        try:
            self._reader = await run_blocking(EventReader, self.hook, self.topic)
            self._positions = await run_blocking(self._reader.seek_to_time, start_ms)
        except BaseException as error:
            self._failure = error
            self._stopping = True
            self._unregister()
            if self._reader is not None:
                await run_blocking(_locked, self._reader_lock, self._reader.close)
            raise
        self._covered_since = start_ms
        log.info(
            "Reading topic %s for waiting triggers (connection %s) from offsets %s",
            self.topic,
            self.hook.dataworks_conn_id,
            self._positions,
        )
        self._pump = asyncio.get_running_loop().create_task(
            self._run(), name=f"dataworks-stream-{self.topic}"
        )

    async def join(self, event_filter: EventFilter, start_ms: int | None) -> Subscription:
        """Subscribe a trigger that waits for events matching ``event_filter`` from ``start_ms`` on."""
        subscription = Subscription(self, event_filter, start_ms)
        first = self._starting is None
        if self._starting is None:
            # A task of its own: the first trigger may be cancelled while others wait for the start.
            self._starting = asyncio.get_running_loop().create_task(
                self._start(start_ms), name=f"dataworks-stream-start-{self.topic}"
            )
            self._starting.add_done_callback(_retrieve_exception)

        # Counted while it waits, so that the stream does not stop under it when the others leave.
        self._joining += 1
        try:
            await asyncio.shield(self._starting)
            if self._failure is not None:
                raise self._failure
            self._add(subscription)
        finally:
            self._joining -= 1
            if subscription not in self._subscriptions:
                self._stop_if_unused()
        if first:
            return subscription

        covered = self._covered_since
        if start_ms is None:
            return subscription
        if covered is not None and start_ms >= covered:
            self._replay(subscription, start_ms)
            return subscription

        join_positions = dict(self._positions)
        subscription.hold()
        try:
            await self._catch_up(subscription, start_ms, join_positions)
        except BaseException:
            subscription.close()
            raise
        subscription.release()
        return subscription

    def _replay(self, subscription: Subscription, start_ms: int) -> None:
        # Only the recent events of the subscription's index slot are parsed again.
        for recent in self._recent.matching(*self._index.slot(subscription)):
            if recent[_TIMESTAMP] >= start_ms:
                subscription.offer(_expand(recent, self.topic))

    def _add(self, subscription: Subscription) -> None:
        self._subscriptions.add(subscription)
        self._index.add(subscription)

    async def _catch_up(
        self, subscription: Subscription, start_ms: int | None, until: dict[int, int]
    ) -> None:
        reader = await _open_reader(self.hook, self.topic)
        lock = threading.Lock()
        try:
            starts = await run_blocking(_locked, lock, reader.seek_to_time, start_ms)
            log.info(
                "Catching up on topic %s from offsets %s to %s before joining the shared reader",
                self.topic,
                starts,
                until,
            )
            while any(reader.positions.get(p, 0) < end for p, end in until.items()):
                batch = await run_blocking(
                    _locked, lock, reader.read, max_records=_BATCH, timeout=_POLL_SECONDS
                )
                for item in batch:
                    if item.record.offset < until.get(item.record.partition, 0):
                        subscription.offer(item)
        finally:
            await run_blocking(_locked, lock, reader.close)

    def leave(self, subscription: Subscription) -> None:
        """Remove a subscription; the reader stops after its current poll when none is left."""
        if subscription in self._subscriptions:
            self._subscriptions.discard(subscription)
            self._index.remove(subscription)
        self._stop_if_unused()

    def _stop_if_unused(self) -> None:
        if not self._subscriptions and not self._joining and not self._stopping:
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
                self._dispatch(
                    await run_blocking(
                        _locked, self._reader_lock, reader.read, max_records=_BATCH, timeout=_POLL_SECONDS
                    )
                )
        except Exception as error:
            failure = (
                error
                if isinstance(error, DataWorksError)
                else DataWorksKafkaError(f"Reading topic {self.topic!r} failed unexpectedly: {error!r}")
            )
            log.error("Shared reader of topic %s failed: %s", self.topic, failure)
            self._failure = failure
            for subscription in list(self._subscriptions):
                subscription.fail(failure)
        finally:
            self._stopping = True
            self._unregister()
            self._reader = None
            await run_blocking(_locked, self._reader_lock, reader.close)
            log.info("Stopped reading topic %s (connection %s)", self.topic, self.hook.dataworks_conn_id)

    def _dispatch(self, batch: list[ReceivedEvent]) -> None:
        recent = self._recent
        for item in batch:
            pushed_out = recent.append(item)
            if pushed_out is not None:
                self._covered_since = pushed_out + 1
            for subscription in self._index.candidates(item):
                subscription.offer(item)
        if batch and self._reader is not None:
            self._positions = dict(self._reader.positions)


def _retrieve_exception(task: asyncio.Task[None]) -> None:
    # Every trigger waiting for the start gets the error; this only keeps asyncio from warning when
    # none is left to wait.
    if not task.cancelled():
        task.exception()


def _locked(lock: threading.Lock, function: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    with lock:
        return function(*args, **kwargs)


async def subscribe(
    hook: DataWorksHook, topic: str, event_filter: EventFilter, start_ms: int | None
) -> Subscription:
    """
    Join the shared stream of ``(connection, topic)`` in this process, starting it if needed.

    :param hook: a hook whose settings are already loaded (the stream never reads connections).
    :param topic: the Kafka topic.
    :param event_filter: which events the caller wants.
    :param start_ms: the caller's start time in epoch ms (``None``: from the moment it joins).
    """
    loop = asyncio.get_running_loop()
    streams = _streams.setdefault(loop, {})
    key = (hook.dataworks_conn_id, topic)
    stream = streams.get(key)
    if stream is None or stream.is_stopping:
        stream = SharedEventStream(hook, topic)
        streams[key] = stream
    return await stream.join(event_filter, start_ms)


def active_streams() -> dict[tuple[str, str], SharedEventStream]:
    """Return this event loop's streams (for tests and diagnostics)."""
    return dict(_streams.get(asyncio.get_running_loop(), {}))


async def _open_reader(hook: DataWorksHook, topic: str) -> EventReader:
    """Build a reader off the loop; if the caller is cancelled meanwhile, close the reader once built."""
    building = asyncio.ensure_future(run_blocking(EventReader, hook, topic))
    try:
        return await asyncio.shield(building)
    except asyncio.CancelledError:
        building.add_done_callback(_close_built_reader)
        raise


def _close_built_reader(building: asyncio.Future[EventReader]) -> None:
    if not building.cancelled() and building.exception() is None:
        submit_blocking(building.result().close)
