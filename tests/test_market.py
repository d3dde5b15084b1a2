"""Market incidents (pipelines.detection.market): the cross-section of a minute, market incidents, symbols' incidents
marked as moving with the market or on their own, the stream's tracker batch by batch, and the 2025-02-03 crash day
of the bundled sample. Pure pandas."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lakehouse.tables import GOLD_MARKET_INCIDENTS
from pipelines.alerts.events import alerts_of
from pipelines.detection.incidents import CLOSED, OPEN, advance
from pipelines.detection.market import (
    MARKET,
    OWN,
    MarketConfig,
    MarketTracker,
    cross_section,
    market_incidents,
    period_incidents,
)
from tests.test_incidents import NONE, at, scored
from tests.test_incidents import crash_day as crash_day  # a fixture

CONFIG = MarketConfig(window_minutes=3, min_symbols=2, min_share=0.3, gap_minutes=5)


def minutes(symbol: str, votes: dict[int, int], log_ret: float = 0.001) -> pd.DataFrame:
    return scored(symbol, votes).assign(log_ret=log_ret)


def market_of(*symbols: str, last: int = 20, moves: dict[str, dict[int, int]] | None = None) -> pd.DataFrame:
    """Quiet minutes 0..last of each symbol, with `moves` ({symbol: {minute: votes}}) on top."""
    frames = []
    for symbol in symbols:
        votes = dict.fromkeys(range(last + 1), 0) | (moves or {}).get(symbol, {})
        frames.append(minutes(symbol, votes))
    return pd.concat(frames, ignore_index=True)


def test_a_market_minute_needs_min_symbols_and_min_share_of_the_active_ones_within_the_window():
    # Four symbols: A at 5 and B at 7 (within 3 minutes of each other), C alone at 15.
    rows = market_of("A", "B", "C", "D", moves={"A": {5: 2}, "B": {7: 3}, "C": {15: 2}})
    out = cross_section(rows, CONFIG).set_index("open_time")
    assert out.loc[at(7), "movers"] == ("A", "B") and out.loc[at(7), "votes"] == 3
    assert out.index[out["is_market"]].tolist() == [at(7)]  # at 8, A's confirmation has left the window
    assert out.loc[at(15), "movers"] == ("C",) and not out.loc[at(15), "is_market"]
    assert out["active"].eq(4).all() and out["market_log_ret"].eq(0.001).all()
    # Among ten symbols two movers are not 30 %.
    ten = market_of(*"ABCDEFGHIJ", moves={"A": {5: 2}, "B": {7: 3}})
    assert not cross_section(ten, CONFIG)["is_market"].any()


def test_market_incidents_merge_market_minutes_and_name_their_symbols():
    rows = market_of("A", "B", "C", last=16, moves={"A": {2: 2, 10: 2}, "B": {2: 2}, "C": {11: 3}})
    found = market_incidents(cross_section(rows, CONFIG), CONFIG)
    assert found.columns.tolist() == GOLD_MARKET_INCIDENTS.columns
    # 2..4 (A, B) and 11..12 (A, C) are 7 minutes apart: two incidents with a 5-minute gap.
    assert found["market_incident_id"].tolist() == ["MARKET-20240101T0002", "MARKET-20240101T0011"]
    assert found["symbols"].tolist() == ["A,B", "A,C"] and found["peak_confidence"].tolist() == ["MEDIUM", "HIGH"]
    assert found["status"].tolist() == [CLOSED, OPEN]  # the newest minute (16) is 4 after 12, 12 after 4
    assert found["market_change"].iloc[0] == pytest.approx(np.expm1(3 * 0.001))  # minutes 2, 3 and 4


def test_a_symbol_moving_with_the_market_is_marked_so_and_one_against_a_calm_market_is_its_own():
    rows = market_of("A", "B", "C", moves={"A": {2: 2}, "B": {3: 2}, "C": {12: 3}})
    symbols, market = period_incidents(rows, CONFIG)
    marks = symbols.set_index("symbol")[["scope", "market_incident_id"]]
    assert marks.to_dict("index") == {
        "A": {"scope": MARKET, "market_incident_id": "MARKET-20240101T0003"},
        "B": {"scope": MARKET, "market_incident_id": "MARKET-20240101T0003"},
        "C": {"scope": OWN, "market_incident_id": None},
    }
    assert symbols["market_change"].notna().all()
    # One market alert for A and B; C's own.
    alerts = alerts_of(symbols, cooldown_minutes=0, market=market)
    assert [(a.symbol, a.incident_id) for a in alerts] == [("MARKET", "MARKET-20240101T0003"), ("C", "C-20240101T0012")]
    assert "2 of 3 symbols moved together (A, B); market +0.20% since 00:03" in alerts[0].message


def fold(batches: list[pd.DataFrame], tracker: MarketTracker) -> tuple[pd.DataFrame, pd.DataFrame]:
    """gold.incidents and gold.market_incidents after each batch, as the stream upserts them."""
    incidents, market = NONE, pd.DataFrame(columns=GOLD_MARKET_INCIDENTS.columns)
    for batch in batches:
        latest = incidents.sort_values("start").groupby("symbol").tail(1)
        changed = advance(latest, batch, tracker.config.gap_minutes)
        merged = pd.concat([t for t in (incidents, changed) if not t.empty] or [incidents])
        merged = merged.drop_duplicates("incident_id", keep="last")
        newest = merged.sort_values("start").groupby("symbol").tail(1)
        found = tracker.update(batch, newest[newest["status"] == OPEN])
        market = pd.concat([t for t in (market, found) if not t.empty] or [market])
        market = market.drop_duplicates("market_incident_id", keep="last")
        incidents = tracker.mark(merged) if not merged.empty else merged
    return incidents.sort_values(["symbol", "start"]).reset_index(drop=True), market.reset_index(drop=True)


def test_the_tracker_batch_by_batch_agrees_with_the_whole_period_and_a_replay_changes_nothing(crash_day):
    day = crash_day[crash_day["open_time"] >= "2025-02-03"]
    config = MarketConfig()
    symbols, market = period_incidents(day, config)
    tracker = MarketTracker(config)
    hours = day["open_time"].dt.floor("15min")
    folded, folded_market = fold([day[hours == h] for h in sorted(hours.unique())], tracker)
    columns = ["incident_id", "status", "scope", "market_incident_id"]
    assert folded[columns].values.tolist() == symbols.sort_values(["symbol", "start"])[columns].values.tolist()
    assert folded_market.drop(columns="scored_through").equals(market.drop(columns="scored_through"))
    assert tracker.update(day[hours == hours.max()], NONE).empty  # the last batch again


def test_on_the_crash_day_both_symbols_fall_with_the_market_and_are_told_once(crash_day):
    day = crash_day[crash_day["open_time"] >= "2025-02-03"]
    symbols, market = period_incidents(day, MarketConfig())
    crash = market[market["peak_time"] == pd.Timestamp("2025-02-03 01:54")].iloc[0]
    assert (crash["symbols"], crash["peak_confidence"], crash["status"]) == ("FILUSDT,NEARUSDT", "HIGH", CLOSED)
    assert crash["market_change"] < -0.1
    at_crash = symbols[symbols["market_incident_id"] == crash["market_incident_id"]]
    assert at_crash["symbol"].tolist() == ["FILUSDT", "NEARUSDT"] and (at_crash["scope"] == MARKET).all()
    alerts = alerts_of(symbols, 0, market=market)
    told = [(a.incident_id, a.kind) for a in alerts if a.incident_id.startswith("MARKET-20250203T01")]
    assert told == [(crash["market_incident_id"], "opened"), (crash["market_incident_id"], "escalated")]
    assert not any(a.incident_id in at_crash["incident_id"].tolist() for a in alerts)
