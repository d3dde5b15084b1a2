"""Superset, run by the project from its own virtualenv (.venv-superset), and its content provisioned as code.

`Superset.start()` initialises the metadata database (SQLite under `<home>/superset`) once per Superset version,
starts gunicorn, waits for /health, then `provision()` creates or updates — matched by name, so every start is
idempotent — the database connection, the datasets and the dashboards of `superset/dashboards.yaml`.

The engine behind the connection is a setting (`MARKETLAKE_SUPERSET_ENGINE`): `duckdb` (default, chosen by
measurement, docs/sql-and-dashboards.md) reads the Delta files through views in a read-only DuckDB catalog;
`spark` goes through the Spark SQL endpoint (lakehouse/sql_endpoint.py).
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
import yaml

from lakehouse.services import process
from lakehouse.settings import PROJECT_ROOT, Settings
from lakehouse.tables import REGISTRY

VENV = PROJECT_ROOT / ".venv-superset"
CONTENT = PROJECT_ROOT / "superset"
VERSION = "6.1.0"
ADMIN = "admin"
DATABASE = "marketlake"
# Keys published in Superset's docs and examples: a server signed with one of them is not safe to expose.
KNOWN_SECRETS = {"CHANGE_ME_TO_A_COMPLEX_RANDOM_SECRET", "thisISaSECRET_1234", "TEST_NON_DEV_SECRET"}


def _stored_secret(path: Path, env_value: str | None) -> str:
    """The environment's value, else one generated on first use and kept (mode 0600) for later starts."""
    if env_value:
        return env_value
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(42))
        path.chmod(0o600)
    return path.read_text().strip()


def duckdb_extension_dir() -> str:
    found = sorted(VENV.glob("lib/python*/site-packages/duckdb_ext/extensions"))
    if not found:
        raise process.ServiceError(f"duckdb-ext is not installed in {VENV}; run `make superset-venv`")
    return str(found[0])


def database_payload(engine: str, settings: Settings, catalog: Path) -> dict[str, Any]:
    """Superset's database connection for an engine; never allowed to run DML."""
    if engine == "duckdb":
        uri = f"duckdb:///{catalog}"
        connect_args = {
            # Read-only: DROP/INSERT/CREATE fail in the engine, whatever Superset lets through.
            "read_only": True,
            # The Delta extension ships in the duckdb-ext wheel: never let DuckDB try to download it.
            "config": {"extension_directory": duckdb_extension_dir(), "autoinstall_known_extensions": False},
            "preload_extensions": ["delta"],
        }
    elif engine == "spark":
        uri = f"hive://superset@127.0.0.1:{settings.sql_port}/default"
        connect_args = {}
    else:
        raise ValueError(f"unknown Superset engine {engine!r}: use duckdb or spark")
    return {
        "database_name": DATABASE,
        "sqlalchemy_uri": uri,
        "expose_in_sqllab": True,
        "allow_dml": False,
        "allow_run_async": False,
        "allow_ctas": False,
        "allow_cvas": False,
        "extra": json.dumps({"engine_params": {"connect_args": connect_args}}),
    }


@dataclass(frozen=True)
class Superset:
    settings: Settings

    @property
    def home(self) -> Path:
        return Path(self.settings.home) / "superset"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.settings.superset_port}"

    @property
    def pid_file(self) -> Path:
        return self.home / "superset.pid"

    @property
    def log_file(self) -> Path:
        return self.home / "superset.log"

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

    def _run(self, *args: str) -> str:
        out = subprocess.run(
            [str(VENV / "bin" / args[0]), *args[1:]], env=self.env(), capture_output=True, text=True, check=False
        )
        if out.returncode != 0:
            raise process.ServiceError(f"{' '.join(args[:3])} failed:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}")
        return out.stdout

    def build_catalog(self) -> list[str]:
        """DuckDB views over every registry table that has a Delta log (rebuilt on each start)."""
        tables = {t.name: t.location(self.settings) for t in REGISTRY}
        script = str(CONTENT / "duckdb_catalog.py")
        return json.loads(self._run("python", script, str(self.catalog), json.dumps(tables)))

    def initialise(self) -> None:
        """Metadata schema, admin user, roles: once per Superset version (a stamp file remembers)."""
        stamp = self.home / "initialised"
        if stamp.exists() and stamp.read_text() == VERSION:
            return
        self._run("superset", "db", "upgrade")
        self._run(
            "superset", "fab", "create-admin", "--username", ADMIN, "--firstname", "marketlake", "--lastname",
            "admin", "--email", "admin@localhost", "--password", self.admin_password(),
        )  # fmt: skip
        self._run("superset", "init")
        stamp.write_text(VERSION)

    def is_running(self) -> bool:
        return process.read_pid(self.pid_file) is not None

    def is_ready(self) -> bool:
        try:
            return requests.get(f"{self.url}/health", timeout=2).text.strip() == "OK"
        except requests.RequestException:
            return False

    def start(self, timeout_s: float = 240.0) -> dict[str, float]:
        """Initialise, start and provision; returns seconds per step."""
        if not (VENV / "bin" / "superset").exists():
            raise process.ServiceError(f"no Superset virtualenv at {VENV}; run `make superset-venv`")
        timings: dict[str, float] = {}
        clock = time.monotonic()
        self.home.mkdir(parents=True, exist_ok=True)
        if self.settings.superset_engine == "duckdb":
            self.build_catalog()
        self.initialise()
        timings["initialise"] = time.monotonic() - clock
        if not self.is_running():
            if process.port_open("127.0.0.1", self.settings.superset_port):
                raise process.ServiceError(f"port {self.settings.superset_port} is taken (MARKETLAKE_SUPERSET_PORT)")
            cmd = [str(VENV / "bin" / "gunicorn"), "--bind", f"127.0.0.1:{self.settings.superset_port}"]
            # One worker process, threads for concurrent chart queries; long timeout for cold Spark queries.
            cmd += ["--workers", "1", "--threads", "8", "--timeout", "300", "superset.app:create_app()"]
            process.start(cmd, self.pid_file, self.log_file, env=self.env())
            timings["start"] = process.wait_ready(self.is_ready, timeout_s, self.pid_file, "Superset", self.log_file)
        clock = time.monotonic()
        provision(self.api(), database_payload(self.settings.superset_engine, self.settings, self.catalog))
        timings["provision"] = time.monotonic() - clock
        return timings

    def stop(self) -> bool:
        return process.stop(self.pid_file)

    def api(self) -> Api:
        return Api.login(self.url, ADMIN, self.admin_password())


