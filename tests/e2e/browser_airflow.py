"""A real Airflow api-server for browser tests: its own home, database and port; no process left behind."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

log = logging.getLogger(__name__)

_LOOPBACK = "127.0.0.1"
_AIRFLOW = str(Path(sys.executable).with_name("airflow"))


class AirflowApiServerError(RuntimeError):
    """The api-server could not be prepared, started or reached."""


class AirflowApiServer:
    """
    ``airflow api-server`` on a free loopback port, with a migrated SQLite database in ``home``.

    Every user is an admin (simple auth manager, ``simple_auth_manager_all_admins``), so a browser
    needs no login, and connection tests are enabled. Variables ``AIRFLOW__*`` and
    ``AIRFLOW_CONN_*`` of the calling process are not passed on: the server sees only its own
    settings and the connections stored in its database.

    :param home: ``AIRFLOW_HOME``; created if missing. The server's log is ``home/api-server.log``.
    :param settings: further ``AIRFLOW__SECTION__KEY`` variables.
    :param startup_timeout: seconds to wait for ``/api/v2/monitor/health``.
    """

    def __init__(
        self, *, home: Path, settings: dict[str, str] | None = None, startup_timeout: float = 90
    ) -> None:
        self.home = Path(home).resolve()
        self.settings = dict(settings or {})
        self.startup_timeout = startup_timeout
        self.port: int | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>``; the server must have been started."""
        if self.port is None:
            raise AirflowApiServerError("the api-server has not been started")
        return f"http://{_LOOPBACK}:{self.port}"

    @property
    def log_path(self) -> Path:
        """The api-server's stdout and stderr."""
        return self.home / "api-server.log"

    def environment(self) -> dict[str, str]:
        """Return the environment of every ``airflow`` command this server runs."""
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("AIRFLOW__", "AIRFLOW_CONN_")) and key != "AIRFLOW_CONFIG"
        }
        env.update(
            {
                "AIRFLOW_HOME": str(self.home),
                "PATH": f"{Path(_AIRFLOW).parent}{os.pathsep}{env.get('PATH', '')}",
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
                "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
                "AIRFLOW__API__WORKERS": "1",
            }
        )
        env.update(self.settings)
        return env

    def start(self) -> AirflowApiServer:
        """Migrate the database, start the server and wait until it reports healthy."""
        self.home.mkdir(parents=True, exist_ok=True)
        self._migrate()
        self.port = _free_port()
        log.info("Starting airflow api-server on port %s (home %s)", self.port, self.home)
        with open(self.log_path, "wb") as output:
            self._process = subprocess.Popen(
                [_AIRFLOW, "api-server", "--host", _LOOPBACK, "--port", str(self.port)],
                env=self.environment(),
                cwd=self.home,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            self._wait_healthy(time.monotonic() + self.startup_timeout)
        except BaseException:
            self.stop()
            raise
        log.info("airflow api-server ready at %s", self.base_url)
        return self

    def stop(self, timeout: float = 20) -> None:
        """Stop the server's whole process group: SIGTERM, then SIGKILL after ``timeout`` seconds."""
        process, self._process = self._process, None
        if process is None:
            return
        _signal_group(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            log.warning("airflow api-server (pid %s) ignored SIGTERM; killing it", process.pid)
        # Workers may outlive the leader: the group goes in any case.
        _signal_group(process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=10)
        log.info("Stopped airflow api-server (pid %s)", process.pid)

    def get_json(self, path: str, *, timeout: float = 10) -> Any:
        """GET ``path`` (``/api/v2/...``) and return the decoded JSON answer."""
        with urllib.request.urlopen(self.base_url + path, timeout=timeout) as response:
            return json.loads(response.read())

    def log_tail(self, lines: int = 40) -> str:
        """Return the last ``lines`` lines of the server's log, for failure messages."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> AirflowApiServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _migrate(self) -> None:
        migrate_log = self.home / "db-migrate.log"
        with open(migrate_log, "wb") as output:
            try:
                result = subprocess.run(
                    [_AIRFLOW, "db", "migrate"],
                    env=self.environment(),
                    cwd=self.home,
                    stdin=subprocess.DEVNULL,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    timeout=120,
                    check=False,
                )
            except subprocess.TimeoutExpired:
                raise AirflowApiServerError(f"airflow db migrate ran over 120 s: {migrate_log}") from None
        if result.returncode != 0:
            raise AirflowApiServerError(f"airflow db migrate failed ({result.returncode}); see {migrate_log}")

    def _wait_healthy(self, deadline: float) -> None:
        assert self._process is not None
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise AirflowApiServerError(
                    f"airflow api-server exited with {self._process.returncode}:\n{self.log_tail()}"
                )
            if self._healthy():
                return
            time.sleep(0.25)
        raise AirflowApiServerError(
            f"airflow api-server was not healthy after {self.startup_timeout:.0f} s:\n{self.log_tail()}"
        )

    def _healthy(self) -> bool:
        try:
            health = self.get_json("/api/v2/monitor/health", timeout=2)
        except (OSError, urllib.error.URLError, ValueError):
            return False
        return health.get("metadatabase", {}).get("status") == "healthy"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((_LOOPBACK, 0))
        return int(sock.getsockname()[1])


def _signal_group(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signum)
