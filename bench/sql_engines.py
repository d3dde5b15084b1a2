"""Compare the engines behind Superset on real candles: the Spark SQL endpoint (hive://) vs DuckDB over Delta.

    .venv/bin/python bench/sql_engines.py PATH... [--days 28]     # e.g. ../shared/data/binance/futures-um/*2025-02.csv

Builds gold tables from the kline files given (the published numbers: 4 symbol-months of real candles) in a
temporary home, starts the SQL endpoint and Superset once per engine, and prints median/p95 chart query time
(through Superset's chart data API, each chart's saved query with its dashboard's default filter values, as the
dashboard asks, uncached), SQL Lab schema browsing and five dashboards opened at once.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd

from lakehouse.settings import Settings
from marketlake.seed import gold_sample, write_tables


def timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def dashboard_requests(api: Any) -> dict[str, dict[str, Any]]:
    """The chart-data request of every chart as its dashboard opens it, by dashboard title then chart title: the
    chart's saved query context, with the default values of the dashboard's native filters, uncached."""
    requests: dict[str, dict[str, Any]] = {}
    for dash in api.call("GET", "dashboard/?q=(page_size:100)")["result"]:
        metadata = json.loads(api.call("GET", f"dashboard/{dash['id']}")["result"]["json_metadata"] or "{}")
        defaults = [
            clause
            for native in metadata.get("native_filter_configuration", [])
            for clause in native["defaultDataMask"].get("extraFormData", {}).get("filters", [])
        ]
        charts = requests[dash["dashboard_title"]] = {}
        for chart in api.call("GET", f"dashboard/{dash['id']}/charts")["result"]:
            context = json.loads(api.call("GET", f"chart/{chart['id']}")["result"]["query_context"])
            for query in context["queries"]:
                query["filters"] = [*query["filters"], *defaults]
            charts[chart["slice_name"]] = context | {"force": True}
    return requests


def measure(settings: Settings, engine: str) -> dict[str, float]:
    from lakehouse.services.superset import Superset

    superset = Superset(dataclasses.replace(settings, superset_engine=engine))
    timings = superset.start()
    api = superset.api()
    requests = dashboard_requests(api)

    def chart_data(context: dict[str, Any]) -> None:
        api.call("POST", "chart/data", context)

    per_chart: dict[str, list[float]] = {}
    for _ in range(5):
        for dash, charts in requests.items():
            for title, context in charts.items():
                per_chart.setdefault(f"{dash}: {title}", []).append(timed(lambda c=context: chart_data(c)))
    samples = sorted(t for ts in per_chart.values() for t in ts)

    def open_dashboard(charts: dict[str, dict[str, Any]]) -> None:
        for context in charts.values():
            chart_data(context)

    with ThreadPoolExecutor(5) as pool:
        five = timed(lambda: list(pool.map(open_dashboard, (list(requests.values()) * 5)[:5])))
    db = api.find("database", database_name="marketlake")
    browse = timed(lambda: [api.call("GET", f"database/{db}/tables/?q=(schema_name:{s})") for s in ("gold", "silver")])
    superset.stop()
    return {
        "provision_s": timings["provision"],
        "chart_median_s": statistics.median(samples),
        "chart_p95_s": samples[int(0.95 * (len(samples) - 1))],
        "five_dashboards_s": five,
        "schema_browse_s": browse,
        **{f"median {k}": statistics.median(v) for k, v in per_chart.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("files", nargs="+", type=Path, help="Binance kline files (CSV or zip) to build gold from.")
    parser.add_argument("--days", type=float, default=None, help="Trim each symbol-month to this many days.")
    args = parser.parse_args()
    from lakehouse.services.process import free_port
    from lakehouse.spark import ensure_tables, get_spark
    from lakehouse.sql_endpoint import SqlServer

    home = tempfile.mkdtemp(prefix="marketlake-bench-")
    settings = Settings.from_env(home=home, sql_port=free_port(), superset_port=free_port())
    spark = get_spark(settings, "bench-sql-engines")
    ensure_tables(spark, settings)
    write_tables(spark, settings, gold_sample(args.files, args.days))
    spark.stop()  # one Spark JVM at a time: the endpoint is the next one
    results = {"duckdb": measure(settings, "duckdb")}
    server = SqlServer(settings)
    server.start()
    try:
        results["spark"] = measure(settings, "spark")
    finally:
        server.stop()
    print(pd.DataFrame(results).round(3).to_string())


if __name__ == "__main__":
    main()
