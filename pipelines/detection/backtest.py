"""The backtest: the detector over historical candles, trained on a period before the one it scores.

The same pure code as the stream (pipelines.detection.maths.score_after, pipelines.layers.gold.score_rows); only
the input differs.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import pandas as pd
from pyspark.sql import SparkSession

from lakehouse.delta_io import append, read_range, to_pandas
from lakehouse.settings import Settings
from lakehouse.tables import CANDLE_COLUMNS, GOLD_BACKTEST_SCORES, SILVER_CANDLES
from pipelines.detection.maths import DetectionConfig, score_after, train
from pipelines.layers.gold import score_rows

BACKTEST_THRESHOLDS_VERSION = 0  # thresholds trained by the backtest run itself, not a gold.thresholds version


@dataclass(frozen=True)
class Backtest:
    run_id: str
    scores: pd.DataFrame  # GOLD_BACKTEST_SCORES columns, the scored period only
    thresholds: pd.DataFrame  # one row per symbol, as pipelines.detection.maths.train returns them


def split_train(candles: pd.DataFrame, train_days: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per symbol: its first train_days of candles train, the rest is scored."""
    start = candles.groupby("symbol")["open_time"].transform("min")
    is_train = candles["open_time"] < start + pd.Timedelta(days=train_days)
    return candles[is_train], candles[~is_train]


def score_after_training(
    train_part: pd.DataFrame, scored_part: pd.DataFrame, config: DetectionConfig
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train on train_part, score scored_part with the last training candles as context; scored rows only."""
    thresholds = train(train_part, config).assign(version=BACKTEST_THRESHOLDS_VERSION)
    context = train_part.groupby("symbol", group_keys=False).tail(config.history_minutes)
    return score_after(context, scored_part, thresholds, config), thresholds


def run_backtest(candles: pd.DataFrame, config: DetectionConfig, train_days: float) -> Backtest:
    train_part, scored_part = split_train(candles[CANDLE_COLUMNS], train_days)
    if scored_part.empty:
        raise ValueError(f"nothing left to score after {train_days} training days")
    scored, thresholds = score_after_training(train_part, scored_part, config)
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
