"""React to DataStudio changes: a deployed ODS file, then a committed ODS table."""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta

from airflow.sdk import DAG, task

from airflow_provider_dataworks.sensors.changes import DataWorksFileChangeSensor, DataWorksTableChangeSensor

WORKSPACE_ID = int(os.environ.get("DATAWORKS_EXAMPLE_WORKSPACE_ID", "10001"))

with DAG(
    dag_id="example_dataworks_file_and_table_changes",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["dataworks", "example"],
) as dag:
    ods_file_deployed = DataWorksFileChangeSensor(
        task_id="ods_file_deployed",
        workspace_ids=[WORKSPACE_ID],
        event_types=["deploy-file"],
        file_names=["ods_*"],
        timeout=timedelta(hours=1).total_seconds(),
    )
    ods_table_committed = DataWorksTableChangeSensor(
        task_id="ods_table_committed",
        workspace_ids=[WORKSPACE_ID],
        event_types=["commit-table"],
        table_names=["ods_*"],
        timeout=timedelta(hours=1).total_seconds(),
    )

    @task
    def summarise(file_change: dict, table_change: dict) -> None:
        print(
            "DataWorks file change: "
            + json.dumps({k: file_change["event"][k] for k in ("event_type", "file_name")})
        )
        print(
            "DataWorks table change: "
            + json.dumps({k: table_change["event"][k] for k in ("event_type", "table_name")})
        )

    ods_file_deployed >> ods_table_committed
    summarise(ods_file_deployed.output, ods_table_committed.output)
