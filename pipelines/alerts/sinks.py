"""Where alerts go: a Kafka topic (JSON, key = symbol) and a webhook (JSON POST), each with a minimum confidence.

`deliver` tries a sink a few times with back-off and never raises: the outcome is a Delivery, delivered or
dead_letter with the last error, which the caller records (gold.alerts). A sink that is down costs the stream its
attempts and back-off, then the alert is dead-lettered and the stream goes on.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

import requests
from kafka import KafkaProducer

from lakehouse.services.kafka_broker import ensure_topic
from lakehouse.settings import Settings
from pipelines.alerts.events import Alert, test_alert
from pipelines.ingestion.binance_rest import Backoff

DELIVERED, DEAD_LETTER = "delivered", "dead_letter"


class Sink(Protocol):
    name: str
    min_confidence: str

    def send(self, alert: Alert) -> None:
        """Deliver one alert or raise."""

    def close(self) -> None:
        """Release connections."""


@dataclass
class KafkaSink:
    bootstrap_servers: str
    topic: str
    min_confidence: str = "MEDIUM"
    partitions: int = 3
    timeout_s: float = 10.0
    name: str = "kafka"
    _producer: KafkaProducer | None = field(default=None, repr=False)

    def send(self, alert: Alert) -> None:
        if self._producer is None:  # created at the first alert: a stream without alerts never connects
            ensure_topic(self.bootstrap_servers, self.topic, self.partitions)
            self._producer = KafkaProducer(
                bootstrap_servers=self.bootstrap_servers, acks="all", retries=3, max_block_ms=int(self.timeout_s * 1000)
            )
        future = self._producer.send(self.topic, key=alert.symbol.encode(), value=alert.message.encode())
        future.get(timeout=self.timeout_s)  # acknowledged by the broker, or raises

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close(timeout=self.timeout_s)
            self._producer = None


@dataclass
class WebhookSink:
    url: str
    min_confidence: str = "MEDIUM"
    timeout_s: float = 5.0
    name: str = "webhook"

    def send(self, alert: Alert) -> None:
        response = requests.post(
            self.url,
            data=alert.message.encode(),
            headers={"Content-Type": "application/json", "X-Marketlake-Alert-Id": alert.alert_id},
            timeout=self.timeout_s,
        )
        response.raise_for_status()

    def close(self) -> None:
        pass


@dataclass(frozen=True)
class Delivery:
    alert: Alert
    sink: str
    status: str
    attempts: int
    error: str | None = None


def deliver(
    sink: Sink, alert: Alert, attempts: int, backoff: Backoff, sleep: Callable[[float], None] = time.sleep
) -> Delivery:
    """Up to `attempts` sends, with back-off between them; any error of the sink counts as a failed attempt."""
    error = ""
    for attempt in range(attempts):
        if attempt:
            sleep(backoff.delay(attempt - 1))
        try:
            sink.send(alert)
            return Delivery(alert, sink.name, DELIVERED, attempt + 1)
        except Exception as failure:  # a sink's failure of any kind must not stop the stream
            error = f"{type(failure).__name__}: {failure}"[:1000]
    return Delivery(alert, sink.name, DEAD_LETTER, attempts, error)


def configured_sinks(settings: Settings) -> list[KafkaSink | WebhookSink]:
    """The sinks the settings turn on: the Kafka topic unless it is empty, the webhook when it has a URL."""
    sinks: list[KafkaSink | WebhookSink] = []
    if settings.alerts_kafka_topic:
        sinks.append(
            KafkaSink(
                settings.kafka_bootstrap_servers, settings.alerts_kafka_topic, settings.alerts_kafka_min_confidence
            )
        )
    if settings.alerts_webhook_url:
        sinks.append(
            WebhookSink(
                settings.alerts_webhook_url, settings.alerts_webhook_min_confidence, settings.alerts_webhook_timeout_s
            )
        )
    return sinks


def send_test_alert(settings: Settings, now: datetime) -> list[Delivery]:
    """One test alert to each configured sink, with the stream's attempts and back-off; nothing is recorded."""
    alert = test_alert(now)
    outcomes = []
    for sink in configured_sinks(settings):
        outcomes.append(deliver(sink, alert, settings.alerts_attempts, Backoff(settings.alerts_backoff_s)))
        sink.close()
    return outcomes
