"""Provision marketlake's Superset content as code through the REST API: connection, datasets, charts, dashboards.

Runs in Superset's own Python at every start, locally (lakehouse/services/superset.py, .venv-superset) and in
docker-compose (the one-shot `superset-provision`), with the same environment:
    SUPERSET_URL (default http://127.0.0.1:8088), SUPERSET_ADMIN_PASSWORD,
    MARKETLAKE_SUPERSET_DATABASE_URI (duckdb:///<catalog> or hive://...)
    python superset/provision.py        # prints {"database": id, "chart:<key>": id, ...}
Objects are matched by name, so every run updates rather than duplicates. Needs only requests and PyYAML (and
duckdb-ext for a duckdb:// connection), which Superset's image and virtualenv both have.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
import yaml

CONTENT = Path(__file__).with_name("dashboards.yaml")
ADMIN = "admin"
DATABASE = "marketlake"
# Roles that read the marketlake database; what else they may do is initialise.py's (role_rules).
DATA_ROLES = ("analyst", "viewer")
SYMBOL_FILTER = "NATIVE_FILTER-symbol"


class ProvisionError(RuntimeError):
    pass


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
            raise ProvisionError(f"{method} {path}: {response.status_code} {response.text[:2000]}")
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


def database_payload(uri: str) -> dict[str, Any]:
    """Superset's database connection for a SQLAlchemy URI; never allowed to run DML."""
    connect_args: dict[str, Any] = {}
    if uri.startswith("duckdb:"):
        import duckdb_ext  # only in Superset's Python, where the connection is made

        connect_args = {
            # Read-only: DROP/INSERT/CREATE fail in the engine, whatever Superset lets through.
            "read_only": True,
            # The Delta extension ships in the duckdb-ext wheel: never let DuckDB try to download it.
            "config": {
                "extension_directory": str(Path(duckdb_ext.__file__).parent / "extensions"),
                "autoinstall_known_extensions": False,
            },
            "preload_extensions": ["delta"],
        }
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


def permission_id(api: Api, permission: str, resource: str) -> int:
    """Id of a (permission, resource) pair in Superset's security model (FAB's security API)."""
    page = 0
    while True:
        rows = api.call("GET", f"security/permissions-resources/?q=(page:{page},page_size:100)")["result"]
        for row in rows:
            if row["permission"]["name"] == permission and row["view_menu"]["name"] == resource:
                return row["id"]
        if len(rows) < 100:
            raise ProvisionError(f"no permission {permission} on {resource}")
        page += 1


def grant_database(api: Api, database_id: int, roles: tuple[str, ...] = DATA_ROLES) -> None:
    """Let `roles` query this database, and only this one (its datasets, and SQL Lab where the role has it)."""
    access = permission_id(api, "database_access", f"[{DATABASE}].(id:{database_id})")
    for name in roles:
        role = api.find("security/roles", name=name)
        if role is None:
            raise ProvisionError(f"no role {name}: initialise.py creates it")
        held = [p["id"] for p in api.call("GET", f"security/roles/{role}/permissions/")["result"]]
        if access not in held:
            api.call("POST", f"security/roles/{role}/permissions", {"permission_view_menu_ids": [*held, access]})


def load_content(path: Path = CONTENT) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


# A mixed chart's second query reads the same form data keys with this suffix (metrics_b, adhoc_filters_b, ...).
SECOND_QUERY = "_b"


def query_suffixes(params: dict[str, Any]) -> list[str]:
    """The form-data suffix of each query the chart runs: one, or two for a mixed chart."""
    return ["", SECOND_QUERY] if params["viz_type"] == "mixed_timeseries" else [""]


