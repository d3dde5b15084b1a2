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
from lakehouse.services.base import Service
from lakehouse.settings import PROJECT_ROOT, Settings

LOCATION = "marketlake"
# Run tags: long-running runs (the stream, the producer) and their heartbeat (orchestration/supervision.py).
LONG_RUNNING_TAG = "marketlake/long-running"
HEARTBEAT_TAG = "marketlake/heartbeat"
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
            "config": {"stale_after_seconds": settings.dagster_heartbeat_timeout_s},
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


ROLES = ("code-server", "webserver", "daemon")  # in start order


@dataclass(frozen=True)
class DagsterProcess(Service):
    """One of Dagster's three processes, run as `marketlake dagster <role>` (what the containers run too)."""

    settings: Settings
    role: str
    start_timeout_s = 300.0
    stop_timeout_s = 30.0

    @property
    def name(self) -> str:  # type: ignore[override]
        return f"Dagster {self.role}"

    @property
    def home(self) -> Path:
        return Path(self.settings.dagster_home)

    @property
    def log_file(self) -> Path:
        return Path(self.settings.home) / "logs" / f"dagster-{self.role}.log"

    @property
    def pid_file(self) -> Path:
        return self.home / f"{self.role}.pid"

    @property
    def port(self) -> int:
        if self.role == "code-server":
            return int(self.settings.dagster_code_server.rsplit(":", 1)[1])
        return self.settings.dagster_port if self.role == "webserver" else 0

    @property
    def url(self) -> str:
        if self.role == "webserver":
            return Dagster(self.settings).url
        return self.settings.dagster_code_server if self.role == "code-server" else ""

    def command(self) -> list[str]:
        cli = shutil.which("marketlake", path=str(Path(sys.executable).parent)) or "marketlake"
        return [cli, "dagster", self.role]

    def env(self) -> dict[str, str]:
        return environment(self.settings)

    def is_ready(self) -> bool:
        if self.role == "code-server":
            return process.port_open(self.settings.dagster_code_server.rsplit(":", 1)[0], self.port)
        if self.role == "webserver":
            return Dagster(self.settings).serves()
        return Dagster(self.settings).daemon_healthy()

    def start(self, timeout_s: float | None = None) -> dict[str, float]:
        # Another process's daemon (it serves no port) shows as a healthy daemon of this instance.
        if not self.is_running() and self.is_ready():
            raise process.ServiceError(f"the {self.name} of another process already serves this instance")
        return super().start(timeout_s)


@dataclass(frozen=True)
class Dagster:
    """The webserver's API (what the UI calls) and the three processes `marketlake up` starts in the background."""

    settings: Settings

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.settings.dagster_port}"

    def processes(self) -> list[DagsterProcess]:
        return [DagsterProcess(self.settings, role) for role in ROLES]

    def serves(self) -> bool:
        try:
            return requests.get(f"{self.url}/server_info", timeout=2).ok
        except requests.RequestException:
            return False

    def graphql(self, query: str, timeout_s: float = 30.0, **variables: object) -> dict:
        """The `data` of a query to the webserver's GraphQL API (what the UI itself calls)."""
        response = requests.post(
            f"{self.url}/graphql", json={"query": query, "variables": variables}, timeout=timeout_s
        )
        response.raise_for_status()
        answer = response.json()
        if answer.get("errors"):
            raise RuntimeError(f"GraphQL errors: {answer['errors']}")
        return answer["data"]

    def runs(self, limit: int | None = None, **run_filter: object) -> list[dict]:
        """Runs, newest first, as the runs page lists them; `run_filter` is GraphQL's RunsFilter
        (pipelineName, runIds, tags=[{key, value}], ...)."""
        query = """query($filter: RunsFilter, $limit: Int) { runsOrError(filter: $filter, limit: $limit) {
            ... on Runs { results { runId status jobName startTime endTime tags { key value } } } } }"""
        return self.graphql(query, filter=run_filter, limit=limit)["runsOrError"]["results"]

    def launch_backfill(self, assets: list[list[str]], partition_keys: list[str]) -> str:
        """What the UI's "Materialize selected partitions" does; returns the backfill id."""
        mutation = """mutation($params: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $params) {
            __typename ... on LaunchBackfillSuccess { backfillId } ... on PythonError { message } } }"""
        params = {"assetSelection": [{"path": path} for path in assets], "partitionNames": partition_keys}
        answer = self.graphql(mutation, params=params)["launchPartitionBackfill"]
        if answer["__typename"] != "LaunchBackfillSuccess":
            raise RuntimeError(f"backfill not launched: {answer}")
        return answer["backfillId"]

    def launch_job(self, job: str, run_config: dict | None = None) -> str:
        """What the UI's launchpad does; returns the run id."""
        mutation = """mutation($params: ExecutionParams!) { launchRun(executionParams: $params) {
            __typename ... on LaunchRunSuccess { run { runId } } ... on PythonError { message } } }"""
        selector = {"repositoryLocationName": LOCATION, "repositoryName": "__repository__", "jobName": job}
        answer = self.graphql(mutation, params={"selector": selector, "runConfigData": run_config or {}})["launchRun"]
        if answer["__typename"] != "LaunchRunSuccess":
            raise RuntimeError(f"{job} not launched: {answer}")
        return answer["run"]["runId"]

    def daemon_healthy(self) -> bool:
        """The daemon's own heartbeats, as the webserver reports them (sensors, schedules, backfills, queue...)."""
        query = "{ instance { daemonHealth { allDaemonStatuses { daemonType healthy required } } } }"
        try:
            statuses = self.graphql(query, timeout_s=5)["instance"]["daemonHealth"]["allDaemonStatuses"]
        except (requests.RequestException, RuntimeError, ValueError, KeyError, TypeError):
            return False
        required = [s["healthy"] for s in statuses if s["required"]]
        return bool(required) and all(required)

    def start(self, timeout_s: float | None = None) -> dict[str, float]:
        """Start what is not running yet, in order, each waited for; returns seconds per role."""
        return {p.role: p.start(timeout_s)["start"] for p in self.processes()}

    def stop(self) -> bool:
        """Stop the daemon first (no new runs), then the webserver, then the code server and the runs it launched."""
        return any([p.stop() for p in reversed(self.processes())])
