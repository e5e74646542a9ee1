"""Event-driven scheduling: the asset-watcher trigger and a consumer-group stream that commits late."""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
from collections.abc import AsyncIterator, Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from airflow.triggers.base import BaseEventTrigger, TriggerEvent
from airflow.triggers.shared_stream import AdvanceItem, SharedStreamProducer
from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_exponential

from airflow_provider_dataworks.events import MalformedEventError, parse
from airflow_provider_dataworks.exceptions import DataWorksConnectionConfigError, DataWorksKafkaError
from airflow_provider_dataworks.filters import EventFilter
from airflow_provider_dataworks.hooks.dataworks import DataWorksHook, kafka_error_with_fix
from airflow_provider_dataworks.triggers.executor import run_blocking
from airflow_provider_dataworks.triggers.reader import ReceivedEvent, RecordInfo

if TYPE_CHECKING:
    from confluent_kafka import Consumer, Message, TopicPartition

log = logging.getLogger(__name__)

T = TypeVar("T")
V = TypeVar("V")

# How many message ids the stream and each watcher remember, to run a DAG once for an event that
# DataWorks delivered twice or that Kafka redelivered after a failed commit.
DEDUPE_WINDOW = 10_000

_POLL_SECONDS = 0.2
_BATCH = 500
_METADATA_SECONDS = 15.0

# (bootstrap servers, topic, consumer group) of every group stream open in this process. Two shared
# streams in one group would split the topic's partitions between them, and each would commit for
# watchers that never saw the other half of the events.
_open_groups: set[tuple[str, str, str]] = set()


@dataclass(frozen=True, slots=True)
class SharedRecord:
    """
    One event as the group stream hands it to every asset watcher.

    :param received: the parsed event and where its record sits in Kafka.
    :param duplicate: whether an earlier record in the dedupe window had the same message id.
    """

    received: ReceivedEvent
    duplicate: bool = False


