"""Attacks on Superset's query surface as the roles analysts get: nothing outside the lake is readable, DuckDB's
settings cannot be changed back, databases cannot be added, a viewer has no SQL Lab; the lake still answers.

Runs against the session's Superset (tests/conftest.py; real gold tables in a temporary home), shared with
tests/test_superset_browser.py.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import pytest

from lakehouse.services.superset import Superset, provisioning
from tests.test_superset_browser import open_dashboards

pytestmark = pytest.mark.integration  # starts services of its own
provision = provisioning()
REFUSED = r"file system operations are disabled|disallowed|not allowed|locked|Permission|does not exist|40[03]|422"
DISABLED = "file system operations are disabled"


def user(superset: Superset, role: str) -> tuple[str, str]:
    """Name and password of a user holding only `role` (created by the admin through FAB's security API)."""
    admin = superset.api()
    name, password = f"test-{role}", f"pw-{role}-" + superset.admin_password()[:12]
    if admin.find("security/users", username=name) is None:
        body = {"first_name": role, "last_name": "user", "username": name, "email": f"{name}@localhost",
                "active": True, "password": password, "roles": [admin.find("security/roles", name=role)]}  # fmt: skip
        admin.call("POST", "security/users/", body)
    return name, password


def user_api(superset: Superset, role: str):
    return provision.Api.login(superset.url, *user(superset, role))


def run(api, sql: str) -> list[dict]:
    db = api.find("database", database_name=provision.DATABASE)
    return api.call("POST", "sqllab/execute/", {"database_id": db, "sql": sql, "runAsync": False})["data"]


def refusal(api, sql: str) -> str:
    with pytest.raises(provision.ProvisionError) as error:
        run(api, sql)
    return str(error.value)


def test_analyst_reads_the_lake_and_nothing_else(superset: Superset) -> None:
    analyst = user_api(superset, "analyst")
    assert run(analyst, "SELECT COUNT(*) AS n FROM gold.scores")[0]["n"] > 0
    secret = superset.home / "secret_key"
    planted = superset.home / "planted.csv"  # a name DuckDB reads as a file by itself (its extension)
    planted.write_text("secret\nplanted\n")
    attacks = [
        "SELECT content FROM read_text('/etc/hostname')",
        "SELECT * FROM read_csv('/etc/passwd', sep=':')",
        "SELECT * FROM glob('/*')",
        f"SELECT content FROM read_text('{secret}')",
        f"SELECT content FROM read_text('{superset.settings.lakehouse_root}/gold/scores/../../../superset/secret_key')",
        # No function name for Superset's list to catch: only the engine's confinement stops these.
        "SELECT * FROM '/etc/passwd'",
        f"SELECT * FROM '{secret}'",
        f"SELECT * FROM '{superset.home / 'admin_password'}'",
        f"SELECT * FROM '{planted}'",
        f"ATTACH '{superset.home / 'superset.db'}' AS meta",
        "COPY (SELECT 1) TO '/tmp/marketlake-attack.csv'",
        "INSTALL sqlite",
        "LOAD sqlite",
        # The confinement cannot be undone by a query.
        "SET enable_external_access = true",
        "RESET enable_external_access",
        "SET allowed_directories = ['/']",
        "SET lock_configuration = false",
        # A log file outside the allowed folders would abort DuckDB (the whole Superset process).
        "CALL enable_logging(storage = 'file', storage_path = '/tmp/marketlake-attack')",
        "SELECT '--';\nCALL \"ENABLE_LOGGING\"/**/(storage = 'file', storage_path = '/tmp/marketlake-attack')",
        "SELECT * FROM query('CALL enable_' || 'logging(storage = ''file'', storage_path = ''/tmp/x'')')",
    ]
    answers = {sql: refusal(analyst, sql) for sql in attacks}
    leaked = {sql: answer for sql, answer in answers.items() if superset.secret_key() in answer}
    assert not leaked
    unexplained = {sql: answer[:300] for sql, answer in answers.items() if not re.search(REFUSED, answer)}
    assert not unexplained
    assert DISABLED in answers[f"SELECT * FROM '{planted}'"]
    assert not Path("/tmp/marketlake-attack.csv").exists()
    # Still confined and still answering after every attempt.
    assert run(analyst, "SELECT COUNT(*) AS n FROM gold.anomalies")[0]["n"] > 0
    assert run(analyst, "SELECT current_setting('enable_external_access') AS on")[0]["on"] is False


def test_every_duckdb_connection_is_confined(superset: Superset) -> None:
    """Even a DuckDB connection an admin adds (not the catalog) reads no file: it has no lake folders at all."""
    planted = superset.home / "planted.csv"
    planted.write_text("secret\nplanted\n")
    admin = superset.api()
    body = {"database_name": "scratch", "sqlalchemy_uri": "duckdb:///:memory:", "expose_in_sqllab": True}
    scratch = admin.upsert("database", {"database_name": "scratch"}, body)
    try:
        with pytest.raises(provision.ProvisionError, match=DISABLED):
            admin.call("POST", "sqllab/execute/", {"database_id": scratch, "sql": f"SELECT * FROM '{planted}'"})
    finally:
        admin.call("DELETE", f"database/{scratch}")


def test_unsafe_connections_are_refused(superset: Superset) -> None:
    admin = superset.api()
    meta = {"database_name": "meta", "sqlalchemy_uri": f"sqlite:///{superset.home / 'superset.db'}"}
    with pytest.raises(provision.ProvisionError, match="cannot be used as a data source"):
        admin.call("POST", "database/", meta)
    analyst = user_api(superset, "analyst")
    lake = {"database_name": "mine", "sqlalchemy_uri": f"duckdb:///{superset.catalog}"}
    for method, path in (("POST", "database/"), ("POST", "database/test_connection/")):
        with pytest.raises(provision.ProvisionError, match="403"):
            analyst.call(method, path, lake)
    db = analyst.find("database", database_name=provision.DATABASE)
    with pytest.raises(provision.ProvisionError, match="403"):
        analyst.call("PUT", f"database/{db}", {"allow_dml": True})
    assert [d["database_name"] for d in analyst.call("GET", "database/")["result"]] == [provision.DATABASE]


def test_viewer_sees_dashboards_but_no_sql_lab(superset: Superset) -> None:
    viewer = user_api(superset, "viewer")
    dashboards = viewer.call("GET", "dashboard/?q=(page_size:100)")["result"]
    assert len(dashboards) == len(provision.load_content()["dashboards"])
    chart = viewer.find("chart", slice_name=next(iter(provision.load_content()["charts"].values()))["title"])
    assert viewer.call("GET", f"chart/{chart}/data/")["result"][0]["rowcount"] > 0
    for method, path in (("GET", "sqllab/"), ("POST", "sqllab/execute/")):
        with pytest.raises(provision.ProvisionError, match=r"40[13]"):
            viewer.call(method, path, {"database_id": 1, "sql": "SELECT 1"} if method == "POST" else None)
    with pytest.raises(provision.ProvisionError, match="403"):
        viewer.call("POST", "chart/", {"slice_name": "mine", "viz_type": "table", "datasource_id": 1,
                                       "datasource_type": "table"})  # fmt: skip


def test_viewer_opens_every_dashboard_in_chromium(superset: Superset) -> None:
    content = provision.load_content()
    api = superset.api()
    charts = {key: api.find("chart", slice_name=chart["title"]) for key, chart in content["charts"].items()}
    slugs = list(content["dashboards"])
    answers = open_dashboards(superset, slugs, *user(superset, "viewer")).first(charts)
    assert set(answers) == set(charts)
    assert all(answer["result"][0]["rowcount"] > 0 for answer in answers.values())


def test_roles_and_secrets_at_every_start(superset: Superset) -> None:
    superset.start()  # already running: initialises and provisions again
    admin = superset.api()
    roles = [r["name"] for r in admin.call("GET", "security/roles/?q=(page_size:100)")["result"]]
    assert roles.count("analyst") == roles.count("viewer") == 1
    assert run(user_api(superset, "analyst"), "SELECT 1 AS one") == [{"one": 1}]
    for secret in ("secret_key", "admin_password"):
        assert stat.S_IMODE(os.stat(superset.home / secret).st_mode) == 0o600, secret
    assert stat.S_IMODE(os.stat(superset.home).st_mode) == 0o700
