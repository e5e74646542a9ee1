"""The instance sensor on the real broker and the emulator: OpenAPI first, events, safety net, faults."""

from __future__ import annotations

import asyncio
import time
from datetime import date, timedelta

import pytest
from airflow.sdk.exceptions import TaskDeferred

from airflow_provider_dataworks.sensors.instance import DataWorksInstanceFailedError, DataWorksInstanceSensor
from airflow_provider_dataworks.triggers.instance import DataWorksInstanceTrigger

pytestmark = pytest.mark.integration

WORKSPACE = 10001
NODE = 700000001
OTHER_NODE = 700000002
BUSINESS_DATE = "2026-12-01"


@pytest.fixture
def world(emulator):
    emulator.add_workspace(workspace_id=WORKSPACE, identifier="demo_ws")
    emulator.add_workspace(workspace_id=20002, identifier="other_ws")
    emulator.add_node(node_id=NODE, workspace_id=WORKSPACE, name="ods_orders_di")
    emulator.add_node(node_id=OTHER_NODE, workspace_id=WORKSPACE, name="dwd_orders_di")
    emulator.add_node(node_id=800000001, workspace_id=20002, name="ods_orders_di")
    return emulator


def _sensor(conn_id: str, **kwargs) -> DataWorksInstanceSensor:
    defaults = {"workspace_id": WORKSPACE, "node_id": NODE, "business_date": BUSINESS_DATE}
    return DataWorksInstanceSensor(task_id="wait", dataworks_conn_id=conn_id, **(defaults | kwargs))


async def _settle(trigger: DataWorksInstanceTrigger, timeout: float = 60) -> dict:
    async def first():
        async for event in trigger.run():
            return event.payload
        raise AssertionError("trigger ended without an event")

    return await asyncio.wait_for(first(), timeout)


async def _started(world, trigger: DataWorksInstanceTrigger, timeout: float = 30) -> asyncio.Task:
    """Run the trigger in the background and return once it has asked the OpenAPI its first question."""
    asked_before = world.answered("ListInstances") + world.answered("GetInstance")
    task = asyncio.ensure_future(_settle(trigger))
    deadline = time.monotonic() + timeout
    while world.answered("ListInstances") + world.answered("GetInstance") == asked_before:
        assert not task.done(), task.result()
        assert time.monotonic() < deadline, "the trigger never asked the OpenAPI"
        await asyncio.sleep(0.02)
    return task


def _deferred_trigger(sensor: DataWorksInstanceSensor) -> DataWorksInstanceTrigger:
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute({})
    return deferred.value.trigger


def test_sensor_when_instance_already_succeeded_returns_without_waiting(world, dataworks_conn):
    instance = world.add_instance(node_id=NODE, business_date=BUSINESS_DATE, status="SUCCESS")
    world.set_subscription(enabled=False)

    result = _sensor(dataworks_conn(emulator=world)).execute({})

    assert result["source"] == "openapi"
    assert result["instances"] == [
        {
            "instance_id": instance["id"],
            "node_id": NODE,
            "node_name": "ods_orders_di",
            "status": "SUCCESS",
            "business_date": BUSINESS_DATE,
            "cycle_time": result["instances"][0]["cycle_time"],
        }
    ]


def test_sensor_when_instance_already_failed_fails_naming_instance_node_date_and_status(
    world, dataworks_conn
):
    instance = world.add_instance(node_id=NODE, business_date=BUSINESS_DATE, status="FAILURE")

    with pytest.raises(DataWorksInstanceFailedError) as error:
        _sensor(dataworks_conn(emulator=world)).execute({})

    message = str(error.value)
    assert f"instance {instance['id']}" in message
    assert f"node {NODE}" in message
    assert f"business date {BUSINESS_DATE}" in message
    assert "FAILURE" in message


def test_sensor_by_instance_id_when_running_defers_with_overlapping_start(world, dataworks_conn):
    instance = world.add_instance(node_id=NODE, business_date=BUSINESS_DATE, status="RUNNING")
    before = int(time.time() * 1000)

    trigger = _deferred_trigger(
        _sensor(
            dataworks_conn(emulator=world),
            instance_id=instance["id"],
            workspace_id=None,
            node_id=None,
            business_date=None,
        )
    )

    assert trigger.target.instance_id == instance["id"]
    assert trigger.start_time <= before - 59_000