class DataWorksAssetEventTrigger(BaseEventTrigger):
    """
    Fire once for every DataWorks event matching ``event_filter``, to schedule DAGs on an asset.

    Use it in an :class:`~airflow.sdk.AssetWatcher` (directly, or as
    ``MessageQueueTrigger(scheme="dataworks", ...)``). Every watcher of one connection, topic and
    consumer group in a triggerer shares one Kafka consumer, a member of the consumer group. An
    offset is committed only after every watcher has passed the record and Airflow has stored the
    asset events it produced, so a triggerer restart loses no event: records not yet committed are
    read again. Events are told apart by message id within a window of :data:`DEDUPE_WINDOW`, so a
    message DataWorks sent twice, or Kafka redelivered in the same triggerer session, fires once.

    A consumer group that has committed nothing for a partition starts at the end of it, and that
    start is committed at once: history is not replayed, and events published while the triggerer
    is down later are not lost either.

    The payload, stored in the asset event's ``extra["payload"]``, is ``{"status": "matched",
    "event": {...}, "record": {"topic", "partition", "offset", "timestamp", "timestamp_iso"}}``.

    .. note::
        Delivery is at least once. A crash between Airflow storing an asset event and the commit
        (about one triggerer heartbeat) runs the DAG again for that event after the restart; tasks
        that must act once can key on ``event["message_id"]``. With several triggerers, give the
        watchers of each triggerer their own consumer group (Airflow places asset triggers on any
        triggerer, and members of one group split the partitions). Watchers of one topic and group
        must name ``topic`` and ``consumer_group`` the same way (both given, or both from the
        connection) to share a consumer; otherwise the second stream fails with the fix.

    :param dataworks_conn_id: the ``dataworks`` connection (only its id is stored with the trigger).
    :param event_filter: which events schedule the DAG, as an :class:`EventFilter` or its dict.
    :param topic: the Kafka topic; defaults to the connection's topic.
    :param consumer_group: the consumer group whose offsets are committed; defaults to the
        connection's consumer group (``airflow-dataworks`` when the connection names none).
    """

    def __init__(
        self,
        *,
        dataworks_conn_id: str = DataWorksHook.default_conn_name,
        event_filter: EventFilter | Mapping[str, Any] | None = None,
        topic: str | None = None,
        consumer_group: str | None = None,
    ) -> None:
        super().__init__()
        self.dataworks_conn_id = dataworks_conn_id
        self.event_filter = EventFilter.from_dict(event_filter)
        self.topic = topic or None
        self.consumer_group = consumer_group or None
        self._fired: _Window[None] = _Window(DEDUPE_WINDOW)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """Return the classpath and deterministic, JSON-safe kwargs (AssetWatcher hashes them)."""
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "dataworks_conn_id": self.dataworks_conn_id,
                "event_filter": self.event_filter.to_dict(),
                "topic": self.topic,
                "consumer_group": self.consumer_group,
            },
        )

    def shared_stream_key(self) -> Hashable:
        """Share one consumer among the watchers of one connection, topic and consumer group."""
        return ("dataworks-group", self.dataworks_conn_id, self.topic or "", self.consumer_group or "")

    @classmethod
    def create_shared_stream_producer(cls, kwargs: dict[str, Any]) -> DataWorksGroupProducer:
        """Build the consumer-group stream for a shared-stream group; it connects when it opens."""
        return DataWorksGroupProducer(
            dataworks_conn_id=kwargs.get("dataworks_conn_id") or DataWorksHook.default_conn_name,
            topic=kwargs.get("topic"),
            consumer_group=kwargs.get("consumer_group"),
        )

    async def filter_shared_stream(self, shared_stream: AsyncIterator[Any]) -> AsyncIterator[TriggerEvent]:
        """Yield one event per new matching message id; moving on to the next record accepts this one."""
        self.event_filter.check_predicate()
        self.log.info(
            "Watching DataWorks events matching %s (connection %s, topic %s, consumer group %s)",
            self.event_filter.to_dict(),
            self.dataworks_conn_id,
            self.topic or "from the connection",
            self.consumer_group or "from the connection",
        )
        async for record in shared_stream:
            received: ReceivedEvent = record.received
            event = received.event
            if record.duplicate or not self.event_filter.matches(event):
                continue
            if not self._fired.add(event.message_id):
                self.log.info("Ignoring DataWorks event %s delivered again", event.message_id)
                continue
            self.log.info(
                "Matched DataWorks event %s (%s) at topic %s partition %d offset %d",
                event.message_id,
                event.event_type,
                received.record.topic,
                received.record.partition,
                received.record.offset,
            )
            yield TriggerEvent(received.to_payload())

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """
        Refuse to run outside the triggerer's shared-stream path, which commits only stored events.

        :raises DataWorksConnectionConfigError: always; the message names the trigger to use instead.
        """
        raise DataWorksConnectionConfigError(
            "DataWorksAssetEventTrigger schedules DAGs from an AssetWatcher and runs only in the Airflow "
            "3.3+ triggerer's shared-stream path; to wait for an event inside a DAG use DataWorksEventSensor "
            "(DataWorksEventTrigger)"
        )
        yield  # pragma: no cover - makes this an async generator like every trigger's run()


