"""One local service: a background process with a pid file, a log file, a health check, and up/down/status.

The Kafka broker, the SQL endpoint, Superset and each Dagster process are Services: a subclass says what to run
(`command`, `env`), what to write first (`prepare`), where it lives (`home`, `port`, `url`) and when it is healthy
(`is_ready`). Starting, waiting, refusing a port someone else holds and stopping are written here once.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from lakehouse.services import process


class Service:
    name: ClassVar[str]  # in messages: "Kafka broker"
    file_stem: ClassVar[str] = "server"  # <home>/<stem>.pid and .log
    start_timeout_s: ClassVar[float] = 60.0
    stop_timeout_s: ClassVar[float] = 20.0
    host: str = "127.0.0.1"  # where clients on this machine reach it
    # Fields or properties of each subclass:
    home: Path  # its pid file, log, configuration and data
    port: int  # the port it serves (and that must be free before it starts)

    @property
    def url(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid_file(self) -> Path:
        return self.home / f"{self.file_stem}.pid"

    @property
    def log_file(self) -> Path:
        return self.home / f"{self.file_stem}.log"

    def command(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str] | None:
        """The process's environment; None: this one's."""
        return None

    def prepare(self) -> None:
        """Before a launch: configuration, storage, secrets."""

    def is_ready(self) -> bool:
        return process.port_open(self.host, self.port)

    def is_running(self) -> bool:
        return process.read_pid(self.pid_file) is not None

    def state(self) -> str:
        if self.is_ready():
            return "ready"
        return "starting or unhealthy" if self.is_running() else "stopped"

    def start(self, timeout_s: float | None = None) -> dict[str, float]:
        """Start it unless it runs, and wait until it is ready; returns seconds per step ("start": the wait)."""
        self.launch()
        return {"start": self.wait_ready(timeout_s)}

    def launch(self) -> None:
        """Start its process unless it runs, without waiting (nodes of a cluster are ready only together). A port
        held by another process is an error, not a service to adopt."""
        if self.is_running():
            return
        if process.port_open(self.host, self.port):
            raise process.ServiceError(f"port {self.port} of the {self.name} is taken by another process")
        self.home.mkdir(parents=True, exist_ok=True)
        self.prepare()
        process.start(self.command(), self.pid_file, self.log_file, env=self.env())

    def wait_ready(self, timeout_s: float | None = None) -> float:
        timeout_s = timeout_s or self.start_timeout_s
        return process.wait_ready(self.is_ready, timeout_s, self.pid_file, self.name, self.log_file)

    def stop(self) -> bool:
        """SIGTERM its process group (SIGKILL after stop_timeout_s); whether anything was running."""
        return process.stop(self.pid_file, timeout_s=self.stop_timeout_s)
