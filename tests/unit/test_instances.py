"""Naming instances and judging their statuses, without the OpenAPI."""

from __future__ import annotations

from datetime import date, datetime
from zoneinfo import ZoneInfo

import pytest

from airflow_provider_dataworks.events import InstanceStatus
from airflow_provider_dataworks.hooks.instances import InstanceInfo, InstanceTarget, judge

SHANGHAI = ZoneInfo("Asia/Shanghai")


def _ms(*parts: int) -> int:
    return int(datetime(*parts, tzinfo=SHANGHAI).timestamp() * 1000)


def _info(instance_id=1, status="SUCCESS", node=7, bizdate=(2026, 12, 1), cycle=(2026, 12, 2, 0, 30)):
    return InstanceInfo(
        instance_id=instance_id, node_id=node, status=status, bizdate=_ms(*bizdate), cyc_time=_ms(*cycle)
    )


def test_target_needs_instance_id_or_node_and_business_date():
    with pytest.raises(ValueError, match="instance_id, or by workspace_id"):
        InstanceTarget(workspace_id=1, node_id=7)


def test_target_accepts_the_node_business_date_and_cycle_time():
    target = InstanceTarget(workspace_id=1, node_id=7, business_date="2026-12-01", cycle_time="00:30")

    assert target.accepts(_info())
    assert not target.accepts(_info(node=8))
    assert not target.accepts(_info(bizdate=(2026, 11, 30)))
    assert not target.accepts(_info(cycle=(2026, 12, 2, 1, 30)))


def test_target_business_date_counts_in_the_dataworks_time_zone():
    # Midnight in Shanghai is 16:00 the day before in UTC.
    info = _info(bizdate=(2026, 12, 1))

    assert info.business_date() == date(2026, 12, 1)
    assert info.business_date("UTC") == date(2026, 11, 30)


@pytest.mark.parametrize("cycle_time", ["24h", "12:3x", "2026-12-02"])
def test_target_refuses_malformed_cycle_time(cycle_time):
    with pytest.raises(ValueError, match="cycle_time"):
        InstanceTarget(workspace_id=1, node_id=7, business_date="2026-12-01", cycle_time=cycle_time)


def test_info_reads_status_names_with_codes():
    assert InstanceInfo(instance_id=1, status="SUCCESS(6)").status is InstanceStatus.SUCCESS


TARGETS = frozenset({InstanceStatus.SUCCESS})
FAILURES = frozenset({InstanceStatus.FAILURE})


@pytest.mark.parametrize(
    ("statuses", "verdict"),
    [
        ([], "waiting"),
        (["SUCCESS"], "success"),
        (["SUCCESS", "RUNNING"], "waiting"),
        (["SUCCESS", "FAILURE"], "failure"),
        (["WAIT_TIME"], "waiting"),
    ],
)
def test_judge_needs_every_instance_in_a_target_status_and_none_failed(statuses, verdict):
    instances = [_info(instance_id=i, status=s) for i, s in enumerate(statuses)]

    assert judge(instances, target_statuses=TARGETS, failure_statuses=FAILURES) == verdict
