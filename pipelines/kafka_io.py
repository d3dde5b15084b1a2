"""Kafka clients configured one way for every producer, and Spark's batch view of the topic."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from kafka import KafkaProducer
from pyspark.sql import DataFrame, SparkSession

from lakehouse.settings import Settings
from pipelines.candles import encode


def make_producer(settings: Settings) -> KafkaProducer:
    # acks=all + retries + idempotence: a candle acknowledged by the broker is stored once.
    return KafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        acks="all",
        retries=10,
        enable_idempotence=True,
        linger_ms=5,
        max_in_flight_requests_per_connection=5,
    )


def publish(producer: KafkaProducer, topic: str, candles: Iterable[Mapping[str, Any]]) -> int:
    """Send candles (key = symbol); returns how many were sent. Callers flush."""
    sent = 0
    for candle in candles:
        key, value = encode(candle)
        producer.send(topic, key=key, value=value)
        sent += 1
    return sent


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
