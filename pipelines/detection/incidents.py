"""Incidents: what a person is told about. One definition, used by the evaluation, the stream and the alerts.

An incident is a run of a symbol's confirmed minutes (votes >= CONFIRM_VOTES) in which consecutive confirmed
minutes are at most `gap_minutes` apart: the minutes of one market event (a move, its aftershocks, the window vote
that follows it) are one incident, and a new incident opens only after `gap_minutes` without a confirmation (the
cool-down). An incident is HIGH when any of its minutes had every vote.

`incidents` summarises a whole scored period (the evaluation); `advance` folds newly scored minutes into the
symbols' latest incidents (the stream): both group minutes with `opens`, so they agree on every period.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from lakehouse.tables import GOLD_INCIDENTS
from pipelines.detection.maths import CONFIDENCE, CONFIRM_VOTES

INCIDENT_GAP_MINUTES = 30  # the cool-down: a symbol's confirmations closer than this belong to one incident
INCIDENT_COLUMNS = ["symbol", "start", "end", "minutes", "peak_votes", "peak_confidence"]
OPEN, CLOSED = "open", "closed"


def opens(spans: pd.DataFrame, gap_minutes: int) -> pd.Series:
    """For spans (symbol, start, last_minute) sorted by symbol and start: whether each opens a new incident, i.e.
    whether it starts more than gap_minutes after the previous span of its symbol ended."""
    step = spans["start"] - spans.groupby("symbol")["last_minute"].shift()
    return step.isna() | (step > pd.Timedelta(minutes=gap_minutes))


def _confirmed(scored: pd.DataFrame) -> pd.DataFrame:
    """The confirmed minutes, sorted by symbol and time, each as a one-minute span."""
    confirmed = scored[scored["votes"] >= CONFIRM_VOTES].sort_values(["symbol", "open_time"], kind="stable")
    return confirmed.assign(start=confirmed["open_time"], last_minute=confirmed["open_time"])


def incidents(scored: pd.DataFrame, gap_minutes: int = INCIDENT_GAP_MINUTES) -> pd.DataFrame:
    """One row per incident of scored candles (symbol, open_time, votes): its symbol, first and last confirmed
    minute, number of confirmed minutes, and its peak votes and confidence. Sorted by symbol and start."""
    confirmed = _confirmed(scored[["symbol", "open_time", "votes"]])
    out = (
        confirmed.assign(incident=opens(confirmed, gap_minutes).cumsum())
        .groupby("incident")
        .agg(
            symbol=("symbol", "first"),
            start=("open_time", "min"),
            end=("open_time", "max"),
            minutes=("open_time", "size"),
            peak_votes=("votes", "max"),
        )
        .reset_index(drop=True)
    )
    out["peak_votes"] = out["peak_votes"].astype("int32")
    out["peak_confidence"] = out["peak_votes"].map(CONFIDENCE)
    return out[INCIDENT_COLUMNS]


def incident_id(symbol: str, start: pd.Timestamp) -> str:
    """Deterministic: a symbol has at most one incident starting at a minute, whoever computes it and how often."""
    return f"{symbol}-{start:%Y%m%dT%H%M}"


def _minute_spans(confirmed: pd.DataFrame) -> pd.DataFrame:
    """Each confirmed minute (a gold.scores row) as a one-minute incident, in GOLD_INCIDENTS' columns."""
    return pd.DataFrame(
        {
            "symbol": confirmed["symbol"],
            "start": confirmed["start"],
            "last_minute": confirmed["last_minute"],
            "minutes": 1,
            "peak_votes": confirmed["votes"],
            "peak_time": confirmed["open_time"],
            "peak_abs_z_ret": confirmed["z_ret"].abs(),
            "peak_z_range": confirmed["z_range"],
            "open_price": confirmed["open"],
            "close_price": confirmed["close"],
            "reasons": confirmed["reasons"],
            "thresholds_version": confirmed["thresholds_version"],
            "previous_last_minute": pd.NaT,
            "scope": "own",
            "market_incident_id": None,
        }
    )


def _merge(spans: pd.DataFrame) -> pd.Series:
    """Spans of one incident (sorted by start) as one: the peak minute is the first with the most votes, and its
    reasons and thresholds version are the incident's."""
    peak = spans.loc[spans["peak_votes"].idxmax()]
    return pd.Series(
        {
            "symbol": spans["symbol"].iloc[0],
            "start": spans["start"].iloc[0],
            "last_minute": spans["last_minute"].iloc[-1],
            "minutes": spans["minutes"].sum(),
            "peak_votes": peak["peak_votes"],
            "peak_time": peak["peak_time"],
            "peak_abs_z_ret": spans["peak_abs_z_ret"].max(),
            "peak_z_range": spans["peak_z_range"].max(),
            "open_price": spans["open_price"].iloc[0],
            "close_price": spans["close_price"].iloc[-1],
            "reasons": peak["reasons"],
            "thresholds_version": peak["thresholds_version"],
            "previous_last_minute": spans["previous_last_minute"].iloc[0],
            # Once with the market, always: the evidence may be older than what the stream still holds.
            "scope": spans["scope"].max(),  # "own" < "market"
            "market_incident_id": spans["market_incident_id"].dropna().iloc[0]
            if spans["market_incident_id"].notna().any()
            else None,
        }
    )


