"""The replay producer: historical candles -> Kafka (key = symbol) in event-time order across symbols.

Input is either Binance kline archives (spot without header, USD-M futures with one; files or folders) or any
iterable of candle messages already in event-time order (e.g. rows read from silver with
`ORDER BY open_time, symbol`). Archives are merged lazily: each symbol's files are read one after the other
(they are sorted inside) and the symbols are merged by (open_time, symbol), so memory stays flat however much
history is replayed. A speed factor paces the replay on market time (speed=60: one market minute per second).
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pandas as pd
from confluent_kafka import Producer
from tqdm import tqdm

from lakehouse.settings import Settings
from pipelines.ingestion.archives import ArchiveFile, find_archives
from pipelines.ingestion.candles import MESSAGE_FIELDS, from_frame, now_ms
from pipelines.ingestion.kafka_io import make_producer, publish


@dataclass(frozen=True)
class ReplayResult:
    sent: int
    per_symbol: dict[str, int]
    first_open_time: int | None
    last_open_time: int | None
    seconds: float
    rejected: int = 0  # archive rows that were not candles (or unreadable rest of a file): skipped and logged

    @property
    def candles_per_s(self) -> float:
        return self.sent / self.seconds if self.seconds else 0.0


def archive_files(paths: Iterable[str | Path]) -> list[ArchiveFile]:
    """Archive files named directly or found below folders."""
    files: list[ArchiveFile] = []
    for path in map(Path, paths):
        files.extend(find_archives(path) if path.is_dir() else [ArchiveFile.parse(path)])
    return files


def archive_candles(files: Iterable[ArchiveFile], rejected: list[str] | None = None) -> Iterator[dict[str, Any]]:
    """Candles of archive files in event-time order across symbols; a minute covered by two files of the same
    symbol (a monthly and a daily archive) is read once. Rows that are not candles are skipped, their reasons
    added to `rejected`."""
    by_symbol: dict[str, list[ArchiveFile]] = {}
    for f in files:
        by_symbol.setdefault(f.symbol, []).append(f)
    streams = [
        _increasing(
            itertools.chain.from_iterable(f.candles(rejected=rejected) for f in sorted(group, key=lambda f: f.days))
        )
        for group in by_symbol.values()
    ]
    return heapq.merge(*streams, key=_order)


def estimated_count(files: Iterable[ArchiveFile]) -> int | None:
    """Rows the files should hold (1-minute archives: 1440 a day), for the progress bar."""
    files = list(files)
    if any(f.interval != "1m" for f in files):
        return None
    return sum(((f.days[1] - f.days[0]).days + 1) * 1440 for f in files)


def replay(
    candles: Iterable[Mapping[str, Any]],
    producer: Producer,
    topic: str,
    speed: float | None = None,
    progress: bool = True,
    total: int | None = None,
    stop: threading.Event | None = None,
) -> ReplayResult:
    """Publish candles (in event-time order, else ValueError) with source="replay"; flushes before returning.
    speed=None or 0 sends as fast as the broker takes them; `stop` ends the replay early."""
    stop = stop or threading.Event()
    per_symbol: Counter[str] = Counter()
    span: dict[str, int] = {}
    started = time.monotonic()
    with tqdm(total=total, unit=" candles", disable=not progress, smoothing=0.1) as bar:

        def tracked(stream: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
            for candle in stream:
                per_symbol[candle["symbol"]] += 1
                span.setdefault("first", candle["open_time"])
                span["last"] = candle["open_time"]
                bar.update()
                yield candle

        stream = _paced(_checked_order(candles), speed, stop)
        sent = publish(producer, topic, tracked(_as_replayed(c) for c in stream))
        producer.flush(timeout=60)
    return ReplayResult(sent, dict(per_symbol), span.get("first"), span.get("last"), time.monotonic() - started)


def replay_archives(
    settings: Settings,
    paths: Iterable[str | Path],
    speed: float | None = None,
    progress: bool = True,
    stop: threading.Event | None = None,
) -> ReplayResult:
    """Replay archive files (or folders of them) into the settings' topic with a producer of its own."""
    files = archive_files(paths)
    rejected: list[str] = []
    candles = archive_candles(files, rejected)
    result = _replay_into_topic(settings, candles, estimated_count(files), speed, progress, stop)
    return dataclasses.replace(result, rejected=len(rejected))


def replay_day(settings: Settings, day: date, stop: threading.Event | None = None) -> ReplayResult:
    """One day of the settings' symbols from the archive folder, at the settings' replay speed (what the supervised
    producer run does with MARKETLAKE_PRODUCER=replay)."""
    files = [
        f for f in find_archives(settings.archive_dir) if f.symbol in settings.symbols and f.days[0] <= day <= f.days[1]
    ]
    if not files:
        raise FileNotFoundError(f"no archive of {', '.join(settings.symbols)} covers {day} in {settings.archive_dir}")
    start = int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)
    candles = (c for c in archive_candles(files) if start <= c["open_time"] < start + 86_400_000)
    return _replay_into_topic(settings, candles, 1440 * len(files), settings.replay_speed or None, False, stop)


def replay_silver(
    settings: Settings,
    frame: pd.DataFrame,
    speed: float | None = None,
    progress: bool = True,
    stop: threading.Event | None = None,
) -> ReplayResult:
    """Replay silver candles (a DataFrame with lakehouse.tables.CANDLE_COLUMNS) into the settings' topic."""
    ordered = frame.sort_values(["open_time", "symbol"], kind="stable")
    return _replay_into_topic(settings, from_frame(ordered, "replay"), len(ordered), speed, progress, stop)


def _replay_into_topic(
    settings: Settings,
    candles: Iterable[Mapping[str, Any]],
    total: int | None,
    speed: float | None,
    progress: bool,
    stop: threading.Event | None,
) -> ReplayResult:
    producer = make_producer(settings)
    try:
        return replay(candles, producer, settings.kafka_topic, speed, progress, total, stop)
    finally:
        producer.close(timeout=10)


def _order(candle: Mapping[str, Any]) -> tuple[int, str]:
    return candle["open_time"], candle["symbol"]


def _increasing(candles: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    last = None
    for candle in candles:
        if last is None or candle["open_time"] > last:
            last = candle["open_time"]
            yield candle


def _checked_order(candles: Iterable[Mapping[str, Any]]) -> Iterator[Mapping[str, Any]]:
    previous = None
    for candle in candles:
        key = _order(candle)
        if previous is not None and key < previous:
            raise ValueError(
                f"candles out of event-time order: {key} after {previous}; "
                "sort by (open_time, symbol) first (e.g. ORDER BY open_time, symbol)"
            )
        previous = key
        yield candle


def _paced(
    candles: Iterable[Mapping[str, Any]], speed: float | None, stop: threading.Event
) -> Iterator[Mapping[str, Any]]:
    """Hold each candle until its market time, scaled by speed, has elapsed since the first one."""
    first_open = start = None
    for candle in candles:
        if stop.is_set():
            return
        if speed:
            if first_open is None:
                first_open, start = candle["open_time"], time.monotonic()
            delay = start + (candle["open_time"] - first_open) / 1000 / speed - time.monotonic()
            if delay > 0 and stop.wait(delay):
                return
        yield candle


def _as_replayed(candle: Mapping[str, Any]) -> dict[str, Any]:
    """The documented message fields only (silver rows carry more), stamped as a replay."""
    message = {name: candle[name] for name in MESSAGE_FIELDS if name in candle}
    message.setdefault("event_time", message["close_time"] + 1)
    message["received_at"] = now_ms()
    message["source"] = "replay"
    return message
