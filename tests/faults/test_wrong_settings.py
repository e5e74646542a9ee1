"""Wrong credentials, certificates, topics, workspaces: fail within 30 s, naming cause and fix, no secret."""

from __future__ import annotations

import asyncio
import socket
import time
import uuid

import pytest
from airflow.sdk.exceptions import TaskDeferred

from airflow_provider_dataworks.exceptions import DataWorksError, DataWorksOpenAPIError
from airflow_provider_dataworks.sensors.event import DataWorksEventSensor
from airflow_provider_dataworks.sensors.instance import DataWorksInstanceSensor
from tests.faults.conftest import (
    NODE,
    WORKSPACE,
    first_payload,
    set_connection_field,
    until,
    write_foreign_ca,
)

pytestmark = pytest.mark.integration

FAIL_WITHIN_SECONDS = 30
WRONG_PASSWORD = "wrong-password-" + uuid.uuid4().hex
ACCESS_KEY_SECRET = "ak-secret-" + uuid.uuid4().hex
WRONG_SECRET = "wrong-ak-secret-" + uuid.uuid4().hex


def _kafka_fault(name, kafka_broker, dataworks_conn, monkeypatch, tmp_path) -> str:
    """Return the id of a connection broken in the way ``name`` says."""
    if name == "wrong SASL password":
        conn_id = dataworks_conn(listener="sasl_ssl")
        set_connection_field(monkeypatch, conn_id, password=WRONG_PASSWORD)
    elif name == "unknown topic":
        conn_id = dataworks_conn(listener="sasl_ssl", topic=f"missing-{uuid.uuid4().hex}")
    elif name == "missing CA file":
        conn_id = dataworks_conn(listener="sasl_ssl", ssl_ca=str(tmp_path / "no-such-ca.pem"))
    elif name == "CA that did not sign the broker":
        conn_id = dataworks_conn(
            listener="sasl_ssl", ssl_ca=str(write_foreign_ca(tmp_path / "foreign-ca.pem"))
        )
    elif name == "CA pasted as PEM that did not sign the broker":
        foreign = write_foreign_ca(tmp_path / "foreign-ca.pem").read_text()
        conn_id = dataworks_conn(listener="sasl_ssl", ssl_ca=foreign)
    else:
        raise AssertionError(name)
    return conn_id


# The fault, then words the message must hold: what went wrong, and where to fix it.
KAFKA_FAULTS = {
    "wrong SASL password": ("refused the SASL user", "check the SASL username and SASL password"),
    "unknown topic": ("does not exist", "check the topic field"),
    "missing CA file": ("no-such-ca.pem' does not exist", "paste its PEM text"),
    "CA that did not sign the broker": ("certificate verify failed", "signed the brokers' certificates"),
    "CA pasted as PEM that did not sign the broker": (
        "certificate verify failed",
        "signed the brokers' certificates",
    ),
}


