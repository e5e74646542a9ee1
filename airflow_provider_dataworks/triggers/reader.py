"""Reading DataWorks events from a Kafka topic from a point in time, without a consumer group."""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, TypeVar

from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_exponential

from airflow_provider_dataworks.events import DataWorksEvent, MalformedEventError, parse
from airflow_provider_dataworks.exceptions import DataWorksKafkaError
from airflow_provider_dataworks.hooks.dataworks import kafka_error_with_fix

if TYPE_CHECKING:
    from confluent_kafka import Consumer, KafkaError, Message

    from airflow_provider_dataworks.hooks.dataworks import DataWorksHook

log = logging.getLogger(__name__)

T = TypeVar("T")

_UNKNOWN_TOPIC_SECONDS = 5.0
# While the brokers cannot be reached: how often to say so again, and how often to probe for them.
_STILL_DOWN_WARNING_SECONDS = 60.0
_RECONNECT_PROBE_SECONDS = 2.0
# librdkafka's own default for how often it refreshes metadata; the reader checks the topic as often.
_DEFAULT_METADATA_REFRESH_MS = 300_000
_PEEK_SECONDS = 5.0

# Records already reported as malformed, so that the readers of one process (a shared stream and
# the catch-up readers that overlap it) warn once per record.
_WARNED_RECORDS: collections.OrderedDict[tuple[str, str, int, int], None] = collections.OrderedDict()
_WARNED_LIMIT = 10_000
_warned_lock = threading.Lock()


