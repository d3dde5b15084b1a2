"""Dagster as the project runs it: a code server (the `orchestration` code location), the webserver (UI and
GraphQL API) and the daemon (sensors, schedules, backfills, the run queue, run monitoring).

The instance's configuration (`dagster.yaml`) and the workspace are written into `dagster_home` from the settings
at every start, so the same three commands serve `marketlake up` and docker-compose:
`marketlake dagster code-server | webserver | daemon`. Each writes the files, then becomes the Dagster process.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import requests
import yaml

from lakehouse.services import process
from lakehouse.settings import PROJECT_ROOT, Settings

LOCATION = "marketlake"
# Spark-heavy batch runs that may run at once beside the long-running ones (2 cores: one of each kind).
SPARK_BATCH_TAG = "marketlake/spark"


def instance_config(settings: Settings) -> dict:
    """dagster.yaml: telemetry and the welcome pop-up off, a run queue that keeps Spark batch runs (backfills,
    training) to one of each at a time while the stream and producer never wait, and run monitoring that fails a
    long-running run whose heartbeat stopped (orchestration.supervision), so its sensor restarts it."""
    config: dict = {
        "telemetry": {"enabled": False},
        "nux": {"enabled": False},
        "run_coordinator": {"module": "dagster.core.run_coordinator", "class": "QueuedRunCoordinator"},
        "concurrency": {
            "runs": {
                "max_concurrent_runs": 6,
                "tag_concurrency_limits": [
                    {"key": "dagster/backfill", "limit": 1},
                    {"key": SPARK_BATCH_TAG, "value": "batch", "limit": 1},
                ],
            }
        },
        "run_launcher": {
            "module": "orchestration.supervision",
            "class": "SupervisedRunLauncher",
            "config": {"stale_after_seconds": 120},
        },
        "run_monitoring": {
            "enabled": True,
            "start_timeout_seconds": 300,
            "poll_interval_seconds": 20,
            "max_resume_run_attempts": 0,
        },
        "code_servers": {"local_startup_timeout": 300},
    }
    if settings.dagster_postgres_url:
        config["storage"] = {"postgres": {"postgres_url": {"env": "MARKETLAKE_DAGSTER_POSTGRES_URL"}}}
    return config


def workspace_config(settings: Settings) -> dict:
    host, port = settings.dagster_code_server.rsplit(":", 1)
    return {"load_from": [{"grpc_server": {"host": host, "port": int(port), "location_name": LOCATION}}]}


def _replace(path: Path, text: str) -> None:
    """Write beside the file, then rename over it: in docker-compose the webserver and the daemon write the same
    files on a shared volume at the same time, and neither may read the other's half-written file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def write_config(settings: Settings) -> Path:
    """Writes dagster.yaml and workspace.yaml into dagster_home; returns the workspace file."""
    home = Path(settings.dagster_home)
    home.mkdir(parents=True, exist_ok=True)
    _replace(
        home / "dagster.yaml",
        "# Written by marketlake from its settings (lakehouse/services/dagster.py) at every start.\n"
        + yaml.safe_dump(instance_config(settings), sort_keys=False),
    )
    workspace = home / "workspace.yaml"
    _replace(workspace, yaml.safe_dump(workspace_config(settings), sort_keys=False))
    return workspace


def command(settings: Settings, role: str, host: str = "127.0.0.1") -> list[str]:
    """The Dagster process of a role: code-server, webserver or daemon."""
    bin_dir = Path(sys.executable).parent
    workspace = str(Path(settings.dagster_home) / "workspace.yaml")
    if role == "code-server":
        port = settings.dagster_code_server.rsplit(":", 1)[1]
        return [str(bin_dir / "dagster"), "code-server", "start", "-m", "orchestration.definitions",
                "-h", host, "-p", port, "--location-name", LOCATION]  # fmt: skip
    if role == "webserver":
        return [str(bin_dir / "dagster-webserver"), "-h", host, "-p", str(settings.dagster_port), "-w", workspace]
    if role == "daemon":
        return [str(bin_dir / "dagster-daemon"), "run", "-w", workspace]
    raise ValueError(f"unknown Dagster role {role!r}: code-server, webserver or daemon")


def environment(settings: Settings) -> dict[str, str]:
    """Dagster's processes (and the runs they launch) rebuild the same settings from these variables."""
    return os.environ | settings.to_env() | {"DAGSTER_HOME": settings.dagster_home}


def exec_role(settings: Settings, role: str, host: str = "127.0.0.1") -> None:
    """Write the configuration, then replace this process with the Dagster process (what containers run)."""
    write_config(settings)
    cmd = command(settings, role, host)
    os.chdir(PROJECT_ROOT)
    os.execve(cmd[0], cmd, environment(settings))


@dataclass(frozen=True)
class Dagster:
    """The three processes, started in the background by `marketlake up` with a pid file and a log each."""

    settings: Settings

    @property
    def home(self) -> Path:
        return Path(self.settings.dagster_home)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.settings.dagster_port}"

    def pid_file(self, role: str) -> Path:
        return self.home / f"{role}.pid"

    def log_file(self, role: str) -> Path:
        return Path(self.settings.home) / "logs" / f"dagster-{role}.log"

    def ready(self, role: str) -> bool:
        if role == "code-server":
            host, port = self.settings.dagster_code_server.rsplit(":", 1)
            return process.port_open(host, int(port))
        if role == "webserver":
            try:
                return requests.get(f"{self.url}/server_info", timeout=2).ok
            except requests.RequestException:
                return False
        return self.daemon_healthy()

    def daemon_healthy(self) -> bool:
        """The daemon's own heartbeats, as the webserver reports them (sensors, schedules, backfills, queue...)."""
        query = "{ instance { daemonHealth { allDaemonStatuses { daemonType healthy required } } } }"
        try:
            answer = requests.post(f"{self.url}/graphql", json={"query": query}, timeout=5).json()
            statuses = answer["data"]["instance"]["daemonHealth"]["allDaemonStatuses"]
        except (requests.RequestException, ValueError, KeyError, TypeError):
            return False
        return all(s["healthy"] for s in statuses if s["required"])

    def is_running(self, role: str) -> bool:
        return process.read_pid(self.pid_file(role)) is not None

    def start(self, timeout_s: float = 300.0) -> dict[str, float]:
        """Start what is not running yet, in order, each waited for; returns seconds per role."""
        cli = shutil.which("marketlake", path=str(Path(sys.executable).parent)) or "marketlake"
        waited = {}
        for role in ("code-server", "webserver", "daemon"):
            if not self.is_running(role):
                process.start(
                    [cli, "dagster", role], self.pid_file(role), self.log_file(role), environment(self.settings)
                )
            waited[role] = process.wait_ready(
                lambda role=role: self.ready(role), timeout_s, self.pid_file(role), f"Dagster {role}",
                self.log_file(role),
            )  # fmt: skip
        return waited

    def stop(self) -> bool:
        """Stop the daemon first (no new runs), then the webserver, then the code server and the runs it launched."""
        return any([process.stop(self.pid_file(role), timeout_s=30) for role in ("daemon", "webserver", "code-server")])
