"""Superset on real gold tables, provisioned as code, checked in headless Chromium (Debian's /usr/bin/chromium).

Logs in, opens every provisioned dashboard, waits for the charts, asserts each rendered data (no error box, a canvas
or table rows, a non-empty query result), that the symbol filter narrows the drill-down charts to one symbol, that
the drill-down marks anomaly minutes on its price line, that the Incidents dashboard lists the 2025-02-03 crash, that
the live dashboards refresh by themselves, and saves screenshots to test-artifacts/superset/. Also: the connection
is read-only, and the admin password follows SUPERSET_ADMIN_PASSWORD at every start.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
from pathlib import Path

import pytest
import requests

from lakehouse.services.superset import ADMIN, VENV, Superset, database_uri, provisioning
from lakehouse.settings import PROJECT_ROOT

pytestmark = pytest.mark.integration  # starts services of its own
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = PROJECT_ROOT / "test-artifacts" / "superset"
load_content = provisioning().load_content


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


@dataclasses.dataclass
class Opened:
    """What the browser saw of each dashboard, by slug: the chart-data answers it received per chart id (every one,
    first to last: an automatic refresh adds one), and each chart's table rows as text, in layout order."""

    answers: dict[str, dict[int, list[dict]]] = dataclasses.field(default_factory=dict)
    rows: dict[str, list[list[str]]] = dataclasses.field(default_factory=dict)

    def first(self, charts: dict[str, int]) -> dict[str, dict]:
        """Chart key -> the first answer for that chart (`charts`: key -> id), on the first dashboard listing it."""
        first = {}
        for slug, dash in reversed(load_content()["dashboards"].items()):
            first |= {
                key: self.answers[slug][charts[key]][0] for key in dash["charts"] if charts[key] in self.answers[slug]
            }
        return first


def open_dashboards(
    superset: Superset,
    slugs: list[str],
    user: str = ADMIN,
    password: str = "",
    linger_s: float = 0,
) -> Opened:
    """Open each dashboard in headless Chromium as `user` (the admin by default), wait for its charts, screenshot
    it, demand that every chart rendered data, then keep it open `linger_s` seconds (long enough for an automatic
    refresh)."""
    sync_api = pytest.importorskip("playwright.sync_api")
    if not CHROMIUM.exists():
        pytest.skip("no /usr/bin/chromium (make chromium)")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    content = load_content()
    seen = Opened()
    current: list[str] = []  # the slug open in the page

    def keep_chart_data(response) -> None:
        if "/api/v1/chart/data" not in response.url or not response.ok:
            return
        request = json.loads(response.request.post_data)
        if "slice_id" in request["form_data"]:  # a chart's, not the filter's own list of values
            answer = {"queries": request["queries"], "form_data": request["form_data"]} | response.json()
            seen.answers[current[-1]].setdefault(request["form_data"]["slice_id"], []).append(answer)

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
            current.append(slug)
            seen.answers[slug] = {}
            page.goto(f"{superset.url}/superset/dashboard/{slug}/")
            page.wait_for_selector('[data-test="chart-grid-component"]', timeout=60_000)
            # Settled = every chart shows a canvas, table rows, an error or an empty state; then demand data.
            page.wait_for_function(
                """() => [...document.querySelectorAll('[data-test="chart-grid-component"]')].every(c =>
                       !c.querySelector('.loading') && (c.querySelector('canvas, table tbody tr, [role=alert]')
                       || c.innerText.includes('No results')))""",
                timeout=120_000,
            )
            page.wait_for_timeout(2000)  # echarts animates series in: scatter markers show after the line
            page.screenshot(path=str(ARTIFACTS / f"{user}-{slug}.png"), full_page=True)
            rendered = page.evaluate(
                """() => [...document.querySelectorAll('[data-test="chart-grid-component"]')].map(c =>
                       !!c.querySelector('canvas, table tbody tr') && !c.querySelector('[role=alert]')
                       && !c.innerText.includes('No results'))"""
            )
            assert rendered == [True] * len(content["dashboards"][slug]["charts"]), (
                f"{slug}: a chart shows no data or an error (see {ARTIFACTS}/{user}-{slug}.png)"
            )
            seen.rows[slug] = page.evaluate(
                """() => [...document.querySelectorAll('[data-test="chart-grid-component"]')].map(c =>
                       [...c.querySelectorAll('table tbody tr')].map(r => r.innerText))"""
            )
            page.wait_for_timeout(linger_s * 1000)
        browser.close()
    return seen


