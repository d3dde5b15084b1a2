"""The table contracts, run by Great Expectations on real Spark DataFrames."""

from datetime import date, datetime

import pandas as pd

from expectations.suites import (
    ALERT_STATUSES,
    CONFIDENCES,
    INCIDENT_STATUSES,
    SCOPES,
    alerts_suite,
    incidents_suite,
    market_incidents_suite,
    silver_candles_suite,
    thresholds_suite,
    validate,
)
from lakehouse.tables import GOLD_ALERTS, GOLD_INCIDENTS, GOLD_MARKET_INCIDENTS, GOLD_THRESHOLDS, SILVER_CANDLES
from pipelines.alerts.sinks import DEAD_LETTER, DELIVERED
from pipelines.detection.incidents import CLOSED, OPEN
from pipelines.detection.market import MARKET, OWN, MarketConfig, MarketTracker
from pipelines.detection.maths import CONFIDENCE, THRESHOLD_COLUMNS, DetectionConfig
from pipelines.layers.gold import thresholds_rows
from tests.test_incidents import crash_day as crash_day  # a fixture
from tests.test_market import fold

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


def incident_row(symbol: str = "FILUSDT", **changes) -> dict:
    """A valid gold.incidents row: an open incident of three minutes from 01:31, HIGH at 01:32."""
    start = datetime(2025, 2, 3, 1, 31)
    row = dict.fromkeys(GOLD_INCIDENTS.columns) | {
        "incident_id": f"{symbol}-20250203T0131",
        "symbol": symbol,
        "start": start,
        "last_minute": start.replace(minute=33),
        "status": "open",
        "minutes": 3,
        "peak_votes": 3,
        "peak_confidence": "HIGH",
        "peak_time": start.replace(minute=32),
        "open_price": 3.1,
        "close_price": 2.9,
        "price_change": 2.9 / 3.1 - 1,
        "scored_through": start.replace(minute=40),
        "scope": "own",
    }
    return row | changes


def market_row(**changes) -> dict:
    start = datetime(2025, 2, 3, 1, 31)
    row = {
        "market_incident_id": "MARKET-20250203T0131",
        "start": start,
        "last_minute": start.replace(minute=33),
        "status": "closed",
        "minutes": 3,
        "symbols": "FILUSDT,NEARUSDT",
        "symbol_count": 2,
        "active_symbols": 2,
        "peak_votes": 3,
        "peak_confidence": "HIGH",
        "peak_time": start.replace(minute=32),
        "market_change": -0.05,
        "scored_through": start.replace(minute=40),
    }
    return row | changes


def alert_row(alert_id: str = "FILUSDT-20250203T0131:opened", **changes) -> dict:
    row = {
        "alert_id": alert_id,
        "sink": "webhook",
        "incident_id": alert_id.split(":")[0],
        "kind": alert_id.split(":")[1],
        "symbol": "FILUSDT",
        "confidence": "HIGH",
        "status": "delivered",
        "attempts": 1,
        "error": None,
        "message": "{}",
        "delivered_at": datetime(2025, 2, 3, 1, 41),
    }
    return row | changes


def failures(spark, table, suite, *rows: dict) -> list[str]:
    frame = spark.createDataFrame([tuple(r[c] for c in table.columns) for r in rows], table.schema)
    return validate(frame, suite).failed


def test_incidents_contract_passes_valid_rows_and_names_each_broken_rule(spark):
    market = incident_row("NEARUSDT", scope="market", market_incident_id="MARKET-20250203T0131", status="closed")
    assert failures(spark, GOLD_INCIDENTS, incidents_suite(), incident_row(), market) == []
    broken = {
        "unique on incident_id": [incident_row(), incident_row(status="closed")],
        "unique on symbol where": [incident_row(), incident_row(incident_id="FILUSDT-20250203T0300")],
        "last_minute vs start": [incident_row(last_minute=datetime(2025, 2, 3, 1, 30))],
        "peak_time vs start": [incident_row(peak_time=datetime(2025, 2, 3, 1, 30))],
        "last_minute vs peak_time": [incident_row(peak_time=datetime(2025, 2, 3, 1, 34))],
        "between on minutes": [incident_row(minutes=0)],
        "in_set on status": [incident_row(status="done")],
        "in_set on scope": [incident_row(scope="global")],
        "in_set on peak_confidence": [incident_row(peak_confidence="NONE")],
        "null on market_incident_id where": [incident_row(scope="market")],
    }
    for rule, rows in broken.items():
        failed = failures(spark, GOLD_INCIDENTS, incidents_suite(), *rows)
        assert any(rule in f for f in failed), (rule, failed)


def test_market_incidents_contract_wants_two_symbols_and_a_valid_span(spark):
    assert failures(spark, GOLD_MARKET_INCIDENTS, market_incidents_suite(), market_row()) == []
    for rule, row in {
        "between on symbol_count": market_row(symbol_count=1),
        "last_minute vs start": market_row(start=datetime(2025, 2, 3, 1, 34)),
        "in_set on status": market_row(status="gone"),
    }.items():
        failed = failures(spark, GOLD_MARKET_INCIDENTS, market_incidents_suite(), row)
        assert any(rule in f for f in failed), (rule, failed)


def test_alerts_contract_wants_one_row_per_alert_and_sink_and_an_error_for_each_dead_letter(spark):
    dead = alert_row("FILUSDT-20250203T0131:escalated", status="dead_letter", attempts=3, error="ConnectionError")
    assert failures(spark, GOLD_ALERTS, alerts_suite(), alert_row(), dead) == []
    broken = {
        "unique on ['alert_id', 'sink']": [alert_row(), alert_row(status="dead_letter", error="x")],
        "in_set on status": [alert_row(status="sent")],
        "between on attempts": [alert_row(attempts=0)],
        "null on error where": [alert_row(status="dead_letter")],
    }
    for rule, rows in broken.items():
        failed = failures(spark, GOLD_ALERTS, alerts_suite(), *rows)
        assert any(rule in f for f in failed), (rule, failed)


def test_the_crash_days_incidents_folded_as_the_stream_does_keep_their_contracts(spark, crash_day):
    day = crash_day[crash_day["open_time"] >= "2025-02-03"]
    quarters = day["open_time"].dt.floor("15min")
    incidents, market = fold([day[quarters == q] for q in sorted(quarters.unique())], MarketTracker(MarketConfig()))
    assert len(incidents) > 2 and len(market) >= 1
    for table, rows, suite in (
        (GOLD_INCIDENTS, incidents, incidents_suite),
        (GOLD_MARKET_INCIDENTS, market, market_incidents_suite),
    ):
        result = validate(spark.createDataFrame(rows[table.columns], table.schema), suite())
        assert result.success, result.failed


def test_the_contracts_allowed_values_are_the_writers():
    assert set(CONFIDENCES) == {c for c in CONFIDENCE.values() if c}
    assert set(INCIDENT_STATUSES) == {OPEN, CLOSED}
    assert set(SCOPES) == {OWN, MARKET}
    assert set(ALERT_STATUSES) == {DELIVERED, DEAD_LETTER}
