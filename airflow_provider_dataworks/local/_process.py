"""Process, port and file helpers shared by the local stack's launchers."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

LOOPBACK = "127.0.0.1"


def free_port(*, exclude: set[int] | None = None) -> int:
    """Return a TCP port on loopback that nothing listens on right now."""
    exclude = exclude or set()
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((LOOPBACK, 0))
            port = int(sock.getsockname()[1])
        if port not in exclude:
            return port


def port_is_free(port: int) -> bool:
    """Return whether a server could bind ``port`` on loopback now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # Servers (the JVM too) set this option, so sockets in TIME_WAIT do not count as busy.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def port_accepts(port: int) -> bool:
    """Return whether something accepts TCP connections on ``port`` on loopback."""
    try:
        with socket.create_connection((LOOPBACK, port), timeout=0.5):
            return True
    except OSError:
        return False


def process_alive(pid: int | None, *markers: str) -> bool:
    """
    Return whether ``pid`` runs and its command line holds every one of ``markers``.

    The markers guard against a pid reused by an unrelated process. A process that is exiting
    counts as alive until its last thread is gone, because until then it may hold its ports.
    """
    if pid is None:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return False
    except OSError:
        return _pid_exists(pid)
    if stat.rsplit(")", 1)[-1].split()[:1] in (["Z"], ["X"]):
        # The leader turns zombie before the other threads are gone and the sockets closed.
        return _thread_count(pid) > 1
    if not cmdline:
        return True
    args = cmdline.decode("utf-8", "replace").split("\0")
    return all(marker in args for marker in markers)


def signal_group(pid: int | None, signum: int) -> None:
    """Send ``signum`` to the process group led by ``pid``, if it still exists."""
    if pid is None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signum)


def stop_group(
    pid: int,
    *markers: str,
    process: subprocess.Popen[bytes] | None = None,
    timeout: float = 30,
) -> bool:
    """
    Stop the process group led by ``pid``: SIGTERM, then SIGKILL after ``timeout`` seconds.

    :param markers: as for :func:`process_alive`.
    :param process: the ``Popen`` handle when this process started it, so it is reaped.
    :return: whether SIGKILL was needed.
    """
    signal_group(pid, signal.SIGCONT)
    signal_group(pid, signal.SIGTERM)
    if wait_exit(pid, *markers, process=process, deadline=time.monotonic() + timeout):
        return False
    signal_group(pid, signal.SIGKILL)
    wait_exit(pid, *markers, process=process, deadline=time.monotonic() + 10)
    return True


def wait_exit(
    pid: int, *markers: str, process: subprocess.Popen[bytes] | None = None, deadline: float
) -> bool:
    """Wait until ``pid`` has exited or ``deadline`` (monotonic) passes; return whether it exited."""
    if process is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        return process.poll() is not None
    while process_alive(pid, *markers):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def write_private(path: Path, data: bytes | str) -> None:
    """Write ``data`` to ``path`` readable by its owner only (mode 0600)."""
    raw = data.encode() if isinstance(data, str) else data
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(raw)
    os.chmod(path, 0o600)


def read_tail(path: Path, *, lines: int = 20, size: int = 16384) -> str:
    """Return the last ``lines`` lines of a log file ('' if it cannot be read)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - size))
            text = handle.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return last_lines(text, lines)


def last_lines(text: str, count: int) -> str:
    """Return the last ``count`` lines of ``text``."""
    return "\n".join(text.strip().splitlines()[-count:])


def _thread_count(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/task"))
    except OSError:
        return 0


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
