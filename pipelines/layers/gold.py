"""The gold layer: detection output -> rows of the gold tables, in their columns and types (one conversion for the
stream, the backtest and the training)."""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd

from lakehouse.tables import GOLD_SCORES, GOLD_THRESHOLDS
from pipelines.detection.maths import DetectionConfig


def score_rows(scored: pd.DataFrame, detected_at: datetime | None = None) -> pd.DataFrame:
    """`pipelines.detection.maths.score` output -> GOLD_SCORES columns and dtypes."""
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


def thresholds_rows(
    trained: pd.DataFrame, config: DetectionConfig, version: int, trained_by: str, trained_at: datetime
) -> pd.DataFrame:
    rows = trained.assign(
        version=version,
        # The detection settings the version was trained for, so its scores can be reproduced from the table.
        k=float(config.k),
        k_range=float(config.k_range),
        robust=bool(config.robust),
        window_minutes=int(config.window_minutes),
        vol_minutes=int(config.vol_minutes),
        vol_floor=float(config.vol_floor),
        vol_cap=float(config.vol_cap),
        activity_free=float(config.activity_free),
        activity_cap=float(config.activity_cap),
        scale_quantile=float(config.scale_quantile),
        trained_at=trained_at.replace(tzinfo=None),
        trained_by=trained_by,
    )
    return rows[GOLD_THRESHOLDS.columns]
