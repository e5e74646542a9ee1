"""Event-driven scheduling: one DAG run for every deployed ODS file and every committed ODS table."""

from __future__ import annotations

import json
import os
from datetime import datetime

from airflow.providers.common.messaging.triggers.msg_queue import MessageQueueTrigger
from airflow.sdk import DAG, Asset, AssetWatcher, task

from airflow_provider_dataworks.triggers.asset import DataWorksAssetEventTrigger

WORKSPACE_ID = int(os.environ.get("DATAWORKS_EXAMPLE_WORKSPACE_ID", "10001"))

# The common.messaging way: the "dataworks" scheme stands for DataWorksAssetEventTrigger.
ods_file_deploys = Asset(
    name="dataworks_ods_file_deploys",
    watchers=[
        AssetWatcher(
            name="dataworks_ods_file_deploys",
            trigger=MessageQueueTrigger(
                scheme="dataworks",
                dataworks_conn_id="dataworks_default",
                event_filter={
                    "event_types": ["deploy-file"],
                    "workspace_ids": [WORKSPACE_ID],
                    "file_names": ["ods_*"],
                },
            ),
        )
    ],
)

# The same trigger by its own name. Both watchers read the connection's topic in its consumer group,
# so the triggerer runs one Kafka consumer for the two of them.
ods_table_commits = Asset(
    name="dataworks_ods_table_commits",
    watchers=[
        AssetWatcher(
            name="dataworks_ods_table_commits",
            trigger=DataWorksAssetEventTrigger(
                dataworks_conn_id="dataworks_default",
                event_filter={
                    "event_types": ["commit-table"],
                    "workspace_ids": [WORKSPACE_ID],
                    "table_names": ["ods_*"],
                },
            ),
        )
    ],
)

with DAG(
    dag_id="example_dataworks_event_driven",
    schedule=(ods_file_deploys | ods_table_commits),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["dataworks", "example"],
) as dag:

    @task
    def report_changes(triggering_asset_events=None) -> list[str]:
        """Print each DataWorks event behind this run; return their message ids."""
        message_ids = []
        for asset, events in (triggering_asset_events or {}).items():
            for asset_event in events:
                event = asset_event.extra["payload"]["event"]
                message_ids.append(event["message_id"])
                summary = {k: event[k] for k in ("message_id", "event_type", "file_name", "table_name")}
                print(f"DataWorks change for {asset.name}: {json.dumps(summary)}")
        return message_ids

    report_changes()
