"""Start an Airflow pipeline once yesterday's DataWorks instance of a node has succeeded."""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta

from airflow.sdk import DAG, task

from airflow_provider_dataworks.sensors.instance import DataWorksInstanceSensor

WORKSPACE_ID = int(os.environ.get("DATAWORKS_EXAMPLE_WORKSPACE_ID", "10001"))
NODE_ID = int(os.environ.get("DATAWORKS_EXAMPLE_NODE_ID", "700000001"))

with DAG(
    dag_id="example_dataworks_instance_sensor",
    schedule="@daily",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["dataworks", "example"],
) as dag:
    # DataWorks' business date is the day before the run; the sensor asks the OpenAPI first, then
    # listens for status events, and asks again every recheck_interval in case events stop.
    ods_orders_ready = DataWorksInstanceSensor(
        task_id="ods_orders_ready",
        workspace_id=WORKSPACE_ID,
        node_id=NODE_ID,
        business_date="{{ macros.ds_add(ds, -1) }}",
        recheck_interval=timedelta(minutes=5),
        timeout=timedelta(hours=6).total_seconds(),
    )

    @task
    def report(result: dict) -> None:
        print("DataWorks instances ready: " + json.dumps(result, sort_keys=True))

    report(ods_orders_ready.output)
