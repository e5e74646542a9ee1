"""A whole local Airflow (api-server, scheduler, dag-processor, triggerer) in a tmp home, for e2e tests."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

_LOOPBACK = "127.0.0.1"
_AIRFLOW = str(Path(sys.executable).with_name("airflow"))
_COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")


class AirflowClusterError(RuntimeError):
    """A component could not be started, stopped or reached in time."""


class AirflowCluster:
    """
    The four long-running Airflow components on one SQLite database, with the LocalExecutor.

    Every user is an admin (simple auth manager), so the REST API needs no token. Variables
    ``AIRFLOW__*`` and ``AIRFLOW_CONN_*`` of the calling process are not passed on; ``env`` adds the
    connections and settings of the test. Each component logs to ``home/<component>.log`` and runs
    in its own process group, stopped as a whole.

    :param home: ``AIRFLOW_HOME``; created if missing.
    :param dags_folder: the folder the dag-processor parses.
    :param env: further environment variables for every component.
    """

    def __init__(self, *, home: Path, dags_folder: Path, env: dict[str, str] | None = None) -> None:
        self.home = Path(home).resolve()
        self.dags_folder = Path(dags_folder).resolve()
        self.extra_env = dict(env or {})
        self.port = _free_port()
        self._jwt_secret = secrets.token_urlsafe(32)
        self._processes: dict[str, subprocess.Popen[bytes]] = {}

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>`` of the api-server."""
        return f"http://{_LOOPBACK}:{self.port}"

    def environment(self) -> dict[str, str]:
        """Return the environment of every ``airflow`` command of this cluster."""
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("AIRFLOW__", "AIRFLOW_CONN_")) and key != "AIRFLOW_CONFIG"
        }
        env.update(
            {
                "AIRFLOW_HOME": str(self.home),
                "PATH": f"{Path(_AIRFLOW).parent}{os.pathsep}{env.get('PATH', '')}",
                "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
                "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
                "AIRFLOW__CORE__PARALLELISM": "2",
                "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.base_url}/execution/",
                "AIRFLOW__API__BASE_URL": self.base_url,
                "AIRFLOW__API__WORKERS": "1",
                "AIRFLOW__API_AUTH__JWT_SECRET": self._jwt_secret,
                "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
                "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
                "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "1",
            }
        )
        env.update(self.extra_env)
        return env

    def start(self, *, timeout: float = 180) -> AirflowCluster:
        """Migrate the database, then start every component; return once the api-server is healthy."""
        self.home.mkdir(parents=True, exist_ok=True)
        self._migrate()
        try:
            for component in _COMPONENTS:
                self.start_component(component)
            wait_for(lambda: self._healthy() or None, timeout=timeout, what="the api-server", cluster=self)
        except BaseException:
            self.stop()
            raise
        return self

    def start_component(self, component: str) -> None:
        """Start one component in its own process group."""
        if component in self._processes:
            raise AirflowClusterError(f"{component} is already running")
        command = [_AIRFLOW, component]
        if component == "api-server":
            command += ["--host", _LOOPBACK, "--port", str(self.port)]
        with open(self.log_path(component), "ab") as output:
            self._processes[component] = subprocess.Popen(
                command,
                env=self.environment(),
                cwd=self.home,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        log.info("Started airflow %s (pid %s)", component, self._processes[component].pid)

    def stop_component(self, component: str, *, timeout: float = 60) -> None:
        """Stop one component like a service manager does: SIGTERM, then SIGKILL after ``timeout``."""
        process = self._processes.pop(component, None)
        if process is None:
            return
        _signal_group(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            log.warning(
                "airflow %s (pid %s) ignored SIGTERM for %.0f s; killing it", component, process.pid, timeout
            )
        # Children (executor workers, the trigger runner) go with the group in any case.
        _signal_group(process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=10)
        log.info("Stopped airflow %s (pid %s)", component, process.pid)

    def stop(self) -> None:
        """Stop every component, the last started first."""
        for component in reversed(list(self._processes)):
            self.stop_component(component, timeout=30)

    def log_path(self, component: str) -> Path:
        """The stdout and stderr of one component."""
        return self.home / f"{component}.log"

    def log_tail(self, component: str, lines: int = 60) -> str:
        """Return the last ``lines`` lines of a component's log, for failure messages."""
        try:
            text = self.log_path(component).read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def diagnostics(self) -> str:
        """Return the tail of every component's log."""
        return "\n".join(f"==== {c} ====\n{self.log_tail(c)}" for c in _COMPONENTS)

    def api(self, path: str, *, method: str = "GET", body: Any = None, timeout: float = 15) -> Any:
        """Call the REST API (``/api/v2/...``) and return the decoded JSON answer."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.base_url + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())

    def __enter__(self) -> AirflowCluster:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _migrate(self) -> None:
        migrate_log = self.log_path("db-migrate")
        with open(migrate_log, "wb") as output:
            try:
                result = subprocess.run(
                    [_AIRFLOW, "db", "migrate"],
                    env=self.environment(),
                    cwd=self.home,
                    stdin=subprocess.DEVNULL,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    timeout=180,
                    check=False,
                )
            except subprocess.TimeoutExpired:
                raise AirflowClusterError(f"airflow db migrate ran over 180 s: {migrate_log}") from None
        if result.returncode != 0:
            raise AirflowClusterError(f"airflow db migrate failed ({result.returncode}); see {migrate_log}")

    def _healthy(self) -> bool:
        for component, process in self._processes.items():
            if process.poll() is not None:
                raise AirflowClusterError(
                    f"airflow {component} exited with {process.returncode}:\n{self.log_tail(component)}"
                )
        try:
            health = self.api("/api/v2/monitor/health", timeout=2)
        except (OSError, urllib.error.URLError, ValueError):
            return False
        return health.get("metadatabase", {}).get("status") == "healthy"


def wait_for(
    probe: Callable[[], T | None],
    *,
    timeout: float,
    what: str,
    cluster: AirflowCluster | None = None,
    interval: float = 0.5,
) -> T:
    """
    Call ``probe`` until it returns something other than ``None`` or falsy, and return that.

    :raises AirflowClusterError: after ``timeout`` seconds, with the components' logs when given.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() > deadline:
            details = f"\n{cluster.diagnostics()}" if cluster is not None else ""
            raise AirflowClusterError(f"timed out after {timeout:.0f} s waiting for {what}{details}")
        time.sleep(interval)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((_LOOPBACK, 0))
        return int(sock.getsockname()[1])


def _signal_group(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signum)
