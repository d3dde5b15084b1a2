"""`marketlake backtest` on real candles: the CSV interface, the Delta table, and the crash it must see."""

import pandas as pd
import pytest
from typer.testing import CliRunner

from lakehouse.delta_io import read_table
from lakehouse.tables import GOLD_BACKTEST_SCORES
from marketlake.cli import app
from tests.conftest import SAMPLE


@pytest.fixture
def env(settings, monkeypatch):
    for name in ("home", "lakehouse_root", "spark_master"):
        monkeypatch.setenv(f"MARKETLAKE_{name.upper()}", str(getattr(settings, name)))
    monkeypatch.setenv("MARKETLAKE_SPARK_SHUFFLE_PARTITIONS", "1")
    return settings


def test_backtest_cli_writes_csv_and_delta_and_flags_the_crash(spark, env, tmp_path):
    files = sorted(SAMPLE.glob("futures-um/FILUSDT-1m-2025-02-0[1234].zip"))
    out = tmp_path / "scores.csv"
    candles = [arg for f in files for arg in ("--candles", str(f))]
    args = ["backtest", *candles, "--train-days", "2", "--csv", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output

    csv = pd.read_csv(out)
    assert {"symbol", "open_time", "votes", "confidence", "is_anomaly", "z_ret", "reasons"} <= set(csv.columns)
    assert len(csv) == 2 * 1440  # Feb 3 and 4 scored, Feb 1-2 trained on
    assert csv["open_time"].min() == 1738540800000  # 2025-02-03 00:00 UTC, in ms
    assert csv["open_time"].is_monotonic_increasing and csv["open_time"].is_unique
    crash = csv[(csv["open_time"] < 1738627200000) & (csv["confidence"] == "HIGH")]
    assert len(crash) > 0
    assert (csv.loc[csv["is_anomaly"], "votes"] >= 2).all()
    assert csv.loc[csv["is_anomaly"], "reasons"].str.len().gt(0).all()

    stored = read_table(spark, env, GOLD_BACKTEST_SCORES).toPandas()
    assert len(stored) == len(csv)
    assert stored["run_id"].nunique() == 1
    # Recalibrated every day as the nightly schedule: Feb 3 with the thresholds of Feb 1-2, Feb 4 with Feb 2-3.
    days = stored["open_time"].dt.day
    assert stored.groupby(days)["thresholds_version"].unique().map(list).to_dict() == {3: [0], 4: [1]}
