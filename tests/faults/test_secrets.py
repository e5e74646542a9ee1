"""The SASL password and AccessKey secret stay inside the connection; extras that load code are refused."""

from __future__ import annotations

import json
import sqlite3
import traceback
import uuid
from pathlib import Path

import pytest
from airflow.sdk.exceptions import TaskDeferred
from airflow.sdk.serde import serialize

from airflow_provider_dataworks.exceptions import DataWorksConnectionConfigError, DataWorksError
from airflow_provider_dataworks.hooks import DataWorksConnectionSettings, DataWorksHook
from airflow_provider_dataworks.local.stack import build_connection
from airflow_provider_dataworks.sensors.changes import DataWorksFileChangeSensor, DataWorksTableChangeSensor
from airflow_provider_dataworks.sensors.event import DataWorksEventSensor
from airflow_provider_dataworks.sensors.instance import DataWorksInstanceSensor
from tests.faults.conftest import FAULT_DAGS, NODE, WORKSPACE, first_payload, set_connection_field

pytestmark = pytest.mark.integration

ACCESS_KEY_SECRET = "ak-secret-" + uuid.uuid4().hex
WRONG_PASSWORD = "wrong-password-" + uuid.uuid4().hex


@pytest.fixture
def world(make_emulator):
    emulator = make_emulator(access_key_secret=ACCESS_KEY_SECRET)
    emulator.add_workspace(workspace_id=WORKSPACE, identifier="demo_ws")
    emulator.add_node(node_id=NODE, workspace_id=WORKSPACE, name="ods_orders_di")
    emulator.add_node(node_id=NODE + 1, workspace_id=WORKSPACE, name="dwd_orders_di")
    return emulator


def _secrets(kafka_broker) -> tuple[str, ...]:
    return (kafka_broker.sasl_password, ACCESS_KEY_SECRET, WRONG_PASSWORD)


def _assert_free_of(text: str, secrets: tuple[str, ...], where: str) -> None:
    for secret in secrets:
        assert secret not in text, f"a secret appears in {where}"


def _deferred_triggers(conn_id: str, instance_id: int) -> list:
    sensors = [
        DataWorksEventSensor(task_id="event", dataworks_conn_id=conn_id, node_ids=[NODE]),
        DataWorksEventSensor(task_id="later", dataworks_conn_id=conn_id, start_time="2999-01-01T00:00:00Z"),
        DataWorksInstanceSensor(task_id="instance", dataworks_conn_id=conn_id, instance_id=instance_id),
        DataWorksFileChangeSensor(task_id="file", dataworks_conn_id=conn_id, file_names=["ods_*"]),
        DataWorksTableChangeSensor(task_id="table", dataworks_conn_id=conn_id, table_names=["ods_*"]),
    ]
    triggers = []
    for sensor in sensors:
        with pytest.raises(TaskDeferred) as deferred:
            sensor.execute({})
        triggers.append(deferred.value.trigger)
    return triggers


def test_trigger_kwargs_serialize_output_and_repr_hold_only_the_connection_id(
    world, kafka_broker, dataworks_conn
):
    conn_id = dataworks_conn(emulator=world)
    instance = world.add_instance(node_id=NODE, business_date="2026-12-01", status="RUNNING")

    for trigger in _deferred_triggers(conn_id, instance["id"]):
        classpath, kwargs = trigger.serialize()
        text = json.dumps(kwargs, default=str) + json.dumps(serialize(kwargs)) + repr(trigger) + classpath
        _assert_free_of(text, _secrets(kafka_broker), f"the kwargs of {classpath}")
        assert kwargs.get("dataworks_conn_id", conn_id) == conn_id
        assert not {key for key in kwargs if any(word in key for word in ("password", "secret", "token"))}


async def test_xcom_and_failure_texts_hold_no_secret(world, kafka_broker, dataworks_conn, monkeypatch):
    conn_id = dataworks_conn(emulator=world)
    instance = world.add_instance(node_id=NODE, business_date="2026-12-01", status="SUCCESS")
    xcom = DataWorksInstanceSensor(
        task_id="instance", dataworks_conn_id=conn_id, instance_id=instance["id"]
    ).execute({})
    _assert_free_of(json.dumps(xcom), _secrets(kafka_broker), "the instance sensor's XCom")

    failures: list[BaseException] = []
    set_connection_field(monkeypatch, conn_id, password=WRONG_PASSWORD)
    sensor = DataWorksEventSensor(task_id="event", dataworks_conn_id=conn_id)
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute({})
    payload = await first_payload(deferred.value.trigger, timeout=30)
    with pytest.raises(DataWorksError) as kafka_failure:
        sensor.execute_complete({}, payload)
    failures.append(kafka_failure.value)
    wrong_secret = dataworks_conn(emulator=world, access_key_secret=WRONG_PASSWORD)
    with pytest.raises(DataWorksError) as openapi_failure:
        DataWorksInstanceSensor(task_id="instance", dataworks_conn_id=wrong_secret, instance_id=1).execute({})
    failures.append(openapi_failure.value)

    for failure in failures:
        text = "".join(traceback.format_exception(failure)) + repr(failure)
        _assert_free_of(text, _secrets(kafka_broker), f"the failure {type(failure).__name__}")


