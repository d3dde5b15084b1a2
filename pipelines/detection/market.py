"""Market incidents: many symbols confirmed in the same minutes are one market event, told once. Pure.

The cross-section of a minute: the symbols scored in it (active), the median of their log returns (the market's
move; cumulated over minutes it is an equal-weight median index), and the movers: the symbols with a confirmed minute
in the `window_minutes` ending at it. A minute is a market minute when the movers are at least
max(min_symbols, min_share x active). Market minutes at most `gap_minutes` apart form a market incident, as a
symbol's confirmed minutes form its incidents (pipelines.detection.incidents), with a deterministic id.

A symbol's incident is `market` when its symbol is a mover of a market minute whose window overlaps the incident,
else `own`: a move with the market, or against a calm one (the alert people value most). Either way the incident
carries the market's change over its span, to compare with its own price change.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from lakehouse.settings import Settings
from lakehouse.tables import GOLD_INCIDENTS, GOLD_MARKET_INCIDENTS
from pipelines.detection.incidents import CLOSED, INCIDENT_GAP_MINUTES, OPEN, advance, incident_id, opens, upsert
from pipelines.detection.maths import CONFIDENCE, CONFIRM_VOTES

MARKET, OWN = "market", "own"
MARKET_SYMBOL = "MARKET"  # the market incidents' ids and alert keys name it where a symbol's would stand


@dataclass(frozen=True)
class MarketConfig:
    window_minutes: int = 5  # confirmations this close count as one move: symbols do not all react in one minute
    min_symbols: int = 2
    min_share: float = 0.3  # of the symbols scored in the minute
    gap_minutes: int = INCIDENT_GAP_MINUTES

    @classmethod
    def from_settings(cls, settings: Settings) -> MarketConfig:
        return cls(settings.market_window_minutes, settings.market_min_symbols, settings.market_min_share)


def cross_section(scored: pd.DataFrame, config: MarketConfig) -> pd.DataFrame:
    """One row per minute of scored candles (symbol, open_time, votes, log_ret), sorted: active symbols, the market's
    median log return, the movers (sorted tuple), their highest votes in the window, and whether it is a market
    minute. A minute's movers look back window_minutes, so its first minutes need the window before them."""
    by_minute = scored.groupby("open_time")
    out = pd.DataFrame({"active": by_minute["symbol"].nunique(), "market_log_ret": by_minute["log_ret"].median()})
    confirmed = scored.loc[scored["votes"] >= CONFIRM_VOTES, ["symbol", "open_time", "votes"]]
    # Each confirmation makes its symbol a mover of the window_minutes that start with it.
    spread = pd.concat(
        [
            confirmed.assign(open_time=confirmed["open_time"] + pd.Timedelta(minutes=m))
            for m in range(config.window_minutes)
        ]
    )
    spread = spread[spread["open_time"].isin(out.index)]
    moved = spread.groupby("open_time").agg(movers=("symbol", lambda s: tuple(sorted(set(s)))), votes=("votes", "max"))
    out = out.join(moved)
    out["movers"] = [m if isinstance(m, tuple) else () for m in out["movers"]]
    out["votes"] = out["votes"].fillna(0).astype("int32")
    needed = np.maximum(config.min_symbols, np.ceil(config.min_share * out["active"]))
    out["is_market"] = out["movers"].map(len) >= needed
    return out.sort_index().rename_axis("open_time").reset_index()


