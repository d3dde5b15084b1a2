"""Superset on real gold tables, provisioned as code, checked in headless Chromium (Debian's /usr/bin/chromium).

Logs in, opens every provisioned dashboard, waits for the charts, asserts each rendered data (no error box, a canvas
or table rows, a non-empty query result), that the symbol filter narrows the drill-down charts to one symbol, and
saves screenshots to test-artifacts/superset/. Also: the connection is read-only, and the admin password follows
SUPERSET_ADMIN_PASSWORD at every start.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from lakehouse.services.process import free_port
from lakehouse.services.superset import ADMIN, VENV, Superset, database_uri, provisioning
from lakehouse.settings import PROJECT_ROOT, Settings
from marketlake.seed import gold_sample, write_tables
from tests.conftest import SAMPLE

pytestmark = pytest.mark.integration  # starts services of its own
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = PROJECT_ROOT / "test-artifacts" / "superset"
load_content = provisioning().load_content


@pytest.fixture(scope="module")
def superset(spark, base_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Superset]:
    if not (VENV / "bin" / "superset").exists():
        pytest.skip("no .venv-superset (make superset-venv)")
    from lakehouse.spark import ensure_tables

    home = tmp_path_factory.mktemp("superset-home")
    settings = Settings.from_env(
        env={}, home=str(home), superset_port=free_port(), spark_master=base_settings.spark_master
    )
    ensure_tables(spark, settings)
    write_tables(spark, settings, gold_sample(sorted(SAMPLE.rglob("*.zip"))))
    service = Superset(settings)
    service.start()
    yield service
    service.stop()


def test_provisioning_is_idempotent(superset: Superset) -> None:
    api = superset.api()
    before = {r: len(api.call("GET", f"{r}/?q=(page_size:100)")["result"]) for r in ("dataset", "chart", "dashboard")}
    superset.start()  # already running: provisions again
    after = {r: len(api.call("GET", f"{r}/?q=(page_size:100)")["result"]) for r in ("dataset", "chart", "dashboard")}
    content = load_content()
    assert (
        before
        == after
        == {
            "dataset": len(content["datasets"]),
            "chart": len(content["charts"]),
            "dashboard": len(content["dashboards"]),
        }
    )


def test_connection_is_read_only(superset: Superset) -> None:
    api = superset.api()
    db = api.find("database", database_name="marketlake")
    ok = api.call("POST", "sqllab/execute/", {"database_id": db, "sql": "SELECT COUNT(*) AS n FROM gold.scores"})
    assert ok["data"][0]["n"] > 0
    for statement in ("DROP VIEW gold.scores", "INSERT INTO gold.thresholds SELECT * FROM gold.thresholds"):
        with pytest.raises(Exception, match=r"DML|not allowed|read-only|403|400|422|500"):
            api.call("POST", "sqllab/execute/", {"database_id": db, "sql": statement})
    # And below Superset: the engine itself refuses writes on the catalog it opens read-only.
    probe = (
        "import duckdb, duckdb_ext, pathlib, sys; extensions = pathlib.Path(duckdb_ext.__file__).parent / 'extensions';"
        " con = duckdb.connect(sys.argv[1], read_only=True, config={'extension_directory': str(extensions),"
        " 'autoinstall_known_extensions': False}); con.execute('DROP VIEW gold.scores')"
    )
    out = subprocess.run(
        [str(VENV / "bin" / "python"), "-c", probe, str(superset.catalog)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode != 0 and "read-only" in out.stderr


def sql(superset: Superset, query: str) -> list[dict]:
    """Rows of a query run through SQL Lab on the dashboards' connection."""
    api = superset.api()
    db = api.find("database", database_name="marketlake")
    return api.call("POST", "sqllab/execute/", {"database_id": db, "sql": query})["data"]


