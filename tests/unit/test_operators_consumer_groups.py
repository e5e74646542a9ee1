"""Consumer-group operators without a broker: positions, arguments, templating."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from airflow_provider_dataworks.hooks.groups import (
    GroupDescription,
    GroupMember,
    describe_position,
    parse_position,
)
from airflow_provider_dataworks.operators.consumer_groups import (
    DataWorksCreateConsumerGroupOperator,
    DataWorksDeleteConsumerGroupOperator,
    DataWorksResetConsumerGroupOperator,
)

NOON_UTC = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)
NOON_MS = 1796126400000


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("earliest", "earliest"),
        (" LATEST ", "latest"),
        (NOON_UTC, NOON_MS),
        (NOON_UTC.replace(tzinfo=None), NOON_MS),
        ("2026-12-01T20:00:00+08:00", NOON_MS),
        ("2026-12-01T12:00:00Z", NOON_MS),
        (NOON_MS, NOON_MS),
        (str(NOON_MS), NOON_MS),
    ],
)
def test_parse_position_accepts_names_times_and_epoch_ms(value, expected):
    assert parse_position(value) == expected


def test_parse_position_of_a_timedelta_means_that_long_ago():
    assert parse_position(timedelta(hours=2), now=NOON_UTC) == NOON_MS - 7_200_000


@pytest.mark.parametrize("value", ["beginning", "", None, True, "2026-13-45"])
def test_parse_position_when_value_is_not_a_position_names_the_accepted_forms(value):
    with pytest.raises(ValueError, match="'earliest', 'latest', a datetime"):
        parse_position(value)


def test_describe_position_gives_names_or_iso_time():
    assert describe_position("earliest") == "earliest"
    assert describe_position(NOON_MS) == "2026-12-01T12:00:00+00:00"


def test_group_description_is_active_with_members_or_while_rebalancing():
    member = GroupMember(member_id="m-1", client_id="app", host="/10.0.0.5", partitions=(0, 2))

    assert GroupDescription("g", "STABLE", (member,)).active
    assert GroupDescription("g", "PREPARING_REBALANCE", ()).active
    assert not GroupDescription("g", "EMPTY", ()).active
    assert not GroupDescription("g", "DEAD", ()).active
    assert GroupDescription("g", "STABLE", (member,)).member_summary() == "app@10.0.0.5"
    assert member.to_dict() == {
        "member_id": "m-1",
        "client_id": "app",
        "host": "/10.0.0.5",
        "partitions": [0, 2],
    }


@pytest.mark.parametrize(
    "operator_class",
    [
        DataWorksCreateConsumerGroupOperator,
        DataWorksResetConsumerGroupOperator,
        DataWorksDeleteConsumerGroupOperator,
    ],
)
def test_consumer_group_operators_take_keyword_arguments_only(operator_class):
    with pytest.raises(TypeError, match="keyword arguments"):
        operator_class("task", group_id="g")


def test_consumer_group_operators_default_to_the_dataworks_default_connection():
    create = DataWorksCreateConsumerGroupOperator(task_id="create", group_id="g")

    assert create.dataworks_conn_id == "dataworks_default"
    assert create.position == "latest"
    assert create.max_extra_groups == 5


def test_templated_fields_of_the_consumer_group_operators():
    assert DataWorksCreateConsumerGroupOperator.template_fields == ("group_id", "position", "topic")
    assert DataWorksResetConsumerGroupOperator.template_fields == ("group_id", "position", "topic")
    assert DataWorksDeleteConsumerGroupOperator.template_fields == ("group_id", "topic")


def test_reset_position_and_group_render_from_templates():
    reset = DataWorksResetConsumerGroupOperator(
        task_id="reset", group_id="{{ params.group }}", position="{{ params.outage_start }}"
    )

    reset.render_template_fields({"params": {"group": "replay", "outage_start": "2026-12-01T12:00:00Z"}})

    assert (reset.group_id, parse_position(reset.position)) == ("replay", NOON_MS)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kafka_timeout": 0}, "kafka_timeout must be positive"),
        ({"max_extra_groups": -1}, "max_extra_groups must be 0 or more"),
    ],
)
def test_create_when_arguments_cannot_work_fails_at_parse_time(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DataWorksCreateConsumerGroupOperator(task_id="create", group_id="g", **kwargs)


def test_reset_needs_a_position_and_a_positive_join_timeout():
    with pytest.raises(TypeError):
        DataWorksResetConsumerGroupOperator(task_id="reset", group_id="g")
    with pytest.raises(ValueError, match="join_timeout must be positive"):
        DataWorksResetConsumerGroupOperator(
            task_id="reset", group_id="g", position="earliest", join_timeout=0
        )


def test_execute_with_an_empty_group_name_fails_naming_the_task():
    delete = DataWorksDeleteConsumerGroupOperator(task_id="delete", group_id="  ")

    with pytest.raises(ValueError, match="Task 'delete' needs a consumer group name"):
        delete.execute({})
