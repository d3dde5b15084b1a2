"""Threshold training: silver candles of a trailing period -> a new version of gold.thresholds (+ a JSON copy).

get (silver) -> train (pure, pipelines.detection.maths) -> validate (drop degenerate symbols, then the GE contract
must pass) -> publish (append the version; nothing is written when validation fails).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from expectations.suites import thresholds_suite, validate
from lakehouse.delta_io import append, as_spark, log_version, read_range, read_table, to_pandas
from lakehouse.settings import Settings
from lakehouse.tables import CANDLE_COLUMNS, GOLD_THRESHOLDS, SILVER_CANDLES
from pipelines.detection.maths import POSITIVE_COLUMNS, THRESHOLD_COLUMNS, DetectionConfig, degenerate, train
from pipelines.layers.gold import thresholds_rows
from pipelines.streaming.failures import first_line

log = logging.getLogger(__name__)


class ThresholdsRejectedError(RuntimeError):
    pass


def trailing_candles(
    spark: SparkSession,
    settings: Settings,
    days: float,
    symbols: list[str] | None = None,
    until: datetime | None = None,
) -> DataFrame:
    """Per symbol, its candles from the last `days` days before its newest candle (before `until`, if given)."""
    silver = read_range(spark, settings, SILVER_CANDLES, symbols=symbols or None, end=until)
    newest = F.max("open_time").over(Window.partitionBy("symbol"))
    trailing = silver.withColumn("_newest", newest).filter(
        F.col("open_time") > F.col("_newest") - F.expr(f"INTERVAL {int(days * 1440)} MINUTES")
    )
    return trailing.select(*CANDLE_COLUMNS)


TRAINED_SCHEMA = (
    ", ".join(
        ["symbol string", *(f"{c} double" for c in THRESHOLD_COLUMNS), "train_start timestamp", "train_end timestamp"]
    )
    + ", train_rows long"
)


def train_per_symbol(candles: DataFrame, config: DetectionConfig) -> pd.DataFrame:
    """`train` run on each symbol's candles on the executors (a grouped pandas function): the driver receives one
    row per symbol, however many symbols and days (30 days of 2,000 symbols is 86 M candles)."""
    trained = candles.groupBy("symbol").applyInPandas(lambda group: train(group, config), TRAINED_SCHEMA)
    return to_pandas(trained)


def next_version(spark: SparkSession, settings: Settings) -> int:
    latest = read_table(spark, settings, GOLD_THRESHOLDS).agg(F.max("version")).first()[0]
    return int(latest or 0) + 1


@dataclass(frozen=True)
class TrainingResult:
    version: int
    thresholds: pd.DataFrame  # the published rows (GOLD_THRESHOLDS columns)
    rejected: pd.DataFrame  # symbols left out, with the reason
    json_path: Path


def train_thresholds(
    spark: SparkSession,
    settings: Settings,
    trained_by: str,
    days: float | None = None,
    symbols: list[str] | None = None,
    until: datetime | None = None,
) -> TrainingResult:
    config = DetectionConfig.from_settings(settings)
    trained = train_per_symbol(trailing_candles(spark, settings, days or settings.train_days, symbols, until), config)
    if trained.empty:
        raise ThresholdsRejectedError("no silver candles to train on: backfill some first")
    rejected = degenerate(trained, config)
    usable = trained[~trained["symbol"].isin(rejected["symbol"])]
    if usable.empty:
        raise ThresholdsRejectedError(f"every symbol's thresholds are degenerate:\n{rejected.to_string()}")

    version = next_version(spark, settings)
    rows = thresholds_rows(usable, config, version, trained_by, datetime.now(UTC))
    frame = as_spark(spark, GOLD_THRESHOLDS, rows)
    check = validate(frame, thresholds_suite(config.min_train_rows))
    if not check.success:
        raise ThresholdsRejectedError(f"thresholds v{version} failed their contract: {check.summary()}")
    # A table written before a statistic was added gets the new column (NULL in its old versions).
    append(spark, settings, GOLD_THRESHOLDS, frame, merge_schema=True)
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
    config = DetectionConfig.from_settings(settings)
    return usable_latest(to_pandas(_candidates(read_table(spark, settings, GOLD_THRESHOLDS), config)), config)


def _candidates(versions: DataFrame, config: DetectionConfig) -> DataFrame:
    """Per symbol, its rows from its newest surely usable one on: the older ones can never be used again, so they
    stay out of the driver (a nightly recalibration of 2,000 symbols adds 730,000 rows a year). The test here is
    stricter than `degenerate`, so the row `usable_latest` picks is always among these."""
    sure = F.col("train_rows") >= config.min_train_rows
    for column in THRESHOLD_COLUMNS:
        value = F.col(column)
        sure &= value.isNotNull() & ~F.isnan(value) & (F.abs(value) < float("inf"))
        sure &= value > 0 if column in POSITIVE_COLUMNS else F.lit(True)
    floor = F.max(F.when(sure, F.col("version"))).over(Window.partitionBy("symbol"))
    candidates = versions.withColumn("_floor", floor)
    return candidates.filter(F.col("_floor").isNull() | (F.col("version") >= F.col("_floor"))).drop("_floor")


def usable_latest(versions: pd.DataFrame, config: DetectionConfig) -> pd.DataFrame:
    """Per symbol, its row of the newest version that includes it and is usable. A symbol rejected in the last run
    keeps its previous thresholds; so does one whose newest row is degenerate (a corrupted or hand-edited version:
    NaN, negative, zero or infinite statistics), which is logged with the reason."""
    unusable = degenerate(versions, config, optional=("trades_center",))
    for row in unusable.itertuples():
        log.error("thresholds v%s of %s not used (%s); its previous version stays", row.version, row.symbol, row.reason)
    usable = versions.drop(index=unusable.index).sort_values(["symbol", "version"])
    return usable.groupby("symbol").tail(1).reset_index(drop=True)


class ThresholdsReader:
    """The latest thresholds, re-read only when gold.thresholds has a new commit: a recalibration is seen by the
    next micro-batch, and a batch without one pays a directory listing instead of a table scan."""

    def __init__(self) -> None:
        self.version: int | None = None
        self.frame = pd.DataFrame()

    def __call__(self, spark: SparkSession, settings: Settings) -> pd.DataFrame:
        version = log_version(spark, settings, GOLD_THRESHOLDS)
        if version != self.version:
            try:
                self.frame, self.version = latest_thresholds(spark, settings), version
            except Exception as error:
                if self.version is None:  # nothing to keep: the query stops and restarts
                    raise
                # A version that cannot be read (e.g. a corrupted file) leaves the last good one in force; it is
                # tried again at the next batch.
                log.error(
                    "thresholds v%s unreadable, keeping v%s: %s",
                    version,
                    self.version,
                    first_line(error),
                )
        return self.frame
