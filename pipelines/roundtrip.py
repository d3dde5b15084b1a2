"""The smoke run of the platform's plumbing: real candles -> Kafka -> Spark -> Delta bronze, read back."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pyspark.sql import SparkSession

from lakehouse.delta_io import merge_into, read_table
from lakehouse.settings import Settings
from lakehouse.tables import BRONZE_CANDLES
from pipelines.archives import ArchiveFile
from pipelines.bronze import kafka_to_bronze, read_topic
from pipelines.candles import sort_for_replay
from pipelines.kafka_io import make_producer, publish


@dataclass(frozen=True)
class RoundTrip:
    published: int
    bronze_rows: int
    symbols: tuple[str, ...]


def run_roundtrip(
    spark: SparkSession, settings: Settings, archives: list[Path], say: Callable[[str], None] = print
) -> RoundTrip:
    candles = sort_for_replay(c for path in archives for c in ArchiveFile.parse(path).candles(source="replay"))
    producer = make_producer(settings)
    try:
        published = publish(producer, settings.kafka_topic, candles)
        producer.flush(timeout=30)
    finally:
        producer.close()
    say(f"published {published} real candles to Kafka topic {settings.kafka_topic}")

    merge_into(spark, settings, BRONZE_CANDLES, kafka_to_bronze(read_topic(spark, settings)))
    bronze = read_table(spark, settings, BRONZE_CANDLES)
    rows = bronze.count()
    symbols = tuple(sorted(r.symbol for r in bronze.select("symbol").distinct().collect()))
    say(f"bronze.candles at {BRONZE_CANDLES.location(settings)}: {rows} rows, symbols {', '.join(symbols)}")
    return RoundTrip(published, rows, symbols)