class DataWorksGroupProducer(SharedStreamProducer):
    """
    The Kafka side of the asset watchers' shared stream: a consumer-group member that commits late.

    Airflow hands :meth:`advance` each partition's records in order once every watcher has passed
    them and their asset events are stored. The producer commits ``offset + 1`` of the last record
    of a clean run; a record some watcher failed on is not committed and its partition is read
    again from that record.

    :param dataworks_conn_id: the ``dataworks`` connection.
    :param topic: the topic, or ``None`` for the connection's.
    :param consumer_group: the group, or ``None`` for the connection's.
    """

    def __init__(self, *, dataworks_conn_id: str, topic: str | None, consumer_group: str | None) -> None:
        self.dataworks_conn_id = dataworks_conn_id
        self.topic = topic
        self.consumer_group = consumer_group
        self._reader: _GroupReader | None = None
        self._claim: tuple[str, str, str] | None = None
        self._lock = asyncio.Lock()
        self._seen: _Window[tuple[int, int]] = _Window(DEDUPE_WINDOW)

    async def open_stream(self) -> AsyncIterator[tuple[SharedRecord, tuple[int, int, int]]]:
        """Join the consumer group and yield ``(record, (partition, offset, epoch))`` forever."""
        settings = await DataWorksHook.aget_settings(self.dataworks_conn_id)
        hook = DataWorksHook(self.dataworks_conn_id, settings=settings)
        topic = settings.require_topic(self.dataworks_conn_id, self.topic)
        group = self.consumer_group or settings.consumer_group
        self._claim = _claim_group(str(settings.bootstrap_servers), topic, group, self.dataworks_conn_id)
        self._reader = await _build_reader(hook, topic, group)
        log.info(
            "Reading topic %s in consumer group %s for asset watchers (connection %s)",
            topic,
            group,
            self.dataworks_conn_id,
        )

        while True:
            async with self._lock:
                batch = await run_blocking(self._reader.read, max_records=_BATCH, timeout=_POLL_SECONDS)
            for received, epoch in batch:
                record = received.record
                if self._reader.epoch(record.partition) != epoch:
                    # The partition was rewound while this batch waited: the record comes again.
                    continue
                # The same record read again after a rewind is no duplicate; the same message id at
                # another position is DataWorks delivering an event twice.
                position = (record.partition, record.offset)
                first_position = self._seen.setdefault(received.event.message_id, position)
                yield SharedRecord(received, duplicate=first_position != position), (*position, epoch)

    def get_advance_lane(self, broker_payload: Any) -> Hashable:
        """Commit each partition in order, independently of the others."""
        return broker_payload[0]

    async def advance(self, batch: Sequence[AdvanceItem]) -> None:
        """Commit the clean prefix of one partition's resolved records; rewind to the first failed one."""
        reader = self._reader
        if reader is None:
            return
        async with self._lock:
            await run_blocking(reader.advance, list(batch))

    async def aclose(self) -> None:
        """Leave the consumer group (committing nothing more) and release the group for this process."""
        reader, self._reader = self._reader, None
        try:
            if reader is not None:
                async with self._lock:
                    await run_blocking(reader.close)
        finally:
            if self._claim is not None:
                _open_groups.discard(self._claim)
                self._claim = None


