"""Reading DataWorks events from a Kafka topic from a point in time, without a consumer group."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from airflow_provider_dataworks.events import DataWorksEvent, MalformedEventError, parse
from airflow_provider_dataworks.exceptions import DataWorksKafkaError
from airflow_provider_dataworks.hooks.dataworks import kafka_error_with_fix

if TYPE_CHECKING:
    from confluent_kafka import Consumer, Message

    from airflow_provider_dataworks.hooks.dataworks import DataWorksHook

log = logging.getLogger(__name__)

_UNKNOWN_TOPIC_SECONDS = 5.0


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
        milliseconds (or seconds, when it is small enough to be seconds).
    """
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        aware = value if value.tzinfo else value.replace(tzinfo=timezone.utc)
        return int(aware.timestamp() * 1000)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return int(value * 1000) if value < 100_000_000_000 else int(value)
    text = str(value).strip()
    if text.lstrip("-").isdigit():
        return to_epoch_ms(int(text))
    try:
        return to_epoch_ms(datetime.fromisoformat(text.replace("Z", "+00:00")))
    except ValueError:
        raise ValueError(
            f"start time {value!r} is neither ISO-8601 text, a datetime nor epoch milliseconds"
        ) from None


class EventReader:
    """
    Read and parse the records of one topic from a start time on.

    It assigns every partition itself (no consumer-group membership, no rebalances) and never
    commits offsets, so any number of readers can read the same topic without disturbing each
    other or the subscription's consumer groups. Not thread-safe: call it from one thread at a time.
    """

    def __init__(self, hook: DataWorksHook, topic: str, *, metadata_timeout: float = 15.0) -> None:
        self.hook = hook
        self.topic = topic
        self.metadata_timeout = metadata_timeout
        self.positions: dict[int, int] = {}
        self._fatal: Any = None
        self._auth_failures = 0
        self._lock = threading.Lock()
        self._consumer: Consumer = hook.get_consumer(error_cb=self._on_error)

    def _on_error(self, error: Any) -> None:
        from confluent_kafka import KafkaError

        if error.fatal() or error.code() in (KafkaError._AUTHENTICATION, KafkaError._SSL):
            self._fatal = error
        elif error.code() in (KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN):
            log.warning("Kafka connection problem on topic %s (will retry): %s", self.topic, error.str())
        else:
            log.warning("Kafka client reported on topic %s: %s", self.topic, error.str())

    def _serve_callbacks(self) -> None:
        # Errors such as a refused SASL login reach error_cb only while the client is polled;
        # before partitions are assigned a poll returns no record.
        self._consumer.poll(0)
        self._raise_if_fatal()

    def _raise_if_fatal(self) -> None:
        if self._fatal is not None:
            raise kafka_error_with_fix(self._fatal, self.hook.settings, self.hook.dataworks_conn_id)

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
                return sorted(described.partitions)
            # A topic created a moment ago may take a few metadata refreshes to show up.
            if time.monotonic() - started >= _UNKNOWN_TOPIC_SECONDS:
                raise DataWorksKafkaError(
                    f"Kafka topic {self.topic!r} does not exist on {self.hook.settings.bootstrap_servers} "
                    f"(connection {self.hook.dataworks_conn_id!r}); check the topic field of the connection or "
                    "the task against the topic shown in the DataWorks OpenEvent console"
                )
            time.sleep(0.5)

    def seek_to_time(self, start_ms: int | None) -> dict[int, int]:
        """
        Assign every partition at the first offset whose record timestamp is at or after ``start_ms``.

        The end offsets are read before the time lookup, so a record appended between the two
        calls is read rather than skipped. ``None`` means the end of each partition.

        :return: the starting offset per partition.
        """
        from confluent_kafka import TopicPartition

        partitions = self.partitions()
        ends = {
            p: self._consumer.get_watermark_offsets(TopicPartition(self.topic, p), timeout=10)[1]
            for p in partitions
        }
        if start_ms is None:
            starts = ends
        else:
            found = self._consumer.offsets_for_times(
                [TopicPartition(self.topic, p, start_ms) for p in partitions], timeout=10
            )
            starts = {tp.partition: (tp.offset if tp.offset >= 0 else ends[tp.partition]) for tp in found}
        self.assign(starts)
        return dict(starts)

    def assign(self, positions: dict[int, int]) -> None:
        """Assign partitions at the given offsets (to resume where an earlier reader stopped)."""
        from confluent_kafka import TopicPartition

        self._consumer.assign(
            [TopicPartition(self.topic, p, offset) for p, offset in sorted(positions.items())]
        )
        self.positions = dict(positions)

    def end_offsets(self) -> dict[int, int]:
        """Return the current end (high watermark) of every assigned partition."""
        from confluent_kafka import TopicPartition

        return {
            p: self._consumer.get_watermark_offsets(TopicPartition(self.topic, p), timeout=10)[1]
            for p in self.positions
        }

    def read(self, *, max_records: int = 500, timeout: float = 1.0) -> list[ReceivedEvent]:
        """
        Read up to ``max_records`` records, waiting at most ``timeout`` seconds for the first.

        Returns as soon as one record is there (with whatever else is already fetched), so a
        quiet topic costs no latency. Malformed records are skipped with one warning naming
        topic, partition and offset. Transient broker errors are logged; fatal ones raise.

        :raises DataWorksKafkaError: on a fatal error, naming the cause and its fix.
        """
        first = self._consumer.poll(timeout)
        self._raise_if_fatal()
        if first is None:
            return []
        rest = self._consumer.consume(num_messages=max_records - 1, timeout=0) if max_records > 1 else []
        return list(self._parse_all([first, *rest]))

    def _parse_all(self, messages: Iterable[Message]) -> Iterable[ReceivedEvent]:
        for message in messages:
            if message.error() is not None:
                self._handle_message_error(message)
                continue

            partition, offset = message.partition(), message.offset()
            self.positions[partition] = offset + 1
            timestamp_type, timestamp = message.timestamp()
            record = RecordInfo(self.topic, partition, offset, timestamp if timestamp_type else None)
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
                continue
            yield ReceivedEvent(event, record)

    def _handle_message_error(self, message: Message) -> None:
        from confluent_kafka import KafkaError

        error = message.error()
        if error.fatal() or error.code() in (
            KafkaError.TOPIC_AUTHORIZATION_FAILED,
            KafkaError.GROUP_AUTHORIZATION_FAILED,
            KafkaError._AUTHENTICATION,
            KafkaError.UNKNOWN_TOPIC_OR_PART,
        ):
            if error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                raise DataWorksKafkaError(
                    f"Kafka topic {self.topic!r} no longer exists on {self.hook.settings.bootstrap_servers}"
                )
            raise kafka_error_with_fix(error, self.hook.settings, self.hook.dataworks_conn_id)
        if error.code() != KafkaError._PARTITION_EOF:
            log.warning(
                "Kafka reported on topic %s partition %s: %s", self.topic, message.partition(), error.str()
            )

    def close(self) -> None:
        """Close the consumer; it holds no group membership, so this returns quickly."""
        with self._lock:
            self._consumer.close()
