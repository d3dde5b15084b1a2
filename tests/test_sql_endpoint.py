"""The Spark SQL endpoint answers on real Delta tables, including rows and tables written after it started."""

from __future__ import annotations

import dataclasses
import subprocess

import pytest

from lakehouse.services.process import free_port
from lakehouse.settings import Settings
from lakehouse.sql_endpoint import SqlServer, beeline, run_sql
from marketlake.seed import gold_sample, write_tables
from tests.conftest import SAMPLE

pytestmark = pytest.mark.integration  # starts services of its own
FIL = sorted(SAMPLE.glob("futures-um/FILUSDT-1m-2025-02-0*.zip"))


def test_endpoint_serves_registry_tables_and_later_writes(spark, settings: Settings) -> None:
    settings = dataclasses.replace(settings, sql_port=free_port())
    sample = gold_sample(FIL, days=4)
    server = SqlServer(settings)
    server.start()
    try:
        tables = {(r["namespace"], r["tableName"]) for layer in ("bronze", "silver", "gold") for r in
                  beeline(server.url, f"SHOW TABLES IN {layer}")}  # fmt: skip
        assert {("gold", "scores"), ("gold", "thresholds"), ("silver", "candles"), ("gold", "anomalies")} <= tables
        assert beeline(server.url, "SELECT COUNT(*) AS n FROM gold.scores") == [{"n": "0"}]

        write_tables(spark, settings, sample)  # another writer, after the endpoint started
        scores = sample["gold.scores"]
        got = beeline(server.url, "SELECT COUNT(*) AS n, SUM(CAST(is_anomaly AS INT)) AS a FROM gold.scores")
        assert got == [{"n": str(len(scores)), "a": str(int(scores.is_anomaly.sum()))}]
        flagged = beeline(server.url, "SELECT confidence, COUNT(*) AS n FROM gold.anomalies GROUP BY confidence")
        assert {r["confidence"]: int(r["n"]) for r in flagged} == scores[
            scores.votes >= 1
        ].confidence.value_counts().to_dict()

        # Registration happens at every start: a restart on a moved lakehouse root serves the new root's tables.
        server.stop()
        moved = dataclasses.replace(settings, lakehouse_root=settings.lakehouse_root + "-moved")
        server = SqlServer(moved)
        server.start()
        assert beeline(server.url, "SELECT COUNT(*) AS n FROM gold.scores") == [{"n": "0"}]
        with pytest.raises(subprocess.CalledProcessError):
            beeline(server.url, "SELECT * FROM gold.no_such_table")
    finally:
        server.stop()


def test_run_sql_is_what_the_cli_prints(spark, settings: Settings) -> None:
    from lakehouse.spark import ensure_tables

    ensure_tables(spark, settings)
    write_tables(spark, settings, gold_sample(FIL, days=3))
    result = run_sql(spark, settings, "SELECT symbol, COUNT(*) AS n FROM gold.anomalies GROUP BY symbol")
    assert result.symbol.tolist() == ["FILUSDT"] and result.n.iloc[0] > 0