class _GroupReader:
    """The blocking half of the producer: one consumer-group member, used from one thread at a time."""

    def __init__(self, hook: DataWorksHook, topic: str, group: str) -> None:
        self.hook = hook
        self.topic = topic
        self.group = group
        self._fatal: Any = None
        self._lock = threading.Lock()
        self._epochs: dict[int, int] = collections.defaultdict(int)
        self._assigned: set[int] = set()
        self._closed = False
        self._consumer: Consumer = hook.get_consumer(group_id=group, error_cb=self._on_error)
        try:
            self._check_topic()
            self._consumer.subscribe(
                [topic], on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_revoke
            )
        except BaseException:
            self._consumer.close()
            raise

    def epoch(self, partition: int) -> int:
        """How often ``partition`` has been rewound or reassigned; records of an older epoch are stale."""
        return self._epochs[partition]

    def _on_error(self, error: Any) -> None:
        from confluent_kafka import KafkaError

        if error.fatal() or error.code() in (KafkaError._AUTHENTICATION, KafkaError._SSL):
            self._fatal = error
        else:
            log.warning(
                "Kafka client reported on topic %s (group %s): %s", self.topic, self.group, error.str()
            )

    def _raise_if_fatal(self) -> None:
        if self._fatal is not None:
            raise kafka_error_with_fix(self._fatal, self.hook.settings, self.hook.dataworks_conn_id)

    def _check_topic(self) -> None:
        from confluent_kafka import KafkaException

        try:
            metadata = self._consumer.list_topics(topic=self.topic, timeout=_METADATA_SECONDS)
        except KafkaException as error:
            self._consumer.poll(0)
            self._raise_if_fatal()
            raise kafka_error_with_fix(
                error.args[0], self.hook.settings, self.hook.dataworks_conn_id
            ) from None
        self._raise_if_fatal()
        described = metadata.topics.get(self.topic)
        if described is None or described.error is not None or not described.partitions:
            raise DataWorksKafkaError(
                f"Kafka topic {self.topic!r} does not exist on {self.hook.settings.bootstrap_servers} "
                f"(connection {self.hook.dataworks_conn_id!r}); check the topic field of the connection or "
                "the trigger against the topic shown in the DataWorks OpenEvent console"
            )

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        committed = _ask_coordinator(lambda: consumer.committed(partitions, timeout=_METADATA_SECONDS))
        fresh = []
        for partition in committed:
            if partition.offset < 0:
                partition.offset = consumer.get_watermark_offsets(partition, timeout=_METADATA_SECONDS)[1]
                fresh.append(partition)
            self._epochs[partition.partition] += 1
        consumer.assign(committed)
        if fresh:
            # Committed now so that a restart before the first event resumes here, not at the new end.
            _ask_coordinator(lambda: consumer.commit(offsets=fresh, asynchronous=False))
        self._assigned = {partition.partition for partition in committed}
        log.info(
            "Consumer group %s reads topic %s from offsets %s",
            self.group,
            self.topic,
            {partition.partition: partition.offset for partition in committed},
        )

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for partition in partitions:
            self._epochs[partition.partition] += 1
            self._assigned.discard(partition.partition)
        log.info(
            "Consumer group %s gave up partitions %s of topic %s",
            self.group,
            sorted(partition.partition for partition in partitions),
            self.topic,
        )

    def read(self, *, max_records: int, timeout: float) -> list[tuple[ReceivedEvent, int]]:
        """
        Read up to ``max_records`` records, waiting at most ``timeout`` seconds for the first.

        :return: each parsed event with its partition's epoch at reading time; malformed records are
            skipped with a warning (a later commit covers them).
        :raises DataWorksKafkaError: on a fatal client error, naming the cause and its fix.
        """
        with self._lock:
            if self._closed:
                return []
            first = self._consumer.poll(timeout)
            self._raise_if_fatal()
            if first is None:
                return []
            rest = self._consumer.consume(num_messages=max_records - 1, timeout=0) if max_records > 1 else []
            return [item for item in map(self._parse, [first, *rest]) if item is not None]

    def _parse(self, message: Message) -> tuple[ReceivedEvent, int] | None:
        from confluent_kafka import KafkaError

        error = message.error()
        if error is not None:
            if error.fatal() or error.code() in (
                KafkaError.TOPIC_AUTHORIZATION_FAILED,
                KafkaError.GROUP_AUTHORIZATION_FAILED,
                KafkaError._AUTHENTICATION,
            ):
                raise kafka_error_with_fix(error, self.hook.settings, self.hook.dataworks_conn_id)
            if error.code() != KafkaError._PARTITION_EOF:
                log.warning(
                    "Kafka reported on topic %s partition %s: %s",
                    self.topic,
                    message.partition(),
                    error.str(),
                )
            return None

        partition, offset = message.partition(), message.offset()
        if partition is None or offset is None:  # only error records lack a position
            return None
        timestamp_type, timestamp = message.timestamp()
        try:
            event = parse(message.value())
        except MalformedEventError as error:
            log.warning(
                "Skipping malformed record at topic %s partition %d offset %d: %s",
                self.topic,
                partition,
                offset,
                error,
            )
            return None
        record = RecordInfo(self.topic, partition, offset, timestamp if timestamp_type else None)
        return ReceivedEvent(event, record), self._epochs[partition]

    def advance(self, batch: list[AdvanceItem]) -> None:
        """
        Commit the clean prefix of one partition's batch; rewind the partition to its first failed record.

        Records of an older epoch (read before a rewind or a reassignment) are ignored: they are read
        again, and their watchers' outcome then decides.
        """
        from confluent_kafka import TopicPartition

        with self._lock:
            if self._closed:
                return
            commit_to: tuple[int, int] | None = None
            rewind_to: tuple[int, int] | None = None
            for item in batch:
                partition, offset, epoch = item.broker_payload
                if epoch != self._epochs[partition] or partition not in self._assigned:
                    continue
                outcome = item.outcome
                if outcome.failed == 0 and outcome.acked + outcome.rejected > 0:
                    commit_to = (partition, offset + 1)
                    continue
                rewind_to = (partition, offset)
                break

            if commit_to is not None:
                self._commit(TopicPartition(self.topic, commit_to[0], commit_to[1]))
            if rewind_to is not None:
                partition, offset = rewind_to
                self._epochs[partition] += 1
                self._consumer.seek(TopicPartition(self.topic, partition, offset))
                log.warning(
                    "An asset watcher did not finish the event at topic %s partition %d offset %d; "
                    "reading the partition again from there (consumer group %s)",
                    self.topic,
                    partition,
                    offset,
                    self.group,
                )

    def _commit(self, partition: TopicPartition) -> None:
        from confluent_kafka import KafkaError, KafkaException

        try:
            self._consumer.commit(offsets=[partition], asynchronous=False)
        except KafkaException as error:
            code = error.args[0].code()
            if code in (
                KafkaError._NO_OFFSET,
                KafkaError.REBALANCE_IN_PROGRESS,
                KafkaError.ILLEGAL_GENERATION,
                KafkaError.UNKNOWN_MEMBER_ID,
                KafkaError._ASSIGNMENT_LOST,
            ):
                # The partition moved to another member, which reads from the last commit again.
                log.warning(
                    "Could not commit offset %d of topic %s partition %d for group %s (%s); "
                    "it will be read again",
                    partition.offset,
                    self.topic,
                    partition.partition,
                    self.group,
                    error.args[0].str(),
                )
                return
            raise kafka_error_with_fix(
                error.args[0], self.hook.settings, self.hook.dataworks_conn_id
            ) from None
        log.debug(
            "Committed offset %d of topic %s partition %d", partition.offset, self.topic, partition.partition
        )

    def close(self) -> None:
        """Leave the consumer group; waits for a read in progress on another thread."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._consumer.close()
                log.info("Left consumer group %s of topic %s", self.group, self.topic)


class _Window(Generic[V]):
    """The most recent ``size`` distinct keys with a value each, oldest forgotten first."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._items: collections.OrderedDict[str, V] = collections.OrderedDict()

    def setdefault(self, key: str, value: V) -> V:
        """Return the value remembered for ``key``, remembering ``value`` if there is none."""
        if key in self._items:
            return self._items[key]
        self._items[key] = value
        if len(self._items) > self._size:
            self._items.popitem(last=False)
        return value

    def add(self: _Window[None], key: str) -> bool:
        """Remember ``key``; return whether it was new."""
        if key in self._items:
            return False
        self.setdefault(key, None)
        return True


