"""Binance kline archive files: `SYMBOL-1m-YYYY-MM[-DD].csv` or the same inside a `.zip`.

Spot files have no header, USD-M futures files have one; both have Binance's 12 kline columns.
"""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd

from pipelines.candles import KLINE_COLUMNS, from_kline_row

_NAME = re.compile(r"^(?P<symbol>[A-Z0-9]+)-(?P<interval>\d+[smhdwM])-(?P<period>\d{4}-\d{2}(?:-\d{2})?)$")


class ArchiveError(ValueError):
    pass


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
        if self.path.suffix == ".zip":
            with zipfile.ZipFile(self.path) as archive:
                members = [n for n in archive.namelist() if n.endswith(".csv")]
                if len(members) != 1:
                    raise ArchiveError(f"{self.path.name}: expected one CSV inside, found {members}")
                with archive.open(members[0]) as raw:
                    yield from (line.rstrip("\r\n") for line in io.TextIOWrapper(raw, encoding="utf-8"))
        else:
            with open(self.path, encoding="utf-8") as f:
                yield from (line.rstrip("\r\n") for line in f)

    def rows(self) -> Iterator[list[str]]:
        """Data rows as string fields; a header line (futures files) is skipped."""
        for number, line in enumerate(self.lines()):
            if not line:
                continue
            if number == 0 and not line[0].isdigit():
                continue
            yield line.split(",")

    def candles(self, source: str = "archive") -> Iterator[dict[str, Any]]:
        for row in self.rows():
            yield from_kline_row(self.symbol, row, source, self.interval)


def find_archives(folder: str | Path) -> list[ArchiveFile]:
    """Every kline archive below folder, sorted by symbol and period."""
    files = [
        ArchiveFile.parse(p)
        for p in Path(folder).rglob("*")
        if p.suffix in {".csv", ".zip"} and _NAME.match(p.name.removesuffix(".zip").removesuffix(".csv"))
    ]
    return sorted(files, key=lambda a: (a.symbol, a.period))


def read_frame(paths: list[str | Path]) -> pd.DataFrame:
    """Candles of several archive files as one DataFrame (times as UTC datetimes), for the backtest."""
    frames = []
    for path in paths:
        archive = ArchiveFile.parse(path)
        frame = pd.DataFrame(list(archive.rows()), columns=[*KLINE_COLUMNS, "ignore"]).drop(columns="ignore")
        frame = frame.astype(
            {c: "int64" if c in ("open_time", "close_time", "trades") else "float64" for c in KLINE_COLUMNS}
        )
        frame.insert(0, "symbol", archive.symbol)
        frames.append(frame)
    out = pd.concat(frames, ignore_index=True)
    for column in ("open_time", "close_time"):
        out[column] = pd.to_datetime(out[column], unit="ms")
    return out.drop_duplicates(["symbol", "open_time"]).sort_values(["symbol", "open_time"]).reset_index(drop=True)