@dataclass(frozen=True)
class RecordInfo:
    """Where a record sits in Kafka."""

    topic: str
    partition: int
    offset: int
    timestamp: int | None

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-safe dict, with the record timestamp in ms and as ISO text."""
        iso = (
            datetime.fromtimestamp(self.timestamp / 1000, tz=timezone.utc).isoformat()
            if self.timestamp is not None
            else None
        )
        return {
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "timestamp": self.timestamp,
            "timestamp_iso": iso,
        }


@dataclass(frozen=True)
class ReceivedEvent:
    """A parsed event and the record it came from."""

    event: DataWorksEvent
    record: RecordInfo

    def to_payload(self) -> dict[str, Any]:
        """Return the JSON-safe TriggerEvent payload for this event."""
        return {"status": "matched", "event": self.event.to_dict(), "record": self.record.to_dict()}


def to_epoch_ms(value: datetime | str | int | float | None) -> int | None:
    """
    Convert a start time to milliseconds since the epoch, as every Kafka call wants it.

    :param value: an aware or naive (taken as UTC) datetime, ISO-8601 text, or a number of
        milliseconds (or seconds, when it is below 100 000 000 000, that is before 1973 in ms).
    :raises ValueError: for text that is no time, and for a time before 1970 (Kafka reads negative
        timestamps as "the end" or "the beginning" of a partition).
    """
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        aware = value if value.tzinfo else value.replace(tzinfo=timezone.utc)
        return _not_negative(int(aware.timestamp() * 1000), value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return _not_negative(int(value * 1000) if value < 100_000_000_000 else int(value), value)
    text = str(value).strip()
    if text.lstrip("-").isdigit():
        return to_epoch_ms(int(text))
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"start time {value!r} is neither ISO-8601 text, a datetime nor epoch milliseconds"
        ) from None
    return to_epoch_ms(parsed)


def _not_negative(ms: int, value: object) -> int:
    if ms < 0:
        raise ValueError(f"start time {value!r} is before 1970; use a time from 1970 on")
    return ms


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).isoformat()


def _first_warning(key: tuple[str, str, int, int]) -> bool:
    with _warned_lock:
        if key in _WARNED_RECORDS:
            return False
        _WARNED_RECORDS[key] = None
        if len(_WARNED_RECORDS) > _WARNED_LIMIT:
            _WARNED_RECORDS.popitem(last=False)
        return True


class EventReader:
    """
    Read and parse the records of one topic from a start time on.

    It assigns every partition itself (no consumer-group membership, no rebalances) and never
    commits offsets, so any number of readers can read the same topic without disturbing each
    other or the subscription's consumer groups. Not thread-safe: call it from one thread at a time.

    Faults it deals with, so that its callers need not:

    * a record that is no DataWorks event (not JSON, a tombstone, too large, an unknown envelope) is
      skipped with one warning naming topic, partition and offset;
    * brokers that cannot be reached are waited for: one warning when they stop answering, a
      reminder every minute, one line when Kafka answers again; reading goes on where it stopped;
    * a refused login, a failed TLS handshake, a refused topic and a deleted topic raise
      :class:`~airflow_provider_dataworks.exceptions.DataWorksKafkaError` naming the cause and the
      fix;
    * partitions added to the topic while it reads are read too, from the reader's start time.

    The topic is checked as often as librdkafka refreshes metadata (``topic.metadata.refresh.interval.ms``
    of the connection's ``kafka_config``, 5 minutes by default).
    """

    def __init__(self, hook: DataWorksHook, topic: str, *, metadata_timeout: float = 15.0) -> None:
        from confluent_kafka import Consumer

        self.hook = hook
        self.topic = topic
        self.metadata_timeout = metadata_timeout
        self.positions: dict[int, int] = {}
        self._start_ms: int | None = None
        self._fatal: Any = None
        self._down_since: float | None = None
        self._last_down_warning = 0.0
        self._next_probe = 0.0
        self._closed = False
        self._lock = threading.Lock()

        config = hook.consumer_config(error_cb=self._on_error)
        refresh_ms = config.get("topic.metadata.refresh.interval.ms", _DEFAULT_METADATA_REFRESH_MS)
        self._topic_check_seconds = max(0.1, float(refresh_ms) / 1000)
        self._next_topic_check = time.monotonic() + self._topic_check_seconds
        self._topic_missing = 0
        self._consumer: Consumer = Consumer(config)

    # Errors reported by librdkafka

    def _on_error(self, error: Any) -> None:
        from confluent_kafka import KafkaError

        code = error.code()
        if error.fatal() or code in (KafkaError._AUTHENTICATION, KafkaError._SSL):
            if self._fatal is None:
                self._fatal = error
        elif self._fatal is not None:
            # "All brokers down" follows a refused login; the refusal is what the task reports.
            return
        elif code in (
            KafkaError._TRANSPORT,
            KafkaError._ALL_BROKERS_DOWN,
            KafkaError._TIMED_OUT,
            KafkaError._RESOLVE,
        ):
            self._lost_connection(error)
        else:
            log.warning("Kafka client reported on topic %s: %s", self.topic, error.str())

    def _lost_connection(self, error: Any) -> None:
        now = time.monotonic()
        self._next_probe = now + _RECONNECT_PROBE_SECONDS
        if self._down_since is None:
            self._down_since = self._last_down_warning = now
            log.warning(
                "Cannot reach Kafka at %s for topic %s; reading resumes when it answers again (%s)",
                self.hook.settings.bootstrap_servers,
                self.topic,
                error.str(),
            )
        elif now - self._last_down_warning >= _STILL_DOWN_WARNING_SECONDS:
            self._last_down_warning = now
            log.warning(
                "Kafka at %s still does not answer for topic %s after %.0f s (%s)",
                self.hook.settings.bootstrap_servers,
                self.topic,
                now - self._down_since,
                error.str(),
            )

    def _answered(self) -> None:
        if self._down_since is not None:
            log.info(
                "Kafka at %s answers again for topic %s after %.0f s; reading from offsets %s",
                self.hook.settings.bootstrap_servers,
                self.topic,
                time.monotonic() - self._down_since,
                self.positions,
            )
            self._down_since = None

    def _probe_connection(self) -> None:
        # librdkafka reports lost connections but not regained ones: a metadata answer tells.
        from confluent_kafka import KafkaException

        if self._down_since is None or time.monotonic() < self._next_probe:
            return
        self._next_probe = time.monotonic() + _RECONNECT_PROBE_SECONDS
        try:
            self._consumer.list_topics(topic=self.topic, timeout=0.5)
        except KafkaException:
            return
        self._raise_if_fatal()
        self._answered()

    def _serve_callbacks(self) -> None:
        # Errors such as a refused SASL login reach error_cb only while the client is polled;
        # before partitions are assigned a poll returns no record.
        self._consumer.poll(0)
        self._raise_if_fatal()

    def _raise_if_fatal(self) -> None:
        if self._fatal is not None:
            raise kafka_error_with_fix(self._fatal, self.hook.settings, self.hook.dataworks_conn_id)

    # Where to read

    def partitions(self) -> list[int]:
        """Return the topic's partitions, failing with the fix when the topic or the brokers are wrong."""
        from confluent_kafka import KafkaException

        started = time.monotonic()
        deadline = started + self.metadata_timeout
        while True:
            try:
                metadata = self._consumer.list_topics(topic=self.topic, timeout=1.0)
            except KafkaException as error:
                self._serve_callbacks()
                if time.monotonic() >= deadline:
                    raise kafka_error_with_fix(
                        error.args[0], self.hook.settings, self.hook.dataworks_conn_id
                    ) from None
                continue
            self._raise_if_fatal()
            described = metadata.topics.get(self.topic)
            if described is not None and described.error is None and described.partitions:
                self._answered()
                return sorted(described.partitions)
            # A topic created a moment ago may take a few metadata refreshes to show up.
            if time.monotonic() - started >= _UNKNOWN_TOPIC_SECONDS:
                raise DataWorksKafkaError(
                    f"Kafka topic {self.topic!r} does not exist on {self.hook.settings.bootstrap_servers} "
                    f"(connection {self.hook.dataworks_conn_id!r}); check the topic field of the connection "
                    "or the task against the topic shown in the DataWorks OpenEvent console"
                )
            time.sleep(0.5)

    def seek_to_time(self, start_ms: int | None) -> dict[int, int]:
        """
        Assign every partition at the first offset whose record timestamp is at or after ``start_ms``.

        The end offsets are read before the time lookup, so a record appended between the two
        calls is read rather than skipped. ``None`` means the end of each partition, and so does
        a start time after every record of a partition (a start time in the future): reading starts
        there, and records are not filtered by their timestamp. A start time older than the oldest
        record Kafka still keeps starts at that record, with a warning that the records in between
        may have been deleted by retention.

        :param start_ms: milliseconds since the epoch (see :func:`to_epoch_ms`).
        :return: the starting offset per partition.
        """
        from confluent_kafka import TopicPartition

        partitions = self.partitions()
        watermarks = {p: self._watermarks(p) for p in partitions}
        ends = {p: high for p, (_, high) in watermarks.items()}
        self._start_ms = start_ms
        if start_ms is None:
            starts = ends
        else:
            found = {
                tp.partition: tp.offset
                for tp in self._kafka_call(
                    self._consumer.offsets_for_times,
                    [TopicPartition(self.topic, p, start_ms) for p in partitions],
                    timeout=10,
                )
            }
            starts = {p: (found[p] if found[p] >= 0 else ends[p]) for p in partitions}
            # The first retained record is at or after the start time; if Kafka deleted records
            # before it, some of them may have been at or after the start time too.
            truncated = {p: low for p, (low, _) in watermarks.items() if low > 0 and found[p] == low}
            if truncated:
                self._warn_if_retention_passed(start_ms, truncated)
        self.assign(starts)
        return dict(starts)

    def _warn_if_retention_passed(self, start_ms: int, truncated: dict[int, int]) -> None:
        first_times = self._peek_timestamps(truncated)
        for partition, low in sorted(truncated.items()):
            first = first_times.get(partition)
            if first is not None and first <= start_ms:
                continue
            log.warning(
                "Start time %s is older than the oldest record Kafka keeps in topic %s partition %d "
                "(offset %d, %s); records published in between were deleted by retention and may have "
                "been lost: reading starts at offset %d",
                _iso(start_ms),
                self.topic,
                partition,
                low,
                _iso(first) if first is not None else "time unknown",
                low,
            )

    def _peek_timestamps(self, offsets: dict[int, int]) -> dict[int, int]:
        from confluent_kafka import TopicPartition

        self._consumer.assign([TopicPartition(self.topic, p, offset) for p, offset in offsets.items()])
        found: dict[int, int] = {}
        deadline = time.monotonic() + _PEEK_SECONDS
        while len(found) < len(offsets) and time.monotonic() < deadline:
            message = self._consumer.poll(0.2)
            self._raise_if_fatal()
            if message is None or message.error() is not None:
                continue
            partition, offset = message.partition(), message.offset()
            kind, timestamp = message.timestamp()
            if partition is not None and offset == offsets.get(partition) and kind:
                found.setdefault(partition, timestamp)
        return found

    def assign(self, positions: dict[int, int]) -> None:
        """Assign partitions at the given offsets (to resume where an earlier reader stopped)."""
        from confluent_kafka import TopicPartition

        self._consumer.assign(
            [TopicPartition(self.topic, p, offset) for p, offset in sorted(positions.items())]
        )
        self.positions = dict(positions)

    def end_offsets(self, partitions: Iterable[int] | None = None) -> dict[int, int]:
        """Return the current end (high watermark) of ``partitions``, by default every assigned one."""
        return {p: self._watermarks(p)[1] for p in (self.positions if partitions is None else partitions)}

    def _watermarks(self, partition: int) -> tuple[int, int]:
        from confluent_kafka import TopicPartition

        return self._kafka_call(
            self._consumer.get_watermark_offsets, TopicPartition(self.topic, partition), timeout=10
        )

    def _kafka_call(self, function: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """
        Run one client call, retrying what Kafka calls retriable for up to ``metadata_timeout`` seconds.

        A partition whose leader moves (a broker restarting, a topic created a moment ago) answers
        "not leader" for a moment; that is no reason to fail a waiting task.
        """
        from confluent_kafka import KafkaException

        retrying = Retrying(
            retry=retry_if_exception(self._is_transient),
            stop=stop_after_delay(self.metadata_timeout),
            wait=wait_exponential(multiplier=0.1, max=1),
            reraise=True,
        )
        try:
            return retrying(function, *args, **kwargs)
        except KafkaException as error:
            self._serve_callbacks()
            raise kafka_error_with_fix(
                error.args[0], self.hook.settings, self.hook.dataworks_conn_id
            ) from None

    def _is_transient(self, error: BaseException) -> bool:
        from confluent_kafka import KafkaError, KafkaException

        if not isinstance(error, KafkaException) or self._fatal is not None:
            return False
        kafka_error = error.args[0]
        return kafka_error.retriable() or kafka_error.code() in (
            KafkaError._TIMED_OUT,
            KafkaError._TRANSPORT,
            KafkaError._ALL_BROKERS_DOWN,
            KafkaError.LEADER_NOT_AVAILABLE,
            KafkaError.NOT_LEADER_FOR_PARTITION,
            KafkaError.REQUEST_TIMED_OUT,
            KafkaError.UNKNOWN_TOPIC_OR_PART,
        )

    def _check_topic(self) -> None:
        """Fail when the topic was deleted; start reading partitions added since the last check."""
        from confluent_kafka import KafkaError, KafkaException

        self._next_topic_check = time.monotonic() + self._topic_check_seconds
        try:
            metadata = self._consumer.list_topics(topic=self.topic, timeout=2.0)
        except KafkaException:
            return
        described = metadata.topics.get(self.topic)
        unknown = described is None or (
            described.error is not None and described.error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART
        )
        if unknown or not described.partitions:
            # Asked twice, so that one broker's stale metadata does not end every waiting trigger.
            self._topic_missing += 1
            if self._topic_missing >= 2:
                raise DataWorksKafkaError(
                    f"Kafka topic {self.topic!r} was deleted from {self.hook.settings.bootstrap_servers} "
                    f"while events were read from it (connection {self.hook.dataworks_conn_id!r}); check "
                    "that the DataWorks event subscription is still switched on and writes to this topic"
                )
            self._next_topic_check = time.monotonic() + min(self._topic_check_seconds, 1.0)
            return
        self._topic_missing = 0
        added = sorted(set(described.partitions) - set(self.positions))
        if self.positions and added:
            self._read_added_partitions(added)

    def _read_added_partitions(self, added: list[int]) -> None:
        from confluent_kafka import OFFSET_BEGINNING, TopicPartition

        # Every record of a partition added after reading began is newer than where reading began,
        # unless the start time lies in the future.
        if self._start_ms is None:
            starts = {p: OFFSET_BEGINNING for p in added}
        else:
            found = self._kafka_call(
                self._consumer.offsets_for_times,
                [TopicPartition(self.topic, p, self._start_ms) for p in added],
                timeout=10,
            )
            ends = self.end_offsets(added)
            starts = {tp.partition: tp.offset if tp.offset >= 0 else ends[tp.partition] for tp in found}
        self._consumer.incremental_assign(
            [TopicPartition(self.topic, p, offset) for p, offset in sorted(starts.items())]
        )
        for partition, offset in starts.items():
            self.positions[partition] = offset if offset >= 0 else 0
        log.info("Topic %s gained partitions %s; reading them from offsets %s", self.topic, added, starts)

    # Reading

    def read(self, *, max_records: int = 500, timeout: float = 1.0) -> list[ReceivedEvent]:
        """
        Read up to ``max_records`` records, waiting at most ``timeout`` seconds for the first.

        Returns as soon as one record is there (with whatever else is already fetched), so a
        quiet topic costs no latency. Malformed records are skipped with one warning naming
        topic, partition and offset. Transient broker errors are logged; fatal ones raise.

        :raises DataWorksKafkaError: on a fatal error, naming the cause and its fix.
        """
        from confluent_kafka import KafkaException

        if time.monotonic() >= self._next_topic_check:
            self._check_topic()
        try:
            first = self._consumer.poll(timeout)
            self._raise_if_fatal()
            if first is None:
                self._probe_connection()
                self._follow_consumer_position()
                return []
            rest = self._consumer.consume(num_messages=max_records - 1, timeout=0) if max_records > 1 else []
        except KafkaException as error:
            raise kafka_error_with_fix(
                error.args[0], self.hook.settings, self.hook.dataworks_conn_id
            ) from None
        except RuntimeError:
            # The consumer was closed under a read that a cancelled task left running.
            if self._closed:
                return []
            raise
        received = list(self._parse_all([first, *rest]))
        self._follow_consumer_position()
        return received

    def _follow_consumer_position(self) -> None:
        # Transaction markers and compacted records take offsets but never reach the application:
        # without the consumer's own position, "read up to the end offset" would never be done.
        from confluent_kafka import TopicPartition

        for position in self._consumer.position([TopicPartition(self.topic, p) for p in self.positions]):
            if position.offset > self.positions.get(position.partition, 0):
                self.positions[position.partition] = position.offset

    def _parse_all(self, messages: Iterable[Message]) -> Iterable[ReceivedEvent]:
        for message in messages:
            failure = message.error()
            if failure is not None:
                self._handle_message_error(failure, message.partition())
                continue

            self._answered()
            partition, offset = message.partition(), message.offset()
            if partition is None or offset is None:
                continue
            self.positions[partition] = offset + 1
            timestamp_type, timestamp = message.timestamp()
            record = RecordInfo(self.topic, partition, offset, timestamp if timestamp_type else None)
            try:
                event = parse(message.value())
            except MalformedEventError as error:
                self._warn_malformed(partition, offset, error)
                continue
            yield ReceivedEvent(event, record)

    def _warn_malformed(self, partition: int, offset: int, error: MalformedEventError) -> None:
        key = (self.hook.settings.bootstrap_servers or "", self.topic, partition, offset)
        if _first_warning(key):
            log.warning(
                "Skipping malformed record at topic %s partition %d offset %d: %s",
                self.topic,
                partition,
                offset,
                error,
            )

    def _handle_message_error(self, error: KafkaError, partition: int | None) -> None:
        from confluent_kafka import KafkaError

        code = error.code()
        if code == KafkaError.UNKNOWN_TOPIC_OR_PART:
            # Also seen for a moment while a broker restarts: ask the metadata before giving up.
            self._next_topic_check = 0.0
            return
        if error.fatal() or code in (
            KafkaError.TOPIC_AUTHORIZATION_FAILED,
            KafkaError.GROUP_AUTHORIZATION_FAILED,
            KafkaError._AUTHENTICATION,
            KafkaError._SSL,
        ):
            raise kafka_error_with_fix(error, self.hook.settings, self.hook.dataworks_conn_id)
        if code != KafkaError._PARTITION_EOF:
            log.warning("Kafka reported on topic %s partition %s: %s", self.topic, partition, error.str())

    def close(self) -> None:
        """Close the consumer; it holds no group membership, so this returns quickly. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._consumer.close()