def _coordinator_busy(error: BaseException) -> bool:
    from confluent_kafka import KafkaException

    return isinstance(error, KafkaException) and error.args[0].retriable()


def _ask_coordinator(call: Callable[[], T]) -> T:
    """Call the group coordinator, asking again while it moves or loads (it answers "retriable")."""
    retrying = Retrying(
        retry=retry_if_exception(_coordinator_busy),
        stop=stop_after_delay(_METADATA_SECONDS),
        wait=wait_exponential(multiplier=0.1, max=2),
        reraise=True,
    )
    return retrying(call)


async def _build_reader(hook: DataWorksHook, topic: str, group: str) -> _GroupReader:
    building = asyncio.ensure_future(run_blocking(_GroupReader, hook, topic, group))
    try:
        return await asyncio.shield(building)
    except asyncio.CancelledError:
        # The consumer is still being built on a worker thread: close it once it exists, or it would
        # hold a group membership nobody polls.
        building.add_done_callback(_close_when_built)
        raise


def _close_when_built(building: asyncio.Future[_GroupReader]) -> None:
    if not building.cancelled() and building.exception() is None:
        threading.Thread(target=building.result().close, name="dataworks-group-close", daemon=True).start()


def _claim_group(servers: str, topic: str, group: str, conn_id: str) -> tuple[str, str, str]:
    claim = (servers, topic, group)
    if claim in _open_groups:
        raise DataWorksConnectionConfigError(
            f"Two asset-watcher streams in this triggerer read topic {topic!r} in consumer group {group!r} "
            f"(connection {conn_id!r}) and would split its partitions: give every "
            "DataWorksAssetEventTrigger of this topic the same connection id, topic and consumer_group "
            "spelling (all explicit, or all from the connection), or a consumer group of its own"
        )
    _open_groups.add(claim)
    return claim
