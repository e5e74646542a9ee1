"""Consumer groups of a DataWorks subscription topic: positions, committed offsets, lag and members."""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeoutError
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_exponential

from airflow_provider_dataworks.exceptions import DataWorksError, DataWorksKafkaError
from airflow_provider_dataworks.hooks.dataworks import kafka_error_with_fix

if TYPE_CHECKING:
    from confluent_kafka import Consumer
    from confluent_kafka.admin import AdminClient

    from airflow_provider_dataworks.hooks.dataworks import DataWorksHook

T = TypeVar("T")

Position = Literal["earliest", "latest"] | int
"""Where a consumer group starts: the first record, the end, or the first record at or after a time (ms)."""

PositionLike = str | int | float | datetime | timedelta
"""What users may pass as a position: ``earliest``, ``latest``, a datetime, ISO-8601 text, epoch
milliseconds, or a timedelta meaning that long ago."""

RefusalReason = Literal["group_limit", "active_members", "connection_group", "unknown_group"]

DATAWORKS_EXTRA_GROUPS = 5
"""How many consumer groups DataWorks lets a subscription have besides the one it created."""

_ACTIVE_STATES = frozenset(
    {"STABLE", "PREPARING_REBALANCE", "COMPLETING_REBALANCE", "ASSIGNING", "RECONCILING"}
)
_LOOKUP_THREADS = 4


