"""The replay producer: real archives (spot headerless, futures headed) and candle iterables, via the real broker."""

from __future__ import annotations

import dataclasses
import itertools
import os
import subprocess
import sys
import time

import pytest

from lakehouse.services.kafka_broker import ensure_topic
from lakehouse.settings import PROJECT_ROOT
from marketlake.binance_server import delivery, read_topic
from pipelines.ingestion.archives import ArchiveFile
from pipelines.ingestion.kafka_io import make_producer
from pipelines.ingestion.replay import archive_candles, archive_files, estimated_count, replay, replay_archives
from tests.conftest import SAMPLE


@pytest.fixture
def settings(kafka_settings):
    """Every test here talks to Kafka: a topic of its own on the shared broker."""
    return kafka_settings


SPOT = SAMPLE / "spot" / "LUNAUSDT-1m-2022-05-09.zip"
FIL = SAMPLE / "futures-um" / "FILUSDT-1m-2025-02-03.zip"
NEAR = SAMPLE / "futures-um" / "NEARUSDT-1m-2025-02-03.zip"


def keys(paths) -> set[tuple[str, int]]:
    return {(c["symbol"], c["open_time"]) for p in paths for c in ArchiveFile.parse(p).candles()}


def order(candles) -> list[tuple[int, str]]:
    return [(c["open_time"], c["symbol"]) for c in candles]


# -- pure ----------------------------------------------------------------------------------------------------


def test_archives_merge_in_event_time_order_across_symbols():
    files = archive_files([NEAR, SPOT, FIL, SAMPLE / "futures-um" / "FILUSDT-1m-2025-02-04.zip"])
    merged = order(archive_candles(files))
    assert len(merged) == 4 * 1440 == estimated_count(files)
    assert merged == sorted(merged)
    assert merged[:1] == [(1652054400000, "LUNAUSDT")]  # the 2022 spot day comes first
    assert merged[1440:1442] == [(1738540800000, "FILUSDT"), (1738540800000, "NEARUSDT")]


def test_a_minute_in_a_monthly_and_a_daily_archive_is_read_once(tmp_path):
    # A monthly CSV (headerless) holding 2025-02-03 and 2025-02-04, next to the daily zip of 2025-02-03.
    days = [SAMPLE / "futures-um" / f"FILUSDT-1m-2025-02-0{d}.zip" for d in (3, 4)]
    monthly = tmp_path / "FILUSDT-1m-2025-02.csv"
    monthly.write_text("".join(",".join(row) + "\n" for day in days for row in ArchiveFile.parse(day).rows()))
    merged = order(archive_candles(archive_files([monthly, FIL])))
    assert len(merged) == len(set(merged)) == 2 * 1440 and merged == sorted(merged)


def test_folders_are_searched_for_archives():
    assert len(archive_files([SAMPLE / "spot", FIL])) == 8 + 1


# -- through the broker --------------------------------------------------------------------------------------


def test_both_archive_formats_arrive_once_in_event_time_order(settings):
    result = replay_archives(settings, [SPOT, FIL, NEAR], progress=False)
    assert result.sent == 3 * 1440
    assert result.per_symbol == {"LUNAUSDT": 1440, "FILUSDT": 1440, "NEARUSDT": 1440}
    partitions = read_topic(settings.kafka_bootstrap_servers, settings.kafka_topic)
    candles = [c for part in partitions.values() for c in part]
    d = delivery(candles, keys([SPOT, FIL, NEAR]))
    assert (d.received, d.lost, d.doubled, d.unexpected) == (3 * 1440, 0, 0, 0)
    assert d.sources == {"replay": 3 * 1440}
    for part in partitions.values():  # Kafka keeps the order within a partition
        assert order(part) == sorted(order(part))

    # On a single partition the topic holds the exact sequence sent: one event-time order across symbols.
    single = dataclasses.replace(settings, kafka_topic=settings.kafka_topic + "-1p")
    ensure_topic(single.kafka_bootstrap_servers, single.kafka_topic, 1)
    replay_archives(single, [NEAR, SPOT, FIL], progress=False)
    (sequence,) = read_topic(single.kafka_bootstrap_servers, single.kafka_topic).values()
    assert len(sequence) == 3 * 1440 and order(sequence) == sorted(order(sequence))


def test_speed_factor_paces_on_market_time(settings):
    # Any iterable of candle messages in event-time order (e.g. silver rows): one hour of two symbols.
    streams = [itertools.islice(ArchiveFile.parse(p).candles(source="archive"), 61) for p in (FIL, NEAR)]
    candles = sorted(itertools.chain(*streams), key=lambda c: (c["open_time"], c["symbol"]))
    producer = make_producer(settings)
    try:
        started = time.monotonic()
        result = replay(candles, producer, settings.kafka_topic, speed=1800, progress=False)
        elapsed = time.monotonic() - started
    finally:
        producer.close()
    # 60 market minutes at 30 market minutes per second: at least 2 s, and not much more.
    assert 2.0 <= elapsed < 6.0
    assert (result.sent, result.first_open_time, result.last_open_time) == (122, 1738540800000, 1738544400000)
    d = delivery(
        [c for part in read_topic(settings.kafka_bootstrap_servers, settings.kafka_topic).values() for c in part],
        {(c["symbol"], c["open_time"]) for c in candles},
    )
    assert (d.received, d.lost, d.doubled, d.sources) == (122, 0, 0, {"replay": 122})


def test_candles_out_of_event_time_order_are_refused(settings):
    candles = list(itertools.islice(ArchiveFile.parse(FIL).candles(), 3))
    producer = make_producer(settings)
    try:
        with pytest.raises(ValueError, match="out of event-time order"):
            replay(reversed(candles), producer, settings.kafka_topic, progress=False)
    finally:
        producer.close()


def test_replay_command(settings):
    env = {
        **os.environ,
        "MARKETLAKE_KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "MARKETLAKE_KAFKA_TOPIC": settings.kafka_topic,
    }
    command = [sys.executable, "-m", "marketlake.cli", "replay", str(SAMPLE / "spot"), str(FIL), "--no-progress"]
    out = subprocess.run(command, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert f"replaying into topic {settings.kafka_topic}" in out.stdout
    assert "replayed 12960 candles (FILUSDT 1440, LUNAUSDT 11520)" in out.stdout
