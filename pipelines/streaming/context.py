"""The stream's recent silver candles, kept in driver memory so that a micro-batch does not read silver.

A micro-batch needs each symbol's silver candles from `history_minutes` before its first new candle on: as the
detection context, and to tell new candles from candles silver already holds. `SilverTail` holds them, and it
says when it cannot be trusted, so the stream reads silver instead (correctness first):
- per symbol it holds every silver candle between `since` and `until`; a batch reaching outside (the first batch
  after a start, a new symbol, a late candle older than the tail) reads silver, and that read seeds the tail;
- it knows the silver version it reflects: a commit by anyone else (a backfill, maintenance) empties it;
- it lives as long as one streaming query; a restart (also after a failed batch) starts from an empty tail.
Pure pandas: the stream hands it the silver version and a reader.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import pandas as pd

from lakehouse.tables import CANDLE_COLUMNS


class SilverTail:
    def __init__(self, behind_minutes: int, ahead_minutes: int = 1440, seed_rows: int = 500_000) -> None:
        # Kept behind each symbol's newest batch candle: history_minutes and some slack for late candles.
        self.behind = pd.Timedelta(minutes=behind_minutes)
        # A seed covers this far past the batch: a replay of old days (silver already holds what follows)
        # reads silver about once per replayed day; a live stream, once a day. With many symbols, less: a seed
        # holds at most about `seed_rows` candles (2,000 symbols: 250 minutes), so memory follows symbols x window.
        self.ahead = pd.Timedelta(minutes=ahead_minutes)
        self.seed_rows = seed_rows
        self.clear()

    def clear(self, version: int | None = None) -> None:
        self.rows = pd.DataFrame(columns=CANDLE_COLUMNS)
        self.since: dict[str, pd.Timestamp] = {}
        self.until: dict[str, pd.Timestamp] = {}
        self.version = version  # the silver version the tail reflects; None: unknown

    def uncovered(self, bounds: pd.DataFrame) -> list[str]:
        """Symbols (the index of `bounds`) whose silver candles from `first` to `last` the tail may not hold."""
        return [
            symbol
            for symbol, first, last in bounds[["first", "last"]].itertuples()
            if not (symbol in self.since and self.since[symbol] <= first and last <= self.until[symbol])
        ]

    def context(
        self,
        batch: pd.DataFrame,
        history_minutes: int,
        silver_version: int,
        read_silver: Callable[[list[str], pd.Timestamp, pd.Timestamp], pd.DataFrame],
    ) -> pd.DataFrame:
        """Silver's candles of the batch's symbols from `history_minutes` before each one's first candle to its last:
        the detection context, and the keys silver holds. Served from the tail; what it may not hold is read once,
        with `read_silver(symbols, first, last)` (first and last included), which then seeds it."""
        if silver_version != self.version:  # the first batch, or someone else committed to silver
            self.clear(silver_version)
        bounds = batch.groupby("symbol")["open_time"].agg(first="min", last="max")
        bounds["first"] -= pd.Timedelta(minutes=history_minutes)
        missing = self.uncovered(bounds)
        if missing:  # one read for all of them; it covers each from the earliest first to the latest last
            first, last = bounds.loc[missing, "first"].min(), bounds.loc[missing, "last"].max()
            self.seed(read_silver(missing, *self.seed_window(first, last, len(missing))), missing, first, last)
        return self.between(bounds.index, bounds["first"].min(), bounds["last"].max())

    def seed_window(self, first: pd.Timestamp, last: pd.Timestamp, symbols: int) -> tuple[pd.Timestamp, pd.Timestamp]:
        """The open_time range to read from silver for `symbols` uncovered symbols."""
        return first, last + min(self.ahead, pd.Timedelta(minutes=self.seed_rows // max(symbols, 1)))

    def seed(self, stored: pd.DataFrame, symbols: list[str], first: pd.Timestamp, last: pd.Timestamp) -> None:
        """`stored`: silver's candles of `symbols` in `seed_window(first, last, len(symbols))`."""
        self.rows = _append(self.rows[~self.rows["symbol"].isin(symbols)], stored)
        start, end = self.seed_window(first, last, len(symbols))
        self.since |= dict.fromkeys(symbols, start)
        self.until |= dict.fromkeys(symbols, end)

    def between(self, symbols: Iterable[str], first: pd.Timestamp, last: pd.Timestamp) -> pd.DataFrame:
        """The candles of `symbols` from first to last (what a silver read of that range would return)."""
        rows = self.rows
        return rows[rows["symbol"].isin(list(symbols)) & rows["open_time"].between(first, last)]

    def committed(self, rows: pd.DataFrame, version: int) -> None:
        """The stream appended `rows` (inside covered ranges) to silver, which is now at `version`. Exactly one
        commit since the tail's version, ours: the tail still mirrors silver. Anything else: start over."""
        if self.version is not None and version == self.version + 1:
            self.rows, self.version = _append(self.rows, rows), version
        else:
            self.clear()

    def trim(self, batch: pd.DataFrame) -> None:
        """Forget candles more than `behind` before each batch symbol's newest candle, bounding memory."""
        cutoff = batch.groupby("symbol")["open_time"].max() - self.behind
        self.rows = self.rows[~(self.rows["open_time"] < self.rows["symbol"].map(cutoff))]
        for symbol, time in cutoff.items():
            if symbol in self.since:
                self.since[symbol] = max(self.since[symbol], time)


def _append(rows: pd.DataFrame, more: pd.DataFrame) -> pd.DataFrame:
    more = more[CANDLE_COLUMNS]
    # pandas warns on (and will change) concatenating an empty frame: take the other one as it is.
    if rows.empty or more.empty:
        return more if rows.empty else rows
    return pd.concat([rows, more], ignore_index=True)
