"""Background processes with a pid file: start detached, wait for a port, stop cleanly."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path


class ServiceError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_port_block(size: int) -> int:
    """The first of `size` consecutive free ports (for services whose ports follow one setting)."""
    while True:
        first = free_port()
        if first + size <= 65535 and all(_can_bind(first + n) for n in range(size)):
            return first


def _can_bind(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def port_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def read_pid(pid_file: Path) -> int | None:
    try:
        pid = int(pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    return pid


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return f"(no log at {path})"


def start(cmd: list[str], pid_file: Path, log_file: Path, env: dict[str, str] | None = None) -> int:
    """Start `cmd` in its own process group (so stop() can end it and its children), logging to log_file."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as log:
        proc = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=env,
        )
    pid_file.write_text(str(proc.pid))
    return proc.pid


def wait_ready(ready: Callable[[], bool], timeout_s: float, pid_file: Path, what: str, log: Path) -> float:
    """Poll until ready(); returns the seconds waited. If the process dies, or is not ready in time (then it is
    stopped, so nothing half-started lingers), fail with the tail of its log."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if ready():
            return time.monotonic() - started
        if read_pid(pid_file) is None:
            raise ServiceError(f"{what} exited during start-up. Last lines of {log}:\n{tail(log)}")
        time.sleep(0.2)
    stop(pid_file)
    raise ServiceError(f"{what} not ready after {timeout_s:.0f} s (stopped it). Last lines of {log}:\n{tail(log)}")


def stop(pid_file: Path, timeout_s: float = 20.0) -> bool:
    """SIGTERM the process group, SIGKILL after timeout_s. Returns whether anything was running."""
    pid = read_pid(pid_file)
    pid_file.unlink(missing_ok=True)
    if pid is None:
        return False
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        _reap(pid)
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    _reap(pid)
    return True


def _reap(pid: int) -> None:
    # When the process is our own child, collect it so it does not linger as a zombie.
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def stop_on_signals() -> threading.Event:
    """An event set by SIGTERM or SIGINT, for long-running loops that stop cleanly."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    return stop
