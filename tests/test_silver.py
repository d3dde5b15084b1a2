"""bronze -> silver parsing and validation on a real local Spark session."""

from datetime import datetime

import numpy as np
import pandas as pd

from lakehouse.tables import BRONZE_CANDLES, SILVER_CANDLES, SILVER_QUARANTINE
from pipelines.layers.bronze import kafka_to_bronze
from pipelines.layers.silver import PARSED_SCHEMA, parse, parse_records, quarantined, valid_candles
from tests.bad_records import BAD_RECORDS, GOOD, examples, kafka_records, kafka_rows, variant


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


def test_any_kafka_bytes_become_a_bronze_row_and_a_quarantine_reason(spark):
    good = variant().encode()
    records = [
        (b"FILUSDT", variant(open_time="yesterday").encode()),
        (b"FILUSDT", variant(open_time=1.5e30).encode()),
        (b"FILUSDT", variant(open_time=2**63 - 1).encode()),
        (b"FILUSDT", b'{"symbol": "FILUSDT\xff\xfe", "open_time": 1738540800000}'),  # not UTF-8
        (b"\xff\xfe", good),  # a key that is not UTF-8
        (None, None),  # a tombstone
        (b"FILUSDT", b"\x00" * 100),
        (b"FILUSDT", good),
    ]
    bronze = kafka_to_bronze(kafka_rows(spark, records)).cache()
    assert bronze.columns == BRONZE_CANDLES.columns and bronze.count() == len(records)
    parsed = parse(bronze).cache()
    reasons = {r.offset: r.reason for r in quarantined(parsed).collect()}
    assert valid_candles(parsed).count() == 1
    assert "wrong type: open_time" in reasons[0] and "wrong type: open_time" in reasons[1]
    assert "times not a closed 1-minute candle" in reasons[2]
    assert reasons[3] == "not valid UTF-8"
    assert "key != symbol" in reasons[4]
    assert reasons[5] == "malformed JSON" and reasons[6] == "malformed JSON"
    assert len(reasons) == len(records) - 1


def test_fuzzed_kafka_records_become_plausible_candles_or_quarantine_rows(spark):
    records = examples(kafka_records, 150)
    parsed = parse(kafka_to_bronze(kafka_rows(spark, records))).cache()
    rows = parsed.select("offset", "reason", *SILVER_CANDLES.columns).toPandas()
    assert len(rows) == len(records)
    valid = rows[rows["reason"].isna()]
    assert len(valid) and valid[SILVER_CANDLES.columns].notna().all().all()
    spark.createDataFrame(valid[SILVER_CANDLES.columns], SILVER_CANDLES.schema)  # fits silver's non-null schema
    numbers = valid[["open", "high", "low", "close", "volume", "quote_volume", "taker_buy_volume"]].to_numpy()
    assert np.isfinite(numbers**2 * 1e9).all()  # a billion squares still sum to a finite number
    assert (valid["low"] <= valid[["open", "close"]].min(axis=1)).all()
    quarantine = quarantined(parsed).toPandas()
    assert sorted(quarantine["offset"]) == sorted(rows.loc[rows["reason"].notna(), "offset"])
    assert quarantine["reason"].str.len().gt(0).all()


def test_parsing_is_a_pure_function_of_bronze_rows():
    """The stream calls parse_records on the driver, without Spark: the same reasons, a row per record."""
    now = datetime(2026, 1, 1)
    records = [(key, value) for key, value, _ in BAD_RECORDS] + [("FILUSDT", variant())]
    bronze = pd.DataFrame(
        [
            ("kafka", key, None, value, "t", 0, offset, now, now, now.date())
            for offset, (key, value) in enumerate(records)
        ],
        columns=BRONZE_CANDLES.columns,
    )
    parsed = parse_records(bronze)
    assert list(parsed.columns) == PARSED_SCHEMA.fieldNames() and len(parsed) == len(records)
    for (_, _, words), reason in zip(BAD_RECORDS, parsed["reason"], strict=False):
        assert reason is not None and words in reason, (words, reason)
    good = parsed.iloc[-1]
    assert good["reason"] is None and good["trades"] == 42 and good["open_time"] == pd.Timestamp("2025-02-03")
    assert parse_records(bronze.iloc[:0]).columns.tolist() == PARSED_SCHEMA.fieldNames()


def test_the_driver_and_spark_workers_parse_alike(spark):
    """The stream parses on the driver, the backfill on Spark's workers."""
    records = [(key.encode(), value.encode()) for key, value, _ in BAD_RECORDS] + examples(kafka_records, 150)
    bronze = kafka_to_bronze(kafka_rows(spark, records)).cache()
    on_workers = parse(bronze).toPandas().sort_values("offset", ignore_index=True)
    on_driver = parse_records(bronze.toPandas()).sort_values("offset", ignore_index=True)
    assert on_driver["reason"].tolist() == on_workers["reason"].tolist()
    valid = on_driver["reason"].isna()
    columns = SILVER_CANDLES.columns
    pd.testing.assert_frame_equal(
        on_driver.loc[valid, columns].astype({"trades": "int64"}), on_workers.loc[valid, columns], check_dtype=False
    )
    # The stream's quarantine rows come from the driver's parsed rows.
    from_driver = quarantined(spark.createDataFrame(on_driver[~valid], PARSED_SCHEMA)).drop("quarantined_at")
    pd.testing.assert_frame_equal(
        from_driver.toPandas().sort_values("offset", ignore_index=True),
        quarantined(parse(bronze)).drop("quarantined_at").toPandas().sort_values("offset", ignore_index=True),
    )
