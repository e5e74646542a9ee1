"""Operators that create, reset and delete the consumer groups of a DataWorks event subscription."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from airflow.sdk import BaseOperator, Context

from airflow_provider_dataworks.hooks.dataworks import DataWorksHook
from airflow_provider_dataworks.hooks.groups import (
    DATAWORKS_EXTRA_GROUPS,
    ConsumerGroupAdmin,
    ConsumerGroupRefusedError,
    PositionLike,
    describe_position,
    parse_position,
)


class _ConsumerGroupOperator(BaseOperator):
    """Shared arguments of the consumer-group operators."""

    template_fields: Sequence[str] = ("group_id", "topic")
    ui_color = "#ff6a00"

    def __init__(
        self,
        *,
        group_id: str,
        topic: str | None = None,
        dataworks_conn_id: str = DataWorksHook.default_conn_name,
        kafka_timeout: float = 30.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if kafka_timeout <= 0:
            raise ValueError(f"kafka_timeout must be positive, not {kafka_timeout!r}")
        self.group_id = group_id
        self.topic = topic
        self.dataworks_conn_id = dataworks_conn_id
        self.kafka_timeout = kafka_timeout

    def _group_admin(self) -> ConsumerGroupAdmin:
        if not self.group_id or not str(self.group_id).strip():
            raise ValueError(f"Task {self.task_id!r} needs a consumer group name in group_id")
        self.group_id = str(self.group_id).strip()
        return ConsumerGroupAdmin(
            DataWorksHook(self.dataworks_conn_id), self.topic, timeout=self.kafka_timeout
        )


class DataWorksCreateConsumerGroupOperator(_ConsumerGroupOperator):
    """
    Create a consumer group on the subscription topic, positioned at the start, the end or a time.

    The group gets a committed offset on every partition of the topic, so its consumers start
    exactly there whatever their ``auto.offset.reset``. Nothing joins the group. When the group
    already has committed offsets on the topic, it is left as it is (the task is idempotent); use
    :class:`DataWorksResetConsumerGroupOperator` to move it.

    DataWorks lets a subscription have five consumer groups besides the one it created (the
    connection's ``consumer_group``). The groups counted are those with committed offsets on the
    topic; the task refuses to create one more than ``max_extra_groups``.

    Returns ``{"group_id", "topic", "created", "position", "offsets": [{"partition", "offset"}]}``;
    for an existing group, ``offsets`` are its committed offsets (``None`` where it has none).

    .. note::
        ApsaraMQ for Kafka may require a group to be created in its console (or the DataWorks
        OpenEvent console) before clients can use it; the task then fails with that fix named.

    :param group_id: the consumer group to create (templated).
    :param position: where the group starts: ``earliest``, ``latest`` (default), a datetime,
        ISO-8601 text, epoch milliseconds, or a timedelta meaning that long ago (templated).
    :param topic: the subscription topic; the connection's topic by default (templated).
    :param max_extra_groups: how many groups besides the connection's own may have offsets on the
        topic; DataWorks allows five.
    :param dataworks_conn_id: the ``dataworks`` connection.
    :param kafka_timeout: seconds any one Kafka call may take.
    """

    template_fields: Sequence[str] = ("group_id", "position", "topic")

    def __init__(
        self,
        *,
        group_id: str,
        position: PositionLike = "latest",
        topic: str | None = None,
        max_extra_groups: int = DATAWORKS_EXTRA_GROUPS,
        dataworks_conn_id: str = DataWorksHook.default_conn_name,
        kafka_timeout: float = 30.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            group_id=group_id,
            topic=topic,
            dataworks_conn_id=dataworks_conn_id,
            kafka_timeout=kafka_timeout,
            **kwargs,
        )
        if max_extra_groups < 0:
            raise ValueError(f"max_extra_groups must be 0 or more, not {max_extra_groups!r}")
        self.position = position
        self.max_extra_groups = max_extra_groups

    def execute(self, context: Context) -> dict[str, Any]:
        admin = self._group_admin()
        position = parse_position(self.position)

        existing = admin.committed(self.group_id)
        if any(offset is not None for offset in existing.values()):
            self.log.info(
                "Consumer group %s already has offsets on topic %s; left as it is: %s",
                self.group_id,
                admin.topic,
                existing,
            )
            return _result(admin, self.group_id, created=False, position=None, offsets=existing)

        if self.group_id != admin.connection_group:
            self._check_group_limit(admin)
        offsets = admin.offsets_for(position)
        admin.commit(self.group_id, offsets)
        self.log.info(
            "Created consumer group %s on topic %s at %s: offsets %s",
            self.group_id,
            admin.topic,
            describe_position(position),
            offsets,
        )
        return _result(admin, self.group_id, created=True, position=position, offsets=offsets)

    def _check_group_limit(self, admin: ConsumerGroupAdmin) -> None:
        others = [g for g in admin.groups_on_topic() if g not in (admin.connection_group, self.group_id)]
        if len(others) < self.max_extra_groups:
            return
        own = admin.connection_group
        raise ConsumerGroupRefusedError(
            f"Cannot create consumer group {self.group_id!r} on topic {admin.topic!r}: the topic already "
            f"has {len(others)} consumer groups besides the connection's own group {own!r} "
            f"({', '.join(others)}), and at most {self.max_extra_groups} are allowed. Delete one with "
            "DataWorksDeleteConsumerGroupOperator, or reuse it"
            + ("" if own else "; set consumer_group in the connection so its own group is not counted")
            + ".",
            reason="group_limit",
            group_id=self.group_id,
        )


class DataWorksResetConsumerGroupOperator(_ConsumerGroupOperator):
    """
    Move a consumer group's committed offsets on the subscription topic to the start, the end or a time.

    Use it to replay events after an outage (a time before the outage began) or to skip a backlog
    (``latest``). The broker takes offset changes from outside only while a group has no members,
    so the task refuses while consumers are active, naming them.

    With ``force=True`` the task instead joins the group for a moment, commits the new offsets as a
    member and leaves. Consumers with eager assignment (the default of librdkafka and of the Java
    client) read the committed offsets again when their partitions come back after that rebalance.

    Returns ``{"group_id", "topic", "position", "forced", "members", "offsets": [{"partition",
    "offset"}], "previous": [{"partition", "offset"}]}``.

    .. warning::
        A consumer that commits its own position from memory (auto-commit, or a commit of records
        it read before the reset) can write over the reset. Stop consumers for a reset you can
        rely on; ``force`` is for consumers you cannot stop.

    :param group_id: the consumer group to move (templated).
    :param position: ``earliest``, ``latest``, a datetime, ISO-8601 text, epoch milliseconds, or a
        timedelta meaning that long ago (templated).
    :param topic: the subscription topic; the connection's topic by default (templated).
    :param force: go ahead while the group has active members, by joining it for the reset.
    :param join_timeout: seconds to wait for the group to let this task in when forcing.
    :param dataworks_conn_id: the ``dataworks`` connection.
    :param kafka_timeout: seconds any one Kafka call may take.
    """

    template_fields: Sequence[str] = ("group_id", "position", "topic")

    def __init__(
        self,
        *,
        group_id: str,
        position: PositionLike,
        topic: str | None = None,
        force: bool = False,
        join_timeout: float = 60.0,
        dataworks_conn_id: str = DataWorksHook.default_conn_name,
        kafka_timeout: float = 30.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            group_id=group_id,
            topic=topic,
            dataworks_conn_id=dataworks_conn_id,
            kafka_timeout=kafka_timeout,
            **kwargs,
        )
        if join_timeout <= 0:
            raise ValueError(f"join_timeout must be positive, not {join_timeout!r}")
        self.position = position
        self.force = force
        self.join_timeout = join_timeout

    def execute(self, context: Context) -> dict[str, Any]:
        admin = self._group_admin()
        position = parse_position(self.position)

        previous = admin.committed(self.group_id)
        if self.group_id != admin.connection_group and all(o is None for o in previous.values()):
            raise ConsumerGroupRefusedError(
                f"Consumer group {self.group_id!r} has no committed offsets on topic {admin.topic!r}, so "
                "there is nothing to reset; create it with DataWorksCreateConsumerGroupOperator (it counts "
                "against the subscription's extra groups) or check the group name.",
                reason="unknown_group",
                group_id=self.group_id,
            )

        description = admin.describe(self.group_id)
        if description.active and not self.force:
            raise ConsumerGroupRefusedError(
                f"Cannot reset consumer group {self.group_id!r} on topic {admin.topic!r}: it has "
                f"{len(description.members)} active member(s) ({description.member_summary()}). Stop those "
                "consumers and run the task again, or pass force=True to reset while they run.",
                reason="active_members",
                group_id=self.group_id,
            )

        offsets = admin.offsets_for(position)
        if description.active:
            self.log.info(
                "Consumer group %s has %d active member(s) (%s); joining it to reset offsets (force=True)",
                self.group_id,
                len(description.members),
                description.member_summary(),
            )
            admin.commit_as_member(self.group_id, offsets, join_timeout=self.join_timeout)
        else:
            admin.commit(self.group_id, offsets)
        self.log.info(
            "Reset consumer group %s on topic %s to %s: offsets %s (were %s)",
            self.group_id,
            admin.topic,
            describe_position(position),
            offsets,
            previous,
        )
        result = _result(admin, self.group_id, created=None, position=position, offsets=offsets)
        result.update(
            forced=description.active,
            members=len(description.members),
            previous=_offset_list(previous),
        )
        return result


class DataWorksDeleteConsumerGroupOperator(_ConsumerGroupOperator):
    """
    Delete a consumer group and its committed offsets.

    Deleting a group that does not exist succeeds (``deleted`` is ``False``). The broker refuses
    while the group has members; the task then names them. The connection's own group (the one
    DataWorks created for the subscription) is kept unless ``allow_connection_group`` is set.

    Returns ``{"group_id", "deleted"}``.

    .. note::
        Kafka deletes a group as a whole: its offsets on other topics go too.

    :param group_id: the consumer group to delete (templated).
    :param allow_connection_group: also delete the connection's own consumer group.
    :param topic: the subscription topic, only used in messages (templated).
    :param dataworks_conn_id: the ``dataworks`` connection.
    :param kafka_timeout: seconds any one Kafka call may take.
    """

    def __init__(
        self,
        *,
        group_id: str,
        allow_connection_group: bool = False,
        topic: str | None = None,
        dataworks_conn_id: str = DataWorksHook.default_conn_name,
        kafka_timeout: float = 30.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            group_id=group_id,
            topic=topic,
            dataworks_conn_id=dataworks_conn_id,
            kafka_timeout=kafka_timeout,
            **kwargs,
        )
        self.allow_connection_group = allow_connection_group

    def execute(self, context: Context) -> dict[str, Any]:
        admin = self._group_admin()
        if self.group_id == admin.connection_group and not self.allow_connection_group:
            raise ConsumerGroupRefusedError(
                f"Refusing to delete consumer group {self.group_id!r}: it is the consumer group of "
                f"connection {self.dataworks_conn_id!r} (the one DataWorks created for the subscription), "
                "and deleting it loses its offsets. Pass allow_connection_group=True if you mean it.",
                reason="connection_group",
                group_id=self.group_id,
            )

        deleted = admin.delete(self.group_id)
        if deleted:
            self.log.info("Deleted consumer group %s", self.group_id)
        else:
            self.log.info("Consumer group %s does not exist; nothing to delete", self.group_id)
        return {"group_id": self.group_id, "deleted": deleted}


def _offset_list(offsets: Mapping[int, int | None]) -> list[dict[str, int | None]]:
    return [{"partition": p, "offset": offsets[p]} for p in sorted(offsets)]


def _result(
    admin: ConsumerGroupAdmin,
    group_id: str,
    *,
    created: bool | None,
    position: Any,
    offsets: Mapping[int, int | None],
) -> dict[str, Any]:
    result: dict[str, Any] = {
        "group_id": group_id,
        "topic": admin.topic,
        "position": describe_position(position) if position is not None else None,
        "offsets": _offset_list(offsets),
    }
    if created is not None:
        result["created"] = created
    return result


__all__ = [
    "DataWorksCreateConsumerGroupOperator",
    "DataWorksDeleteConsumerGroupOperator",
    "DataWorksResetConsumerGroupOperator",
]
