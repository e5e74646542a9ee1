"""A real Airflow api-server for browser tests: its own home, database and port; no process left behind."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.e2e.airflow_processes import AirflowProcessError, AirflowProcesses


class AirflowApiServerError(AirflowProcessError):
    """The api-server could not be prepared, started or reached."""


class AirflowApiServer(AirflowProcesses):
    """
    ``airflow api-server`` on a free loopback port, with a migrated SQLite database in ``home``.

    Every user is an admin, so a browser needs no login, and connection tests are enabled. The server
    sees only its own settings and the connections stored in its database (see ``AirflowProcesses``).

    :param home: ``AIRFLOW_HOME``; created if missing. The server's log is ``home/api-server.log``.
    :param settings: further ``AIRFLOW__SECTION__KEY`` variables.
    :param startup_timeout: seconds to wait for ``/api/v2/monitor/health``.
    """

    components = ("api-server",)
    error = AirflowApiServerError

    def __init__(
        self, *, home: Path, settings: dict[str, str] | None = None, startup_timeout: float = 90
    ) -> None:
        super().__init__(home=home, settings=settings, startup_timeout=startup_timeout)

    def get_json(self, path: str, *, timeout: float = 10) -> Any:
        """GET ``path`` (``/api/v2/...``) and return the decoded JSON answer."""
        return self.api(path, timeout=timeout)

    def _own_settings(self) -> dict[str, str]:
        return {"AIRFLOW__CORE__TEST_CONNECTION": "Enabled"}