def chart_params(chart: dict[str, Any], dataset_id: int) -> dict[str, Any]:
    params = {"datasource": f"{dataset_id}__table", "time_range": "No filter", **chart["params"]}
    if chart.get("time"):
        no_filter = {"expressionType": "SIMPLE", "clause": "WHERE", "subject": params["x_axis"]}
        for suffix in query_suffixes(params):
            params[f"adhoc_filters{suffix}"] = [
                *params.get(f"adhoc_filters{suffix}", []),
                no_filter | {"operator": "TEMPORAL_RANGE", "comparator": "No filter"},
            ]
    return params


def query_object(params: dict[str, Any], suffix: str = "") -> dict[str, Any]:
    """One query of a chart, from its form data (`suffix` selects a mixed chart's second query)."""
    columns: list[Any] = list(params.get(f"groupby{suffix}", [])) + list(params.get("all_columns", []))
    if "x_axis" in params:
        axis = params["x_axis"]
        if isinstance(axis, str):  # a column, bucketed by the chart's time grain
            axis = {"sqlExpression": axis, "label": axis, "expressionType": "SQL",
                    "timeGrain": params.get("time_grain_sqla")}  # fmt: skip
        columns.insert(0, axis | {"columnType": "BASE_AXIS"})
    metrics = params.get(f"metrics{suffix}") or ([params["metric"]] if "metric" in params else [])
    filters = [
        {"col": f["subject"], "op": f["operator"], "val": f.get("comparator")}
        for f in params.get(f"adhoc_filters{suffix}", [])
        if f["operator"] != "TEMPORAL_RANGE"
    ]
    row_limit = params.get(f"row_limit{suffix}", params.get("row_limit", 1000))
    query = {"columns": columns, "metrics": metrics, "filters": filters, "row_limit": row_limit}
    if params.get("order_by_cols"):
        query["orderby"] = [json.loads(c) for c in params["order_by_cols"]]
    return query