def open_dashboards(superset: Superset, slugs: list[str], user: str = ADMIN, password: str = "") -> dict[int, dict]:
    """Open each dashboard in headless Chromium as `user` (the admin by default), wait for its charts, screenshot
    it, demand that every chart rendered data; returns the chart-data answer the browser received, by chart id."""
    sync_api = pytest.importorskip("playwright.sync_api")
    if not CHROMIUM.exists():
        pytest.skip("no /usr/bin/chromium (make chromium)")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    answers: dict[int, dict] = {}

    def keep_chart_data(response) -> None:
        if "/api/v1/chart/data" not in response.url or not response.ok:
            return
        request = json.loads(response.request.post_data)
        if "slice_id" in request["form_data"]:  # a chart's, not the filter's own list of values
            answers[request["form_data"]["slice_id"]] = {"query": request["queries"][0]} | response.json()

    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1600, "height": 2000})
        page.on("response", keep_chart_data)
        page.goto(f"{superset.url}/login/")
        page.fill("input#username", user)
        page.fill("input#password", password or superset.admin_password())
        page.keyboard.press("Enter")
        page.wait_for_url("**/superset/welcome/**", timeout=60_000)
        for slug in slugs:
            page.goto(f"{superset.url}/superset/dashboard/{slug}/")
            page.wait_for_selector('[data-test="chart-grid-component"]', timeout=60_000)
            # Settled = every chart shows a canvas, table rows, an error or an empty state; then demand data.
            page.wait_for_function(
                """() => [...document.querySelectorAll('[data-test="chart-grid-component"]')].every(c =>
                       !c.querySelector('.loading') && (c.querySelector('canvas, table tbody tr, [role=alert]')
                       || c.innerText.includes('No results')))""",
                timeout=120_000,
            )
            page.screenshot(path=str(ARTIFACTS / f"{user}-{slug}.png"), full_page=True)
            rendered = page.evaluate(
                """() => [...document.querySelectorAll('[data-test="chart-grid-component"]')].map(c =>
                       !!c.querySelector('canvas, table tbody tr') && !c.querySelector('[role=alert]')
                       && !c.innerText.includes('No results'))"""
            )
            assert rendered == [True] * len(load_content()["dashboards"][slug]["charts"]), (
                f"{slug}: a chart shows no data or an error (see {ARTIFACTS}/{user}-{slug}.png)"
            )
        browser.close()
    return answers


def test_dashboards_render_in_chromium(superset: Superset) -> None:
    content = load_content()
    api = superset.api()
    charts = {key: api.find("chart", slice_name=chart["title"]) for key, chart in content["charts"].items()}
    answers = open_dashboards(superset, list(content["dashboards"]))
    assert set(answers) == set(charts.values()), "every chart asked for its data"
    assert all(answers[c]["result"][0]["rowcount"] > 0 for c in charts.values()), "a chart's query returned no rows"

    # Anomalies over time: one bar per day with anomalies, not hairlines on a 2022-2025 time axis.
    days = sql(superset, "SELECT COUNT(DISTINCT open_date) AS n FROM gold.anomalies")[0]["n"]
    assert answers[charts["anomalies_over_time"]]["result"][0]["rowcount"] == days > 1

    # Symbol drill-down: the filter's default (the first symbol) reaches both charts' queries, and their rows
    # are that symbol's hours only: without the filter they would span every symbol's hours.
    symbols = [r["symbol"] for r in sql(superset, "SELECT DISTINCT symbol FROM gold.scores ORDER BY symbol")]
    hours = sql(
        superset,
        f"SELECT COUNT(DISTINCT date_trunc('hour', open_time)) AS n FROM gold.scores WHERE symbol = '{symbols[0]}'",
    )[0]["n"]
    all_hours = sql(superset, "SELECT COUNT(DISTINCT date_trunc('hour', open_time)) AS n FROM gold.scores")[0]["n"]
    assert len(symbols) > 1 and hours < all_hours
    for key in ("price_markers", "window_volatility"):
        answer = answers[charts[key]]
        assert {"col": "symbol", "op": "IN", "val": [symbols[0]]} in answer["query"]["filters"], key
        assert answer["result"][0]["rowcount"] == hours, f"{key} is not narrowed to {symbols[0]}"


def test_admin_password_follows_the_environment(superset: Superset, monkeypatch: pytest.MonkeyPatch) -> None:
    api = provisioning().Api
    old = superset.admin_password()
    with monkeypatch.context() as env:
        env.setenv("SUPERSET_ADMIN_PASSWORD", "changed-after-first-start-" + old[:8])
        superset.start()  # already running: initialises and provisions again
        api.login(superset.url, ADMIN, superset.admin_password())
        with pytest.raises(requests.HTTPError):
            api.login(superset.url, ADMIN, old)
    superset.initialise()  # back to the stored password for the other tests
    api.login(superset.url, ADMIN, old)


def test_engine_setting_switches_the_connection(superset: Superset) -> None:
    spark = database_uri("spark", dataclasses.replace(superset.settings, sql_port=10999), superset.catalog)
    assert spark == "hive://superset@127.0.0.1:10999/default"
    assert not provisioning().database_payload(spark)["allow_dml"]
    api = superset.api()
    db = api.call("GET", f"database/{api.find('database', database_name='marketlake')}/connection")["result"]
    assert db["sqlalchemy_uri"] == database_uri("duckdb", superset.settings, superset.catalog) and not db["allow_dml"]
    assert json.loads(db["extra"])["engine_params"]["connect_args"]["read_only"] is True
