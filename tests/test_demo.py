"""The README's main command, `marketlake demo`, end to end on the real broker, Spark and Delta."""

import re

import pandas as pd
import pytest

from lakehouse.spark import ensure_tables
from marketlake.demo import run_demo
from tests.conftest import SAMPLE


@pytest.fixture
def settings(kafka_settings):
    """Every test here talks to Kafka: a topic of its own on the shared broker."""
    return kafka_settings


def test_the_demo_finds_the_crash_and_a_rerun_finds_the_same(spark, settings):
    ensure_tables(spark, settings)  # as `marketlake demo` does
    first = run_demo(spark, settings, SAMPLE, say=lambda _: None)
    high = first[first["confidence"] == "HIGH"]
    assert set(high["symbol"]) == {"FILUSDT", "NEARUSDT"}
    assert high["open_time"].min() == pd.Timestamp("2025-02-03 01:54")

    said: list[str] = []
    again = run_demo(spark, settings, SAMPLE, say=said.append)
    assert any("re-scoring 2025-02-03: removed its 2880 gold rows" in line for line in said)
    # The crash is one market incident of both symbols, HIGH at 01:54, the second run as the first.
    crash = r"MARKET-20250203T0131\s+FILUSDT,NEARUSDT\s+HIGH\s+2025-02-03 01:54"
    assert any(re.search(crash, line) for line in said), "\n".join(said)
    columns = ["symbol", "open_time", "votes", "confidence", "reasons", "thresholds_version"]
    assert (again["thresholds_version"] > first["thresholds_version"].max()).all()  # scored with the new version
    columns.remove("thresholds_version")
    pd.testing.assert_frame_equal(again[columns].reset_index(drop=True), first[columns].reset_index(drop=True))
