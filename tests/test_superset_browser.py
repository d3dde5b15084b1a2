"""Superset on real gold tables, provisioned as code, checked in headless Chromium (Debian's /usr/bin/chromium).

Logs in, opens every provisioned dashboard, waits for the charts, asserts each rendered data (no error box, a canvas
or table rows) and saves screenshots to test-artifacts/superset/. Also: the connection is read-only.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.sql_engines import gold_sample, write_tables
from lakehouse.services.process import free_port
from lakehouse.services.superset import VENV, Api, Superset, duckdb_extension_dir, load_content
from lakehouse.settings import PROJECT_ROOT, Settings
from tests.conftest import SAMPLE

pytestmark = [pytest.mark.integration, pytest.mark.spark]
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = PROJECT_ROOT / "test-artifacts" / "superset"


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
        "import duckdb, sys; con = duckdb.connect(sys.argv[1], read_only=True, config={'extension_directory': "
        "sys.argv[2], 'autoinstall_known_extensions': False}); con.execute('DROP VIEW gold.scores')"
    )
    out = subprocess.run(
        [str(VENV / "bin" / "python"), "-c", probe, str(superset.catalog), duckdb_extension_dir()],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode != 0 and "read-only" in out.stderr


def test_dashboards_render_in_chromium(superset: Superset) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    if not CHROMIUM.exists():
        pytest.skip("no /usr/bin/chromium (make chromium)")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    slugs = list(load_content()["dashboards"])
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1600, "height": 2000})
        page.goto(f"{superset.url}/login/")
        page.fill("input#username", "admin")
        page.fill("input#password", superset.admin_password())
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
            page.screenshot(path=str(ARTIFACTS / f"{slug}.png"), full_page=True)
            rendered = page.evaluate(
                """() => [...document.querySelectorAll('[data-test="chart-grid-component"]')].map(c =>
                       !!c.querySelector('canvas, table tbody tr') && !c.querySelector('[role=alert]')
                       && !c.innerText.includes('No results'))"""
            )
            assert rendered == [True] * len(load_content()["dashboards"][slug]["charts"]), (
                f"{slug}: a chart shows no data or an error (see {ARTIFACTS / slug}.png)"
            )
        browser.close()


def test_engine_setting_switches_the_connection(superset: Superset) -> None:
    from lakehouse.services.superset import database_payload

    spark_db = database_payload("spark", dataclasses.replace(superset.settings, sql_port=10999), superset.catalog)
    assert spark_db["sqlalchemy_uri"] == "hive://superset@127.0.0.1:10999/default" and not spark_db["allow_dml"]
    duck = json.loads(database_payload("duckdb", superset.settings, superset.catalog)["extra"])
    assert duck["engine_params"]["connect_args"]["read_only"] is True
    assert isinstance(Api, type)
