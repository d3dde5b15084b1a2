"""The Kafka producer every candle producer (replay, live, backfill) publishes through: librdkafka via
confluent-kafka, configured one way. Consumers and the admin side stay on kafka-python."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from lakehouse.settings import Settings
from pipelines.ingestion.candles import encode

log = logging.getLogger(__name__)

# Delivery reports are served every this many candles, so they never pile up over a long replay.
_POLL_EVERY = 1000


class CandleProducer(Producer):
    """A confluent-kafka Producer whose close takes a timeout, like kafka-python's: callers bound the wait."""

    def close(self, timeout: float | None = None) -> None:  # type: ignore[override]
        left = self.flush(-1 if timeout is None else timeout)
        if left:  # not acknowledged in time: dropped here, so close() cannot block on them
            log.error("kafka producer closed with %d message(s) not acknowledged", left)
            self.purge()
            self.flush(0)
        super().close()


def make_producer(settings: Settings) -> CandleProducer:
    return CandleProducer(
        {
            "bootstrap.servers": settings.kafka_bootstrap_servers,
            # acks=all + idempotence: a candle acknowledged by the broker is stored once, and retries keep the
            # order within a partition (key = symbol, so within a symbol).
            "acks": "all",
            "enable.idempotence": True,
            # Java's partitioner (murmur2 of the key), as kafka-python used: a symbol stays on its partition.
            "partitioner": "murmur2_random",
            "linger.ms": settings.kafka_linger_ms,
            "compression.type": settings.kafka_compression,
            # The largest record sent, as kafka-python's max_request_size: a bad record of 1 MB still reaches the
            # stream, which quarantines it (the broker takes up to 2 MiB); librdkafka's default is 1,000,000 bytes.
            "message.max.bytes": 1_048_576,
            # A candle not acknowledged within this time fails (DeliveryError) instead of waiting for ever.
            "delivery.timeout.ms": settings.kafka_delivery_timeout_ms,
            "logger": log,
        }
    )


class DeliveryError(RuntimeError):
    pass


def publish(producer: Producer, topic: str, candles: Iterable[Mapping[str, Any]]) -> int:
    """Send candles (key = symbol) and flush; returns how many were sent. Raises DeliveryError when the broker
    did not acknowledge some of them (after the producer's own retries), or the producer refused one (e.g. too
    large), so no loss goes unnoticed."""
    failures: list[KafkaError] = []

    def delivered(error: KafkaError | None, _message: Message) -> None:
        if error is not None:
            failures.append(error)

    sent = 0
    refused: KafkaException | None = None
    for candle in candles:
        key, value = encode(candle)
        try:
            _produce(producer, topic, key, value, delivered)
        except KafkaException as exc:
            refused = exc
            break
        sent += 1
        if sent % _POLL_EVERY == 0:
            producer.poll(0)
    producer.flush()  # until every candle is acknowledged or failed (delivery.timeout.ms)
    if refused is not None:
        raise DeliveryError(f"Kafka producer refused candle {sent + 1}: {refused.args[0]}")
    if failures:
        raise DeliveryError(f"{len(failures)} of {sent} candles not acknowledged by Kafka: {failures[0]}")
    return sent


def _produce(
    producer: Producer, topic: str, key: bytes, value: bytes, delivered: Callable[[KafkaError | None, Message], None]
) -> None:
    while True:
        try:
            producer.produce(topic, value, key, on_delivery=delivered)
            return
        except BufferError:  # the local queue is full: serve delivery reports until there is room
            producer.poll(0.1)
