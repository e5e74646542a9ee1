"""Keep an extra consumer group on the DataWorks subscription and report the subscription daily."""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from airflow.sdk import DAG, Param

from airflow_provider_dataworks.operators.consumer_groups import DataWorksCreateConsumerGroupOperator
from airflow_provider_dataworks.operators.subscription import DataWorksDescribeSubscriptionOperator

# The local stack's demo workspace; list the workspaces your subscription should cover in production.
WORKSPACE_ID = int(os.environ.get("DATAWORKS_EXAMPLE_WORKSPACE_ID", "10001"))

with DAG(
    dag_id="example_dataworks_subscription",
    schedule="@daily",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    params={
        "group_id": Param("airflow-replay", type="string", description="Extra consumer group to keep"),
    },
    tags=["dataworks", "example"],
) as dag:
    # Idempotent: creates the group at the end of the topic once, then leaves it alone.
    ensure_group = DataWorksCreateConsumerGroupOperator(
        task_id="ensure_group",
        group_id="{{ params.group_id }}",
        position="latest",
    )

    describe = DataWorksDescribeSubscriptionOperator(
        task_id="describe_subscription",
        window=timedelta(days=1),
        end_time="{{ data_interval_end or '' }}",
        workspace_ids=[WORKSPACE_ID],
        event_types=["instance-status-changes"],
        group_ids=["{{ params.group_id }}"],
    )

    ensure_group >> describe
