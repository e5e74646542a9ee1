"""Fault-suite DAG: both sensors, a task reading their XComs, and a sensor whose password is wrong."""

from __future__ import annotations

import json
from datetime import datetime

from airflow.sdk import DAG, task

from airflow_provider_dataworks.sensors.event import DataWorksEventSensor
from airflow_provider_dataworks.sensors.instance import DataWorksInstanceSensor

WORKSPACE_ID = 10001
NODE_ID = 700000001
OTHER_NODE_ID = 700000002
BUSINESS_DATE = "2026-12-01"

with DAG(
    dag_id="faults_secrets",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["dataworks", "faults"],
):
    instance = DataWorksInstanceSensor(
        task_id="wait_for_instance",
        workspace_id=WORKSPACE_ID,
        node_id=NODE_ID,
        business_date=BUSINESS_DATE,
        recheck_interval=3600,
        timeout=180,
    )
    event = DataWorksEventSensor(task_id="wait_for_event", node_ids=[OTHER_NODE_ID], timeout=180)

    @task
    def report(instance_result: dict, event_result: dict) -> None:
        print("Fault suite XComs: " + json.dumps({"instance": instance_result, "event": event_result}))

    wrong_password = DataWorksEventSensor(
        task_id="wrong_password", dataworks_conn_id="dataworks_wrong_password", node_ids=[NODE_ID], timeout=60
    )

    instance >> event
    report(instance.output, event.output) >> wrong_password
