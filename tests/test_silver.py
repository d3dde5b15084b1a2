"""bronze -> silver parsing and validation on a real local Spark session."""

from datetime import datetime

import pytest

from lakehouse.tables import BRONZE_CANDLES, SILVER_CANDLES, SILVER_QUARANTINE
from pipelines.silver import parse, quarantined, valid_candles
from tests.bad_records import BAD_RECORDS, GOOD, variant

pytestmark = pytest.mark.spark


def bronze_rows(spark, records):
    now = datetime(2026, 1, 1)
    rows = [
        ("kafka", key, None, value, "t", 0, offset, now, now, now.date()) for offset, (key, value) in enumerate(records)
    ]
    return spark.createDataFrame(rows, BRONZE_CANDLES.schema)


def test_a_good_record_becomes_a_typed_candle(spark):
    parsed = parse(bronze_rows(spark, [("FILUSDT", variant())])).cache()
    assert quarantined(parsed).count() == 0
    (candle,) = valid_candles(parsed).collect()
    assert candle.asDict() | {"ingested_at": None} == {
        **{k: GOOD[k] for k in ("symbol", "open", "high", "low", "close", "volume", "quote_volume", "trades")},
        "taker_buy_volume": 500.0, "taker_buy_quote_volume": 1550.0,
        "open_time": datetime(2025, 2, 3, 0, 0), "close_time": datetime(2025, 2, 3, 0, 0, 59, 999000),
        "source": "replay", "kafka_timestamp": datetime(2026, 1, 1), "ingested_at": None,
        "open_date": datetime(2025, 2, 3).date(),
    }  # fmt: skip
    assert valid_candles(parsed).columns == SILVER_CANDLES.columns


def test_every_bad_record_is_quarantined_with_its_reason(spark):
    records = [(key, value) for key, value, _ in BAD_RECORDS] + [("FILUSDT", variant())]
    parsed = parse(bronze_rows(spark, records))
    bad = {r.offset: r for r in quarantined(parsed).collect()}
    assert quarantined(parsed).columns == SILVER_QUARANTINE.columns
    assert valid_candles(parsed).count() == 1
    for offset, (_, value, words) in enumerate(BAD_RECORDS):
        assert offset in bad, f"not quarantined: {words}"
        assert words in bad[offset].reason, (words, bad[offset].reason)
        assert bad[offset].value == value  # the raw record is kept as received