def _assert_no_secret(text: str, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in text, f"a secret leaked into: {text}"


@pytest.mark.parametrize("fault", list(KAFKA_FAULTS))
async def test_deferred_event_sensor_with_broken_kafka_settings_fails_fast_naming_cause_and_fix(
    fault, kafka_broker, dataworks_conn, monkeypatch, tmp_path, unique_topic, no_stream_left
):
    conn_id = _kafka_fault(fault, kafka_broker, dataworks_conn, monkeypatch, tmp_path)
    sensor = DataWorksEventSensor(task_id="wait", dataworks_conn_id=conn_id, node_ids=[NODE])
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute({})
    started = time.monotonic()

    payload = await first_payload(deferred.value.trigger, timeout=FAIL_WITHIN_SECONDS)

    assert time.monotonic() - started < FAIL_WITHIN_SECONDS
    assert payload["status"] == "error"
    with pytest.raises(DataWorksError) as failure:
        sensor.execute_complete({}, payload)
    message = str(failure.value)
    cause, fix = KAFKA_FAULTS[fault]
    assert cause in message
    assert fix in message
    assert conn_id in message
    _assert_no_secret(message, kafka_broker.sasl_password, WRONG_PASSWORD)


@pytest.mark.parametrize("fault", list(KAFKA_FAULTS))
def test_poking_event_sensor_with_broken_kafka_settings_fails_fast_naming_cause_and_fix(
    fault, kafka_broker, dataworks_conn, monkeypatch, tmp_path, unique_topic
):
    conn_id = _kafka_fault(fault, kafka_broker, dataworks_conn, monkeypatch, tmp_path)
    sensor = DataWorksEventSensor(
        task_id="wait", dataworks_conn_id=conn_id, node_ids=[NODE], deferrable=False
    )
    started = time.monotonic()

    with pytest.raises(DataWorksError) as failure:
        sensor.poke({})

    assert time.monotonic() - started < FAIL_WITHIN_SECONDS
    cause, fix = KAFKA_FAULTS[fault]
    assert cause in str(failure.value)
    assert fix in str(failure.value)
    _assert_no_secret(str(failure.value), kafka_broker.sasl_password, WRONG_PASSWORD)


@pytest.fixture
def world(make_emulator):
    emulator = make_emulator(access_key_secret=ACCESS_KEY_SECRET)
    emulator.add_workspace(workspace_id=WORKSPACE, identifier="visible_ws")
    emulator.add_workspace(workspace_id=WORKSPACE + 1, identifier="hidden_ws", visible=False)
    emulator.add_node(node_id=NODE, workspace_id=WORKSPACE, name="ods_orders_di")
    emulator.add_node(node_id=NODE + 1, workspace_id=WORKSPACE + 1, name="ods_hidden_di")
    return emulator


def _instance_sensor(conn_id: str, **kwargs) -> DataWorksInstanceSensor:
    arguments = {"workspace_id": WORKSPACE, "node_id": NODE, "business_date": "2026-12-01"} | kwargs
    return DataWorksInstanceSensor(task_id="wait", dataworks_conn_id=conn_id, **arguments)


def test_instance_sensor_with_rejected_access_key_secret_fails_fast_naming_the_fix(world, dataworks_conn):
    conn_id = dataworks_conn(emulator=world, access_key_secret=WRONG_SECRET)
    started = time.monotonic()

    with pytest.raises(DataWorksOpenAPIError) as failure:
        _instance_sensor(conn_id).execute({})

    assert time.monotonic() - started < FAIL_WITHIN_SECONDS
    message = str(failure.value)
    assert "rejected the AccessKey 'emulator-access-key'" in message
    assert "check access_key_id and access_key_secret in the RAM console" in message
    assert "SignatureDoesNotMatch" in message
    _assert_no_secret(message, WRONG_SECRET, ACCESS_KEY_SECRET)


def test_instance_sensor_on_a_workspace_the_access_key_cannot_see_fails_fast_naming_the_fix(
    world, dataworks_conn
):
    conn_id = dataworks_conn(emulator=world)
    started = time.monotonic()

    with pytest.raises(DataWorksOpenAPIError) as failure:
        _instance_sensor(conn_id, workspace_id=WORKSPACE + 1, node_id=NODE + 1).execute({})

    assert time.monotonic() - started < FAIL_WITHIN_SECONDS
    message = str(failure.value)
    assert "Forbidden.Access" in message
    assert f"workspace {WORKSPACE + 1}" in message
    assert "grant the RAM user access to the workspace" in message
    _assert_no_secret(message, ACCESS_KEY_SECRET)


async def test_waiting_instance_trigger_when_workspace_hidden_meanwhile_fails_naming_the_fix(
    world, dataworks_conn, no_stream_left
):
    conn_id = dataworks_conn(emulator=world)
    world.add_instance(node_id=NODE, business_date="2026-12-01", status="RUNNING")
    with pytest.raises(TaskDeferred) as deferred:
        _instance_sensor(conn_id, recheck_interval=0.5).execute({})
    asked = world.answered("ListInstances")
    running = asyncio.ensure_future(first_payload(deferred.value.trigger))
    await until(
        lambda: world.answered("ListInstances") > asked, timeout=30, message="the trigger never asked"
    )

    world.set_workspace_visible(WORKSPACE, False)
    started = time.monotonic()
    payload = await running

    assert time.monotonic() - started < FAIL_WITHIN_SECONDS
    assert payload["status"] == "error"
    with pytest.raises(DataWorksError, match="grant the RAM user access to the workspace"):
        _instance_sensor(conn_id).execute_complete({}, payload)
    _assert_no_secret(payload["message"], ACCESS_KEY_SECRET)


async def test_deferred_event_sensor_when_nothing_listens_at_the_host_fails_naming_the_host_field(
    dataworks_conn, unique_topic, no_stream_left
):
    with socket.socket() as placeholder:
        placeholder.bind(("127.0.0.1", 0))
        closed_port = placeholder.getsockname()[1]
    conn_id = dataworks_conn(
        listener="plaintext", topic=unique_topic, bootstrap_servers=f"127.0.0.1:{closed_port}"
    )
    sensor = DataWorksEventSensor(task_id="wait", dataworks_conn_id=conn_id, node_ids=[NODE])
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute({})
    started = time.monotonic()

    payload = await first_payload(deferred.value.trigger, timeout=FAIL_WITHIN_SECONDS)

    assert time.monotonic() - started < FAIL_WITHIN_SECONDS
    with pytest.raises(
        DataWorksError, match=rf"Cannot reach Kafka at 127.0.0.1:{closed_port}.*check the Host field"
    ):
        sensor.execute_complete({}, payload)
