"""Fault-suite DAG: three deferrable event sensors, for a triggerer killed while they wait."""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG

from airflow_provider_dataworks.sensors.event import DataWorksEventSensor

NODE_IDS = (700000101, 700000102, 700000103)

with DAG(
    dag_id="faults_triggerer_restart",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["dataworks", "faults"],
):
    for node_id in NODE_IDS:
        DataWorksEventSensor(
            task_id=f"wait_for_node_{node_id}",
            node_ids=[node_id],
            timeout=600,
        )
