"""A whole local Airflow (api-server, scheduler, dag-processor, triggerer) in a tmp home, for e2e tests."""

from __future__ import annotations

import secrets
from pathlib import Path

from tests.e2e.airflow_processes import AirflowProcessError, AirflowProcesses, wait_for

__all__ = ["AirflowCluster", "AirflowClusterError", "wait_for"]


class AirflowClusterError(AirflowProcessError):
    """A component could not be started, stopped or reached in time."""


class AirflowCluster(AirflowProcesses):
    """
    The four long-running Airflow components on one SQLite database, with the LocalExecutor.

    Every user is an admin (simple auth manager), so the REST API needs no token. ``env`` adds the
    connections and settings of the test to those of ``AirflowProcesses``. Each component logs to
    ``home/<component>.log`` and runs in its own process group, stopped (``stop_component``) or
    crashed (``kill``) as a whole.

    :param home: ``AIRFLOW_HOME``; created if missing.
    :param dags_folder: the folder the dag-processor parses.
    :param env: further environment variables for every component.
    :param startup_timeout: seconds to wait for ``/api/v2/monitor/health``.
    """

    components = ("api-server", "scheduler", "dag-processor", "triggerer")
    error = AirflowClusterError

    def __init__(
        self,
        *,
        home: Path,
        dags_folder: Path,
        env: dict[str, str] | None = None,
        startup_timeout: float = 180,
    ) -> None:
        super().__init__(home=home, settings=env, startup_timeout=startup_timeout)
        self.dags_folder = Path(dags_folder).resolve()
        self._jwt_secret = secrets.token_urlsafe(32)

    def _own_settings(self) -> dict[str, str]:
        return {
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "2",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.base_url}/execution/",
            "AIRFLOW__API__BASE_URL": self.base_url,
            "AIRFLOW__API_AUTH__JWT_SECRET": self._jwt_secret,
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
            "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "1",
        }
