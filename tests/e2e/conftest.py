"""Fixtures for end-to-end tests that run real Airflow commands against the local stack."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from airflow_provider_dataworks.local.stack import build_connection

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_DAGS = REPO / "example_dags"
AIRFLOW = str(Path(sys.executable).with_name("airflow"))


@dataclass
class DagTestResult:
    """What ``airflow dags test`` did: its exit code and everything it printed."""

    returncode: int
    output: str

    def lines_with(self, text: str) -> list[str]:
        return [line for line in self.output.splitlines() if text in line]


def _airflow_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW__", "AIRFLOW_CONN_"))}
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(EXAMPLE_DAGS),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])),
        }
    )
    return env


@pytest.fixture(scope="session")
def airflow_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An AIRFLOW_HOME with a migrated SQLite database, shared by the session's e2e tests."""
    home = tmp_path_factory.mktemp("airflow-home")
    migrated = subprocess.run(
        [AIRFLOW, "db", "migrate"], env=_airflow_env(home), capture_output=True, text=True, timeout=300
    )
    assert migrated.returncode == 0, migrated.stdout[-3000:] + migrated.stderr[-3000:]
    return home


@pytest.fixture
def run_dag_test(airflow_home: Path, kafka_broker) -> Callable[..., DagTestResult]:
    """
    Run ``airflow dags test DAG_ID`` in a subprocess against the session broker.

    ``run_dag_test(dag_id, topic=..., emulator=..., env={...}, timeout=...)``: the
    ``dataworks_default`` connection points at the SASL_SSL listener, ``topic`` and the emulator.
    """

    def run(
        dag_id: str,
        *,
        topic: str,
        emulator=None,
        env: dict[str, str] | None = None,
        when: dict[str, Callable[[], object]] | None = None,
        timeout: float = 240,
    ) -> DagTestResult:
        """
        :param when: actions to take once, each when a line containing its key is printed (for
            example: publish the event once the trigger says it is waiting).
        """
        connection = build_connection(
            broker=kafka_broker,
            listener="sasl_ssl",
            topic=topic,
            emulator_endpoint=emulator.endpoint if emulator is not None else None,
            access_key_id=emulator.access_key_id if emulator is not None else None,
            access_key_secret=emulator.access_key_secret if emulator is not None else None,
        )
        process_env = _airflow_env(airflow_home) | {"AIRFLOW_CONN_DATAWORKS_DEFAULT": json.dumps(connection)}
        process_env.update(env or {})
        pending = dict(when or {})
        lines: list[str] = []

        process = subprocess.Popen(
            [AIRFLOW, "dags", "test", dag_id],
            env=process_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=airflow_home,
        )
        watchdog = threading.Timer(timeout, process.kill)
        watchdog.start()
        try:
            assert process.stdout is not None
            for line in process.stdout:
                lines.append(line)
                for marker in [m for m in pending if m in line]:
                    pending.pop(marker)()
            returncode = process.wait()
        finally:
            watchdog.cancel()
            if process.poll() is None:
                process.kill()
        output = "".join(lines)
        assert not pending, f"never printed {sorted(pending)}; output:\n{output[-4000:]}"
        return DagTestResult(returncode, output)

    return run
