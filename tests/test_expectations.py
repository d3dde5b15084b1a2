"""The table contracts, run by Great Expectations on real Spark DataFrames."""

from datetime import date, datetime

import pandas as pd

from expectations.suites import silver_candles_suite, thresholds_suite, validate
from lakehouse.tables import GOLD_THRESHOLDS, SILVER_CANDLES
from pipelines.detection.maths import THRESHOLD_COLUMNS, DetectionConfig
from pipelines.layers.gold import thresholds_rows

T0 = datetime(2025, 2, 3)


def candle(minute: int, high: float = 3.2, low: float = 3.0):
    t = datetime(2025, 2, 3, 0, minute)
    return (
        "FILUSDT",
        t,
        t.replace(second=59),
        3.1,
        high,
        low,
        3.15,
        10.0,
        31.0,
        5,
        5.0,
        15.5,
        "replay",
        None,
        T0,
        date(2025, 2, 3),
    )


def test_silver_contract_passes_valid_candles_and_names_what_breaks(spark):
    good = spark.createDataFrame([candle(0), candle(1)], SILVER_CANDLES.schema)
    assert validate(good, silver_candles_suite()).success

    bad = spark.createDataFrame([candle(0), candle(0), candle(2, high=2.9)], SILVER_CANDLES.schema)
    result = validate(bad, silver_candles_suite())
    assert not result.success
    assert any("unique" in f and "open_time" in f for f in result.failed), result.failed
    assert any("high vs low" in f for f in result.failed), result.failed


def thresholds_row(ret_scale: float, rows: int = 5000, trades: float = 40.0) -> pd.DataFrame:
    """One gold.thresholds row as the training job writes it (detection settings included)."""
    values = (0.0, ret_scale, 0.001, 0.001, 5.0, 1.0, trades, 0.01, 0.05, 1e5)
    statistics = dict(zip(THRESHOLD_COLUMNS, values, strict=True))
    trained = pd.DataFrame(
        [{"symbol": "FILUSDT", **statistics, "train_start": T0, "train_end": T0, "train_rows": rows}]
    )
    return thresholds_rows(trained, DetectionConfig(), 1, "test", T0)


def test_thresholds_contract_rejects_zero_nan_and_too_few_rows(spark):
    ok = spark.createDataFrame(thresholds_row(0.002), GOLD_THRESHOLDS.schema)
    assert validate(ok, thresholds_suite(min_train_rows=1440)).success
    bad_rows = (thresholds_row(0.0), thresholds_row(float("nan")), thresholds_row(0.002, rows=100))
    for bad in (*bad_rows, thresholds_row(0.002, trades=0.0)):
        frame = spark.createDataFrame(bad, GOLD_THRESHOLDS.schema)
        assert not validate(frame, thresholds_suite(min_train_rows=1440)).success, bad
