"""Threshold training: silver candles of a trailing period -> a new version of gold.thresholds (+ a JSON copy).

get (silver) -> train (pure, pipelines.detection) -> validate (drop degenerate symbols, then the GE contract
must pass) -> publish (append the version; nothing is written when validation fails).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from expectations.suites import thresholds_suite, validate
from lakehouse.delta_io import read_table
from lakehouse.settings import Settings
from lakehouse.tables import GOLD_THRESHOLDS, SILVER_CANDLES
from pipelines.detection import CANDLE_COLUMNS, DetectionConfig, degenerate, train

log = logging.getLogger(__name__)


class ThresholdsRejectedError(RuntimeError):
    pass


def detection_config(settings: Settings) -> DetectionConfig:
    overrides = {
        "k": settings.detection_k,
        "window_minutes": settings.detection_window_minutes,
        "robust": settings.detection_robust,
    }
    return replace(DetectionConfig(), **{k: v for k, v in overrides.items() if v is not None})


def trailing_candles(
    spark: SparkSession,
    settings: Settings,
    days: float,
    symbols: list[str] | None = None,
    until: datetime | None = None,
) -> DataFrame:
    """Per symbol, its candles from the last `days` days before its newest candle (before `until`, if given)."""
    silver = read_table(spark, settings, SILVER_CANDLES)
    if symbols:
        silver = silver.filter(F.col("symbol").isin(symbols))
    if until:
        silver = silver.filter(F.col("open_time") < F.lit(until))
    newest = F.max("open_time").over(Window.partitionBy("symbol"))
    return (
        silver.withColumn("_newest", newest)
        .filter(F.col("open_time") > F.col("_newest") - F.expr(f"INTERVAL {int(days * 1440)} MINUTES"))
        .select(*CANDLE_COLUMNS)
    )


def to_pandas(candles: DataFrame) -> pd.DataFrame:
    frame = candles.toPandas()
    return frame.sort_values(["symbol", "open_time"]).reset_index(drop=True)


def next_version(spark: SparkSession, settings: Settings) -> int:
    latest = read_table(spark, settings, GOLD_THRESHOLDS).agg(F.max("version")).first()[0]
    return int(latest or 0) + 1


@dataclass(frozen=True)
class TrainingResult:
    version: int
    thresholds: pd.DataFrame  # the published rows (GOLD_THRESHOLDS columns)
    rejected: pd.DataFrame  # symbols left out, with the reason
    json_path: Path


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
        trained_at=trained_at.replace(tzinfo=None),
        trained_by=trained_by,
    )
    return rows[GOLD_THRESHOLDS.columns]


def train_thresholds(
    spark: SparkSession,
    settings: Settings,
    trained_by: str,
    days: float | None = None,
    symbols: list[str] | None = None,
    until: datetime | None = None,
) -> TrainingResult:
    config = detection_config(settings)
    candles = to_pandas(trailing_candles(spark, settings, days or settings.train_days, symbols, until))
    if candles.empty:
        raise ThresholdsRejectedError("no silver candles to train on: backfill some first")
    trained = train(candles, config)
    rejected = degenerate(trained, config)
    usable = trained[~trained["symbol"].isin(rejected["symbol"])]
    if usable.empty:
        raise ThresholdsRejectedError(f"every symbol's thresholds are degenerate:\n{rejected.to_string()}")

    version = next_version(spark, settings)
    rows = thresholds_rows(usable, config, version, trained_by, datetime.now(UTC))
    frame = spark.createDataFrame(rows, GOLD_THRESHOLDS.schema)
    check = validate(frame, thresholds_suite(config.min_train_rows))
    if not check.success:
        raise ThresholdsRejectedError(f"thresholds v{version} failed their contract: {check.summary()}")
    # mergeSchema: a table written before a statistic was added gets the new column (NULL in its old versions).
    frame.write.format("delta").mode("append").option("mergeSchema", "true").save(GOLD_THRESHOLDS.location(settings))
    return TrainingResult(version, rows, rejected[["symbol", "reason"]], export_json(settings, rows))


def export_json(settings: Settings, rows: pd.DataFrame) -> Path:
    """A readable copy for people: <home>/thresholds/v<N>.json and latest.json."""
    folder = Path(settings.home) / "thresholds"
    folder.mkdir(parents=True, exist_ok=True)
    version = int(rows["version"].iloc[0])
    records = json.loads(rows.to_json(orient="records", date_format="iso"))
    document = {"version": version, "thresholds": {r.pop("symbol"): r for r in records}}
    path = folder / f"v{version}.json"
    path.write_text(json.dumps(document, indent=2))
    (folder / "latest.json").write_text(json.dumps(document, indent=2))
    return path


def latest_thresholds(spark: SparkSession, settings: Settings) -> pd.DataFrame:
    """Per symbol, the row of the newest usable version that includes it (see `usable_latest`)."""
    return usable_latest(read_table(spark, settings, GOLD_THRESHOLDS).toPandas(), detection_config(settings))


def usable_latest(versions: pd.DataFrame, config: DetectionConfig) -> pd.DataFrame:
    """Per symbol, its row of the newest version that includes it and is usable. A symbol rejected in the last run
    keeps its previous thresholds; so does one whose newest row is degenerate (a corrupted or hand-edited version:
    NaN, negative, zero or infinite statistics), which is logged with the reason."""
    unusable = degenerate(versions, config, optional=("trades_center",))
    for row in unusable.itertuples():
        log.error("thresholds v%s of %s not used (%s); its previous version stays", row.version, row.symbol, row.reason)
    usable = versions.drop(index=unusable.index).sort_values(["symbol", "version"])
    return usable.groupby("symbol").tail(1).reset_index(drop=True)
