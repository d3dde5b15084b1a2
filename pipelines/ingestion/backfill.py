"""Historical backfill of one (symbol, day) into bronze and silver, from a local archive folder, Binance's public
zip archives, or Binance's REST API. Idempotent: every write is a MERGE on the table's key.

Each source yields Binance kline rows as text fields, exactly as received; they are stored in bronze as the same
JSON candle message the producers publish (values kept as text), and silver parses them with the stream's code.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Protocol

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from lakehouse.delta_io import merge_into, read_range
from lakehouse.settings import Settings
from lakehouse.tables import BRONZE_CANDLES, SILVER_CANDLES, SILVER_QUARANTINE
from pipelines.ingestion.archives import ArchiveError, ArchiveFile, find_archives
from pipelines.ingestion.binance_rest import BinanceRest
from pipelines.ingestion.candles import KLINE_COLUMNS
from pipelines.layers.bronze import timestamp_or_null
from pipelines.layers.silver import parse, quarantined, valid_candles

DAY_MS = 86_400_000


def day_bounds_ms(day: date) -> tuple[int, int]:
    start = int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)
    return start, start + DAY_MS


class KlineSource(Protocol):
    name: str

    def rows(self, symbol: str, day: date) -> Iterator[tuple[str, list[str]]]:
        """(where the row came from, its kline fields as text) for every candle of symbol that opens on day."""
        ...


def _on_day(rows: Iterator[list[str]], day: date) -> Iterator[list[str]]:
    start, end = day_bounds_ms(day)
    for row in rows:
        try:
            opens = int(row[0])
        except (ValueError, IndexError):
            yield row  # unreadable time: keep it, silver will quarantine it with the reason
            continue
        if start <= opens < end:
            yield row


@dataclass(frozen=True)
class LocalArchives:
    """A folder of Binance kline archives (daily or monthly, .csv or .zip), e.g. the bundled data/sample."""

    folder: Path
    name: str = "local"

    def rows(self, symbol: str, day: date) -> Iterator[tuple[str, list[str]]]:
        for archive in find_archives(self.folder):
            first, last = archive.days
            if archive.symbol == symbol and first <= day <= last:
                for row in _on_day(archive.rows(), day):
                    yield f"archive:{archive.path.name}", row


def check_archive(url: str, payload: bytes, expected_sha256: str) -> None:
    """Raises ArchiveError unless the payload has the published SHA-256 and is a zip whose members read back."""
    actual = hashlib.sha256(payload).hexdigest()
    if actual != expected_sha256.lower():
        raise ArchiveError(f"checksum mismatch for {url}: expected {expected_sha256[:64]}, got {actual}")
    try:
        bad = zipfile.ZipFile(io.BytesIO(payload)).testzip()
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        raise ArchiveError(f"{url}: not a readable zip: {exc}") from None
    if bad is not None:
        raise ArchiveError(f"{url}: {bad} fails its CRC check")


@dataclass(frozen=True)
class BinanceArchives:
    """Binance's public archives: the daily zip of the day, else the monthly zip, each checked against its
    .CHECKSUM file (sha256). Downloads are cached in cache_dir."""

    base_url: str
    cache_dir: Path
    market: str = "spot"  # or "futures/um"
    name: str = "binance-archive"

    def _url(self, symbol: str, period: str, frequency: str) -> str:
        return f"{self.base_url}/data/{self.market}/{frequency}/klines/{symbol}/1m/{symbol}-1m-{period}.zip"

    def _fetch(self, url: str) -> Path | None:
        target = self.cache_dir / url.rsplit("/", 1)[1]
        if target.exists():
            return target
        try:
            with urllib.request.urlopen(url, timeout=60) as response:
                payload = response.read()
            with urllib.request.urlopen(url + ".CHECKSUM", timeout=60) as response:
                expected = (response.read().decode("ascii", errors="replace").split() or ["(empty)"])[0]
        except urllib.error.HTTPError as error:
            if error.code == 404:
                return None
            raise
        check_archive(url, payload, expected)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(".part")  # a crash mid-write must not leave a truncated zip in the cache
        partial.write_bytes(payload)
        partial.replace(target)
        return target

    def rows(self, symbol: str, day: date) -> Iterator[tuple[str, list[str]]]:
        path = self._fetch(self._url(symbol, day.isoformat(), "daily")) or self._fetch(
            self._url(symbol, day.isoformat()[:7], "monthly")
        )
        if path is None:
            return
        for row in _on_day(ArchiveFile.parse(path).rows(), day):
            yield f"archive:{path.name}", row


@dataclass(frozen=True)
class BinanceRestKlines:
    """Binance's REST API, /api/v3/klines: 1000 candles a request, weight limits and 429/418 back-off honoured
    (pipelines.ingestion.binance_rest). Only closed candles are kept, so a backfill of today never stores a
    partial one."""

    base_url: str
    name: str = "rest"

    def rows(self, symbol: str, day: date) -> Iterator[tuple[str, list[str]]]:
        start, end = day_bounds_ms(day)
        now = int(time.time() * 1000)
        for row in BinanceRest(self.base_url).klines(symbol, "1m", start, end):
            fields = [str(v) for v in row] if isinstance(row, list) else [str(row)]
            try:
                closed = int(fields[6]) < now
            except (ValueError, IndexError):
                closed = True  # unreadable: kept as received, silver quarantines it with the reason
            if closed:
                yield "rest", fields


@dataclass
class BackfillResult:
    symbol: str
    day: date
    source: str
    rows_read: int = 0
    quarantined: int = 0
    silver_rows: int = 0
    missing_minutes: list[str] = field(default_factory=list)

    @property
    def gaps(self) -> int:
        return len(self.missing_minutes)


def to_bronze(spark: SparkSession, records: list[tuple[str, str, list[str]]]) -> DataFrame:
    """(symbol, origin, kline row) -> bronze rows whose value is the candle message, every field kept as the text
    received."""
    values = []
    for symbol, origin, row in records:
        message = {"symbol": symbol, "interval": "1m", **dict(zip(KLINE_COLUMNS, row, strict=False))}
        message["source"] = origin.split(":", 1)[0]
        values.append((origin, symbol, json.dumps(message)))
    frame = spark.createDataFrame(values, "source string, symbol string, value string")
    open_ms = F.get_json_object("value", "$.open_time").try_cast("long")
    return frame.select(
        "source",
        "symbol",
        timestamp_or_null(open_ms).alias("open_time"),
        "value",
        F.lit(None).cast("string").alias("topic"),
        F.lit(None).cast("int").alias("partition"),
        F.lit(None).cast("long").alias("offset"),
        F.lit(None).cast("timestamp").alias("kafka_timestamp"),
        F.current_timestamp().alias("ingested_at"),
        F.current_date().alias("ingest_date"),
    )


def backfill(
    spark: SparkSession, settings: Settings, source: KlineSource, partitions: Sequence[tuple[str, date]]
) -> list[BackfillResult]:
    """(symbol, day) partitions into bronze and silver in one pass: one MERGE per table, silver's confined to the
    days it writes, so it does not conflict with the stream or with a backfill of other days."""
    results = {(symbol, day): BackfillResult(symbol, day, source.name) for symbol, day in partitions}
    records = []
    for (symbol, day), result in results.items():
        rows = list(source.rows(symbol, day))
        result.rows_read = len(rows)
        records += [(symbol, origin, row) for origin, row in rows]
    days = sorted({day for _, day in results})
    symbols = sorted({symbol for symbol, _ in results})
    if records:
        bronze = to_bronze(spark, records).cache()
        merge_into(spark, settings, BRONZE_CANDLES, bronze)
        parsed = parse(bronze).cache()
        merge_into(
            spark,
            settings,
            SILVER_CANDLES,
            valid_candles(parsed).filter(F.col("open_date").isin(days)),
            partitions=days,
        )
        bad = quarantined(parsed).cache()
        merge_into(spark, settings, SILVER_QUARANTINE, bad)
        for row in bad.groupBy("symbol", F.to_date("open_time").alias("day")).count().collect():
            if (row.symbol, row.day) in results:
                results[(row.symbol, row.day)].quarantined = row["count"]
        for frame in (bad, parsed, bronze):
            frame.unpersist()
    stored = (
        silver_days(spark, settings, symbols, days)
        .groupBy("symbol", "open_date")
        .agg(F.collect_list("open_time").alias("minutes"))
    )
    present = {(row.symbol, row.open_date): set(row.minutes) for row in stored.collect()}
    for (symbol, day), result in results.items():
        minutes = present.get((symbol, day), set())
        result.silver_rows = len(minutes)
        start = datetime(day.year, day.month, day.day)
        result.missing_minutes = [
            minute.strftime("%H:%M")
            for minute in (start + timedelta(minutes=m) for m in range(1440))
            if minute not in minutes
        ]
    return list(results.values())


def backfill_day(
    spark: SparkSession, settings: Settings, source: KlineSource, symbol: str, day: date
) -> BackfillResult:
    return backfill(spark, settings, source, [(symbol, day)])[0]


def silver_days(spark: SparkSession, settings: Settings, symbols: Sequence[str], days: Sequence[date]) -> DataFrame:
    return read_range(spark, settings, SILVER_CANDLES, symbols=symbols, days=days)
