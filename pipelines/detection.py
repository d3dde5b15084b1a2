"""The detection maths: one pure implementation (pandas in, pandas out), used by the stream and the backtest.

Per candle (stream 1), per symbol: return, log return, range and log volume, scored against that symbol's trained
statistics. Per trailing window ending at each closed minute (stream 2): std of returns, max range, mean volume,
each against that symbol's trained window limit. Consensus over three independent indicators:

    price move   |z| of the return (return and log return are one indicator) above k
    range        z of the high-low range above k
    window       at least 2 of the 3 window statistics above their trained limits

3 votes HIGH, 2 MEDIUM, 1 LOW; an anomaly is confirmed at 2 or more.

Better-than-textbook z-scores (measured by `marketlake evaluate`, see docs/detection.md): a candle's return and
range are divided by a volatility scale that follows the market — the trailing std of returns (mean range) over
the previous `vol_minutes` candles, floored at `vol_floor` times the trained scale so a dead quiet hour cannot turn
noise into an anomaly. A move that is large for the current regime stands out; a busy hour's ordinary moves do not.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

CANDLE_COLUMNS = [
    "symbol", "open_time", "close_time", "open", "high", "low", "close", "volume",
    "quote_volume", "trades", "taker_buy_volume", "taker_buy_quote_volume",
]  # fmt: skip
FEATURES = ["ret", "log_ret", "range", "log_volume"]
WINDOW_STATS = ["win_ret_std", "win_max_range", "win_mean_volume"]
THRESHOLD_COLUMNS = [
    "ret_center", "ret_scale", "range_center", "range_scale", "volume_center", "volume_scale",
    "win_ret_std_limit", "win_max_range_limit", "win_mean_volume_limit",
]  # fmt: skip
CONFIDENCE = {0: None, 1: "LOW", 2: "MEDIUM", 3: "HIGH"}
CONFIRM_VOTES = 2


@dataclass(frozen=True)
class DetectionConfig:
    k: float = 3.0  # a per-candle feature flags when its |z| > k
    window_minutes: int = 60  # trailing window of stream 2
    window_quantile: float = 0.999  # window limits: this quantile of the trained window-statistic distribution
    robust: bool = True  # median/MAD instead of mean/std for the trained per-candle statistics
    vol_minutes: int = 60  # trailing candles that set the current volatility scale (0: trained scale only)
    vol_floor: float = 0.5  # the current scale never drops below this fraction of the trained scale
    vol_how: str = "std"
    min_train_rows: int = 1440  # fewer training candles than this is not a threshold set worth trusting

    @property
    def history_minutes(self) -> int:
        """Candles of context a batch needs before the first candle it scores."""
        return max(self.window_minutes, self.vol_minutes)


def features(candles: pd.DataFrame) -> pd.DataFrame:
    """Adds return, log return, range and log volume. `candles` holds CANDLE_COLUMNS."""
    out = candles.copy()
    out["ret"] = (out["close"] - out["open"]) / out["open"]
    out["log_ret"] = np.log(out["close"] / out["open"])
    out["range"] = (out["high"] - out["low"]) / out["low"]
    out["log_volume"] = np.log1p(out["volume"])
    return out


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values(["symbol", "open_time"], kind="stable").reset_index(drop=True)


def window_stats(frame: pd.DataFrame, window_minutes: int) -> pd.DataFrame:
    """Trailing window statistics for each candle (the window ends with, and includes, that candle).

    The window is defined by time, not by row count: a gap in the data shortens it (`win_count` says how many
    candles it held), and a window is only complete when it holds `window_minutes` candles.
    """
    frame = _sorted(frame)
    indexed = frame.set_index("open_time")
    rolling = indexed.groupby("symbol", sort=False)[["ret", "range", "volume"]].rolling(f"{window_minutes}min")
    stats = pd.DataFrame(
        {
            "win_ret_std": rolling["ret"].std(ddof=0).to_numpy(),
            "win_max_range": rolling["range"].max().to_numpy(),
            "win_mean_volume": rolling["volume"].mean().to_numpy(),
            "win_count": rolling["ret"].count().to_numpy().astype("int32"),
        }
    )
    return pd.concat([frame, stats], axis=1)


def _center_scale(values: pd.Series, robust: bool) -> tuple[float, float]:
    values = values.dropna()
    if robust:
        center = float(values.median())
        return center, float(1.4826 * (values - center).abs().median())
    return float(values.mean()), float(values.std(ddof=0))


def train(candles: pd.DataFrame, config: DetectionConfig) -> pd.DataFrame:
    """Per-symbol thresholds from a training period of candles: one row per symbol, THRESHOLD_COLUMNS + train_*."""
    frame = window_stats(features(candles), config.window_minutes)
    rows = []
    for symbol, group in frame.groupby("symbol", sort=True):
        complete = group[group["win_count"] >= config.window_minutes]
        ret_center, ret_scale = _center_scale(group["ret"], config.robust)
        range_center, range_scale = _center_scale(group["range"], config.robust)
        volume_center, volume_scale = _center_scale(group["log_volume"], config.robust)
        limits = {
            f"{stat}_limit": float(complete[stat].quantile(config.window_quantile)) if len(complete) else np.nan
            for stat in WINDOW_STATS
        }
        rows.append(
            {
                "symbol": symbol,
                "ret_center": ret_center,
                "ret_scale": ret_scale,
                "range_center": range_center,
                "range_scale": range_scale,
                "volume_center": volume_center,
                "volume_scale": volume_scale,
                **limits,
                "train_start": group["open_time"].min(),
                "train_end": group["open_time"].max(),
                "train_rows": len(group),
            }
        )
    return pd.DataFrame(rows)


def degenerate(thresholds: pd.DataFrame, config: DetectionConfig) -> pd.DataFrame:
    """Threshold rows that must not be used, with the reason: zero/NaN scales or limits, too few rows."""
    numbers = thresholds[THRESHOLD_COLUMNS]
    bad_value = numbers.isna().any(axis=1) | (thresholds[[c for c in THRESHOLD_COLUMNS if "scale" in c]] <= 0).any(
        axis=1
    )
    few_rows = thresholds["train_rows"] < config.min_train_rows
    reasons = np.where(bad_value, "zero or NaN statistic", np.where(few_rows, "too few training rows", ""))
    return thresholds.assign(reason=reasons)[bad_value | few_rows]


def _trailing(frame: pd.DataFrame, column: str, minutes: int, how: str) -> pd.Series:
    """Per symbol, the std or mean of `column` over the previous `minutes` candles (the current one excluded)."""
    shifted = frame.groupby("symbol", sort=False)[column].shift(1)
    rolling = shifted.groupby(frame["symbol"], sort=False).rolling(minutes, min_periods=minutes // 2)
    if how == "abs":
        rolling = shifted.abs().groupby(frame["symbol"], sort=False).rolling(minutes, min_periods=minutes // 2)
        result = rolling.mean() * np.sqrt(np.pi / 2)
    else:
        result = rolling.std(ddof=0) if how == "std" else rolling.mean()
    return result.reset_index(level=0, drop=True).sort_index()


def score(candles: pd.DataFrame, thresholds: pd.DataFrame, config: DetectionConfig) -> pd.DataFrame:
    """Scores every candle of `candles` (history included; callers keep the rows they want).

    `thresholds` has one row per symbol (THRESHOLD_COLUMNS and `version`); candles of a symbol without
    thresholds get no z-scores, no votes and the reason "no thresholds".
    """
    frame = window_stats(features(candles), config.window_minutes)
    t = frame[["symbol"]].merge(thresholds, on="symbol", how="left")

    ret_scale = t["ret_scale"]
    range_scale = t["range_scale"]
    range_center = t["range_center"]
    if config.vol_minutes:
        # Volatility that follows the market: trailing std of returns and mean range, floored.
        ret_scale = np.maximum(_trailing(frame, "ret", config.vol_minutes, config.vol_how), config.vol_floor * ret_scale)
        ret_scale = ret_scale.fillna(t["ret_scale"])
        local_range = _trailing(frame, "range", config.vol_minutes, "mean")
        ratio = np.maximum(local_range / t["range_center"], config.vol_floor).fillna(1.0)
        range_center = t["range_center"] * ratio
        range_scale = t["range_scale"] * ratio

    frame["z_ret"] = (frame["ret"] - t["ret_center"]) / ret_scale
    frame["z_range"] = (frame["range"] - range_center) / range_scale
    frame["z_volume"] = (frame["log_volume"] - t["volume_center"]) / t["volume_scale"]

    k = config.k
    has = t["ret_scale"].notna()
    complete = frame["win_count"] >= config.window_minutes
    frame["flag_price"] = has & (frame["z_ret"].abs() > k)
    frame["flag_range"] = has & (frame["z_range"] > k)
    frame["flag_volume"] = has & (frame["z_volume"] > k)
    for stat in WINDOW_STATS:
        frame[f"flag_{stat}"] = has & complete & (frame[stat] > t[f"{stat}_limit"])
    window_flags = frame[[f"flag_{s}" for s in WINDOW_STATS]].sum(axis=1)
    frame["flag_window"] = window_flags >= 2

    votes = frame[["flag_price", "flag_range", "flag_window"]].sum(axis=1).astype("int32")
    frame["votes"] = votes
    frame["confidence"] = votes.map(CONFIDENCE)
    frame["is_anomaly"] = votes >= CONFIRM_VOTES
    frame["thresholds_version"] = t["version"] if "version" in t else pd.NA
    frame["reasons"] = _reasons(frame, t, k)
    return frame


def _reasons(frame: pd.DataFrame, t: pd.DataFrame, k: float) -> pd.Series:
    """Each flag in words, e.g. "price move z=+7.2 (|z|>3)"; "no thresholds" when the symbol has none."""
    window_text = "abnormal 1h window: " + (
        _when(frame["flag_win_ret_std"], "return std " + _ratio(frame, t, "win_ret_std"))
        + _when(frame["flag_win_max_range"], " max range " + _ratio(frame, t, "win_max_range"))
        + _when(frame["flag_win_mean_volume"], " mean volume " + _ratio(frame, t, "win_mean_volume"))
    ).str.strip()
    texts = [
        _when(frame["flag_price"], "price move z=" + frame["z_ret"].map("{:+.1f}".format) + f" (|z|>{k:g})"),
        _when(frame["flag_range"], "range z=" + frame["z_range"].map("{:.1f}".format) + f" (z>{k:g})"),
        _when(frame["flag_volume"], "volume z=" + frame["z_volume"].map("{:.1f}".format) + f" (z>{k:g})"),
        _when(frame["flag_window"], window_text),
    ]
    joined = texts[0]
    for text in texts[1:]:
        joined = joined + _when((joined != "") & (text != ""), "; ") + text
    return joined.where(t["ret_scale"].notna(), "no thresholds")


def _when(flag: pd.Series, text: pd.Series | str) -> pd.Series:
    return pd.Series(np.where(flag, text, ""), index=flag.index)


def _ratio(frame: pd.DataFrame, t: pd.DataFrame, stat: str) -> pd.Series:
    return (frame[stat] / t[f"{stat}_limit"]).map("{:.1f}x limit".format)
