"""The example DAGs, run with `airflow dags test` against the real broker and the emulator."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

pytestmark = pytest.mark.e2e

WORKSPACE = 10001
NODE = 700000001


@pytest.fixture
def demo_world(emulator):
    emulator.seed_demo()
    return emulator


def test_wait_for_instance_example_receives_the_success_event(run_dag_test, demo_world, unique_topic):
    instance = demo_world.add_instance(node_id=NODE)

    result = run_dag_test(
        "example_dataworks_wait_for_instance",
        topic=unique_topic,
        emulator=demo_world,
        when={
            "Waiting for DataWorks events": lambda: demo_world.play_instance(
                instance["id"], statuses=["WAIT_TIME", "RUNNING", "SUCCESS"], step=0.2
            )
        },
    )

    assert result.returncode == 0, result.output[-4000:]
    [received] = result.lines_with("DataWorks event received: ")
    summary = json.loads(received.split("DataWorks event received: ", 1)[1])
    assert summary["instance_id"] == instance["id"]
    assert summary["status"] == "SUCCESS"
    assert summary["node_id"] == NODE
    assert summary["workspace_id"] == WORKSPACE
    assert result.lines_with("DagRun Finished") and "state=success" in result.lines_with("DagRun Finished")[0]


def test_instance_sensor_example_waits_for_yesterdays_instance(run_dag_test, demo_world, unique_topic):
    # The DAG asks for the day before its logical date (UTC today), as DataWorks counts business dates.
    business_date = datetime.now(tz=timezone.utc).date() - timedelta(days=1)
    instance = demo_world.add_instance(
        node_id=NODE, business_date=business_date.isoformat(), status="WAIT_TIME"
    )

    result = run_dag_test(
        "example_dataworks_instance_sensor",
        topic=unique_topic,
        emulator=demo_world,
        when={
            "Waiting for node 700000001": lambda: demo_world.play_instance(
                instance["id"], statuses=["RUNNING", "SUCCESS"], step=0.2
            )
        },
    )

    assert result.returncode == 0, result.output[-4000:]
    [ready] = result.lines_with("DataWorks instances ready: ")
    report = json.loads(ready.split("DataWorks instances ready: ", 1)[1])
    assert report["source"] == "event"
    assert [(i["instance_id"], i["status"]) for i in report["instances"]] == [(instance["id"], "SUCCESS")]


def test_file_and_table_changes_example_sees_both_changes(run_dag_test, demo_world, unique_topic):
    ods_file = demo_world.add_file(workspace_id=WORKSPACE, name="ods_customers")
    other_file = demo_world.add_file(workspace_id=WORKSPACE, name="dwd_customers")

    def deploy_files() -> None:
        demo_world.publish_file_event(file_id=other_file["id"], event_type="deploy-file")
        demo_world.publish_file_event(file_id=ods_file["id"], event_type="deploy-file")

    def commit_tables() -> None:
        demo_world.publish_table_event(workspace_id=WORKSPACE, table_name="dim_region")
        demo_world.publish_table_event(workspace_id=WORKSPACE, table_name="ods_customers")

    result = run_dag_test(
        "example_dataworks_file_and_table_changes",
        topic=unique_topic,
        emulator=demo_world,
        when={"'file_names': ['ods_*']": deploy_files, "'table_names': ['ods_*']": commit_tables},
    )

    assert result.returncode == 0, result.output[-4000:]
    assert result.lines_with(
        'DataWorks file change: {"event_type": "deploy-file", "file_name": "ods_customers"}'
    )
    assert result.lines_with(
        'DataWorks table change: {"event_type": "commit-table", "table_name": "ods_customers"}'
    )
