"""The Dagster code location: it loads, its graph is what we expect, and assets materialize with real resources."""

import json
import subprocess
import sys
from pathlib import Path

import dagster as dg

from lakehouse.delta_io import read_table
from lakehouse.tables import GOLD_THRESHOLDS, SILVER_CANDLES
from orchestration.definitions import build_definitions


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
    }
    assert {c.name for c in graph.asset_check_keys} == {
        "silver_candles_contract",
        "silver_candles_no_gaps",
        "thresholds_not_degenerate",
    }
    assert defs.resolve_job_def("train_thresholds_job") is not None
    schedule = defs.resolve_schedule_def("train_thresholds_job_schedule")
    assert schedule.cron_schedule == "0 2 * * *"
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
