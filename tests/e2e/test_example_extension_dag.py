"""The extension-verdict example DAG under real Airflow, on the real broker and the DataWorks emulator."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from airflow_provider_dataworks.local.stack import build_connection

pytestmark = pytest.mark.e2e

DAG_ID = "example_dataworks_extension_verdict"
DAG_FILE = Path(__file__).resolve().parents[2] / "example_dags" / f"{DAG_ID}.py"
EXTENSION_CODE = "sql-guard-under-test"


def _airflow(env: dict[str, str], *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "airflow", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _airflow_env(tmp_path: Path, connection: dict) -> dict[str, str]:
    dags = tmp_path / "dags"
    dags.mkdir()
    shutil.copy(DAG_FILE, dags / DAG_FILE.name)
    env = {key: value for key, value in os.environ.items() if not key.startswith(("AIRFLOW_", "AIRFLOW__"))}
    env.update(
        AIRFLOW_HOME=str(tmp_path / "airflow-home"),
        AIRFLOW__CORE__DAGS_FOLDER=str(dags),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW_CONN_DATAWORKS_DEFAULT=json.dumps(connection),
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
    )
    return env


def test_example_dag_when_a_deploy_drops_a_table_answers_fail(kafka_broker, emulator, tmp_path):
    emulator.add_workspace(workspace_id=10001, identifier="demo_ws")
    emulator.add_workspace(workspace_id=10002, identifier="other_ws")
    risky = emulator.add_file(workspace_id=10001, name="cleanup_orders", content="DROP TABLE ods_orders;\n")
    elsewhere = emulator.add_file(workspace_id=10002, name="other_job", content="DROP TABLE t;")
    start_ms = int(time.time() * 1000) - 1000
    # Published before the DAG runs; the sensor reads from start_ms, so no timing is involved.
    # The first three are not what the sensor waits for: a regular deploy event, a deploy in
    # another workspace, and a commit.
    emulator.publish_file_event(file_id=risky["id"], event_type="deploy-file", extension=False)
    other_workspace = emulator.publish_file_event(
        file_id=elsewhere["id"], event_type="deploy-file", extension=True
    )
    commit = emulator.publish_file_event(file_id=risky["id"], event_type="commit-file", extension=True)
    held = emulator.publish_file_event(file_id=risky["id"], event_type="deploy-file", extension=True)
    connection = build_connection(
        broker=kafka_broker,
        listener="sasl_ssl",
        topic=emulator.topic,
        emulator_endpoint=emulator.endpoint,
        access_key_id=emulator.access_key_id,
        access_key_secret=emulator.access_key_secret,
    )
    env = _airflow_env(tmp_path, connection)

    migrated = _airflow(env, "db", "migrate", timeout=300)
    assert migrated.returncode == 0, migrated.stderr[-3000:]
    conf = json.dumps({"start_time": str(start_ms), "extension_code": EXTENSION_CODE})
    ran = _airflow(env, "dags", "test", DAG_ID, "-c", conf, timeout=300)

    output = ran.stdout + ran.stderr
    assert ran.returncode == 0, output[-6000:]
    assert "state=success" in output or "DagRun Finished" in output, output[-6000:]
    verdicts = emulator.verdicts()
    assert [(v["message_id"], v["check_result"], v["action"], v["extension_code"]) for v in verdicts] == [
        (held, "FAIL", "UpdateIDEEventResult", EXTENSION_CODE)
    ]
    assert "DROP TABLE" in verdicts[0]["tip"]
    statuses = {operation["message_id"]: operation["status"] for operation in emulator.operations()}
    assert statuses == {other_workspace: "pending", commit: "pending", held: "blocked"}
