"""A real triggerer killed with SIGKILL while sensors wait: after its restart every sensor still fires."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from airflow_provider_dataworks.local.stack import build_connection
from tests.e2e.airflow_cluster import AirflowCluster, wait_for
from tests.faults.conftest import FAULT_DAGS, Publisher, instance_event

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

DAG_ID = "faults_triggerer_restart"
NODE_IDS = (700000101, 700000102, 700000103)


@pytest.fixture
def cluster(tmp_path, kafka_broker, unique_topic) -> Iterator[AirflowCluster]:
    connection = build_connection(broker=kafka_broker, listener="sasl_ssl", topic=unique_topic)
    env = {
        "AIRFLOW_CONN_DATAWORKS_DEFAULT": json.dumps(connection),
        # A new triggerer takes over the triggers of one whose heartbeat is this old.
        "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "5",
        "AIRFLOW__CORE__PARALLELISM": "4",
    }
    airflow = AirflowCluster(home=tmp_path / "airflow", dags_folder=FAULT_DAGS, env=env)
    with airflow:
        yield airflow
    leftovers = _processes_with_home(airflow.home)
    for process in leftovers:
        with contextlib.suppress(psutil.Error):
            process.kill()
    assert not leftovers, f"Airflow processes outlived the test: {leftovers}"


def _task_instances(cluster: AirflowCluster, run_id: str) -> dict[str, dict]:
    answer = cluster.api(f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances")
    return {ti["task_id"]: ti for ti in answer["task_instances"]}


def _all_waiting_in_the_triggerer(cluster: AirflowCluster, run_id: str) -> bool:
    tis = _task_instances(cluster, run_id)
    return len(tis) == len(NODE_IDS) and all(
        ti["state"] == "deferred" and (ti.get("trigger") or {}).get("triggerer_id") for ti in tis.values()
    )


def _triggers_reading(cluster: AirflowCluster) -> bool:
    # Triggers log into files next to their task's log: attempt=1.log.trigger.<triggerer job id>.log.
    logs = cluster.home / "logs" / f"dag_id={DAG_ID}"
    waiting = {
        path.parent.name
        for path in logs.glob("run_id=*/task_id=*/*.log.trigger.*.log")
        if "Waiting for DataWorks events" in path.read_text(errors="replace")
    }
    return len(waiting) == len(NODE_IDS)


def test_sensors_fire_on_events_published_while_the_triggerer_was_killed(cluster, kafka_broker, unique_topic):
    wait_for(
        lambda: _dag_is_active(cluster),
        timeout=180,
        what=f"the dag-processor to register {DAG_ID}",
        cluster=cluster,
    )
    run = cluster.api(f"/api/v2/dags/{DAG_ID}/dagRuns", method="POST", body={"logical_date": None})
    run_id = run["dag_run_id"]
    wait_for(
        lambda: _all_waiting_in_the_triggerer(cluster, run_id),
        timeout=180,
        what="every sensor to wait in the triggerer",
        cluster=cluster,
    )
    wait_for(
        lambda: _triggers_reading(cluster), timeout=60, what="the triggers to read Kafka", cluster=cluster
    )

    cluster.kill("triggerer")
    publisher = Publisher(kafka_broker, unique_topic)
    for index, node in enumerate(NODE_IDS):
        publisher.send(instance_event(node=node, message_id=f"during-the-outage-{node}"), partition=index % 3)
    assert all(ti["state"] == "deferred" for ti in _task_instances(cluster, run_id).values())
    cluster.start_component("triggerer")

    finished = wait_for(
        lambda: _finished_run(cluster, run_id), timeout=240, what="the DAG run to finish", cluster=cluster
    )
    assert finished["state"] == "success", cluster.diagnostics()
    for node in NODE_IDS:
        xcom = cluster.api(
            f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/wait_for_node_{node}/xcomEntries/return_value"
        )
        value = xcom["value"] if isinstance(xcom["value"], dict) else json.loads(xcom["value"])
        assert value["event"]["message_id"] == f"during-the-outage-{node}"


def _dag_is_active(cluster: AirflowCluster) -> bool:
    try:
        dag = cluster.api(f"/api/v2/dags/{DAG_ID}")
    except OSError:
        return False
    return not dag["is_paused"]


def _finished_run(cluster: AirflowCluster, run_id: str) -> dict | None:
    run = cluster.api(f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}")
    return run if run["state"] in ("success", "failed") else None


def _processes_with_home(home: Path) -> list[psutil.Process]:
    """Every process running with ``home`` as AIRFLOW_HOME, started by the cluster or by its children."""
    found = []
    for process in psutil.process_iter(["environ"]):
        with contextlib.suppress(psutil.Error):
            if (process.info["environ"] or {}).get("AIRFLOW_HOME") == str(home):
                found.append(process)
    return found
