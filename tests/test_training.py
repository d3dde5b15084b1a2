"""Threshold training on real Delta tables: a new version per run, older tables evolve without losing a row."""

from datetime import UTC, date, datetime

import pandas as pd

from lakehouse.delta_io import read_table, to_pandas
from lakehouse.spark import ensure_tables
from lakehouse.tables import GOLD_THRESHOLDS, REGISTRY
from pipelines.detection.maths import DetectionConfig, score, train
from pipelines.detection.thresholds import trailing_candles, train_thresholds
from pipelines.ingestion.backfill import LocalArchives, backfill_day
from pipelines.layers.gold import thresholds_rows
from tests.conftest import SAMPLE

ADDED_LATER = ["trades_center", "activity_free", "activity_cap", "scale_quantile"]


def test_training_appends_to_a_thresholds_table_written_before_the_activity_statistic(spark, settings):
    ensure_tables(spark, settings, tables=tuple(t for t in REGISTRY if t is not GOLD_THRESHOLDS))
    backfill_day(spark, settings, LocalArchives(SAMPLE), "NEARUSDT", date(2023, 9, 1))
    candles = to_pandas(trailing_candles(spark, settings, days=1))
    # Version 1 as an older release wrote it: a table without the activity columns.
    config = DetectionConfig()
    old = thresholds_rows(train(candles, config), config, 1, "old release", datetime.now(UTC))
    location = GOLD_THRESHOLDS.location(settings)
    spark.createDataFrame(old, GOLD_THRESHOLDS.schema).drop(*ADDED_LATER).write.format("delta").mode("overwrite").save(
        location
    )
    ensure_tables(spark, settings)

    new = train_thresholds(spark, settings, trained_by="test", days=1)

    table = read_table(spark, settings, GOLD_THRESHOLDS).toPandas().set_index("version")
    assert sorted(table.index) == [1, 2] and new.version == 2
    assert table.loc[1, ADDED_LATER].isna().all()  # the old version is kept, its new statistics unknown
    assert table.loc[2, "trades_center"] > 0
    # Thresholds without a typical trade count score without the activity ratio (as the old release did).
    with_old = score(candles, table.loc[[1]].reset_index(), config)
    unlimited = score(candles, table.loc[[1]].reset_index(), DetectionConfig(activity_cap=1.0))
    pd.testing.assert_series_equal(with_old["z_ret"], unlimited["z_ret"])
