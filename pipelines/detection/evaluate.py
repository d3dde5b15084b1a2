"""How good is the detector? Incidents per day on real data, and the recall of planted single-candle shocks.

Per symbol, the first `train_days` of candles only train; everything after is scored. With `recalibrate_daily`
(the default, as the nightly recalibration does in production) each scored day is scored with thresholds trained
on the `train_days` before it; otherwise one threshold set, trained on the first `train_days`, scores everything.
Every scored period gets the `history_minutes` candles before it as context, as the stream does. Thresholds are
trained on the real candles only; the shocked copies are scored with them.

An incident is a run of confirmed minutes whose gaps are at most `incident_gap_minutes`. A planted shock moves one
candle's close by k times sigma, the std of that symbol's 1-minute returns over the scored period (and stretches
high/low to keep the candle valid); it is caught when a confirmed anomaly is raised at its minute or within the
next `catch_minutes`. Shocks are spaced `shock_spacing_minutes` apart, more than the detector's history_minutes,
so that no shock is in another one's trailing windows or volatility: every shock is an independent trial, and the
denser they are, the smaller the recall's sampling error (61 minutes: about 500 shocks in 3 weeks).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipelines.detection.backtest import split_train
from pipelines.detection.maths import DetectionConfig, features, score_after, train


@dataclass(frozen=True)
class EvaluationConfig:
    train_days: float = 7.0
    recalibrate_daily: bool = True
    shock_sizes: tuple[float, ...] = (4.0, 6.0, 8.0)
    shock_spacing_minutes: int = 61  # more than the detector's history_minutes: no shock sees another
    catch_minutes: int = 2
    incident_gap_minutes: int = 5
    seed: int = 7


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


def train_periods(
    candles: pd.DataFrame, starts: list[pd.Timestamp], detection: DetectionConfig, train_days: float
) -> pd.DataFrame:
    """One symbol's thresholds for each scoring period i (from starts[i] to starts[i+1]), trained on its candles of
    the `train_days` before starts[i]; column `period` = i. A period without training candles gets no row."""
    times = candles["open_time"]
    periods = []
    for i, start in enumerate(starts):
        training = candles[(times >= start - pd.Timedelta(days=train_days)) & (times < start)]
        if not training.empty:
            periods.append(train(training, detection).assign(period=i))
    return pd.concat(periods, ignore_index=True) if periods else pd.DataFrame(columns=["symbol", "period"])


def score_periods(
    candles: pd.DataFrame, starts: list[pd.Timestamp], thresholds: pd.DataFrame, detection: DetectionConfig
) -> pd.DataFrame:
    """One symbol's candles scored from starts[0] on: period i (from starts[i] to starts[i+1]) with the thresholds
    of `period` i (see train_periods), and the `history_minutes` candles before starts[i] as context."""
    candles = candles.sort_values("open_time").reset_index(drop=True)
    times = candles["open_time"]
    bounds = [*starts, times.max() + pd.Timedelta(minutes=1)]
    scored = [
        score_after(
            candles[times < start].tail(detection.history_minutes),
            candles[(times >= start) & (times < end)],
            thresholds[thresholds["period"] == i].drop(columns="period").assign(version=i),
            detection,
        )
        for i, (start, end) in enumerate(itertools.pairwise(bounds))
    ]
    return pd.concat(scored, ignore_index=True).sort_values("open_time").reset_index(drop=True)


def evaluate(candles: pd.DataFrame, detection: DetectionConfig, config: EvaluationConfig) -> pd.DataFrame:
    """One row per symbol with candles after its training days: days scored, confirmed and HIGH incidents per day,
    recall of each shock size.

    Only periods that have thresholds count: with `recalibrate_daily`, a day with no candles in the `train_days`
    before it (e.g. a coin relisted after a long halt) is left out rather than scored blind."""
    if config.shock_spacing_minutes <= detection.history_minutes:
        raise ValueError(
            f"shock_spacing_minutes={config.shock_spacing_minutes} must exceed history_minutes="
            f"{detection.history_minutes}, or shocks would see each other"
        )
    rows = []
    for symbol, group in candles.groupby("symbol", sort=True):
        train_part, scored_part = split_train(group, config.train_days)
        if scored_part.empty:
            continue  # nothing after the training days
        first = scored_part["open_time"].min()
        starts = [first]
        if config.recalibrate_daily:
            starts += sorted(set(scored_part["open_time"].dt.floor("D")) - {first.floor("D")})
        thresholds = train_periods(group, starts, detection, config.train_days)
        scored = score_periods(group, starts, thresholds, detection)
        scored = scored[scored["thresholds_version"].notna()]
        covered = scored_part["open_time"].isin(scored["open_time"])
        days = covered.sum() / 1440
        row = {
            "symbol": symbol,
            "days": round(days, 1),
            "incidents_per_day": incidents(scored.loc[scored["is_anomaly"], "open_time"], config.incident_gap_minutes)
            / days,
            "high_per_day": incidents(scored.loc[scored["votes"] == 3, "open_time"], config.incident_gap_minutes)
            / days,
        }
        sigma = float(features(scored_part[covered])["ret"].std(ddof=0))
        rng = np.random.default_rng(config.seed)
        for k in config.shock_sizes:
            shocked, times = plant_shocks(scored_part[covered], k, sigma, config.shock_spacing_minutes, rng)
            rescored = score_periods(
                pd.concat([train_part, scored_part[~covered], shocked]), starts, thresholds, detection
            )
            row[f"recall_{k:g}sigma"] = recall(rescored, times, config.catch_minutes)
        rows.append(row)
    recalls = [f"recall_{k:g}sigma" for k in config.shock_sizes]
    return pd.DataFrame(rows, columns=["symbol", "days", "incidents_per_day", "high_per_day", *recalls])


def evaluate_files(
    frames: dict[str, pd.DataFrame], detection: DetectionConfig, config: EvaluationConfig
) -> pd.DataFrame:
    """evaluate() on each named set of candles (e.g. one kline file each): one row per name and symbol."""
    tables = [evaluate(frame, detection, config).assign(file=name) for name, frame in frames.items()]
    table = pd.concat([t for t in tables if len(t)] or tables[:1], ignore_index=True)  # skip the empty ones
    return table[["file", *table.columns.drop("file")]]
