"""Compare the engines behind Superset on real candles: the Spark SQL endpoint (hive://) vs DuckDB over Delta.

    .venv/bin/python bench/sql_engines.py [--days 28]

Builds gold tables from one month of real candles (4 symbol-months of ../shared/data/binance, never holdout) in a
temporary home, starts the SQL endpoint and Superset once per engine, and prints median/p95 chart query time
(through Superset's chart data API), SQL Lab schema browsing, five dashboards opened at once and freshness
(seconds from a Delta append to the row being visible through Superset).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
from pyspark.sql import SparkSession

from lakehouse.settings import PROJECT_ROOT, Settings
from lakehouse.tables import GOLD_SCORES, GOLD_THRESHOLDS, SILVER_QUARANTINE

DATA = PROJECT_ROOT.parent / "shared" / "data" / "binance"
MONTH = sorted(DATA.rglob("*-1m-*.csv"))


def gold_sample(files: list[Path], days: float | None = None) -> dict[str, pd.DataFrame]:
    """gold.scores / gold.thresholds / silver.quarantine rows computed from real candles by the backtest."""
    from pipelines.detection.backtest import run_backtest
    from pipelines.detection.maths import DetectionConfig
    from pipelines.ingestion.archives import read_frame
    from pipelines.layers.gold import thresholds_rows

    frame = read_frame(files)
    if days:
        frame = frame[frame.open_time < frame.groupby("symbol").open_time.transform("min") + pd.Timedelta(days=days)]
    config = DetectionConfig()
    result = run_backtest(frame, config, train_days=2)
    now = datetime.now(UTC).replace(tzinfo=None)
    # Same version number as the scores carry, so scores join their thresholds.
    version = int(result.scores.thresholds_version.iloc[0])
    thresholds = thresholds_rows(result.thresholds, config, version, "bench", now)
    quarantine = pd.DataFrame(
        {
            "source": "kafka",
            "symbol": ["FILUSDT", "NEARUSDT", None],
            "open_time": [now, now, None],
            "value": ['{"k": {"o": "x"}}', '{"k": {"o": -1}}', "not json"],
            "reason": ["open is not a number", "negative price", "unparseable JSON"],
            "topic": "marketlake.candles.1m",
            "partition": 0,
            "offset": [1, 2, 3],
            "quarantined_at": now,
        }
    )
    return {
        GOLD_SCORES.name: result.scores[GOLD_SCORES.columns],
        GOLD_THRESHOLDS.name: thresholds,
        SILVER_QUARANTINE.name: quarantine[SILVER_QUARANTINE.columns],
    }


def write_tables(spark: SparkSession, settings: Settings, frames: dict[str, pd.DataFrame]) -> None:
    """Append each frame to its registry table's Delta location."""
    from lakehouse.tables import by_name

    for name, frame in frames.items():
        table = by_name(name)
        writer = spark.createDataFrame(frame, table.schema).write.format("delta").mode("append")
        writer.partitionBy(*table.partition_by).save(table.location(settings))


def timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def measure(settings: Settings, engine: str) -> dict[str, float]:
    from lakehouse.services.superset import Superset, provisioning

    superset = Superset(dataclasses.replace(settings, superset_engine=engine))
    timings = superset.start()
    api = superset.api()
    content = provisioning().load_content()
    charts = {c["slice_name"]: c["id"] for c in api.call("GET", "chart/?q=(page_size:100)")["result"]}

    def chart_data(chart_id: int) -> None:
        api.call("GET", f"chart/{chart_id}/data/?force=true")

    per_chart: dict[str, list[float]] = {}
    for _ in range(5):
        for spec in content["charts"].values():
            per_chart.setdefault(spec["title"], []).append(timed(lambda s=spec: chart_data(charts[s["title"]])))
    samples = sorted(t for ts in per_chart.values() for t in ts)
    dashboards = [d["id"] for d in api.call("GET", "dashboard/?q=(page_size:100)")["result"]]

    def open_dashboard(dash_id: int) -> None:
        for chart in api.call("GET", f"dashboard/{dash_id}/charts")["result"]:
            chart_data(chart["id"])

    with ThreadPoolExecutor(5) as pool:
        five = timed(lambda: list(pool.map(open_dashboard, (dashboards * 5)[:5])))
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
    parser.add_argument("--days", type=float, default=None, help="Trim each symbol-month to this many days.")
    args = parser.parse_args()
    from lakehouse.services.process import free_port
    from lakehouse.spark import ensure_tables, get_spark
    from lakehouse.sql_endpoint import SqlServer

    home = tempfile.mkdtemp(prefix="marketlake-bench-")
    settings = Settings.from_env(home=home, sql_port=free_port(), superset_port=free_port())
    spark = get_spark(settings, "bench-sql-engines")
    ensure_tables(spark, settings)
    write_tables(spark, settings, gold_sample(MONTH, args.days))
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
