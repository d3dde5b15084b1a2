"""The backtest: the detector over historical candles, recalibrated as production is (see walk_forward).

The same pure code as the stream and the training job (pipelines.detection.maths.train and score_after,
pipelines.layers.gold.score_rows); only the input differs. Thresholds versions in the scores are the backtest's own
period numbers (0, 1, ...), not gold.thresholds versions.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import UTC, datetime

import pandas as pd
from pyspark.sql import SparkSession

from lakehouse.delta_io import append, read_range, to_pandas
from lakehouse.settings import Settings
from lakehouse.tables import CANDLE_COLUMNS, GOLD_BACKTEST_SCORES, SILVER_CANDLES
from pipelines.detection.maths import DetectionConfig, score_after, train
from pipelines.layers.gold import score_rows


@dataclass(frozen=True)
class Backtest:
    run_id: str
    scores: pd.DataFrame  # GOLD_BACKTEST_SCORES columns, the scored period only
    thresholds: pd.DataFrame  # one row per symbol and period, as maths.train returns them, plus `period`


def split_train(candles: pd.DataFrame, train_days: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per symbol: its first train_days of candles train, the rest is scored."""
    start = candles.groupby("symbol")["open_time"].transform("min")
    is_train = candles["open_time"] < start + pd.Timedelta(days=train_days)
    return candles[is_train], candles[~is_train]


def period_starts(scored_part: pd.DataFrame, recalibrate_days: int) -> list[pd.Timestamp]:
    """Where each scoring period of one symbol begins: its first scored minute, then every `recalibrate_days`-th
    midnight (UTC) after it, as the nightly recalibration; one period only when recalibrate_days is 0."""
    first, last = scored_part["open_time"].min(), scored_part["open_time"].max()
    if not recalibrate_days:
        return [first]
    midnights = pd.date_range(first.floor("D") + pd.Timedelta(days=1), last, freq=f"{recalibrate_days}D")
    return [first, *midnights]


def train_periods(
    candles: pd.DataFrame, starts: list[pd.Timestamp], config: DetectionConfig, train_days: float
) -> pd.DataFrame:
    """One symbol's thresholds for each scoring period i (from starts[i] to starts[i+1]), trained (maths.train, as
    the training job) on its candles of the `train_days` before starts[i]; column `period` = i. A period without
    training candles gets no row."""
    times = candles["open_time"]
    periods = []
    for i, start in enumerate(starts):
        training = candles[(times >= start - pd.Timedelta(days=train_days)) & (times < start)]
        if not training.empty:
            periods.append(train(training, config).assign(period=i))
    return pd.concat(periods, ignore_index=True) if periods else pd.DataFrame(columns=["symbol", "period"])


def score_periods(
    candles: pd.DataFrame, starts: list[pd.Timestamp], thresholds: pd.DataFrame, config: DetectionConfig
) -> pd.DataFrame:
    """One symbol's candles scored from starts[0] on: period i (from starts[i] to starts[i+1]) with the thresholds
    of `period` i (see train_periods; thresholds_version = i), and the `history_minutes` candles before starts[i]
    as context, as the stream has them."""
    candles = candles.sort_values("open_time").reset_index(drop=True)
    times = candles["open_time"]
    bounds = [*starts, times.max() + pd.Timedelta(minutes=1)]
    scored = [
        score_after(
            candles[times < start].tail(config.history_minutes),
            candles[(times >= start) & (times < end)],
            thresholds[thresholds["period"] == i].drop(columns="period").assign(version=i),
            config,
        )
        for i, (start, end) in enumerate(itertools.pairwise(bounds))
    ]
    return pd.concat(scored, ignore_index=True).sort_values("open_time").reset_index(drop=True)


def walk_forward(
    candles: pd.DataFrame, config: DetectionConfig, train_days: float, recalibrate_days: int = 1
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Production replayed: per symbol, its first `train_days` only train; after them, each period (a day, or
    `recalibrate_days` days; 0: everything, trained once) is scored with thresholds trained on the `train_days`
    before it. Returns the scored candles (those of periods without thresholds get "no thresholds") and the
    thresholds of every period. The one function of `marketlake backtest` and `marketlake evaluate`."""
    scored, thresholds = [], []
    for _, group in candles.groupby("symbol", sort=True):
        _, scored_part = split_train(group, train_days)
        if scored_part.empty:
            continue
        starts = period_starts(scored_part, recalibrate_days)
        trained = train_periods(group, starts, config, train_days)
        scored.append(score_periods(group, starts, trained, config))
        thresholds.append(trained)
    if not scored:
        raise ValueError(f"nothing left to score after {train_days} training days")
    return pd.concat(scored, ignore_index=True), pd.concat(thresholds, ignore_index=True)


def run_backtest(
    candles: pd.DataFrame, config: DetectionConfig, train_days: float, recalibrate_days: int = 1
) -> Backtest:
    scored, thresholds = walk_forward(candles[CANDLE_COLUMNS], config, train_days, recalibrate_days)
    run_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    scores = score_rows(scored).assign(run_id=run_id)[GOLD_BACKTEST_SCORES.columns]
    return Backtest(run_id, scores.reset_index(drop=True), thresholds)


def silver_candles(
    spark: SparkSession, settings: Settings, start: datetime, end: datetime, train_days: float
) -> pd.DataFrame:
    """Silver candles from train_days before start up to end, for a backtest over a date range of silver."""
    first = pd.Timestamp(start) - pd.Timedelta(days=train_days)
    return to_pandas(read_range(spark, settings, SILVER_CANDLES, first=first, end=end, columns=CANDLE_COLUMNS))


def write_delta(spark: SparkSession, settings: Settings, backtest: Backtest) -> int:
    append(spark, settings, GOLD_BACKTEST_SCORES, backtest.scores)
    return len(backtest.scores)


def write_csv(backtest: Backtest, path: str) -> None:
    """One row per scored candle; times in epoch milliseconds like Binance's own files."""
    out = backtest.scores.copy()
    for column in ("open_time", "close_time"):
        out[column] = out[column].astype("datetime64[ms]").astype("int64")
    out.to_csv(path, index=False)


def summary(backtest: Backtest) -> pd.DataFrame:
    scores = backtest.scores
    return (
        scores.groupby("symbol")
        .agg(
            scored=("open_time", "size"),
            first=("open_time", "min"),
            last=("open_time", "max"),
            low=("confidence", lambda c: int((c == "LOW").sum())),
            medium=("confidence", lambda c: int((c == "MEDIUM").sum())),
            high=("confidence", lambda c: int((c == "HIGH").sum())),
            confirmed=("is_anomaly", "sum"),
        )
        .reset_index()
    )