async def test_trigger_ignores_other_dates_nodes_and_workspaces_then_fires_on_the_instance(
    world, dataworks_conn
):
    conn_id = dataworks_conn(emulator=world)
    mine = world.add_instance(node_id=NODE, business_date=BUSINESS_DATE, status="WAIT_TIME")
    other_date = world.add_instance(node_id=NODE, business_date="2026-11-30", status="RUNNING")
    other_node = world.add_instance(node_id=OTHER_NODE, business_date=BUSINESS_DATE, status="RUNNING")
    other_workspace = world.add_instance(node_id=800000001, business_date=BUSINESS_DATE, status="RUNNING")
    running = await _started(world, _deferred_trigger(_sensor(conn_id, recheck_interval=3600)))

    for stranger in (other_date, other_node, other_workspace):
        world.set_instance_status(stranger["id"], "SUCCESS")
    world.set_instance_status(mine["id"], "RUNNING")
    world.set_instance_status(mine["id"], "SUCCESS")
    payload = await running

    assert payload["status"] == "success"
    assert payload["source"] == "event"
    assert [i["instance_id"] for i in payload["instances"]] == [mine["id"]]


async def test_trigger_when_subscription_off_succeeds_through_the_safety_net(world, dataworks_conn):
    conn_id = dataworks_conn(emulator=world)
    instance = world.add_instance(node_id=NODE, business_date=BUSINESS_DATE, status="RUNNING")
    world.set_subscription(enabled=False)
    running = await _started(world, _deferred_trigger(_sensor(conn_id, recheck_interval=2)))
    world.set_instance_status(instance["id"], "SUCCESS")
    started = time.monotonic()

    payload = await running

    assert payload == {
        "status": "success",
        "instances": payload["instances"],
        "source": "openapi",
        "message": payload["message"],
    }
    assert payload["instances"][0]["status"] == "SUCCESS"
    assert time.monotonic() - started < 2 + 5


async def test_trigger_when_rerun_in_progress_waits_for_the_rerun_to_succeed(world, dataworks_conn):
    conn_id = dataworks_conn(emulator=world)
    instance = world.add_instance(node_id=NODE, business_date=BUSINESS_DATE, status="FAILURE")
    world.rerun_instance(instance["id"], outcome="SUCCESS", delay=3600)
    world.set_instance_status(instance["id"], "RUNNING")

    running = await _started(world, _deferred_trigger(_sensor(conn_id, recheck_interval=3600)))
    world.set_instance_status(instance["id"], "SUCCESS")
    payload = await running

    assert payload["status"] == "success"
    assert payload["instances"][0]["status"] == "SUCCESS"


async def test_trigger_when_instance_fails_while_waiting_reports_failure(world, dataworks_conn):
    conn_id = dataworks_conn(emulator=world)
    instance = world.add_instance(node_id=NODE, business_date=BUSINESS_DATE, status="RUNNING")
    running = await _started(world, _deferred_trigger(_sensor(conn_id, recheck_interval=3600)))

    world.set_instance_status(instance["id"], "FAILURE")
    payload = await running

    assert payload["status"] == "failure"
    with pytest.raises(DataWorksInstanceFailedError, match=f"instance {instance['id']}.*FAILURE"):
        _sensor(conn_id).execute_complete({}, payload)


def test_sensor_when_openapi_throttles_and_fails_retries_and_succeeds(world, dataworks_conn):
    world.add_instance(node_id=NODE, business_date=BUSINESS_DATE, status="SUCCESS")
    world.inject_fault("ListInstances", "throttle", count=2, retry_after=200)
    world.inject_fault("ListInstances", "error", count=2, http_status=503, code="ServiceUnavailable")

    result = _sensor(dataworks_conn(emulator=world)).execute({})

    assert result["instances"][0]["status"] == "SUCCESS"
    assert all(fault["remaining"] == 0 for fault in world.faults())


def test_sensor_cycle_time_picks_one_of_several_runs(world, dataworks_conn):
    world.add_instance(node_id=NODE, business_date=date(2026, 12, 1), status="SUCCESS")

    result = _sensor(
        dataworks_conn(emulator=world), cycle_time="00:00", timeout=timedelta(minutes=1).seconds
    ).execute({})

    assert result["instances"][0]["cycle_time"].endswith("00:00:00+08:00")
