"""Real candles through the real broker, read by Spark's Kafka source into a Delta table."""

import pytest

from lakehouse.delta_io import read_table
from lakehouse.spark import ensure_tables
from lakehouse.tables import BRONZE_CANDLES
from pipelines.roundtrip import run_roundtrip
from tests.conftest import SAMPLE

pytestmark = [pytest.mark.spark, pytest.mark.integration]


def test_spark_reads_the_topic_into_bronze_once(spark, settings):
    ensure_tables(spark, settings)
    files = [
        SAMPLE / "futures-um" / "FILUSDT-1m-2025-02-03.zip",
        SAMPLE / "spot" / "LUNAUSDT-1m-2022-05-09.zip",
    ]
    first = run_roundtrip(spark, settings, files, say=lambda _: None)
    assert first.published == 2880
    assert first.bronze_rows == 2880
    assert first.symbols == ("FILUSDT", "LUNAUSDT")

    bronze = read_table(spark, settings, BRONZE_CANDLES)
    # Every Kafka offset landed once, with its coordinates and the candle's key.
    assert bronze.select("partition", "offset").distinct().count() == 2880
    assert bronze.filter("symbol IS NULL OR open_time IS NULL OR topic IS NULL").count() == 0
    assert bronze.select("symbol", "open_time").distinct().count() == 2880

    # Running again re-reads the whole topic plus 2880 new messages: only the new offsets are added.
    second = run_roundtrip(spark, settings, files[:1], say=lambda _: None)
    assert second.bronze_rows == 2880 + 1440
