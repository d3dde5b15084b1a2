"""Kafka records -> bronze rows: the raw value kept as received, with its Kafka coordinates.

Every expression here is total: whatever bytes a record holds, the bronze row is built and silver decides (with
a reason) what it is. Kafka values are bytes; invalid UTF-8 sequences become U+FFFD so that every reader of the
table can read the row, and silver quarantines such a value.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from lakehouse.settings import Settings
from lakehouse.tables import BRONZE_CANDLES

MAX_RECORD_BYTES = 64 * 1024  # a candle is ~300 bytes; anything this large is not one
# Epoch milliseconds that become timestamps: beyond this (2200-01-01) Spark's micros overflow for large values
# and pandas' datetime64[ns] (up to 2262) cannot hold them; silver quarantines such times anyway.
MAX_TIMESTAMP_MS = 7_258_118_400_000


def timestamp_or_null(ms: Column) -> Column:
    """Epoch milliseconds -> timestamp, null outside 1970..2200 instead of an overflow error."""
    return F.when(ms.between(0, MAX_TIMESTAMP_MS), F.timestamp_millis(ms))


def as_text(raw: Column) -> Column:
    """Kafka bytes -> a string every reader can read (invalid UTF-8 sequences replaced by U+FFFD)."""
    text = raw.cast("string")
    return F.when(F.is_valid_utf8(text), text).otherwise(F.make_valid_utf8(text))  # a copy only when needed


def kafka_to_bronze(records: DataFrame) -> DataFrame:
    """`records` has the Kafka source schema (key, value, topic, partition, offset, timestamp, ...)."""
    value = as_text(F.col("value"))
    # Only records small enough to be a candle are looked into; try_cast: "yesterday", [1,2] or 1.5e30 -> null.
    open_time_ms = F.when(F.octet_length(value) <= MAX_RECORD_BYTES, F.get_json_object(value, "$.open_time")).try_cast(
        "long"
    )
    return records.select(
        F.lit("kafka").alias("source"),
        as_text(F.col("key")).alias("symbol"),
        timestamp_or_null(open_time_ms).alias("open_time"),
        F.coalesce(value, F.lit("")).alias("value"),
        F.col("topic"),
        F.col("partition"),
        F.col("offset"),
        F.col("timestamp").alias("kafka_timestamp"),
        F.current_timestamp().alias("ingested_at"),
        F.current_date().alias("ingest_date"),
    ).select(*BRONZE_CANDLES.columns)


def read_topic(spark: SparkSession, settings: Settings) -> DataFrame:
    """Everything currently in the topic, as a batch DataFrame with Kafka's source schema."""
    return (
        spark.read.format("kafka")
        .option("kafka.bootstrap.servers", settings.kafka_bootstrap_servers)
        .option("subscribe", settings.kafka_topic)
        .option("startingOffsets", "earliest")
        .option("endingOffsets", "latest")
        .load()
    )
