"""An OpenAPI that does not answer: calls end at the connection's timeout, are retried, block nothing."""

from __future__ import annotations

import asyncio
import time

import pytest
from airflow.sdk.exceptions import TaskDeferred
from alibabacloud_dataworks_public20200518 import models

from airflow_provider_dataworks.exceptions import DataWorksOpenAPIError
from airflow_provider_dataworks.hooks.dataworks import DataWorksHook
from airflow_provider_dataworks.hooks.instances import InstanceTarget, list_instances
from airflow_provider_dataworks.sensors.instance import DataWorksInstanceSensor
from airflow_provider_dataworks.triggers.event import DataWorksEventTrigger
from tests.faults.conftest import NODE, WORKSPACE, Publisher, first_payload, instance_event, until

pytestmark = pytest.mark.integration

TIMEOUT_SECONDS = 1
HANG_SECONDS = 30


@pytest.fixture
def world(emulator):
    emulator.add_workspace(workspace_id=WORKSPACE)
    emulator.add_node(node_id=NODE, workspace_id=WORKSPACE, name="ods_orders_di")
    return emulator


def test_hanging_call_ends_at_the_connection_timeout_and_the_retry_answers(world, dataworks_conn, capsys):
    instance = world.add_instance(node_id=NODE, business_date="2026-12-01", status="SUCCESS")
    hook = DataWorksHook(dataworks_conn(emulator=world, openapi_timeout_seconds=TIMEOUT_SECONDS))
    world.inject_fault("ListInstances", "hang", count=2, seconds=HANG_SECONDS)
    started = time.monotonic()

    found = list_instances(
        hook, InstanceTarget(workspace_id=WORKSPACE, node_id=NODE, business_date="2026-12-01")
    )

    assert [(i.instance_id, i.status.value) for i in found] == [(instance["id"], "SUCCESS")]
    assert world.faults()[0]["served"] == 2
    # Two attempts of 1 s and two back-offs of at most 1.5 s and 2.5 s; a call without a bound
    # would still be waiting for the first 30 s answer.
    assert time.monotonic() - started < 2 * TIMEOUT_SECONDS + 1.5 + 2.5 + 2
    # Hooks log through Airflow's structlog, which writes to stdout.
    retries = [line for line in capsys.readouterr().out.splitlines() if "retrying in" in line]
    assert len(retries) == 2, retries
    assert "DataWorks ListInstances failed (no answer in time, attempt 1 of 6)" in retries[0]
    assert "DataWorks ListInstances failed (no answer in time, attempt 2 of 6)" in retries[1]


def test_call_that_never_answers_fails_naming_the_timeout_and_the_fix(world, dataworks_conn):
    conn_id = dataworks_conn(emulator=world, openapi_timeout_seconds=TIMEOUT_SECONDS)
    hook = DataWorksHook(conn_id)
    client = hook.get_openapi_client()
    world.inject_fault("GetInstance", "hang", count=10, seconds=HANG_SECONDS)

    with pytest.raises(DataWorksOpenAPIError) as failure:
        hook.call_openapi(
            "GetInstance",
            lambda: client.get_instance(models.GetInstanceRequest(instance_id=1, project_env="PROD")),
            max_attempts=2,
        )

    message = str(failure.value)
    assert (
        f"did not answer within {TIMEOUT_SECONDS} s (openapi_timeout_seconds of connection {conn_id!r})"
        in message
    )
    assert "raise that timeout" in message
    assert world.access_key_secret not in message


async def test_event_trigger_fires_promptly_while_an_instance_trigger_waits_on_a_hanging_openapi(
    world, dataworks_conn, kafka_broker, no_stream_left
):
    conn_id = dataworks_conn(emulator=world, openapi_timeout_seconds=TIMEOUT_SECONDS)
    instance = world.add_instance(node_id=NODE, business_date="2026-12-01", status="RUNNING")
    with pytest.raises(TaskDeferred) as deferred:
        DataWorksInstanceSensor(
            task_id="wait_for_instance",
            dataworks_conn_id=conn_id,
            instance_id=instance["id"],
            recheck_interval=3600,
        ).execute({})
    world.inject_fault("GetInstance", "hang", count=100, seconds=HANG_SECONDS)

    lags: list[float] = []

    async def measure_loop_lag() -> None:
        while True:
            before = time.monotonic()
            await asyncio.sleep(0.05)
            lags.append(time.monotonic() - before - 0.05)

    ticker = asyncio.ensure_future(measure_loop_lag())
    try:
        waiting_instance = asyncio.ensure_future(first_payload(deferred.value.trigger, timeout=120))
        await until(
            lambda: world.faults()[0]["served"] >= 2, timeout=30, message="the OpenAPI never hung twice"
        )
        event_trigger = DataWorksEventTrigger(
            dataworks_conn_id=conn_id,
            event_filter={"node_ids": [NODE + 1]},
            start_time=int(time.time() * 1000),
        )
        waiting_event = asyncio.ensure_future(first_payload(event_trigger))
        published = time.monotonic()
        Publisher(kafka_broker, world.topic).send(instance_event(node=NODE + 1, message_id="unrelated-event"))

        event_payload = await waiting_event
        fired_after = time.monotonic() - published
        assert not waiting_instance.done(), "the instance trigger should still be waiting on the OpenAPI"

        world.clear_faults()
        world.set_instance_status(instance["id"], "SUCCESS")
        instance_payload = await waiting_instance
    finally:
        ticker.cancel()

    assert event_payload["event"]["message_id"] == "unrelated-event"
    assert fired_after < 5
    assert instance_payload["status"] == "success"
    assert max(lags) < 0.5, f"the event loop was blocked for {max(lags):.2f} s"