@dataclass
class Api:
    """Superset's REST API with a logged-in session (JWT + CSRF token)."""

    url: str
    http: requests.Session

    @classmethod
    def login(cls, url: str, username: str, password: str) -> Api:
        http = requests.Session()
        body = {"username": username, "password": password, "provider": "db", "refresh": True}
        token = http.post(f"{url}/api/v1/security/login", json=body, timeout=30)
        token.raise_for_status()
        http.headers["Authorization"] = f"Bearer {token.json()['access_token']}"
        csrf = http.get(f"{url}/api/v1/security/csrf_token/", timeout=30)
        csrf.raise_for_status()
        http.headers.update({"X-CSRFToken": csrf.json()["result"], "Referer": url})
        return cls(url, http)

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        response = self.http.request(method, f"{self.url}/api/v1/{path}", json=body, timeout=300)
        if response.status_code >= 400:
            raise process.ServiceError(f"{method} {path}: {response.status_code} {response.text[:2000]}")
        return response.json() if response.content else {}

    def find(self, resource: str, **match: Any) -> int | None:
        """Id of the first object whose fields equal `match` (lists are small: page through 100 at a time)."""
        page = 0
        while True:
            rows = self.call("GET", f"{resource}/?q=(page:{page},page_size:100)")["result"]
            for row in rows:
                if all(row.get(k) == v for k, v in match.items()):
                    return row["id"]
            if len(rows) < 100:
                return None
            page += 1

    def upsert(self, resource: str, match: dict[str, Any], body: dict[str, Any]) -> int:
        found = self.find(resource, **match)
        if found is None:
            return self.call("POST", f"{resource}/", body)["id"]
        self.call("PUT", f"{resource}/{found}", body)
        return found


def load_content(path: Path = CONTENT / "dashboards.yaml") -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def chart_params(chart: dict[str, Any], dataset_id: int) -> dict[str, Any]:
    params = {"datasource": f"{dataset_id}__table", "time_range": "No filter", **chart["params"]}
    if chart.get("time"):
        no_filter = {"expressionType": "SIMPLE", "clause": "WHERE", "subject": params["x_axis"]}
        params["adhoc_filters"] = [
            *params.get("adhoc_filters", []),
            no_filter | {"operator": "TEMPORAL_RANGE", "comparator": "No filter"},
        ]
    return params


def query_context(params: dict[str, Any], dataset_id: int) -> dict[str, Any]:
    """The query the chart runs, saved with it so /api/v1/chart/<id>/data answers (API users, benchmarks)."""
    columns: list[Any] = list(params.get("groupby", [])) + list(params.get("all_columns", []))
    if "x_axis" in params:
        axis = params["x_axis"]
        grain = params.get("time_grain_sqla")
        columns.insert(0, {"sqlExpression": axis, "label": axis, "expressionType": "SQL", "timeGrain": grain,
                           "columnType": "BASE_AXIS"})  # fmt: skip
    metrics = params.get("metrics") or ([params["metric"]] if "metric" in params else [])
    filters = [
        {"col": f["subject"], "op": f["operator"], "val": f["comparator"]}
        for f in params.get("adhoc_filters", [])
        if f["operator"] != "TEMPORAL_RANGE"
    ]
    query = {"columns": columns, "metrics": metrics, "filters": filters, "row_limit": params.get("row_limit", 1000)}
    if params.get("order_by_cols"):
        query["orderby"] = [json.loads(c) for c in params["order_by_cols"]]
    return {
        "datasource": {"id": dataset_id, "type": "table"},
        "form_data": params,
        "queries": [query],
        "result_format": "json",
        "result_type": "full",
    }


