"""The Dagster code location: it loads, its graph is what we expect, and assets materialize with real resources."""

import dataclasses
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pandas as pd

from lakehouse.delta_io import append, read_table
from lakehouse.spark import ensure_tables
from lakehouse.tables import GOLD_ALERTS, GOLD_INCIDENTS, GOLD_SCORES, GOLD_THRESHOLDS, SILVER_CANDLES
from orchestration.definitions import build_definitions
from tests.test_expectations import alert_row, incident_row


def test_the_code_location_validates_as_dagster_loads_it():
    result = subprocess.run(
        [str(Path(sys.executable).parent / "dagster"), "definitions", "validate", "-m", "orchestration.definitions"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_definitions_load_with_the_expected_graph(settings):
    defs = build_definitions(settings)
    graph = defs.resolve_asset_graph()
    assert {k.to_user_string() for k in graph.get_all_asset_keys()} == {
        "bronze/candles",
        "silver/candles",
        "gold/thresholds",
        "gold/scores",
        "gold/incidents",
        "gold/market_incidents",
        "gold/alerts",
    }
    assert {c.name for c in graph.asset_check_keys} == {
        "silver_candles_contract",
        "silver_candles_no_gaps",
        "thresholds_not_degenerate",
        "incidents_contract",
        "market_incidents_contract",
        "alerts_contract",
        "alerts_not_overdue",
        "alerts_no_dead_letters",
    }
    # The stream writes its gold tables: Dagster shows them and checks them, it never materializes them.
    stream_tables = [dg.AssetKey(["gold", t]) for t in ("scores", "incidents", "market_incidents", "alerts")]
    assert not any(graph.get(k).is_materializable for k in stream_tables)
    assert graph.get(dg.AssetKey(["gold", "alerts"])).parent_keys == {dg.AssetKey(["gold", "incidents"])}
    assert defs.resolve_job_def("train_thresholds_job") is not None
    schedule = defs.resolve_schedule_def("train_thresholds_job_schedule")
    assert schedule.cron_schedule == "0 2 * * *"
    checks = defs.resolve_schedule_def("check_stream_tables_job_schedule")
    assert checks.job_name == "check_stream_tables_job"
    assert checks.default_status == dg.DefaultScheduleStatus.STOPPED
    partitions = graph.get(dg.AssetKey(["silver", "candles"])).partitions_def
    assert "2025-02-03|FILUSDT" in partitions.get_partition_keys()


def materialize(defs, selection, partition_key=None, run_config=None):
    result = dg.materialize(
        [*defs.assets, *defs.asset_checks],
        selection=selection,
        partition_key=partition_key,
        resources=defs.resources,
        run_config=run_config or {},
    )
    assert result.success
    return result


def test_backfill_partitions_then_training_through_dagster(spark, settings):
    defs = build_definitions(settings)
    backfill = [dg.AssetKey(["bronze", "candles"]), dg.AssetKey(["silver", "candles"])]
    for day in ("2025-02-02", "2025-02-03"):
        for symbol in ("FILUSDT", "NEARUSDT"):
            result = materialize(defs, backfill, partition_key=f"{day}|{symbol}")
            checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
            assert checks == {"silver_candles_contract": True, "silver_candles_no_gaps": True}
    # Re-running a partition changes nothing.
    materialize(defs, backfill, partition_key="2025-02-03|FILUSDT")
    silver = read_table(spark, settings, SILVER_CANDLES)
    assert silver.count() == 4 * 1440
    assert silver.select("symbol", "open_time").distinct().count() == 4 * 1440

    config = {"ops": {"gold__thresholds": {"config": {"train_days": 2}}}}
    for expected_version in (1, 2):
        result = materialize(defs, [dg.AssetKey(["gold", "thresholds"])], run_config=config)
        (check,) = result.get_asset_check_evaluations()
        assert check.passed
        meta = result.asset_materializations_for_node("gold__thresholds")[0].metadata
        assert meta["version"].value == expected_version
    thresholds = read_table(spark, settings, GOLD_THRESHOLDS).toPandas()
    assert sorted(thresholds["version"].unique()) == [1, 2]  # old versions are kept
    assert set(thresholds["symbol"]) == {"FILUSDT", "NEARUSDT"}
    assert (thresholds["train_rows"] == 2880).all()
    assert thresholds["trained_by"].str.startswith("dagster run ").all()
    exported = json.loads((Path(settings.home) / "thresholds" / "latest.json").read_text())
    assert exported["version"] == 2 and set(exported["thresholds"]) == {"FILUSDT", "NEARUSDT"}


def scores_row(symbol: str, open_time: datetime, detected_at: datetime) -> dict:
    """A gold.scores row: what matters here is when the stream scored (symbol, open_time)."""
    prices = dict.fromkeys(["open", "high", "low", "close"], 3.0)
    volumes = dict.fromkeys(["volume", "quote_volume", "taker_buy_volume", "taker_buy_quote_volume"], 1.0)
    row = dict.fromkeys(GOLD_SCORES.columns) | prices | volumes
    return row | {
        "symbol": symbol,
        "open_time": open_time,
        "close_time": open_time + timedelta(seconds=59),
        "trades": 1,
        "votes": 0,
        "is_anomaly": False,
        "detected_at": detected_at,
        "open_date": open_time.date(),
    }


def check_stream_tables(defs) -> dict[str, dg.AssetCheckEvaluation]:
    result = defs.resolve_job_def("check_stream_tables_job").execute_in_process()
    assert result.success
    return {c.check_name: c for c in result.get_asset_check_evaluations()}


def test_an_alert_stuck_undelivered_fails_its_check_until_its_row_is_recorded(spark, settings):
    # The webhook takes HIGH alerts; each incident is HIGH from its first minute: one alert owed to it each.
    settings = dataclasses.replace(
        settings, alerts_webhook_url="http://127.0.0.1:9/", alerts_webhook_min_confidence="HIGH"
    )
    ensure_tables(spark, settings)
    now = datetime.now(UTC).replace(tzinfo=None)
    # Each row's write time is when the stream scored its scored_through minute (candle time: 2025): FILUSDT's
    # row 10 minutes ago, NEARUSDT's 1 minute ago (its alert may be on its way).
    incidents = [
        incident_row(symbol, peak_time=incident_row()["start"], status="closed") for symbol in ("FILUSDT", "NEARUSDT")
    ]
    scores = [
        scores_row(i["symbol"], i["scored_through"], now - timedelta(minutes=m))
        for i, m in zip(incidents, (10, 1), strict=True)
    ]
    append(spark, settings, GOLD_INCIDENTS, pd.DataFrame(incidents))
    append(spark, settings, GOLD_SCORES, pd.DataFrame(scores))
    defs = build_definitions(settings)

    checks = check_stream_tables(defs)
    stuck = checks["alerts_not_overdue"]
    assert not stuck.passed and stuck.severity == dg.AssetCheckSeverity.ERROR
    assert stuck.metadata["alerts"].value == "FILUSDT-20250203T0131:opened -> webhook"
    assert all(checks[c].passed for c in ("incidents_contract", "market_incidents_contract", "alerts_contract"))
    assert checks["alerts_no_dead_letters"].passed

    # The alert's row is recorded; another alert of the incident went to the dead letters.
    delivered = alert_row("FILUSDT-20250203T0131:opened")
    dead = alert_row("FILUSDT-20250203T0131:closed", status="dead_letter", attempts=3, error="ConnectionError")
    append(spark, settings, GOLD_ALERTS, pd.DataFrame([delivered, dead]).astype({"attempts": "int32"}))
    checks = check_stream_tables(defs)
    assert checks["alerts_not_overdue"].passed
    dead_letters = checks["alerts_no_dead_letters"]
    assert not dead_letters.passed and dead_letters.severity == dg.AssetCheckSeverity.WARN
    assert dead_letters.metadata["alerts"].value == "FILUSDT-20250203T0131:closed -> webhook"
    assert checks["alerts_contract"].passed
