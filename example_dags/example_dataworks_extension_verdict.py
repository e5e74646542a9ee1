"""Check the code of every DataWorks deployment in a workspace and let DataWorks deploy it or not."""

from __future__ import annotations

import os
import re
from datetime import datetime, timedelta

from airflow.sdk import DAG, Param, task

from airflow_provider_dataworks.operators.extension import (
    DataWorksExtensionVerdictOperator,
    DataWorksGetExtensionEventDetailOperator,
)
from airflow_provider_dataworks.sensors.event import DataWorksEventSensor

# The local stack's demo workspace; point these at your own workspace and extension in production.
WORKSPACE_ID = int(os.environ.get("DATAWORKS_EXAMPLE_WORKSPACE_ID", "10001"))
EXTENSION_CODE = os.environ.get("DATAWORKS_EXAMPLE_EXTENSION_CODE", "airflow-sql-guard")

_DROP_TABLE = re.compile(r"\bdrop\s+table\b", re.IGNORECASE)

with DAG(
    dag_id="example_dataworks_extension_verdict",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    params={
        "workspace_id": Param(
            WORKSPACE_ID, type="integer", description="Workspace whose deploys are checked"
        ),
        "extension_code": Param(EXTENSION_CODE, type="string", description="Code of the DataWorks extension"),
        "start_time": Param(
            "",
            type="string",
            description="Look for deploys from this time on (ISO-8601 or epoch ms); empty: from now",
        ),
    },
    tags=["dataworks", "example"],
) as dag:
    # DataWorks holds the deployment until the extension answers; the sensor waits for the
    # extension-point copy of the deploy-file event only.
    wait_for_deploy = DataWorksEventSensor(
        task_id="wait_for_deploy",
        event_types=["deploy-file"],
        workspace_ids="{{ params.workspace_id }}",
        event_filter={"extension_point": True},
        start_time="{{ params.start_time }}",
        timeout=timedelta(hours=1).total_seconds(),
    )

    get_deploy_detail = DataWorksGetExtensionEventDetailOperator(
        task_id="get_deploy_detail",
        event=wait_for_deploy.output,
    )

    @task(multiple_outputs=True)
    def check_sql(detail: dict) -> dict:
        """Refuse code that drops tables; accept everything else."""
        code = detail.get("content") or ""
        if _DROP_TABLE.search(code):
            return {
                "check_result": "FAIL",
                "reason": "The code contains DROP TABLE; deploy it by hand after review.",
            }
        return {"check_result": "OK", "reason": "No DROP TABLE found."}

    verdict = check_sql(get_deploy_detail.output)

    DataWorksExtensionVerdictOperator(
        task_id="report_verdict",
        event=wait_for_deploy.output,
        check_result=verdict["check_result"],
        reason=verdict["reason"],
        extension_code="{{ params.extension_code }}",
    )
