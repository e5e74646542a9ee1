"""Airflow components for tests: a tmp home, a migrated database, each component in its own process group."""

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
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
P = TypeVar("P", bound="AirflowProcesses")

LOOPBACK = "127.0.0.1"
AIRFLOW = str(Path(sys.executable).with_name("airflow"))


class AirflowProcessError(RuntimeError):
    """An Airflow command could not be run, a component not started, stopped or reached in time."""


class AirflowProcesses:
    """
    The components named in ``components`` on one SQLite database in ``home``; the api-server on a free port.

    Every user is an admin (simple auth manager, ``simple_auth_manager_all_admins``), so the REST API
    needs no token. Variables ``AIRFLOW__*``, ``AIRFLOW_CONN_*`` and ``AIRFLOW_CONFIG`` of the calling
    process are not passed on: the components see only their own settings. Each component logs to
    ``home/<component>.log`` and runs in its own process group, stopped or killed as a whole.

    :param home: ``AIRFLOW_HOME``; created if missing.
    :param settings: further environment variables for every ``airflow`` command, applied last.
    :param startup_timeout: seconds ``start`` waits for ``/api/v2/monitor/health``.
    """

    components: ClassVar[tuple[str, ...]] = ("api-server",)
    error: ClassVar[type[AirflowProcessError]] = AirflowProcessError

    def __init__(self, *, home: Path, settings: dict[str, str] | None = None, startup_timeout: float) -> None:
        self.home = Path(home).resolve()
        self.settings = dict(settings or {})
        self.startup_timeout = startup_timeout
        self.port = _free_port()
        self._processes: dict[str, subprocess.Popen[bytes]] = {}

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>`` of the api-server."""
        return f"http://{LOOPBACK}:{self.port}"

    def environment(self) -> dict[str, str]:
        """Return the environment of every ``airflow`` command run here."""
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("AIRFLOW__", "AIRFLOW_CONN_")) and key != "AIRFLOW_CONFIG"
        }
        env.update(
            {
                "AIRFLOW_HOME": str(self.home),
                "PATH": f"{Path(AIRFLOW).parent}{os.pathsep}{env.get('PATH', '')}",
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
                "AIRFLOW__API__WORKERS": "1",
            }
        )
        env.update(self._own_settings())
        env.update(self.settings)
        return env

    def start(self: P, *, timeout: float | None = None) -> P:
        """
        Migrate the database, start every component and wait until the api-server reports healthy.

        :param timeout: seconds to wait for health; ``startup_timeout`` when not given.
        """
        self.home.mkdir(parents=True, exist_ok=True)
        self._migrate()
        try:
            for component in self.components:
                self.start_component(component)
            wait_for(
                lambda: self._healthy() or None,
                timeout=self.startup_timeout if timeout is None else timeout,
                what="the api-server",
                cluster=self,
                interval=0.25,
            )
        except BaseException:
            self.stop()
            raise
        log.info("Airflow ready at %s (home %s)", self.base_url, self.home)
        return self

    def start_component(self, component: str) -> None:
        """Start one component in its own process group; its log is appended to ``log_path(component)``."""
        if component in self._processes:
            raise self.error(f"airflow {component} is already running in {self.home}")
        command = [AIRFLOW, component]
        if component == "api-server":
            command += ["--host", LOOPBACK, "--port", str(self.port)]
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
        # Children (api workers, executor workers, the trigger runner) may outlive the leader.
        _signal_group(process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=10)
        log.info("Stopped airflow %s (pid %s)", component, process.pid)

    def kill(self, component: str) -> None:
        """Crash one component: SIGKILL to its whole process group, with no chance to clean up."""
        process = self._processes.pop(component, None)
        if process is None:
            raise self.error(f"airflow {component} is not running in {self.home}")
        _signal_group(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
        log.info("Killed airflow %s (pid %s)", component, process.pid)

    def stop(self, timeout: float = 30) -> None:
        """Stop every running component, the last started first; see ``stop_component``."""
        for component in reversed(list(self._processes)):
            self.stop_component(component, timeout=timeout)

    def log_path(self, component: str) -> Path:
        """The stdout and stderr of one component (or of ``db-migrate``)."""
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
        return "\n".join(f"==== {c} ====\n{self.log_tail(c)}" for c in self.components)

    def api(self, path: str, *, method: str = "GET", body: Any = None, timeout: float = 15) -> Any:
        """Call the REST API (``/api/v2/...``) and return the decoded JSON answer."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.base_url + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())

    def __enter__(self: P) -> P:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _own_settings(self) -> dict[str, str]:
        """The ``AIRFLOW__*`` settings of this kind of deployment, on top of the common ones."""
        return {}

    def _migrate(self) -> None:
        migrate_log = self.log_path("db-migrate")
        with open(migrate_log, "wb") as output:
            try:
                result = subprocess.run(
                    [AIRFLOW, "db", "migrate"],
                    env=self.environment(),
                    cwd=self.home,
                    stdin=subprocess.DEVNULL,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    timeout=180,
                    check=False,
                )
            except subprocess.TimeoutExpired:
                raise self.error(f"airflow db migrate ran over 180 s: {migrate_log}") from None
        if result.returncode != 0:
            raise self.error(f"airflow db migrate failed ({result.returncode}); see {migrate_log}")

    def _healthy(self) -> bool:
        for component, process in self._processes.items():
            if process.poll() is not None:
                raise self.error(
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
    cluster: AirflowProcesses | None = None,
    interval: float = 0.5,
) -> T:
    """
    Call ``probe`` until it returns something other than ``None`` or falsy, and return that.

    :raises AirflowProcessError: after ``timeout`` seconds (the ``error`` type of ``cluster`` when given,
        with the tail of its components' logs).
    """
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() > deadline:
            message = f"timed out after {timeout:.0f} s waiting for {what}"
            if cluster is None:
                raise AirflowProcessError(message)
            raise cluster.error(f"{message}\n{cluster.diagnostics()}")
        time.sleep(interval)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def _signal_group(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signum)
