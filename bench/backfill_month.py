"""Benchmark: backfill one symbol-month from a local archive folder into bronze/silver (what the Dagster asset runs
per (day, symbol) partition), in a temporary lakehouse.

    .venv/bin/python bench/backfill_month.py FOLDER [SYMBOL] [YYYY-MM]   # e.g. ../shared/data/binance

SYMBOL and month default to NEARUSDT 2023-09 (a monthly CSV in FOLDER or below).
"""

import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

from lakehouse.settings import Settings
from lakehouse.spark import ensure_tables, get_spark
from pipelines.ingestion.backfill import LocalArchives, backfill_day

if len(sys.argv) < 2:
    sys.exit(__doc__)
folder = Path(sys.argv[1])
symbol = sys.argv[2] if len(sys.argv) > 2 else "NEARUSDT"
month = date.fromisoformat((sys.argv[3] if len(sys.argv) > 3 else "2023-09") + "-01")

with tempfile.TemporaryDirectory() as home:
    settings = Settings.from_env(env={}, home=home)
    spark = get_spark(settings, "bench-backfill")
    ensure_tables(spark, settings)
    source = LocalArchives(folder)
    started = time.perf_counter()
    day, rows, gaps = month, 0, 0
    while day.month == month.month:
        result = backfill_day(spark, settings, source, symbol, day)
        rows, gaps = rows + result.silver_rows, gaps + result.gaps
        day += timedelta(days=1)
    seconds = time.perf_counter() - started
    print(
        f"backfill {symbol} {month:%Y-%m} from {folder}: {rows} candles into silver, {gaps} missing minutes, "
        f"{seconds:.1f} s ({seconds / (day - month).days:.2f} s per day partition, {rows / seconds:.0f} candles/s)"
    )
    spark.stop()
