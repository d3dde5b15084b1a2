"""Detection output -> rows of the gold tables (one conversion for the stream and the backtest)."""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd

from lakehouse.tables import GOLD_SCORES


def score_rows(scored: pd.DataFrame, detected_at: datetime | None = None) -> pd.DataFrame:
    """`pipelines.detection.score` output -> GOLD_SCORES columns and dtypes."""
    out = scored.copy()
    out["detected_at"] = (detected_at or datetime.now(UTC)).replace(tzinfo=None)
    if "kafka_timestamp" not in out:
        out["kafka_timestamp"] = pd.NaT
    out["open_date"] = out["open_time"].dt.date
    out["votes"] = out["votes"].astype("int32")
    out["win_count"] = out["win_count"].astype("int32")
    out["trades"] = out["trades"].astype("int64")
    out["thresholds_version"] = pd.to_numeric(out["thresholds_version"], errors="coerce").astype("Int64")
    out["confidence"] = out["confidence"].astype("object").where(out["confidence"].notna(), None)
    return out[GOLD_SCORES.columns]
