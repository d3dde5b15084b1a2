"""How good is the detector? Incidents per day on real data, and the recall of planted single-candle shocks.

An incident is a run of confirmed minutes whose gaps are at most `incident_gap_minutes`. A planted shock moves one
candle's close by k times that symbol's 1-minute return std (and stretches high/low to keep the candle valid);
it is caught when a confirmed anomaly is raised at its minute or within the next `catch_minutes`.
Shocks are spaced `shock_spacing_minutes` apart so that no two share a trailing window.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipelines.detection import DetectionConfig, features, score, train


@dataclass(frozen=True)
class EvaluationConfig:
    train_days: float = 7.0
    shock_sizes: tuple[float, ...] = (4.0, 6.0, 8.0)
    shock_spacing_minutes: int = 120
    catch_minutes: int = 2
    incident_gap_minutes: int = 5
    seed: int = 7


def split_train(candles: pd.DataFrame, train_days: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per symbol: the first train_days of its candles train, the rest is scored."""
    start = candles.groupby("symbol")["open_time"].transform("min")
    is_train = candles["open_time"] < start + pd.Timedelta(days=train_days)
    return candles[is_train], candles[~is_train]


def incidents(minutes: pd.Series, gap_minutes: int) -> int:
    """Number of runs in sorted confirmed minutes, where a gap of <= gap_minutes continues the run."""
    if minutes.empty:
        return 0
    steps = minutes.sort_values().diff().dt.total_seconds().div(60)
    return int((steps.isna() | (steps > gap_minutes)).sum())


def plant_shocks(
    candles: pd.DataFrame, k: float, sigma: float, spacing: int, rng: np.random.Generator
) -> tuple[pd.DataFrame, pd.Series]:
    """One symbol's candles with a shock every `spacing` minutes (random sign, random offset); returns the
    changed candles and the shocked open_times."""
    out = candles.sort_values("open_time").reset_index(drop=True)
    first = int(rng.integers(0, spacing))
    positions = np.arange(first, len(out), spacing)
    signs = rng.choice([-1.0, 1.0], size=len(positions))
    idx = out.index[positions]
    close = out.loc[idx, "close"] + signs * k * sigma * out.loc[idx, "open"]
    out.loc[idx, "close"] = close
    out.loc[idx, "high"] = np.maximum(out.loc[idx, "high"], close)
    out.loc[idx, "low"] = np.minimum(out.loc[idx, "low"], close)
    return out, out.loc[idx, "open_time"]


def recall(scored: pd.DataFrame, shocks: pd.Series, catch_minutes: int) -> float:
    confirmed = set(scored.loc[scored["is_anomaly"], "open_time"])
    caught = sum(
        any(t + pd.Timedelta(minutes=m) in confirmed for m in range(catch_minutes + 1)) for t in shocks
    )  # fmt: skip
    return caught / len(shocks) if len(shocks) else float("nan")


def evaluate(candles: pd.DataFrame, detection: DetectionConfig, config: EvaluationConfig) -> pd.DataFrame:
    """One row per symbol: days scored, confirmed and HIGH incidents per day, recall of each shock size."""
    rows = []
    for symbol, group in candles.groupby("symbol", sort=True):
        train_part, scored_part = split_train(group, config.train_days)
        thresholds = train(train_part, detection).assign(version=0)
        context = train_part.tail(detection.history_minutes)
        scored = score(pd.concat([context, scored_part]), thresholds, detection)
        scored = scored[scored["open_time"] >= scored_part["open_time"].min()]
        days = len(scored_part) / 1440
        row = {
            "symbol": symbol,
            "days": round(days, 1),
            "incidents_per_day": incidents(scored.loc[scored["is_anomaly"], "open_time"], config.incident_gap_minutes)
            / days,
            "high_per_day": incidents(scored.loc[scored["votes"] == 3, "open_time"], config.incident_gap_minutes)
            / days,
        }
        sigma = float(features(scored_part)["ret"].std(ddof=0))
        rng = np.random.default_rng(config.seed)
        for k in config.shock_sizes:
            shocked, times = plant_shocks(scored_part, k, sigma, config.shock_spacing_minutes, rng)
            rescored = score(pd.concat([context, shocked]), thresholds, detection)
            row[f"recall_{k:g}sigma"] = recall(rescored, times, config.catch_minutes)
        rows.append(row)
    return pd.DataFrame(rows)
