"""Backfills as Dagster's single-run policy runs them: several (symbol, day) partitions in one pass, and two
backfills of other days at the same time (two runs), each MERGE retried when it loses a race."""

from concurrent.futures import ThreadPoolExecutor
from datetime import date

from lakehouse.delta_io import read_table
from lakehouse.spark import ensure_tables
from lakehouse.tables import BRONZE_CANDLES, SILVER_CANDLES
from pipelines.ingestion.backfill import LocalArchives, backfill
from tests.conftest import SAMPLE

SYMBOLS = ("FILUSDT", "NEARUSDT")


def partitions(*days: date) -> list[tuple[str, date]]:
    return [(symbol, day) for symbol in SYMBOLS for day in days]


def test_ranges_in_one_pass_and_concurrent_backfills_of_other_days(spark, settings):
    ensure_tables(spark, settings)
    source = LocalArchives(SAMPLE)
    first = backfill(spark, settings, source, partitions(date(2025, 2, 1), date(2025, 2, 2)))
    assert [(r.symbol, r.day, r.silver_rows, r.gaps) for r in first] == [
        (symbol, day, 1440, 0) for symbol, day in partitions(date(2025, 2, 1), date(2025, 2, 2))
    ]

    # Two runs at once, other days: both commit (bronze's MERGEs race and retry; silver's stay in their days).
    with ThreadPoolExecutor(max_workers=2) as pool:
        runs = [
            pool.submit(backfill, spark, settings, source, partitions(day))
            for day in (date(2025, 2, 3), date(2025, 2, 4))
        ]
        assert all(r.silver_rows == 1440 for run in runs for r in run.result())

    again = backfill(spark, settings, source, partitions(date(2025, 2, 1), date(2025, 2, 2)))
    assert [r.silver_rows for r in again] == [1440] * 4  # re-running changes nothing
    silver = read_table(spark, settings, SILVER_CANDLES)
    assert silver.count() == silver.select("symbol", "open_time").distinct().count() == 4 * 2 * 1440
    assert read_table(spark, settings, BRONZE_CANDLES).count() == 4 * 2 * 1440
