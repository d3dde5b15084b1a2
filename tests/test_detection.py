"""The detection maths on hand-made frames and on the bundled sample archives: pure pandas, no Spark."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from functools import cache

import numpy as np
import pandas as pd
import pytest

from lakehouse.tables import GOLD_THRESHOLDS
from pipelines.detection.evaluate import plant_shocks
from pipelines.detection.maths import (
    CONFIDENCE,
    CONFIRM_VOTES,
    THRESHOLD_COLUMNS,
    WINDOW_STATS,
    DetectionConfig,
    degenerate,
    features,
    score,
    train,
    window_stats,
)
from pipelines.ingestion.archives import read_frame
from pipelines.layers.gold import thresholds_rows
from tests.conftest import SAMPLE

T0 = pd.Timestamp("2024-01-01 00:00")


def candles(
    symbol: str, minutes: list[int], opens, closes, highs=None, lows=None, volumes=None, trades=1
) -> pd.DataFrame:
    """Hand-made 1-minute candles at the given minutes after T0."""
    opens, closes = np.asarray(opens, float), np.asarray(closes, float)
    highs = np.maximum(opens, closes) if highs is None else np.asarray(highs, float)
    lows = np.minimum(opens, closes) if lows is None else np.asarray(lows, float)
    volumes = np.full(len(minutes), 10.0) if volumes is None else np.asarray(volumes, float)
    open_time = T0 + pd.to_timedelta(minutes, unit="min")
    return pd.DataFrame(
        {
            "symbol": symbol,
            "open_time": open_time,
            "close_time": open_time + pd.Timedelta(seconds=59.999),
            "open": opens,
            "high": highs,
            "low": lows,
            "close": closes,
            "volume": volumes,
            "quote_volume": volumes * closes,
            "trades": trades,
            "taker_buy_volume": volumes / 2,
            "taker_buy_quote_volume": volumes * closes / 2,
        }
    )


@cache
def sample(symbol: str, days: str) -> pd.DataFrame:
    """Bundled sample days, e.g. sample("NEARUSDT", "2023-09-0[1-7]")."""
    paths = sorted(SAMPLE.glob(f"*/{symbol}-1m-{days}.zip"))
    assert paths, f"no sample archives for {symbol} {days}"
    return read_frame(paths)


def test_features_are_return_log_return_range_and_log_volume():
    out = features(candles("X", [0], [100.0], [102.0], highs=[103.0], lows=[99.0], volumes=[9.0])).iloc[0]
    assert out["ret"] == pytest.approx(0.02)
    assert out["log_ret"] == pytest.approx(math.log(1.02))
    assert out["range"] == pytest.approx(4 / 99)
    assert out["log_volume"] == pytest.approx(math.log(10.0))


def test_window_stats_use_a_time_window_so_a_gap_shortens_it_and_symbols_do_not_mix():
    minutes = [*range(10), *range(20, 25)]
    closes = [100 + (m % 3) for m in minutes]
    volumes = [float(m) for m in minutes]
    frame = pd.concat(
        [
            candles("B", minutes, [100.0] * len(minutes), closes, volumes=volumes),
            candles("A", [0, 1], [1.0, 1.0], [1.0, 1.0], volumes=[1e9, 1e9]),
        ]
    )
    stats = window_stats(features(frame), window_minutes=10).set_index(["symbol", "open_time"])
    at = stats.loc["B"]
    assert at.loc[T0 + pd.Timedelta(minutes=9), "win_count"] == 10  # a complete window
    after_gap = at.loc[T0 + pd.Timedelta(minutes=20)]
    assert after_gap["win_count"] == 1  # minutes 11..20 hold only the candle at 20
    last = at.loc[T0 + pd.Timedelta(minutes=24)]
    window = features(candles("B", range(20, 25), [100.0] * 5, [100 + (m % 3) for m in range(20, 25)]))
    assert last["win_count"] == 5
    assert last["win_ret_std"] == pytest.approx(window["ret"].std(ddof=0))
    assert last["win_max_range"] == pytest.approx(window["range"].max())
    assert last["win_mean_volume"] == pytest.approx(np.mean(range(20, 25)))  # symbol A's huge volume stays out
    assert stats.loc[("A", T0), "win_count"] == 1


def test_train_gives_one_row_per_symbol_and_degenerate_rejects_zero_nan_and_too_few_rows():
    config = DetectionConfig()
    near, fil = sample("NEARUSDT", "2023-09-0[12]"), sample("FILUSDT", "2025-02-0[12]")
    flat = candles("FLAT", list(range(2000)), [5.0] * 2000, [5.0] * 2000)  # never moves: zero scales
    short = candles("SHORT", list(range(30)), [5.0] * 30, [5.0, 5.1] * 15)  # no complete window: NaN limits
    thresholds = train(pd.concat([near, fil, flat, short]), config)

    assert list(thresholds["symbol"]) == ["FILUSDT", "FLAT", "NEARUSDT", "SHORT"]
    assert list(thresholds.columns) == ["symbol", *THRESHOLD_COLUMNS, "train_start", "train_end", "train_rows"]
    real = thresholds.set_index("symbol").loc[["FILUSDT", "NEARUSDT"]]
    assert (real["train_rows"] == 2880).all()
    assert (real[[c for c in THRESHOLD_COLUMNS if c.endswith(("_scale", "_limit"))]] > 0).all().all()
    # NEARUSDT 2023-09 moves in ticks of ~0.1%: most returns are 0 or one tick, yet its scales are not zero.
    assert real.loc["NEARUSDT", "range_scale"] > 0.1 * real.loc["NEARUSDT", "ret_scale"]

    rejected = degenerate(thresholds, config)
    assert dict(zip(rejected["symbol"], rejected["reason"], strict=True)) == {
        "FLAT": "zero, negative, NaN or infinite statistic",
        "SHORT": "zero, negative, NaN or infinite statistic",
    }
    few = degenerate(real.reset_index().assign(train_rows=100), config)
    assert set(few["reason"]) == {"too few training rows"}


def test_the_scales_are_a_quantile_of_the_training_hours_recorded_with_each_thresholds_version():
    near = sample("NEARUSDT", "2023-09-0[12]")
    median, quartile = (train(near, DetectionConfig(scale_quantile=q)).iloc[0] for q in (0.5, 0.75))
    # The upper quartile of the trailing-hour values is above their median; centers and limits do not change.
    assert quartile["ret_scale"] > median["ret_scale"] and quartile["range_scale"] > median["range_scale"]
    assert quartile["ret_center"] == median["ret_center"]
    assert quartile["win_ret_std_limit"] == median["win_ret_std_limit"]

    config = DetectionConfig(scale_quantile=0.6)
    rows = thresholds_rows(train(near, config), config, 4, "test", datetime(2026, 1, 1, tzinfo=UTC))
    assert list(rows.columns) == GOLD_THRESHOLDS.columns
    assert rows[["version", "scale_quantile", "k", "activity_cap"]].iloc[0].tolist() == [4, 0.6, 2.8, 3.0]


def hand_thresholds(symbol: str = "X", window_limit: float = 1.0) -> pd.DataFrame:
    """Round per-symbol statistics: returns of 0.1% and ranges of 0.1% +- 0.05% are typical."""
    return pd.DataFrame(
        [
            {
                "symbol": symbol,
                "ret_center": 0.0,
                "ret_scale": 0.001,
                "range_center": 0.001,
                "range_scale": 0.0005,
                "volume_center": math.log1p(10.0),
                "volume_scale": 1.0,
                "trades_center": 1.0,
                "win_ret_std_limit": window_limit,
                "win_max_range_limit": window_limit,
                "win_mean_volume_limit": 1e12,
                "version": 3,
            }
        ]
    )


HAND = DetectionConfig(k=4.0, k_range=4.5, window_minutes=3, vol_minutes=0)


def scored_last(closes: list[float], highs: list[float] | None = None, thresholds=None, symbol: str = "X"):
    frame = candles(symbol, list(range(len(closes))), [100.0] * len(closes), closes, highs=highs)
    return score(frame, hand_thresholds() if thresholds is None else thresholds, HAND).iloc[-1]


def test_consensus_votes_confidence_and_reasons_in_words():
    quiet = scored_last([100.0, 100.1, 100.0])
    assert (quiet["votes"], quiet["confidence"], quiet["is_anomaly"], quiet["reasons"]) == (0, None, False, "")

    # A 0.5% move whose range is 0.5%: price z = 5 > 4, range z = (0.005 - 0.001) / 0.0005 = 8 > 4.5.
    medium = scored_last([100.0, 100.0, 100.5])
    assert medium["z_ret"] == pytest.approx(5.0)
    assert medium["z_range"] == pytest.approx(8.0)
    assert (medium["votes"], medium["confidence"], medium["is_anomaly"]) == (2, "MEDIUM", True)
    assert medium["reasons"] == "price move z=+5.0 (|z|>4); range z=8.0 (z>4.5)"
    assert medium["thresholds_version"] == 3

    # The same candle in an abnormal window (limits far below the window's std and max range): HIGH.
    high = scored_last([100.0, 100.0, 100.5], thresholds=hand_thresholds(window_limit=1e-6))
    assert (high["votes"], high["confidence"], high["is_anomaly"]) == (3, "HIGH", True)
    assert high["reasons"].startswith("price move z=+5.0 (|z|>4); range z=8.0 (z>4.5); abnormal 1h window:")
    assert "return std" in high["reasons"] and "max range" in high["reasons"]

    # A long wick with a small body: only the range votes, LOW and not confirmed.
    wick = scored_last([100.0, 100.0, 100.1], highs=[100.0, 100.0, 101.0])
    assert (wick["votes"], wick["confidence"], wick["is_anomaly"]) == (1, "LOW", False)
    assert wick["reasons"] == "range z=18.0 (z>4.5)"

    orphan = scored_last([100.0, 100.0, 105.0], symbol="NOBODY")
    assert (orphan["votes"], orphan["is_anomaly"], orphan["reasons"]) == (0, False, "no thresholds")
    assert CONFIRM_VOTES == 2 and CONFIDENCE[3] == "HIGH"


def test_return_and_log_return_are_one_vote():
    # A 1% move (return z = 10, log return z ~ 9.95) with a range that is ordinary for this symbol.
    thresholds = hand_thresholds().assign(range_center=0.01, range_scale=0.01)
    big = scored_last([100.0, 100.0, 101.0], thresholds=thresholds)
    assert big["flag_price"] and not big["flag_range"] and not big["flag_window"]
    assert big["votes"] == 1 and not big["is_anomaly"]
    assert not any("log" in column for column in big.index if column.startswith(("flag_", "z_")))


def test_volatility_ratio_is_bounded_by_floor_and_cap():
    # The symbol's typical 1-minute volatility is 0.1% and k=4. After a dead quiet hour the ratio is floored at 1:
    # a 0.5% move scores z=5. After an hour of +-1% moves (ratio ~12.5) it is capped at 1.5: the bar rises from
    # 0.4% to 0.6% only, so a 0.8% move still counts; without the cap it would not.
    quiet, wild = [100.0] * 60, [101.0 if i % 2 else 99.0 for i in range(60)]
    closes = [*quiet, 100.5, *wild, 100.5, 100.8]
    frame = candles("X", list(range(len(closes))), [100.0] * len(closes), closes)
    capped = DetectionConfig(k=4.0, window_minutes=3, vol_minutes=60, vol_floor=1.0, vol_cap=1.5)
    out = score(frame, hand_thresholds(), capped)
    assert out["z_ret"].iloc[60] == pytest.approx(5.0)
    assert out["z_ret"].iloc[-2:].tolist() == pytest.approx([0.5 / 0.15, 0.8 / 0.15])
    assert out["flag_price"].iloc[-2:].tolist() == [False, True]
    uncapped = score(frame, hand_thresholds(), DetectionConfig(k=4.0, window_minutes=3, vol_minutes=60, vol_cap=100))
    assert not uncapped["flag_price"].iloc[-1]


def test_activity_ratio_raises_the_bar_for_moves_made_by_a_burst_of_trading():
    # The same 0.5% move (z=5 on typical activity, k=4) made by 1, 2, 8 and 50 times the typical trades: up to
    # activity_free=2 times it scores as usual, 8 times halves it (sqrt(8/2)), and the cap (3) keeps 50 times at a
    # third (not sqrt(50/2) = 5): a move of more than 3k typical volatilities always votes.
    trades = [1, 1, 1, 2, 8, 50]
    frame = candles("X", list(range(6)), [100.0] * 6, [100.0, 100.0, 100.0, 100.5, 100.5, 100.5], trades=trades)
    out = score(frame, hand_thresholds(), DetectionConfig(k=4.0, window_minutes=3, vol_minutes=0))
    assert out["z_ret"].iloc[3:].tolist() == pytest.approx([5.0, 2.5, 5.0 / 3])
    assert out["flag_price"].iloc[3:].tolist() == [True, False, False]
    off = score(frame, hand_thresholds(), DetectionConfig(k=4.0, window_minutes=3, vol_minutes=0, activity_cap=1.0))
    assert off["z_ret"].iloc[3:].tolist() == pytest.approx([5.0, 5.0, 5.0])


def test_scoring_in_chunks_with_history_context_equals_scoring_at_once():
    config = DetectionConfig()
    both = pd.concat([sample("NEARUSDT", "2025-02-0[1-4]"), sample("FILUSDT", "2025-02-0[1-4]")])
    thresholds = train(both[both["open_time"].dt.day <= 2], config).assign(version=1)
    live = both[(both["open_time"].dt.day >= 3) & both["open_time"].dt.hour.between(1, 8)]  # two 8-hour stretches
    whole = score(live, thresholds, config)

    parts, start = [], live["open_time"].min()
    while start <= live["open_time"].max():
        new = live[(live["open_time"] >= start) & (live["open_time"] < start + pd.Timedelta(minutes=37))]
        start += pd.Timedelta(minutes=37)
        if new.empty:
            continue
        first = new["open_time"].min()
        context = live[live["open_time"] < first].groupby("symbol").tail(config.history_minutes)
        out = score(pd.concat([context, new]), thresholds, config)
        parts.append(out[out["open_time"] >= first])
    chunked = pd.concat(parts).sort_values(["symbol", "open_time"]).reset_index(drop=True)

    assert len(chunked) == len(whole) == len(live)
    numbers = ["z_ret", "z_range", "z_volume", *WINDOW_STATS]
    pd.testing.assert_frame_equal(chunked[numbers], whole[numbers], rtol=1e-9)
    exact = ["win_count", "votes", "confidence", "is_anomaly", "reasons"] + [c for c in whole if c.startswith("flag_")]
    pd.testing.assert_frame_equal(chunked[exact], whole[exact])
    assert whole["votes"].max() >= 1  # the stretch is not trivially quiet


def test_planted_six_sigma_shocks_on_a_calm_sample_day_are_confirmed():
    config = DetectionConfig()
    near = sample("NEARUSDT", "2023-09-0[1-5]")
    history, day = near[near["open_time"].dt.day <= 4], near[near["open_time"].dt.day == 5]
    thresholds = train(history, config).assign(version=1)
    sigma = features(day)["ret"].std(ddof=0)
    shocked, times = plant_shocks(day, 6.0, sigma, 120, np.random.default_rng(1))
    out = score(pd.concat([history.tail(config.history_minutes), shocked]), thresholds, config)
    confirmed = out.set_index("open_time")["is_anomaly"]
    caught = [bool(confirmed.loc[t : t + pd.Timedelta(minutes=2)].any()) for t in times]
    assert len(times) == 12 and sum(caught) >= 11
    one = out.set_index("open_time").loc[times.iloc[0]]
    assert one["is_anomaly"] and "price move" in one["reasons"] and "range" in one["reasons"]


@pytest.mark.parametrize(
    ("symbol", "train_days", "crash_days"),
    [("FILUSDT", "2025-02-0[12]", "2025-02-03"), ("LUNAUSDT", "2022-05-0[56]", "2022-05-*")],
)
def test_the_february_crash_and_the_luna_collapse_raise_high(symbol, train_days, crash_days):
    config = DetectionConfig()
    history = sample(symbol, train_days)
    crash = sample(symbol, crash_days)
    crash = crash[crash["open_time"] > history["open_time"].max()]
    thresholds = train(history, config).assign(version=1)
    out = score(pd.concat([history.tail(config.history_minutes), crash]), thresholds, config)
    out = out[out["open_time"] > history["open_time"].max()]
    assert (out["votes"] == 3).any()
    assert (out.loc[out["votes"] == 3, "confidence"] == "HIGH").all()
