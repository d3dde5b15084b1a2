"""Kafka records -> bronze rows: the raw value kept as received, with its Kafka coordinates."""

from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from lakehouse.settings import Settings
from lakehouse.tables import BRONZE_CANDLES


def kafka_to_bronze(records: DataFrame) -> DataFrame:
    """`records` has the Kafka source schema (key, value, topic, partition, offset, timestamp, ...)."""
    value = F.col("value").cast("string")
    open_time_ms = F.get_json_object(value, "$.open_time").cast("long")
    return records.select(
        F.lit("kafka").alias("source"),
        F.col("key").cast("string").alias("symbol"),
        F.timestamp_millis(open_time_ms).alias("open_time"),
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