# Keys a connection editor might try, in kafka_config or as extras of their own.
CODE_OR_FILES = {
    "plugin.library.paths": "loads shared libraries",
    "ssl.engine.location": "loads an OpenSSL engine",
    "ssl.providers": "loads OpenSSL providers",
    "oauth_cb": "names a callback",
    "error_cb": "names a callback",
    "on_commit": "names a callback",
    "logger": "names a callback",
    "sasl.kerberos.kinit.cmd": "runs a command",
    "ssl.key.location": "reads files",
    "ssl.ca.location": "reads files",
    "sasl.kerberos.keytab": "reads files",
    "enable.ssl.certificate.verification": "switches TLS certificate checks off",
}


@pytest.mark.parametrize("place", ["kafka_config", "extra"])
@pytest.mark.parametrize("key", list(CODE_OR_FILES))
def test_connection_extra_that_would_load_code_or_files_is_refused_naming_key_and_reason(key, place):
    extra = {"kafka_config": {key: "/tmp/evil.so"}} if place == "kafka_config" else {key: "/tmp/evil.so"}
    conn = type(
        "Conn", (), {"conn_id": "dw", "host": "h:9092", "port": None, "login": None, "password": None}
    )()

    with pytest.raises(DataWorksConnectionConfigError) as refused:
        DataWorksConnectionSettings.from_connection(conn, extra=extra)

    assert repr(key) in str(refused.value)
    assert CODE_OR_FILES[key] in str(refused.value)
    assert "Connection 'dw'" in str(refused.value)


async def test_waiting_sensor_on_a_connection_with_a_refused_extra_fails_before_any_client_starts(
    kafka_broker, dataworks_conn, unique_topic
):
    conn_id = dataworks_conn(
        listener="plaintext", topic=unique_topic, kafka_config={"plugin.library.paths": "evil"}
    )
    with pytest.raises(TaskDeferred) as deferred:
        DataWorksEventSensor(task_id="event", dataworks_conn_id=conn_id).execute({})

    payload = await first_payload(deferred.value.trigger, timeout=30)

    assert payload["status"] == "error"
    assert "'plugin.library.paths' is refused because it loads shared libraries" in payload["message"]
    with pytest.raises(DataWorksConnectionConfigError):
        DataWorksHook(conn_id).get_consumer()


@pytest.mark.e2e
def test_dags_test_output_xcom_and_logs_hold_no_secret(
    run_dag_test, airflow_home, world, kafka_broker, unique_topic
):
    instance = world.add_instance(node_id=NODE, business_date="2026-12-01", status="WAIT_TIME")
    wrong = build_connection(broker=kafka_broker, listener="sasl_ssl", topic=unique_topic)
    wrong["password"] = WRONG_PASSWORD

    result = run_dag_test(
        "faults_secrets",
        topic=unique_topic,
        emulator=world,
        env={
            "AIRFLOW__CORE__DAGS_FOLDER": str(FAULT_DAGS),
            "AIRFLOW_CONN_DATAWORKS_WRONG_PASSWORD": json.dumps(wrong),
        },
        when={
            "Waiting for node 700000001": lambda: world.play_instance(
                instance["id"], statuses=["RUNNING", "SUCCESS"], step=0.2
            ),
            "Waiting for DataWorks events": lambda: world.publish_node_event(node_id=NODE + 1),
        },
        timeout=240,
    )

    # Every path ran: both sensors matched, their XComs were read, the wrong password failed.
    [reported] = result.lines_with("Fault suite XComs: ")
    xcoms = json.loads(reported.split("Fault suite XComs: ", 1)[1])
    assert xcoms["instance"]["instances"][0]["status"] == "SUCCESS"
    assert xcoms["event"]["event"]["node_ids"] == [NODE + 1]
    assert result.lines_with("check the SASL username and SASL password")

    secrets = _secrets(kafka_broker)
    _assert_free_of(result.output, secrets, "the output of airflow dags test")
    with sqlite3.connect(airflow_home / "airflow.db") as db:
        stored = json.dumps([list(map(str, row)) for row in db.execute("SELECT * FROM xcom")])
    assert "Fault suite" not in stored and "instances" in stored
    _assert_free_of(stored, secrets, "the XCom table")
    for path in Path(airflow_home / "logs").rglob("*"):
        if path.is_file():
            _assert_free_of(path.read_text(errors="replace"), secrets, f"the log file {path}")
