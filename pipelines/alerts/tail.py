"""`marketlake alerts tail`: the alert topic as lines a person reads."""

from __future__ import annotations

import threading
from collections.abc import Iterator

from kafka import KafkaConsumer

from lakehouse.settings import Settings
from pipelines.alerts.events import describe


def follow(settings: Settings, stop: threading.Event, from_beginning: bool = False) -> Iterator[str]:
    """One line per alert on MARKETLAKE_ALERTS_KAFKA_TOPIC, newest first unless from_beginning, until `stop`."""
    consumer = KafkaConsumer(
        settings.alerts_kafka_topic,
        bootstrap_servers=settings.kafka_bootstrap_servers,
        auto_offset_reset="earliest" if from_beginning else "latest",
        enable_auto_commit=False,
    )
    try:
        while not stop.is_set():
            for records in consumer.poll(timeout_ms=500).values():
                for record in records:
                    yield describe(record.value)
    finally:
        consumer.close()