def dashboard_layout(title: str, charts: list[tuple[int, str]]) -> dict[str, Any]:
    """Superset's position JSON: one full-width row per chart, in order."""
    layout: dict[str, Any] = {
        "DASHBOARD_VERSION_KEY": "v2",
        "ROOT_ID": {"type": "ROOT", "id": "ROOT_ID", "children": ["GRID_ID"]},
        "GRID_ID": {"type": "GRID", "id": "GRID_ID", "children": [], "parents": ["ROOT_ID"]},
        "HEADER_ID": {"type": "HEADER", "id": "HEADER_ID", "meta": {"text": title}},
    }
    for chart_id, name in charts:
        row, cell = f"ROW-{chart_id}", f"CHART-{chart_id}"
        layout["GRID_ID"]["children"].append(row)
        layout[row] = {
            "type": "ROW",
            "id": row,
            "children": [cell],
            "parents": ["ROOT_ID", "GRID_ID"],
            "meta": {"background": "BACKGROUND_TRANSPARENT"},
        }
        layout[cell] = {
            "type": "CHART",
            "id": cell,
            "children": [],
            "parents": ["ROOT_ID", "GRID_ID", row],
            "meta": {"chartId": chart_id, "width": 12, "height": 60, "sliceName": name},
        }
    return layout


def symbol_filter(dataset_id: int, chart_ids: list[int]) -> dict[str, Any]:
    return {
        "id": "NATIVE_FILTER-symbol",
        "name": "symbol",
        "type": "NATIVE_FILTER",
        "filterType": "filter_select",
        "targets": [{"datasetId": dataset_id, "column": {"name": "symbol"}}],
        "controlValues": {"enableEmptyFilter": True, "defaultToFirstItem": True, "multiSelect": False},
        "defaultDataMask": {"extraFormData": {}, "filterState": {}, "ownState": {}},
        "cascadeParentIds": [],
        "scope": {"rootPath": ["ROOT_ID"], "excluded": []},
        "chartsInScope": chart_ids,
        "tabsInScope": [],
        "description": "",
    }


def provision(api: Api, database: dict[str, Any], content: dict[str, Any] | None = None) -> dict[str, int]:
    """Create or update the connection, datasets, charts and dashboards; returns name -> id."""
    content = content or load_content()
    ids = {"database": api.upsert("database", {"database_name": DATABASE}, database)}
    datasets: dict[str, int] = {}
    for key, spec in content["datasets"].items():
        schema, table = spec["table"].split(".") if "table" in spec else (None, spec["name"])
        body: dict[str, Any] = {"database": ids["database"], "schema": schema, "table_name": table}
        found = api.find("dataset", table_name=table, schema=schema)
        if found is None:
            found = api.call("POST", "dataset/", body | ({"sql": spec["sql"]} if "sql" in spec else {}))["id"]
        elif "sql" in spec:
            api.call("PUT", f"dataset/{found}?override_columns=true", {"sql": spec["sql"]})
        api.call("PUT", f"dataset/{found}/refresh")  # columns follow the tables' schemas
        datasets[key] = ids[f"dataset:{key}"] = found
    for slug, dash in content["dashboards"].items():
        dash_id = api.upsert(
            "dashboard", {"slug": slug}, {"dashboard_title": dash["title"], "slug": slug, "published": True}
        )
        charts = []
        for key in dash["charts"]:
            chart = content["charts"][key]
            dataset_id = datasets[chart["dataset"]]
            params = chart_params(chart, dataset_id)
            body = {
                "slice_name": chart["title"],
                "viz_type": params["viz_type"],
                "datasource_id": dataset_id,
                "datasource_type": "table",
                "params": json.dumps(params),
                "query_context": json.dumps(query_context(params, dataset_id)),
                "dashboards": [dash_id],
            }
            charts.append((api.upsert("chart", {"slice_name": chart["title"]}, body), chart["title"]))
            ids[f"chart:{key}"] = charts[-1][0]
        metadata: dict[str, Any] = {"native_filter_configuration": [], "cross_filters_enabled": False}
        if "symbol_filter" in dash:
            metadata["native_filter_configuration"] = [
                symbol_filter(datasets[dash["symbol_filter"]], [c for c, _ in charts])
            ]
        layout = dashboard_layout(dash["title"], charts)
        body = {"position_json": json.dumps(layout), "json_metadata": json.dumps(metadata)}
        api.call("PUT", f"dashboard/{dash_id}", body)
        ids[f"dashboard:{slug}"] = dash_id
    return ids
