"""The table contracts, run by Great Expectations on real Spark DataFrames."""

from datetime import date, datetime

from expectations.suites import silver_candles_suite, thresholds_suite, validate
from lakehouse.tables import GOLD_THRESHOLDS, SILVER_CANDLES

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


def thresholds_row(ret_scale: float, rows: int = 5000, trades: float = 40.0):
    statistics = (0.0, ret_scale, 0.001, 0.001, 5.0, 1.0, trades, 0.01, 0.05, 1e5)
    config = (3.3, 4.5, True, 60, 60, 1.0, 1.5, 2.0, 2.0)
    return (1, "FILUSDT", *statistics, *config, T0, T0, rows, T0, "test")


def test_thresholds_contract_rejects_zero_nan_and_too_few_rows(spark):
    ok = spark.createDataFrame([thresholds_row(0.002)], GOLD_THRESHOLDS.schema)
    assert validate(ok, thresholds_suite(min_train_rows=1440)).success
    bad_rows = (thresholds_row(0.0), thresholds_row(float("nan")), thresholds_row(0.002, rows=100))
    for bad in (*bad_rows, thresholds_row(0.002, trades=0.0)):
        frame = spark.createDataFrame([bad], GOLD_THRESHOLDS.schema)
        assert not validate(frame, thresholds_suite(min_train_rows=1440)).success, bad
