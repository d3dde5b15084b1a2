"""Kafka clients configured one way for every producer, and Spark's batch view of the topic."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from kafka import KafkaProducer

from lakehouse.settings import Settings
from pipelines.ingestion.candles import encode


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


class DeliveryError(RuntimeError):
    pass


def publish(producer: KafkaProducer, topic: str, candles: Iterable[Mapping[str, Any]]) -> int:
    """Send candles (key = symbol) and flush; returns how many were sent. Raises DeliveryError when the broker
    did not acknowledge some of them (after the producer's own retries), so no loss goes unnoticed."""
    failures: list[Exception] = []
    sent = 0
    for candle in candles:
        key, value = encode(candle)
        producer.send(topic, key=key, value=value).add_errback(failures.append)
        sent += 1
    producer.flush()
    if failures:
        raise DeliveryError(f"{len(failures)} of {sent} candles not acknowledged by Kafka: {failures[0]!r}")
    return sent
