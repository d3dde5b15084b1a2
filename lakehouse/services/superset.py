"""Superset, run by the project from its own virtualenv (.venv-superset), and its content provisioned as code.

`Superset.start()` builds the DuckDB catalog, runs `superset/initialise.py` (metadata in SQLite under
`<home>/superset`, admin user with the current password), starts gunicorn, waits for /health, then runs
`superset/provision.py`, which creates or updates — matched by name, so every start is idempotent — the database
connection, the datasets and the dashboards of `superset/dashboards.yaml`. Both scripts run in Superset's own
Python with the same environment variables as docker-compose's one-shot services, so both setups share them.

The engine behind the connection is a setting (`MARKETLAKE_SUPERSET_ENGINE`): `duckdb` (default, chosen by
measurement, docs/sql-and-dashboards.md) reads the Delta files through views in a read-only DuckDB catalog;
`spark` goes through the Spark SQL endpoint (lakehouse/sql_endpoint.py).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import quote

import requests

from lakehouse.services import process
from lakehouse.services.base import Service
from lakehouse.settings import PROJECT_ROOT, Settings
from lakehouse.tables import REGISTRY, VIEWS

VENV = PROJECT_ROOT / ".venv-superset"
CONTENT = PROJECT_ROOT / "superset"
ADMIN = "admin"
# Keys published in Superset's docs and examples: a server signed with one of them is not safe to expose.
KNOWN_SECRETS = {"CHANGE_ME_TO_A_COMPLEX_RANDOM_SECRET", "thisISaSECRET_1234", "TEST_NON_DEV_SECRET"}


def _stored_secret(path: Path, env_value: str | None) -> str:
    """The environment's value, else one generated on first use and kept for later starts, readable by the owner
    only: created 0600 (never briefly world-readable), and put back to 0600 should it have been widened."""
    if env_value:
        return env_value
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(42))
    path.chmod(0o600)
    return path.read_text().strip()


def provisioning() -> ModuleType:
    """superset/provision.py, imported from its path: it runs in Superset's Python, and its API client and content
    loader serve tests and benchmarks here too (its duckdb-ext import happens only for a duckdb:// connection)."""
    name = "marketlake_superset_provision"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, CONTENT / "provision.py")
        assert spec and spec.loader
        sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[name])
    return sys.modules[name]


def database_uri(engine: str, settings: Settings, catalog: Path) -> str:
    """The SQLAlchemy URI of Superset's `marketlake` connection for an engine."""
    if engine == "duckdb":
        return f"duckdb:///{catalog}"
    if engine == "spark":
        if not settings.sql_password:  # the endpoint on loopback without authentication
            return f"hive://superset@127.0.0.1:{settings.sql_port}/default"
        user, password = quote(settings.sql_user, safe=""), quote(settings.sql_password, safe="")
        return f"hive://{user}:{password}@127.0.0.1:{settings.sql_port}/default?auth=CUSTOM"
    raise ValueError(f"unknown Superset engine {engine!r}: use duckdb or spark")


@dataclass(frozen=True)
class Superset(Service):
    name = "Superset"
    file_stem = "superset"
    start_timeout_s = 240.0

    settings: Settings

    @property
    def home(self) -> Path:
        return Path(self.settings.home) / "superset"

    @property
    def port(self) -> int:
        return self.settings.superset_port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def catalog(self) -> Path:
        return self.home / "lakehouse.duckdb"

    def secret_key(self) -> str:
        key = _stored_secret(self.home / "secret_key", os.environ.get("SUPERSET_SECRET_KEY"))
        if key in KNOWN_SECRETS or len(key) < 32:
            raise process.ServiceError("SUPERSET_SECRET_KEY is a published default or too short (< 32 chars)")
        return key

    def admin_password(self) -> str:
        return _stored_secret(self.home / "admin_password", os.environ.get("SUPERSET_ADMIN_PASSWORD"))

    def env(self) -> dict[str, str]:
        return os.environ | {
            "SUPERSET_HOME": str(self.home),
            "SUPERSET_CONFIG_PATH": str(CONTENT / "superset_config.py"),
            "SUPERSET_SECRET_KEY": self.secret_key(),
            "FLASK_APP": "superset.app:create_app()",
        }

    def _run(self, *args: str, **env: str) -> str:
        out = subprocess.run(
            [str(VENV / "bin" / args[0]), *args[1:]],
            env=self.env() | env,
            capture_output=True,
            text=True,
            check=False,
        )
        if out.returncode != 0:
            raise process.ServiceError(f"{' '.join(args[:3])} failed:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}")
        return out.stdout

    def build_catalog(self) -> list[str]:
        """DuckDB views over every registry table that has a Delta log (rebuilt on each start)."""
        tables = {t.name: t.location(self.settings) for t in REGISTRY}
        views = {v.name: {"query": v.query, "tables": [t.name for t in v.tables]} for v in VIEWS}
        script = str(CONTENT / "duckdb_catalog.py")
        return json.loads(self._run("python", script, str(self.catalog), json.dumps(tables), json.dumps(views)))

    def initialise(self) -> None:
        """Metadata schema and roles (once per Superset version), admin user and its password (every start)."""
        self._run("python", str(CONTENT / "initialise.py"), SUPERSET_ADMIN_PASSWORD=self.admin_password())

    def provision(self) -> dict[str, int]:
        """Connection, datasets, charts and dashboards, by the same script docker-compose runs."""
        uri = database_uri(self.settings.superset_engine, self.settings, self.catalog)
        out = self._run(
            "python", str(CONTENT / "provision.py"), SUPERSET_URL=self.url,
            SUPERSET_ADMIN_PASSWORD=self.admin_password(), MARKETLAKE_SUPERSET_DATABASE_URI=uri,
        )  # fmt: skip
        return json.loads(out.splitlines()[-1])

    def is_ready(self) -> bool:
        try:
            return requests.get(f"{self.url}/health", timeout=2).text.strip() == "OK"
        except requests.RequestException:
            return False

    def command(self) -> list[str]:
        cmd = [str(VENV / "bin" / "gunicorn"), "--bind", f"{self.host}:{self.port}"]
        # One worker process, threads for concurrent chart queries; long timeout for cold Spark queries.
        return [*cmd, "--workers", "1", "--threads", "8", "--timeout", "300", "superset.app:create_app()"]

    def start(self, timeout_s: float | None = None) -> dict[str, float]:
        """Initialise, start and provision; returns seconds per step."""
        if not (VENV / "bin" / "superset").exists():
            raise process.ServiceError(f"no Superset virtualenv at {VENV}; run `make superset-venv`")
        timings: dict[str, float] = {}
        clock = time.monotonic()
        self.home.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.home.chmod(0o700)  # its secrets, metadata and catalog are for the Superset process only
        if self.settings.superset_engine == "duckdb":
            self.build_catalog()
        self.initialise()
        timings["initialise"] = time.monotonic() - clock
        timings |= super().start(timeout_s)
        clock = time.monotonic()
        self.provision()
        timings["provision"] = time.monotonic() - clock
        return timings

    def api(self) -> Any:
        """A logged-in client of Superset's REST API (provision.Api)."""
        return provisioning().Api.login(self.url, ADMIN, self.admin_password())
