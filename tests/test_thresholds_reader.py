"""A corrupted or hand-edited thresholds version never takes the stream down: the previous one stays in force."""

import math

import pandas as pd
import pytest

import pipelines.detection.thresholds as thresholds
from pipelines.detection.maths import THRESHOLD_COLUMNS, DetectionConfig
from pipelines.detection.thresholds import usable_latest


def row(symbol: str, version: int, **changes: float) -> dict:
    return {
        "symbol": symbol,
        "version": version,
        **dict.fromkeys(THRESHOLD_COLUMNS, 1.0),
        "train_rows": 10_000,
    } | changes


@pytest.mark.parametrize("bad", [math.nan, -1.0, 0.0, math.inf])
def test_a_bad_statistic_in_the_newest_version_keeps_the_previous_one(bad):
    versions = pd.DataFrame(
        [
            row("A", 1, ret_scale=2.0),
            row("A", 2, ret_scale=bad),
            row("B", 1),
            row("B", 2, win_max_range_limit=3.0),
            row("C", 2, volume_scale=bad),  # no earlier version: C has no thresholds
            row("D", 1, trades_center=math.nan),  # trained before trades_center was kept: still usable
        ]
    )
    latest = usable_latest(versions, DetectionConfig()).set_index("symbol")
    assert latest["version"].to_dict() == {"A": 1, "B": 2, "D": 1}
    assert latest.loc["A", "ret_scale"] == 2.0 and latest.loc["B", "win_max_range_limit"] == 3.0


def test_an_unreadable_version_keeps_the_one_in_force(monkeypatch):
    good = pd.DataFrame([row("A", 1)])
    versions = iter([1, 2, 2, 3])
    answers = iter([good, OSError("corrupted parquet file"), ValueError("bad"), good.assign(version=3)])

    def read(spark, settings):
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    monkeypatch.setattr(thresholds, "log_version", lambda spark, settings, table: next(versions))
    monkeypatch.setattr(thresholds, "latest_thresholds", read)
    reader = thresholds.ThresholdsReader()
    assert reader(None, None) is good
    assert reader(None, None) is good and reader.version == 1  # v2 unreadable: v1 stays, v2 is tried again
    assert reader(None, None) is good
    assert reader(None, None)["version"].tolist() == [3]


def test_without_a_version_in_force_an_unreadable_table_stops_the_query(monkeypatch):
    monkeypatch.setattr(thresholds, "log_version", lambda spark, settings, table: 1)
    monkeypatch.setattr(thresholds, "latest_thresholds", lambda spark, settings: (_ for _ in ()).throw(OSError("gone")))
    with pytest.raises(OSError):
        thresholds.ThresholdsReader()(None, None)


def test_only_the_versions_that_can_still_be_used_reach_the_driver(spark):
    versions = pd.DataFrame(
        [
            row("A", 1),  # older than A's newest usable version: never used again
            row("A", 2, ret_scale=2.0),
            row("A", 3, ret_scale=math.nan),
            row("B", 1),
            row("B", 2, trades_center=math.nan),  # usable (no typical trade count), but not surely so: B v1 stays
            row("C", 1, volume_scale=-1.0),
            row("D", 1, train_rows=10),
            row("D", 2, train_rows=10_000, win_max_range_limit=math.inf),
        ]
    )
    config = DetectionConfig()
    candidates = thresholds._candidates(spark.createDataFrame(versions), config).toPandas()
    assert sorted(zip(candidates["symbol"], candidates["version"], strict=True)) == [
        ("A", 2), ("A", 3), ("B", 1), ("B", 2), ("C", 1), ("D", 1), ("D", 2),
    ]  # fmt: skip
    pd.testing.assert_frame_equal(usable_latest(candidates, config), usable_latest(versions, config))
