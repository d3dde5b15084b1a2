"""Incidents: what a person is told about. One definition, used by the evaluation and by anything that alerts.

An incident is a run of a symbol's confirmed minutes (votes >= CONFIRM_VOTES) in which consecutive confirmed
minutes are at most `gap_minutes` apart: the minutes of one market event (a move, its aftershocks, the window vote
that follows it) are one incident, and a new incident opens only after `gap_minutes` without a confirmation (the
cool-down). An incident is HIGH when any of its minutes had every vote.
"""

from __future__ import annotations

import pandas as pd

from pipelines.detection.maths import CONFIDENCE, CONFIRM_VOTES

INCIDENT_GAP_MINUTES = 30  # the cool-down: a symbol's confirmations closer than this belong to one incident
INCIDENT_COLUMNS = ["symbol", "start", "end", "minutes", "peak_votes", "peak_confidence"]


def incidents(scored: pd.DataFrame, gap_minutes: int = INCIDENT_GAP_MINUTES) -> pd.DataFrame:
    """One row per incident of scored candles (symbol, open_time, votes): its symbol, first and last confirmed
    minute, number of confirmed minutes, and its peak votes and confidence. Sorted by symbol and start."""
    confirmed = scored.loc[scored["votes"] >= CONFIRM_VOTES, ["symbol", "open_time", "votes"]]
    confirmed = confirmed.sort_values(["symbol", "open_time"], kind="stable")
    step = confirmed.groupby("symbol")["open_time"].diff()
    opens = step.isna() | (step > pd.Timedelta(minutes=gap_minutes))
    out = (
        confirmed.assign(incident=opens.cumsum())
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
