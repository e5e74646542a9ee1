"""Wait until a DataWorks node's instance succeeds, then hand the event to the next task."""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta

from airflow.sdk import DAG, task

from airflow_provider_dataworks.sensors.event import DataWorksEventSensor

# The local stack's demo workspace and node; point these at your own in production.
WORKSPACE_ID = int(os.environ.get("DATAWORKS_EXAMPLE_WORKSPACE_ID", "10001"))
NODE_ID = int(os.environ.get("DATAWORKS_EXAMPLE_NODE_ID", "700000001"))

with DAG(
    dag_id="example_dataworks_wait_for_instance",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["dataworks", "example"],
) as dag:
    wait_for_ods_orders = DataWorksEventSensor(
        task_id="wait_for_ods_orders",
        event_types=["instance-status-changes"],
        workspace_ids=[WORKSPACE_ID],
        node_ids=[NODE_ID],
        statuses=["SUCCESS"],
        timeout=timedelta(minutes=30).total_seconds(),
    )

    @task
    def print_event(received: dict) -> dict:
        event, record = received["event"], received["record"]
        summary = {
            "event_type": event["event_type"],
            "workspace_id": event["workspace_id"],
            "node_id": event["node_ids"][0],
            "instance_id": event["instance_ids"][0],
            "status": event["status"],
            "message_id": event["message_id"],
            "kafka": f"{record['topic']}[{record['partition']}]@{record['offset']}",
        }
        print("DataWorks event received: " + json.dumps(summary, sort_keys=True))
        return summary

    print_event(wait_for_ods_orders.output)