def test_dashboards_render_in_chromium(superset: Superset) -> None:
    content = load_content()
    api = superset.api()
    charts = {key: api.find("chart", slice_name=chart["title"]) for key, chart in content["charts"].items()}
    opened = open_dashboards(superset, list(content["dashboards"]))
    first = opened.first(charts)
    assert set(first) == set(charts), "every chart asked for its data"
    assert all(first[k]["result"][0]["rowcount"] > 0 for k in charts), "a chart's query returned no rows"

    # Anomalies over time: one bar per day with anomalies, not hairlines on a 2022-2025 time axis.
    days = sql(superset, "SELECT COUNT(DISTINCT open_date) AS n FROM gold.anomalies")[0]["n"]
    assert first["anomalies_over_time"]["result"][0]["rowcount"] == days > 1

    # Symbol drill-down: the filter's default (the first symbol) reaches every chart's queries, and their rows are
    # that symbol's only: without the filter they would span every symbol's minutes, hours, incidents.
    drill = opened.answers["marketlake-symbol"]
    symbols = [r["symbol"] for r in sql(superset, "SELECT DISTINCT symbol FROM gold.scores ORDER BY symbol")]
    per = "SELECT COUNT(DISTINCT date_trunc('{grain}', open_time)) AS n FROM ({rows}) r"
    recent = content["datasets"]["recent_scores"]["sql"]
    for grain, rows, key in (
        ("minute", recent, "price_markers"),
        ("hour", "SELECT * FROM gold.scores", "window_volatility"),
    ):
        mine = sql(superset, per.format(grain=grain, rows=rows) + f" WHERE symbol = '{symbols[0]}'")[0]["n"]
        assert len(symbols) > 1 and mine < sql(superset, per.format(grain=grain, rows=rows))[0]["n"]
        answer = drill[charts[key]][0]
        assert {"col": "symbol", "op": "IN", "val": [symbols[0]]} in answer["queries"][0]["filters"], key
        assert answer["result"][0]["rowcount"] == mine, f"{key} is not narrowed to {symbols[0]}"
    incidents = drill[charts["incidents"]][0]["result"][0]["data"]
    assert incidents and {row["symbol"] for row in incidents} == {symbols[0]}

    # Anomaly minutes are markers on the price line: a scatter series (not a second line) whose points are the
    # close of the symbol's anomaly minutes, so each sits on the line.
    price = drill[charts["price_markers"]][0]
    assert price["form_data"]["seriesType"] == "line" and price["form_data"]["seriesTypeB"] == "scatter"
    line = {row["open_time"]: row["close"] for row in price["result"][0]["data"]}
    markers = {row["open_time"]: row["anomaly minute"] for row in price["result"][1]["data"]}
    anomalies = sql(superset, f"SELECT COUNT(*) AS n FROM ({recent}) r WHERE is_anomaly AND symbol = '{symbols[0]}'")
    assert len(markers) == anomalies[0]["n"] > 0
    assert all(line[t] == close for t, close in markers.items()), "a marker is off the price line"


def test_incidents_dashboard_shows_the_crash(superset: Superset) -> None:
    """The 2025-02-03 crash of FILUSDT and NEARUSDT (01:31 UTC) is listed with its context, open incidents come
    first, and the dashboard refreshes by itself (a second round of chart queries while it stays open)."""
    content = load_content()
    api = superset.api()
    slug = "marketlake-incidents"
    refresh = content["dashboards"][slug]["refresh"]
    for live in (slug, "marketlake-latest", "marketlake-symbol"):
        metadata = json.loads(api.call("GET", f"dashboard/{live}")["result"]["json_metadata"])
        assert metadata["refresh_frequency"] == content["dashboards"][live]["refresh"] <= 30, live
    opened = open_dashboards(superset, [slug], linger_s=refresh + 5)
    table = opened.rows[slug][content["dashboards"][slug]["charts"].index("incidents")]
    for symbol, change, z in (("FILUSDT", "13.0%", "15.6"), ("NEARUSDT", "11.2%", "17.6")):
        crash = [r for r in table if r.startswith(symbol) and "2025-02-03 01:31" in r]
        assert len(crash) == 1, f"no {symbol} crash incident in {table[:5]}"
        # Context: closed, confidence, the price change as % and peak |z| to one decimal, a move with the market.
        cells = [cell.strip() for cell in crash[0].split("\t")]
        assert {"closed", "HIGH", f"-{change}", z, "market"} <= set(cells), cells
    # And the market incident they were part of, once, with both symbols.
    market = opened.rows[slug][content["dashboards"][slug]["charts"].index("market_incidents")]
    assert [r for r in market if r.startswith("2025-02-03 01:31") and "FILUSDT,NEARUSDT" in r], market[:5]
    statuses = [row.split("\t")[3].strip() for row in table]
    assert statuses == sorted(statuses, key=lambda s: s != "open") and "open" in statuses
    refreshed = [a for a in opened.answers[slug].values() if len(a) > 1]
    assert len(refreshed) == len(content["dashboards"][slug]["charts"]), "no automatic refresh while open"


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
