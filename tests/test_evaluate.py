"""The evaluation harness: incidents, planted shocks, recall, walk-forward backtests. Pure pandas, no Spark."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipelines.detection.backtest import split_train
from pipelines.detection.evaluate import (
    EvaluationConfig,
    evaluate,
    incidents,
    plant_shocks,
    recall,
    score_periods,
    train_periods,
)
from pipelines.detection.maths import DetectionConfig, features
from tests.test_detection import T0, candles, sample


def at(*minutes: int) -> pd.Series:
    return pd.Series(T0 + pd.to_timedelta(list(minutes), unit="min"))


def test_incidents_are_runs_of_confirmed_minutes_with_gaps_of_at_most_the_limit():
    assert incidents(at(), 5) == 0
    assert incidents(at(7), 5) == 1
    # 0-1-2 and 7 (gap 5) are one run; 13 (gap 6) starts a second; 30 and 31 a third. Order does not matter.
    assert incidents(at(31, 2, 0, 13, 7, 1, 30), 5) == 3
    assert incidents(at(0, 2, 4), 1) == 3


def test_split_train_cuts_each_symbol_at_its_own_start():
    frame = pd.concat(
        [candles("A", list(range(0, 4000, 10)), [1.0] * 400, [1.0] * 400), candles("B", [3000], [1.0], [1.0])]
    )
    train_part, scored_part = split_train(frame, train_days=1)
    assert (train_part.loc[train_part["symbol"] == "A", "open_time"] < T0 + pd.Timedelta(days=1)).all()
    assert (scored_part["symbol"] == "A").all() and len(train_part) + len(scored_part) == len(frame)


def test_plant_shocks_moves_the_close_by_k_sigma_and_keeps_candles_valid():
    day = candles("X", list(range(600)), [100.0] * 600, [100.0 + (i % 3 - 1) * 0.1 for i in range(600)])
    shocked, times = plant_shocks(day, 6.0, 0.001, 120, np.random.default_rng(0))
    assert len(times) == 5 and (times.diff().dropna() == pd.Timedelta(minutes=120)).all()
    moved = shocked.set_index("open_time").loc[times]
    before = day.set_index("open_time").loc[times]
    assert (moved["close"] - before["close"]).abs().tolist() == pytest.approx([0.6] * 5)  # 6 * 0.1% of open 100
    assert (moved["high"] >= moved[["open", "close"]].max(axis=1)).all()
    assert (moved["low"] <= moved[["open", "close"]].min(axis=1)).all()
    untouched = shocked.set_index("open_time").drop(index=times)
    pd.testing.assert_frame_equal(untouched, day.set_index("open_time").drop(index=times))


def test_recall_counts_a_shock_caught_at_its_minute_or_within_catch_minutes():
    scored = pd.DataFrame({"open_time": at(10, 22, 33), "is_anomaly": [True, True, False]})
    assert recall(scored, at(10, 20, 30), catch_minutes=2) == pytest.approx(2 / 3)  # 10 and 20 (via 22)
    assert recall(scored, at(10, 20, 30), catch_minutes=1) == pytest.approx(1 / 3)
    assert np.isnan(recall(scored, at(), catch_minutes=2))


def test_walk_forward_backtest_scores_each_day_with_the_thresholds_of_the_days_before():
    config = DetectionConfig()
    near = sample("NEARUSDT", "2023-09-0[1-5]")
    starts = [pd.Timestamp("2023-09-04"), pd.Timestamp("2023-09-05")]
    thresholds = train_periods(near, starts, config, train_days=3)
    assert thresholds["period"].tolist() == [0, 1]
    assert thresholds["train_end"].tolist() == [pd.Timestamp("2023-09-03 23:59"), pd.Timestamp("2023-09-04 23:59")]
    assert (thresholds["train_rows"] == 3 * 1440).all()

    scored = score_periods(near, starts, thresholds, config)
    assert scored["open_time"].min() == starts[0] and len(scored) == 2 * 1440
    assert (scored["symbol"] == "NEARUSDT").all() and scored["open_time"].is_monotonic_increasing
    assert scored.groupby(scored["open_time"].dt.day)["thresholds_version"].unique().map(list).to_dict() == {
        4: [0],
        5: [1],
    }
    # The first scored minute had the history before it as context: its window is complete.
    assert scored["win_count"].iloc[0] == config.window_minutes


def test_a_period_without_training_candles_gets_no_thresholds():
    config = DetectionConfig()
    near = sample("NEARUSDT", "2023-09-0[12]")
    later = near.assign(open_time=near["open_time"] + pd.Timedelta(days=30))  # a relisting after a long gap
    both = pd.concat([near, later])
    starts = [pd.Timestamp("2023-09-02"), later["open_time"].min()]
    thresholds = train_periods(both, starts, config, train_days=1)
    assert thresholds["period"].tolist() == [0]
    scored = score_periods(both, starts, thresholds, config)
    relisted = scored[scored["open_time"] >= starts[1]]
    assert (relisted["reasons"] == "no thresholds").all() and (relisted["votes"] == 0).all()


@pytest.mark.parametrize("recalibrate_daily", [True, False])
def test_evaluate_reports_incidents_and_recall_per_symbol(recalibrate_daily):
    near = sample("NEARUSDT", "2023-09-0[1-6]")
    config = EvaluationConfig(train_days=3, recalibrate_daily=recalibrate_daily, shock_sizes=(8.0,))
    out = evaluate(near, DetectionConfig(), config)
    assert out.columns.tolist() == ["symbol", "days", "incidents_per_day", "high_per_day", "recall_8sigma"]
    row = out.iloc[0]
    assert (row["symbol"], row["days"]) == ("NEARUSDT", 3.0)
    assert row["recall_8sigma"] >= 0.9
    assert 0 <= row["high_per_day"] <= row["incidents_per_day"] < 10
    sigma = features(split_train(near, 3)[1])["ret"].std(ddof=0)
    assert 0.0005 < sigma < 0.002  # the shocks are sized on the scored days' own 1-minute std


def test_shocks_closer_than_the_detectors_history_are_refused():
    near = sample("NEARUSDT", "2023-09-0[1-4]")
    with pytest.raises(ValueError, match="must exceed history_minutes=60"):
        evaluate(near, DetectionConfig(), EvaluationConfig(train_days=3, shock_spacing_minutes=60))