def advance(latest: pd.DataFrame, scored: pd.DataFrame, gap_minutes: int = INCIDENT_GAP_MINUTES) -> pd.DataFrame:
    """The gold.incidents rows to upsert after newly scored minutes (gold.scores rows).

    `latest`: each symbol's latest incident (gold.incidents rows, open or closed; none for a symbol without one).
    A symbol's minutes up to its latest incident's `scored_through` are already in it and are skipped, so a
    replayed batch changes nothing (the rows it returns are the same or none). An open incident takes the
    confirmed minutes that follow it within gap_minutes; the others open new incidents. An incident is closed once
    a scored minute of its symbol lies more than gap_minutes after its last confirmed minute. Returned: the
    incidents that opened, grew or closed (not those that only saw quiet minutes), sorted by symbol and start.
    """
    through = latest.set_index("symbol")["scored_through"]
    seen = pd.to_datetime(scored["symbol"].map(through))
    newer = scored[seen.isna() | (scored["open_time"] > seen)]
    if newer.empty:
        return incident_rows(latest.iloc[:0])
    newest = newer.groupby("symbol")["open_time"].max()
    still_open = latest[(latest["status"] == OPEN) & latest["symbol"].isin(newest.index)]
    parts = [still_open.assign(touched=False), _minute_spans(_confirmed(newer)).assign(touched=True)]
    parts = [p for p in parts if not p.empty]
    if not parts:
        return incident_rows(latest.iloc[:0])
    spans = pd.concat(parts, ignore_index=True)
    spans = spans.sort_values(["symbol", "start"], kind="stable").reset_index(drop=True)
    number = opens(spans, gap_minutes).cumsum()
    out = spans.groupby(number).apply(_merge, include_groups=False).reset_index(drop=True)
    out["touched"] = spans.groupby(number)["touched"].any().to_numpy()
    out["scored_through"] = out["symbol"].map(newest)
    out["status"] = (out["scored_through"] - out["last_minute"] > pd.Timedelta(minutes=gap_minutes)).map(
        {True: CLOSED, False: OPEN}
    )
    # The cool-down of alerts looks back at the symbol's incident before this one (an open one carries its own).
    spans_of = ["symbol", "start", "last_minute"]
    others = latest.loc[~latest["symbol"].isin(still_open["symbol"]), spans_of].assign(row=-1)
    known = pd.concat([p for p in (others, out[spans_of].assign(row=out.index)) if not p.empty])
    known = known.sort_values(["symbol", "start"], kind="stable")
    known["before"] = known.groupby("symbol")["last_minute"].shift()
    before = known[known["row"] >= 0].set_index("row")["before"]
    out["previous_last_minute"] = pd.to_datetime(out["previous_last_minute"]).fillna(before)
    return incident_rows(out[out["touched"] | (out["status"] == CLOSED)])


def upsert(rows: pd.DataFrame, changed: pd.DataFrame, key: str) -> pd.DataFrame:
    """`rows` with `changed` (same columns) merged on `key`, the changed row winning: a MERGE's result, in memory."""
    both = pd.concat([t for t in (rows, changed) if not t.empty] or [rows])
    return both.drop_duplicates(key, keep="last")


def latest_incidents(table: pd.DataFrame) -> pd.DataFrame:
    """Each symbol's latest incident (by start) among gold.incidents rows: what `advance` folds minutes into."""
    return table.sort_values(["symbol", "start"], kind="stable").groupby("symbol").tail(1).reset_index(drop=True)


def incident_rows(merged: pd.DataFrame) -> pd.DataFrame:
    """Merged incidents -> GOLD_INCIDENTS columns: id, confidence and the price change over the incident."""
    out = merged.reset_index(drop=True)
    out["incident_id"] = [incident_id(s, t) for s, t in zip(out["symbol"], out["start"], strict=True)]
    out["peak_votes"] = out["peak_votes"].astype("int32")
    out["minutes"] = out["minutes"].astype("int32")
    out["peak_confidence"] = out["peak_votes"].map(CONFIDENCE).astype("object")
    out["price_change"] = out["close_price"] / out["open_price"] - 1
    out["thresholds_version"] = pd.to_numeric(out["thresholds_version"], errors="coerce").astype("Int64")
    if "market_change" not in out:
        out["market_change"] = np.nan  # pipelines.detection.market.mark sets it, and the scope
    return out[GOLD_INCIDENTS.columns]
