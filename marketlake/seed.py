"""A lake seeded from real candles without the stream: gold rows the backtest computes, for tests and benches of the
SQL endpoint and Superset, and the demo's dashboards."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
from pyspark.sql import SparkSession

from lakehouse.delta_io import append
from lakehouse.settings import Settings
from lakehouse.tables import (
    GOLD_INCIDENTS,
    GOLD_MARKET_INCIDENTS,
    GOLD_SCORES,
    GOLD_THRESHOLDS,
    SILVER_QUARANTINE,
    by_name,
)
from pipelines.detection.backtest import run_backtest
from pipelines.detection.market import MarketConfig, period_incidents
from pipelines.detection.maths import DetectionConfig
from pipelines.ingestion.archives import read_frame
from pipelines.layers.gold import thresholds_rows


def gold_sample(files: list[Path], days: float | None = None) -> dict[str, pd.DataFrame]:
    """gold.scores / gold.thresholds / gold.incidents / gold.market_incidents / silver.quarantine rows computed from
    real candles by the backtest."""

    frame = read_frame(files)
    if days:
        frame = frame[frame.open_time < frame.groupby("symbol").open_time.transform("min") + pd.Timedelta(days=days)]
    config = DetectionConfig()
    result = run_backtest(frame, config, train_days=2)
    now = datetime.now(UTC).replace(tzinfo=None)
    # One version per recalibration period, the number the scores carry, so scores join their thresholds.
    thresholds = pd.concat(
        thresholds_rows(trained.drop(columns="period"), config, int(period), "bench", now)
        for period, trained in result.thresholds.groupby("period")
    )
    quarantine = pd.DataFrame(
        {
            "source": "kafka",
            "symbol": ["FILUSDT", "NEARUSDT", None],
            "open_time": [now, now, None],
            "value": ['{"k": {"o": "x"}}', '{"k": {"o": -1}}', "not json"],
            "reason": ["open is not a number", "negative price", "unparseable JSON"],
            "topic": "marketlake.candles.1m",
            "partition": 0,
            "offset": [1, 2, 3],
            "quarantined_at": now,
        }
    )
    incidents, market_incidents = period_incidents(result.scores, MarketConfig())
    return {
        GOLD_SCORES.name: result.scores[GOLD_SCORES.columns],
        GOLD_THRESHOLDS.name: thresholds,
        GOLD_INCIDENTS.name: incidents,
        GOLD_MARKET_INCIDENTS.name: market_incidents,
        SILVER_QUARANTINE.name: quarantine[SILVER_QUARANTINE.columns],
    }


def write_tables(spark: SparkSession, settings: Settings, frames: dict[str, pd.DataFrame]) -> None:
    """Append each frame to its registry table."""
    for name, frame in frames.items():
        append(spark, settings, by_name(name), frame)