def market_incidents(minutes: pd.DataFrame, config: MarketConfig) -> pd.DataFrame:
    """The market incidents of cross-section minutes (rows of cross_section), in GOLD_MARKET_INCIDENTS columns,
    sorted by start. An incident is closed once the newest minute lies more than gap_minutes after its last market
    minute. Minutes missing before the first one can cut an incident short: see MarketTracker."""
    newest = minutes["open_time"].max()
    market = minutes[minutes["is_market"]]
    if market.empty:
        return pd.DataFrame(columns=GOLD_MARKET_INCIDENTS.columns)
    as_spans = market.assign(symbol=MARKET_SYMBOL, start=market["open_time"], last_minute=market["open_time"])
    rows = []
    for _, span in market.groupby(opens(as_spans, config.gap_minutes).cumsum()):
        start, last = span["open_time"].iloc[0], span["open_time"].iloc[-1]
        symbols = sorted(set().union(*span["movers"]))
        peak = span.loc[span["votes"].idxmax()]
        over = minutes[(minutes["open_time"] >= start) & (minutes["open_time"] <= last)]
        rows.append(
            {
                "market_incident_id": incident_id(MARKET_SYMBOL, start),
                "start": start,
                "last_minute": last,
                "status": CLOSED if newest - last > pd.Timedelta(minutes=config.gap_minutes) else OPEN,
                "minutes": len(span),
                "symbols": ",".join(symbols),
                "symbol_count": len(symbols),
                "active_symbols": int(span["active"].max()),
                "peak_votes": int(peak["votes"]),
                "peak_confidence": CONFIDENCE[int(peak["votes"])],
                "peak_time": peak["open_time"],
                "market_change": float(np.expm1(over["market_log_ret"].sum())),
                "scored_through": newest,
            }
        )
    return pd.DataFrame(rows, columns=GOLD_MARKET_INCIDENTS.columns).astype(
        {"minutes": "int32", "symbol_count": "int32", "active_symbols": "int32", "peak_votes": "int32"}
    )


def mark(incidents: pd.DataFrame, minutes: pd.DataFrame, market: pd.DataFrame, config: MarketConfig) -> pd.DataFrame:
    """Symbol incidents (gold.incidents rows) with scope, market_incident_id and market_change from the cross-section
    minutes and the market incidents over them. An incident keeps the first market incident it was marked with (the
    evidence may have left the minutes, and a long one can meet two); the market's change is over the minutes the
    cross-section holds of its span with at least min_symbols scored (none: unknown)."""
    out = incidents.copy()
    market_minutes = minutes.loc[minutes["is_market"], ["open_time", "movers"]].explode("movers")
    market_minutes = market_minutes.rename(columns={"movers": "symbol"})
    # The market incident each market minute belongs to.
    spans = market[["market_incident_id", "start", "last_minute"]].astype(
        {"start": "datetime64[ns]", "last_minute": "datetime64[ns]"}
    )  # rows read back from Delta (microseconds) or none yet (objects)
    owner = pd.merge_asof(
        market_minutes.astype({"open_time": "datetime64[ns]"}).sort_values("open_time"),
        spans.sort_values("start"),
        left_on="open_time",
        right_on="start",
    )
    window = pd.Timedelta(minutes=config.window_minutes - 1)
    ids, changes = [], []
    for row in out.itertuples(index=False):
        mine = owner[
            (owner["symbol"] == row.symbol)
            & (owner["open_time"] >= row.start)
            & (owner["open_time"] - window <= row.last_minute)
            & (owner["open_time"] <= owner["last_minute"])
        ]
        first = mine["market_incident_id"].iloc[0] if len(mine) else None
        ids.append(row.market_incident_id if pd.notna(row.market_incident_id) else first)  # the first one it met
        span = (minutes["open_time"] >= row.start) & (minutes["open_time"] <= row.last_minute)
        over = minutes[span & (minutes["active"] >= config.min_symbols)]  # alone, a symbol is no market
        changes.append(float(np.expm1(over["market_log_ret"].sum())) if len(over) else row.market_change)
    out["market_incident_id"] = pd.Series(ids, index=out.index, dtype="object").where(pd.notna, None)
    out["scope"] = np.where(out["market_incident_id"].notna(), MARKET, OWN)
    out["market_change"] = pd.Series(changes, index=out.index, dtype="float64")
    return out