class ConsumerGroupRefusedError(DataWorksError):
    """
    A consumer-group change was refused to protect the subscription.

    :param reason: ``group_limit``, ``active_members``, ``connection_group`` or ``unknown_group``.
    :param group_id: the consumer group the change was for.
    """

    def __init__(self, message: str, *, reason: RefusalReason, group_id: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.group_id = group_id


@dataclass(frozen=True)
class GroupMember:
    """One consumer in a group, and the partitions of the subscription topic it holds."""

    member_id: str
    client_id: str
    host: str
    partitions: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-safe dict."""
        return {
            "member_id": self.member_id,
            "client_id": self.client_id,
            "host": self.host,
            "partitions": list(self.partitions),
        }


@dataclass(frozen=True)
class GroupDescription:
    """A consumer group's state (``EMPTY``, ``STABLE``, ``DEAD`` for an unknown group, ...) and members."""

    group_id: str
    state: str
    members: tuple[GroupMember, ...]

    @property
    def active(self) -> bool:
        """Whether consumers are in the group (the broker refuses offset changes from outside then)."""
        return bool(self.members) or self.state in _ACTIVE_STATES

    def member_summary(self) -> str:
        """Return ``client-id@host`` of every member, for messages."""
        return ", ".join(f"{m.client_id}@{m.host.lstrip('/')}" for m in self.members) or "none listed"


def parse_position(value: PositionLike | None, *, now: datetime | None = None) -> Position:
    """
    Read a consumer-group position.

    :param value: ``"earliest"``, ``"latest"``, a datetime (naive means UTC), ISO-8601 text, epoch
        milliseconds (an int or digits), or a timedelta meaning that long before ``now``.
    :param now: the reference time for a timedelta; the current time by default.
    :raises ValueError: naming the value and the accepted forms.
    """
    if isinstance(value, timedelta):
        reference = now or datetime.now(tz=timezone.utc)
        return int((reference - value).timestamp() * 1000)
    if isinstance(value, datetime):
        aware = value if value.tzinfo else value.replace(tzinfo=timezone.utc)
        return int(aware.timestamp() * 1000)
    if isinstance(value, bool) or value is None:
        raise ValueError(_position_help(value))
    if isinstance(value, int | float):
        return int(value)

    text = str(value).strip()
    if text.lower() in ("earliest", "latest"):
        return "earliest" if text.lower() == "earliest" else "latest"
    if text.isdigit():
        return int(text)
    try:
        return parse_position(datetime.fromisoformat(text.replace("Z", "+00:00")))
    except ValueError:
        raise ValueError(_position_help(value)) from None


def _position_help(value: Any) -> str:
    return (
        f"position {value!r} is not valid; use 'earliest', 'latest', a datetime, ISO-8601 text such as "
        "'2026-12-01T00:00:00+08:00', epoch milliseconds, or a timedelta (that long ago)"
    )


def describe_position(position: Position) -> str:
    """Return a position as text: ``earliest``, ``latest`` or the ISO-8601 time it stands for."""
    if isinstance(position, str):
        return position
    return datetime.fromtimestamp(position / 1000, tz=timezone.utc).isoformat()


class ConsumerGroupAdmin:
    """
    Manage the consumer groups of one topic through the Kafka admin API and short-lived consumers.

    Committed offsets are read and written by a consumer of the group that never joins it, because
    librdkafka's admin offset lookup crashes the process when the group coordinator answers "not
    coordinator" (a broker still loading its groups does); a group's own consumer handles that
    answer by finding the coordinator again. Every call is bounded by ``timeout``; answers that
    mean "try again" (coordinator moving or loading) are retried within it.

    :param hook: the hook whose connection reaches the brokers.
    :param topic: the subscription topic; the connection's topic by default.
    :param timeout: seconds any one Kafka call may take, retries included.
    """

    def __init__(self, hook: DataWorksHook, topic: str | None = None, *, timeout: float = 30.0) -> None:
        self.hook = hook
        self._topic = topic
        self.timeout = float(timeout)
        self._admin: AdminClient | None = None
        self._trap = _ErrorTrap()
        self._partitions: list[int] | None = None

    @property
    def topic(self) -> str:
        """The subscription topic."""
        return self.hook.settings.require_topic(self.hook.dataworks_conn_id, self._topic)

    @property
    def connection_group(self) -> str | None:
        """The consumer group of the connection (the one DataWorks created for the subscription)."""
        return self.hook.settings.consumer_group

    def _admin_client(self) -> AdminClient:
        if self._admin is None:
            self._admin = self.hook.get_admin_client(
                error_cb=self._trap, **{"allow.auto.create.topics": False}
            )
        return self._admin

    def _consumer(self, group_id: str, **overrides: Any) -> Consumer:
        return self.hook.get_consumer(group_id=group_id, error_cb=self._trap, **overrides)

    # Topic

    def partitions(self) -> list[int]:
        """
        Return the topic's partitions.

        :raises DataWorksKafkaError: the brokers cannot be reached or the topic does not exist.
        """
        if self._partitions is None:
            described = self._describe_topic()
            if described is None or described.error is not None or not described.partitions:
                raise DataWorksKafkaError(
                    f"Kafka topic {self.topic!r} does not exist on {self.hook.settings.bootstrap_servers} "
                    f"(connection {self.hook.dataworks_conn_id!r}); check the topic field of the connection "
                    "or the task against the topic shown in the DataWorks OpenEvent console"
                )
            self._partitions = sorted(described.partitions)
        return list(self._partitions)

    def _describe_topic(self) -> Any:
        # Short metadata requests in a loop, so that refused credentials (reported through the error
        # callback, not as an answer) fail the task at once instead of after the whole timeout.
        from confluent_kafka import KafkaException

        deadline = time.monotonic() + self.timeout
        while True:
            admin = self._admin_client()
            try:
                metadata = admin.list_topics(topic=self.topic, timeout=1.0)
            except KafkaException as error:
                admin.poll(0)
                self._trap.raise_if_fatal(self.hook)
                if time.monotonic() >= deadline:
                    raise self._failure(error.args[0]) from None
                continue
            self._trap.raise_if_fatal(self.hook)
            return metadata.topics.get(self.topic)

    def watermarks(self) -> dict[int, tuple[int, int]]:
        """Return the first and the next offset (low and high watermark) of every partition."""
        from confluent_kafka import TopicPartition

        with self._closing(self._consumer(self._lookup_group())) as consumer:

            def marks(partition: int) -> tuple[int, int]:
                low, high = consumer.get_watermark_offsets(
                    TopicPartition(self.topic, partition), timeout=self.timeout
                )
                return int(low), int(high)

            return {p: self._call(functools.partial(marks, p)) for p in self.partitions()}

    def offsets_for(self, position: Position) -> dict[int, int]:
        """
        Return, per partition, the offset a group at ``position`` reads next.

        A time after the last record of a partition gives the end of that partition.
        """
        from confluent_kafka import TopicPartition

        marks = self.watermarks()
        if position == "earliest":
            return {p: low for p, (low, _) in marks.items()}
        if position == "latest":
            return {p: high for p, (_, high) in marks.items()}

        with self._closing(self._consumer(self._lookup_group())) as consumer:
            found = self._call(
                lambda: consumer.offsets_for_times(
                    [TopicPartition(self.topic, p, int(position)) for p in marks], timeout=self.timeout
                )
            )
        return {tp.partition: tp.offset if tp.offset >= 0 else marks[tp.partition][1] for tp in found}

    def _lookup_group(self) -> str:
        # Offset lookups need a consumer, and a consumer needs a group id; it never joins nor commits.
        return self.connection_group or "airflow-dataworks-lookup"

    # Groups

    def committed(self, group_id: str) -> dict[int, int | None]:
        """Return the group's committed offset per partition of the topic (``None``: nothing committed)."""
        from confluent_kafka import TopicPartition

        requested = [TopicPartition(self.topic, p) for p in self.partitions()]
        with self._closing(self._consumer(group_id)) as consumer:
            found = self._call(lambda: consumer.committed(requested, timeout=self.timeout), group_id=group_id)
        return {tp.partition: tp.offset if tp.offset >= 0 else None for tp in found}

    def committed_many(self, group_ids: Iterable[str]) -> dict[str, dict[int, int | None]]:
        """Return :meth:`committed` for several groups, looked up a few at a time."""
        ids = list(dict.fromkeys(group_ids))
        self.partitions()
        with ThreadPoolExecutor(max_workers=_LOOKUP_THREADS, thread_name_prefix="dataworks-groups") as pool:
            return dict(zip(ids, pool.map(self.committed, ids), strict=True))

    def list_groups(self) -> list[str]:
        """Return every consumer group the credentials may see on the cluster."""
        from confluent_kafka import KafkaException

        def attempt() -> list[str]:
            result = self._admin_client().list_consumer_groups(request_timeout=self.timeout)
            listed = result.result(timeout=self.timeout + 5)
            if listed.errors:
                raise KafkaException(listed.errors[0])
            return sorted(group.group_id for group in listed.valid)

        return self._call(attempt)

    def groups_on_topic(self) -> list[str]:
        """Return the groups that have committed an offset on the topic: the subscription's groups."""
        offsets = self.committed_many(self.list_groups())
        return sorted(group for group, committed in offsets.items() if _has_offsets(committed))

    def describe(self, group_id: str) -> GroupDescription:
        """Return the group's state and members (an unknown group is ``DEAD`` without members)."""

        topic = self._topic or self.hook.settings.topic

        def attempt() -> GroupDescription:
            futures = self._admin_client().describe_consumer_groups([group_id], request_timeout=self.timeout)
            described = futures[group_id].result(timeout=self.timeout + 5)
            members = tuple(
                GroupMember(
                    member_id=member.member_id,
                    client_id=member.client_id,
                    host=member.host,
                    partitions=tuple(
                        sorted(
                            tp.partition
                            for tp in (member.assignment.topic_partitions if member.assignment else [])
                            if tp.topic == topic
                        )
                    ),
                )
                for member in described.members
            )
            return GroupDescription(group_id=group_id, state=_state_name(described.state), members=members)

        return self._call(attempt, group_id=group_id)

    def commit(self, group_id: str, offsets: Mapping[int, int]) -> None:
        """
        Commit ``offsets`` for an empty (or new) group without joining it.

        :raises ConsumerGroupRefusedError: the group has members (the broker answers "unknown member").
        """
        from confluent_kafka import KafkaError, TopicPartition

        wanted = [TopicPartition(self.topic, p, o) for p, o in sorted(offsets.items())]
        with self._closing(self._consumer(group_id)) as consumer:
            try:
                answered = self._call(
                    lambda: consumer.commit(offsets=wanted, asynchronous=False), group_id=group_id
                )
                self._raise_partition_errors(answered, group_id)
            except DataWorksKafkaError as error:
                if _cause_code(error) in (KafkaError.UNKNOWN_MEMBER_ID, KafkaError.ILLEGAL_GENERATION):
                    raise self._active_refusal(group_id, "commit offsets for") from None
                raise

    def commit_as_member(self, group_id: str, offsets: Mapping[int, int], *, join_timeout: float) -> None:
        """
        Join the group, commit ``offsets`` as a member, and leave.

        The broker accepts commits from members only while a group has consumers. Joining starts a
        rebalance; consumers using eager assignment (librdkafka's and Java's default) read the
        committed offsets again when partitions are handed back after this member leaves.

        :raises ConsumerGroupRefusedError: the group did not let this member in within ``join_timeout``.
        """
        from confluent_kafka import TopicPartition

        joined = threading.Event()
        wanted = [TopicPartition(self.topic, p, o) for p, o in sorted(offsets.items())]
        consumer = self._consumer(group_id, **{"enable.auto.offset.store": False})
        try:
            consumer.subscribe([self.topic], on_assign=lambda _consumer, _partitions: joined.set())
            deadline = time.monotonic() + join_timeout
            while not joined.is_set():
                message = consumer.poll(0.2)
                error = message.error() if message is not None else None
                if error is not None and error.fatal():
                    raise self._failure(error, group_id)
                self._trap.raise_if_fatal(self.hook)
                if time.monotonic() >= deadline:
                    raise ConsumerGroupRefusedError(
                        f"Could not join consumer group {group_id!r} within {join_timeout:.0f} s to commit "
                        f"offsets on topic {self.topic!r}: its members did not rejoin in time. Stop the "
                        "group's consumers and run the task again without force.",
                        reason="active_members",
                        group_id=group_id,
                    )
            answered = self._call(
                lambda: consumer.commit(offsets=wanted, asynchronous=False), group_id=group_id
            )
            self._raise_partition_errors(answered, group_id)
        finally:
            consumer.close()

    def delete(self, group_id: str) -> bool:
        """
        Delete the group and every offset it committed, on every topic.

        :return: ``False`` when the group did not exist.
        :raises ConsumerGroupRefusedError: the group has members.
        """
        from confluent_kafka import KafkaError, KafkaException

        def attempt() -> bool:
            futures = self._admin_client().delete_consumer_groups([group_id], request_timeout=self.timeout)
            try:
                futures[group_id].result(timeout=self.timeout + 5)
            except KafkaException as error:
                if error.args[0].code() == KafkaError.GROUP_ID_NOT_FOUND:
                    return False
                raise
            return True

        try:
            return self._call(attempt, group_id=group_id)
        except DataWorksKafkaError as error:
            if _cause_code(error) == KafkaError.NON_EMPTY_GROUP:
                raise self._active_refusal(group_id, "delete") from None
            raise

    def close(self) -> None:
        """Release the admin client (it holds connections to the brokers)."""
        self._admin = None

    # Plumbing

    def _active_refusal(self, group_id: str, action: str) -> ConsumerGroupRefusedError:
        description = self.describe(group_id)
        return ConsumerGroupRefusedError(
            f"Cannot {action} consumer group {group_id!r}: it has {len(description.members)} active "
            f"member(s) ({description.member_summary()}). Stop those consumers first, or wait until their "
            "session times out.",
            reason="active_members",
            group_id=group_id,
        )

    def _call(self, function: Callable[[], T], *, group_id: str | None = None) -> T:
        """Run a Kafka call, retrying "try again" answers within ``timeout``; translate failures."""
        from confluent_kafka import KafkaException

        retrying = Retrying(
            retry=retry_if_exception(_transient),
            stop=stop_after_delay(self.timeout),
            wait=wait_exponential(multiplier=0.1, max=2),
            reraise=True,
        )
        try:
            result = retrying(function)
        except KafkaException as error:
            self._trap.raise_if_fatal(self.hook)
            raise self._failure(error.args[0], group_id) from error
        except (TimeoutError, FutureTimeoutError) as error:
            raise DataWorksKafkaError(
                f"Kafka at {self.hook.settings.bootstrap_servers} did not answer within {self.timeout:.0f} s "
                f"(connection {self.hook.dataworks_conn_id!r}); check that the brokers "
                "are reachable, or raise the task's kafka_timeout"
            ) from error
        self._trap.raise_if_fatal(self.hook)
        return result

    def _failure(self, error: Any, group_id: str | None = None) -> DataWorksKafkaError:
        from confluent_kafka import KafkaError

        code = error.code() if hasattr(error, "code") else None
        text = error.str() if hasattr(error, "str") else str(error)
        if code == KafkaError.GROUP_AUTHORIZATION_FAILED:
            return DataWorksKafkaError(
                f"Kafka user {self.hook.settings.sasl_username!r} of connection "
                f"{self.hook.dataworks_conn_id!r} may not use consumer group {group_id!r} ({text}); on "
                "ApsaraMQ for Kafka create the group in the DataWorks OpenEvent console first, then run the "
                "task again"
            )
        if code == KafkaError.INCONSISTENT_GROUP_PROTOCOL:
            return DataWorksKafkaError(
                f"The members of consumer group {group_id!r} use an assignment strategy librdkafka cannot "
                f"join ({text}); stop them and reset the group without force"
            )
        failure = kafka_error_with_fix(error, self.hook.settings, self.hook.dataworks_conn_id)
        if group_id is None:
            return failure
        return DataWorksKafkaError(f"Consumer group {group_id!r}: {failure}")

    def _raise_partition_errors(self, answered: Iterable[Any] | None, group_id: str) -> None:
        from confluent_kafka import KafkaException

        for tp in answered or []:
            if tp.error is not None:
                raise self._failure(tp.error, group_id) from KafkaException(tp.error)

    def _closing(self, consumer: Consumer) -> _Closing:
        return _Closing(consumer)


class _Closing:
    """Close a consumer that never joined its group when the block ends."""

    def __init__(self, consumer: Consumer) -> None:
        self.consumer = consumer

    def __enter__(self) -> Consumer:
        return self.consumer

    def __exit__(self, *exc_info: object) -> None:
        self.consumer.close()


class _ErrorTrap:
    """librdkafka error callback that keeps the first error waiting will not fix."""

    def __init__(self) -> None:
        self.error: Any = None

    def __call__(self, error: Any) -> None:
        from confluent_kafka import KafkaError

        if self.error is None and (
            error.fatal() or error.code() in (KafkaError._AUTHENTICATION, KafkaError._SSL)
        ):
            self.error = error

    def raise_if_fatal(self, hook: DataWorksHook) -> None:
        if self.error is not None:
            raise kafka_error_with_fix(self.error, hook.settings, hook.dataworks_conn_id)


@functools.cache
def _transient_codes() -> frozenset[int]:
    from confluent_kafka import KafkaError

    return frozenset(
        {
            KafkaError.NOT_COORDINATOR,
            KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
            KafkaError.COORDINATOR_NOT_AVAILABLE,
            KafkaError.REBALANCE_IN_PROGRESS,
        }
    )


def _transient(error: BaseException) -> bool:
    from confluent_kafka import KafkaException

    return (
        isinstance(error, KafkaException) and bool(error.args) and error.args[0].code() in _transient_codes()
    )


def _cause_code(error: BaseException) -> int | None:
    from confluent_kafka import KafkaException

    cause = error.__cause__
    return cause.args[0].code() if isinstance(cause, KafkaException) and cause.args else None


def _has_offsets(committed: Mapping[int, int | None]) -> bool:
    return any(offset is not None for offset in committed.values())


def _state_name(state: Any) -> str:
    name = getattr(state, "name", None) or str(state)
    return name.rsplit(".", 1)[-1].upper()