def query_context(params: dict[str, Any], dataset_id: int) -> dict[str, Any]:
    """The queries the chart runs, saved with it so /api/v1/chart/<id>/data answers (API users, benchmarks)."""
    return {
        "datasource": {"id": dataset_id, "type": "table"},
        "form_data": params,
        "queries": [query_object(params, suffix) for suffix in query_suffixes(params)],
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


def first_symbol(api: Api, dataset_id: int) -> str | None:
    """The alphabetically first symbol of a dataset (None while it has no rows)."""
    values = api.call("GET", f"datasource/table/{dataset_id}/column/symbol/values/")["result"]
    return min((v for v in values if v), default=None)


def symbol_filter(dataset_id: int, chart_ids: list[int], default: str | None) -> dict[str, Any]:
    """A required single-select symbol filter over `chart_ids`, set to `default`.

    The default is stored as a value (with the filter clause charts receive), not as Superset's
    `defaultToFirstItem`: with that option 6.1 shows the first symbol in the filter bar but leaves it
    unapplied, so the charts load every symbol.
    """
    mask: dict[str, Any] = {"extraFormData": {}, "filterState": {}, "ownState": {}}
    if default is not None:
        mask["extraFormData"] = {"filters": [{"col": "symbol", "op": "IN", "val": [default]}]}
        mask["filterState"] = {"value": [default], "label": default}
    return {
        "id": SYMBOL_FILTER,
        "name": "symbol",
        "type": "NATIVE_FILTER",
        "filterType": "filter_select",
        "targets": [{"datasetId": dataset_id, "column": {"name": "symbol"}}],
        "controlValues": {"enableEmptyFilter": True, "defaultToFirstItem": False, "multiSelect": False},
        "defaultDataMask": mask,
        "cascadeParentIds": [],
        "scope": {"rootPath": ["ROOT_ID"], "excluded": []},
        "chartsInScope": chart_ids,
        "tabsInScope": [],
        "description": "",
    }


def provision_dataset(api: Api, database_id: int, spec: dict[str, Any]) -> int:
    schema, table = spec["table"].split(".") if "table" in spec else (None, spec["name"])
    found = api.find("dataset", table_name=table, schema=schema)
    if found is None:
        body = {"database": database_id, "schema": schema, "table_name": table}
        found = api.call("POST", "dataset/", body | ({"sql": spec["sql"]} if "sql" in spec else {}))["id"]
    elif "sql" in spec:
        api.call("PUT", f"dataset/{found}?override_columns=true", {"sql": spec["sql"]})
    api.call("PUT", f"dataset/{found}/refresh")  # columns follow the tables' schemas
    return found


def provision_chart(api: Api, chart: dict[str, Any], dataset_id: int, dashboard_ids: list[int]) -> int:
    params = chart_params(chart, dataset_id)
    body = {
        "slice_name": chart["title"],
        "viz_type": params["viz_type"],
        "datasource_id": dataset_id,
        "datasource_type": "table",
        "params": json.dumps(params),
        "query_context": json.dumps(query_context(params, dataset_id)),
        "dashboards": dashboard_ids,
    }
    return api.upsert("chart", {"slice_name": chart["title"]}, body)


def detach_others(api: Api, dashboard_id: int, chart_ids: list[int]) -> None:
    """Charts on the dashboard that the content no longer lists (renamed or dropped since an earlier provisioning)
    leave it; they stay in Superset, on any other dashboard they were on."""
    for chart in api.call("GET", f"dashboard/{dashboard_id}/charts")["result"]:
        if chart["id"] not in chart_ids:
            on = api.call("GET", f"chart/{chart['id']}")["result"]["dashboards"]
            api.call("PUT", f"chart/{chart['id']}", {"dashboards": [d["id"] for d in on if d["id"] != dashboard_id]})


def provision(api: Api, database: dict[str, Any], content: dict[str, Any] | None = None) -> dict[str, int]:
    """Create or update the connection (and the roles' access to it), datasets, charts and dashboards;
    returns name -> id."""
    content = content or load_content()
    ids = {"database": api.upsert("database", {"database_name": DATABASE}, database)}
    grant_database(api, ids["database"])
    datasets = {key: provision_dataset(api, ids["database"], spec) for key, spec in content["datasets"].items()}
    ids |= {f"dataset:{key}": found for key, found in datasets.items()}
    for slug, dash in content["dashboards"].items():
        body = {"dashboard_title": dash["title"], "slug": slug, "published": True}
        ids[f"dashboard:{slug}"] = api.upsert("dashboard", {"slug": slug}, body)
    for key, chart in content["charts"].items():
        on = [ids[f"dashboard:{slug}"] for slug, dash in content["dashboards"].items() if key in dash["charts"]]
        ids[f"chart:{key}"] = provision_chart(api, chart, datasets[chart["dataset"]], on)
    for slug, dash in content["dashboards"].items():
        dash_id = ids[f"dashboard:{slug}"]
        charts = [(ids[f"chart:{key}"], content["charts"][key]["title"]) for key in dash["charts"]]
        chart_ids = [c for c, _ in charts]
        metadata: dict[str, Any] = {
            "native_filter_configuration": [],
            "cross_filters_enabled": False,
            "refresh_frequency": dash["refresh"],
        }
        if "symbol_filter" in dash:
            dataset_id = datasets[dash["symbol_filter"]]
            metadata["native_filter_configuration"] = [
                symbol_filter(dataset_id, chart_ids, first_symbol(api, dataset_id))
            ]
        detach_others(api, dash_id, chart_ids)
        layout = json.dumps(dashboard_layout(dash["title"], charts))
        api.call("PUT", f"dashboard/{dash_id}", {"position_json": layout, "json_metadata": json.dumps(metadata)})
    return ids


def main() -> None:
    url = os.environ.get("SUPERSET_URL", "http://127.0.0.1:8088")
    api = Api.login(url, ADMIN, os.environ["SUPERSET_ADMIN_PASSWORD"])
    print(json.dumps(provision(api, database_payload(os.environ["MARKETLAKE_SUPERSET_DATABASE_URI"]))))


if __name__ == "__main__":
    main()
