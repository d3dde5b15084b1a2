"""Binance kline archive files: `SYMBOL-1m-YYYY-MM[-DD].csv` or the same inside a `.zip`.

Spot files have no header, USD-M futures files have one; both have Binance's 12 kline columns. Spot files from
2025 on give times in microseconds: rows are read with times in milliseconds, as everywhere else.
A file that cannot be read (a truncated zip, a bad CRC) raises ArchiveError naming it; a line that is not a
candle is kept as text by `rows` (the backfill stores it and silver quarantines it) and skipped with its reason
by `candles` (the replay and backtest read candles only).
"""

from __future__ import annotations

import logging
import re
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd

from pipelines.ingestion.candles import KLINE_COLUMNS, BadCandle, from_kline_row

log = logging.getLogger(__name__)
_NAME = re.compile(r"^(?P<symbol>[A-Z0-9]+)-(?P<interval>\d+[smhdwM])-(?P<period>\d{4}-\d{2}(?:-\d{2})?)$")


class ArchiveError(ValueError):
    pass


# Epoch microseconds start at 1e15 in 2001; epoch milliseconds reach that in the year 33658.
_MICROSECONDS_FROM = 10**15
_TIME_FIELDS = (KLINE_COLUMNS.index("open_time"), KLINE_COLUMNS.index("close_time"))


def in_milliseconds(row: list[str]) -> list[str]:
    """A kline row with microsecond times (spot archives from 2025 on) -> the same with millisecond times."""
    fields = list(row)
    for i in _TIME_FIELDS:
        if i < len(fields) and fields[i].isdecimal() and int(fields[i]) >= _MICROSECONDS_FROM:
            fields[i] = str(int(fields[i]) // 1000)
    return fields


@dataclass(frozen=True)
class ArchiveFile:
    path: Path
    symbol: str
    interval: str
    period: str  # YYYY-MM (monthly archive) or YYYY-MM-DD (daily archive)

    @classmethod
    def parse(cls, path: str | Path) -> ArchiveFile:
        path = Path(path)
        stem = path.name.removesuffix(".zip").removesuffix(".csv")
        match = _NAME.match(stem)
        if not match:
            raise ArchiveError(f"{path.name}: not a Binance kline archive name (SYMBOL-1m-YYYY-MM[-DD].csv|.zip)")
        return cls(path, match["symbol"], match["interval"], match["period"])

    @property
    def days(self) -> tuple[date, date]:
        """First and last day the file covers."""
        if len(self.period) == 10:
            day = date.fromisoformat(self.period)
            return day, day
        first = date.fromisoformat(self.period + "-01")
        next_month = date(first.year + first.month // 12, first.month % 12 + 1, 1)
        return first, date.fromordinal(next_month.toordinal() - 1)

    def lines(self) -> Iterator[str]:
        """Text lines; bytes that are not UTF-8 become U+FFFD (silver quarantines such a row)."""
        try:
            if self.path.suffix == ".zip":
                with zipfile.ZipFile(self.path) as archive:
                    members = [n for n in archive.namelist() if n.endswith(".csv")]
                    if len(members) != 1:
                        raise ArchiveError(f"{self.path.name}: expected one CSV inside, found {members}")
                    with archive.open(members[0]) as raw:
                        yield from _decoded(raw)
            else:
                with open(self.path, "rb") as raw:
                    yield from _decoded(raw)
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:  # truncated, bad CRC, unreadable
            raise ArchiveError(f"{self.path.name}: unreadable: {exc}") from None

    def rows(self) -> Iterator[list[str]]:
        """Data rows as string fields, times in milliseconds; header lines (futures files; also one in the middle,
        as in two files joined) are skipped."""
        for line in self.lines():
            if not line or line.startswith(_HEADER):
                continue
            yield in_milliseconds(line.split(","))

    def candles(self, source: str = "archive", rejected: list[str] | None = None) -> Iterator[dict[str, Any]]:
        """Candle messages of the rows that are candles. A row that is not, or the rest of a file that turns out
        unreadable, is skipped with its reason: logged, and added to `rejected` when given."""
        line = 0
        try:
            for line, row in enumerate(self.rows(), start=1):
                try:
                    yield from_kline_row(self.symbol, row, source, self.interval)
                except BadCandle as exc:
                    _reject(rejected, f"{self.path.name}: row {line}: {exc}")
        except ArchiveError as exc:
            _reject(rejected, f"{exc} (after row {line})")


_HEADER = KLINE_COLUMNS[0]  # futures files' header starts with "open_time"


def _decoded(raw: Iterator[bytes]) -> Iterator[str]:
    for line in raw:
        yield line.decode("utf-8", errors="replace").rstrip("\r\n")


def _reject(rejected: list[str] | None, reason: str) -> None:
    log.warning("archive row skipped: %s", reason)
    if rejected is not None:
        rejected.append(reason)


def find_archives(folder: str | Path) -> list[ArchiveFile]:
    """Every kline archive below folder, sorted by symbol and period."""
    files = [
        ArchiveFile.parse(p)
        for p in Path(folder).rglob("*")
        if p.suffix in {".csv", ".zip"} and _NAME.match(p.name.removesuffix(".zip").removesuffix(".csv"))
    ]
    return sorted(files, key=lambda a: (a.symbol, a.period))


def read_frame(paths: list[str | Path]) -> pd.DataFrame:
    """Candles of several archive files as one DataFrame (times as UTC datetimes), for the backtest. Rows that are
    not candles are skipped and logged."""
    columns = ["symbol", *KLINE_COLUMNS]
    candles = [c for path in paths for c in ArchiveFile.parse(path).candles()]
    out = pd.DataFrame(candles, columns=columns) if candles else pd.DataFrame(columns=columns)
    out = out.astype({c: "int64" if c in ("open_time", "close_time", "trades") else "float64" for c in KLINE_COLUMNS})
    for column in ("open_time", "close_time"):
        out[column] = pd.to_datetime(out[column], unit="ms")
    return out.drop_duplicates(["symbol", "open_time"]).sort_values(["symbol", "open_time"]).reset_index(drop=True)
