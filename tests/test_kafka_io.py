"""The candle producer (confluent-kafka) against the real broker: per-symbol event-time order as read back by
kafka-python, and every refusal surfacing as DeliveryError instead of a silent loss."""

from __future__ import annotations

import base64
import dataclasses
import itertools
import os
import time
from collections import defaultdict

import pytest
from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.partitioner.default import murmur2

from lakehouse.services.process import free_port
from marketlake.binance_server import delivery, read_topic
from pipelines.ingestion.archives import ArchiveFile
from pipelines.ingestion.kafka_io import DeliveryError, make_producer, publish
from pipelines.ingestion.replay import archive_candles, archive_files, replay_archives
from tests.conftest import SAMPLE

FIL = SAMPLE / "futures-um" / "FILUSDT-1m-2025-02-03.zip"


def candles(n: int) -> list[dict]:
    return list(itertools.islice(ArchiveFile.parse(FIL).candles(source="replay"), n))


def test_replay_keeps_each_symbols_event_time_order(kafka_settings):
    # The whole sample (41,760 candles, 3 symbols) at full speed, compressed: each symbol lands on one partition,
    # once per minute, in event-time order, as a kafka-python consumer reads it.
    files = archive_files([SAMPLE])
    result = replay_archives(kafka_settings, [SAMPLE], progress=False)
    partitions = read_topic(kafka_settings.kafka_bootstrap_servers, kafka_settings.kafka_topic)
    expected = {(c["symbol"], c["open_time"]) for c in archive_candles(files)}
    received = [c for part in partitions.values() for c in part]
    d = delivery(received, expected)
    assert (result.sent, d.received, d.lost, d.doubled, d.unexpected) == (len(expected), len(expected), 0, 0, 0)

    homes: defaultdict[str, set[int]] = defaultdict(set)
    for partition, records in partitions.items():
        by_symbol: defaultdict[str, list[int]] = defaultdict(list)
        for candle in records:
            homes[candle["symbol"]].add(partition)
            by_symbol[candle["symbol"]].append(candle["open_time"])
        for times in by_symbol.values():
            assert all(a < b for a, b in itertools.pairwise(times))
    # One partition per symbol, the one Java's partitioner (and kafka-python's, which wrote the topics before)
    # picks: murmur2 of the key. librdkafka's own default (CRC32) would move symbols to other partitions.
    n = kafka_settings.kafka_topic_partitions
    assert homes == {s: {(murmur2(s.encode()) & 0x7FFFFFFF) % n} for s in ("FILUSDT", "NEARUSDT", "LUNAUSDT")}


def test_a_candle_the_broker_refuses_is_a_delivery_error(kafka_settings):
    # A topic that takes record batches of at most 2 KiB; one candle carries 12 KiB of incompressible text.
    topic = kafka_settings.kafka_topic + "-small"
    admin = KafkaAdminClient(bootstrap_servers=kafka_settings.kafka_bootstrap_servers)
    try:
        admin.create_topics([NewTopic(topic, 1, 1, topic_configs={"max.message.bytes": "2048"})])
    finally:
        admin.close()
    big = {**candles(1)[0], "note": base64.b64encode(os.urandom(9000)).decode()}
    producer = make_producer(kafka_settings)
    try:
        assert publish(producer, topic, candles(3)) == 3  # small batches are taken
        with pytest.raises(DeliveryError, match=r"not acknowledged by Kafka: .*MSG_SIZE_TOO_LARGE"):
            publish(producer, topic, [big])
        # Larger than the producer itself sends (message.max.bytes, 1 MB): refused before it leaves.
        huge = {**big, "note": "x" * 2_000_000}
        with pytest.raises(DeliveryError, match=r"refused candle 2: .*MSG_SIZE_TOO_LARGE"):
            publish(producer, topic, [candles(1)[0], huge, candles(1)[0]])
    finally:
        producer.close(timeout=10)


@pytest.mark.integration
def test_an_unreachable_broker_is_a_delivery_error(kafka_settings_offline):
    producer = make_producer(kafka_settings_offline)
    started = time.monotonic()
    try:
        with pytest.raises(DeliveryError, match=r"5 of 5 candles not acknowledged by Kafka: .*MSG_TIMED_OUT"):
            publish(producer, kafka_settings_offline.kafka_topic, candles(5))
        assert time.monotonic() - started < 10  # bounded by delivery.timeout.ms, not by retries
        # close(timeout) does not wait for what the broker cannot take either.
        producer.produce(kafka_settings_offline.kafka_topic, b"{}", b"FILUSDT")
        started = time.monotonic()
    finally:
        producer.close(timeout=1)
    assert time.monotonic() - started < 5


@pytest.fixture
def kafka_settings_offline(base_settings):
    """Settings pointing at a port where no broker listens, with a 2 s delivery timeout."""
    return dataclasses.replace(
        base_settings,
        kafka_bootstrap_servers=f"127.0.0.1:{free_port()}",
        kafka_topic="offline",
        kafka_delivery_timeout_ms=2000,
    )