def period_incidents(scored: pd.DataFrame, config: MarketConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """gold.incidents and gold.market_incidents rows of a whole scored period (gold.scores rows), as the stream
    would have written them by its end: the seed and the measurements use it."""
    minutes = cross_section(scored, config)
    market = market_incidents(minutes, config)
    symbols = advance(pd.DataFrame(columns=GOLD_INCIDENTS.columns), scored, config.gap_minutes)
    return mark(symbols, minutes, market, config), market


CROSS_SECTION_COLUMNS = ["symbol", "open_time", "votes", "log_ret"]


class MarketTracker:
    """The stream's market incidents, micro-batch by micro-batch. Pure: the stream loads it and writes what it returns.

    It keeps the scored minutes (CROSS_SECTION_COLUMNS) since `since`: at least keep_minutes back, every minute of
    the batch, and back to the start of every open incident (market or a symbol's), plus one window and one gap
    before, so an open incident is recomputed whole at each batch and a minute's late candles still count. Market
    incidents that start in that margin may be cut short, so only the open ones (known to start later) and those
    starting after it are written.
    """

    def __init__(self, config: MarketConfig, keep_minutes: int = 120, max_minutes: int = 1440) -> None:
        self.config = config
        self.keep_minutes = keep_minutes
        self.max_minutes = max_minutes  # an incident open longer than a day is cut: memory stays bounded
        self.tail = pd.DataFrame(columns=CROSS_SECTION_COLUMNS)
        self.known = pd.DataFrame(columns=GOLD_MARKET_INCIDENTS.columns)  # written rows still in the tail
        self.minutes = cross_section(self.tail, config)

    def since(self, scored: pd.Series, open_starts: Iterable[pd.Timestamp]) -> pd.Timestamp:
        """Where the tail starts, given the minutes being scored (all of them are kept, however many: a replay can
        bring a day in one batch) and the starts of open incidents (those of the last max_minutes)."""
        newest = scored.max()
        starts = [s for s in map(pd.Timestamp, open_starts) if s >= newest - pd.Timedelta(minutes=self.max_minutes)]
        earliest = min([newest - pd.Timedelta(minutes=self.keep_minutes), scored.min(), *starts])
        return earliest - pd.Timedelta(minutes=self.config.window_minutes + self.config.gap_minutes)

    def load(self, tail: pd.DataFrame, known: pd.DataFrame) -> None:
        """After a start or a failed batch: scored minutes since `since` and the market incidents written."""
        self.tail, self.known = tail[CROSS_SECTION_COLUMNS], known

    def update(self, scored: pd.DataFrame, open_incidents: pd.DataFrame) -> pd.DataFrame:
        """Fold newly scored minutes in; the market incidents to upsert (new or changed). `open_incidents`: the
        symbols' open incidents (gold.incidents rows); one whose symbol has been silent for keep_minutes (halted,
        delisted) no longer holds the tail back."""
        config = self.config
        tail = pd.concat([t for t in (self.tail, scored[CROSS_SECTION_COLUMNS]) if not t.empty])
        tail = tail.drop_duplicates(["symbol", "open_time"])  # a replayed minute counts once
        newest = tail["open_time"].max()
        still_open = self.known.loc[self.known["status"] == OPEN]
        recent = open_incidents["last_minute"] >= newest - pd.Timedelta(minutes=self.keep_minutes)
        first = self.since(scored["open_time"], [*open_incidents.loc[recent, "start"], *still_open["start"]])
        self.tail = tail[tail["open_time"] >= first]
        self.minutes = cross_section(self.tail, config)
        found = market_incidents(self.minutes, config)
        whole = first + pd.Timedelta(minutes=config.window_minutes + config.gap_minutes)
        found = found[(found["start"] >= whole) | found["market_incident_id"].isin(still_open["market_incident_id"])]
        # An open incident that late minutes merged into an earlier one is closed where it stood.
        lost = still_open[~still_open["market_incident_id"].isin(found["market_incident_id"])]
        found = pd.concat([f for f in (found, lost.assign(status=CLOSED)) if not f.empty] or [found])
        out = found[~as_text(found).isin(set(as_text(self.known)))].reset_index(drop=True)
        known = upsert(self.known, out, "market_incident_id")
        self.known = known[known["last_minute"] >= first].reset_index(drop=True)
        return out

    def mark(self, incidents: pd.DataFrame) -> pd.DataFrame:
        """Symbol incidents marked from the tail (see `mark`)."""
        return mark(incidents, self.minutes, self.known, self.config)


def as_text(rows: pd.DataFrame) -> pd.Series:
    """Rows as comparable tuples of text, whatever the dtypes they were read back with (Delta vs pandas)."""
    return pd.Series([tuple(map(str, r)) for r in rows.itertuples(index=False)], index=rows.index, dtype="object")
