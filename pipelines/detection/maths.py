"""The detection maths: one pure implementation (pandas in, pandas out), used by the stream and the backtest.

Per candle (stream 1), per symbol: return, log return, range and log volume, scored against that symbol's trained
statistics. Per trailing window ending at each closed minute (stream 2): std of returns, max range, mean volume,
each against that symbol's trained window limit. Consensus over three independent indicators:

    price move   |z| of the return (return and log return are one indicator) above k
    range        z of the high-low range above k_range
    window       at least 2 of the 3 window statistics above their trained limits

3 votes HIGH, 2 MEDIUM, 1 LOW; an anomaly is confirmed at 2 or more.

Better-than-textbook z-scores, chosen by the backtest numbers (docs/detection.md has them):

- Robust per-symbol scales (`robust`). A symbol's typical 1-minute volatility (ret_scale) is the `scale_quantile`
  (0.75) quantile, over its training minutes, of the volatility of the previous `vol_minutes` minutes, measured as
  sqrt(pi/2) * mean |return|; the range's typical spread (range_scale) is the same quantile of the std of the range
  over the same trailing minutes. A crash in the training period moves a quantile of hourly values little, and
  unlike the median absolute deviation of single candles it does not collapse on coarse tick sizes, where most
  1-minute returns and ranges are 0 or one tick. The upper quartile rather than the median makes the bar scale-free
  across markets: it is 0.89-0.98 of the month's return std on every dev month, where the median is 0.61-0.69 on
  the fine-tick, strongly seasonal BTC and ETH but 0.78 on the coarse-tick NEAR, so one k means the same bar.
- A spread factor s that follows the market within bounds: z_ret = (ret - ret_center) / (ret_scale * s),
  z_range = (range - range_center * s) / (range_scale * s), with s = max(v, a):
  - volatility ratio v = current / typical volatility, clipped to [vol_floor, vol_cap]. A dead quiet hour cannot
    turn noise into an anomaly (floor), and a busy hour raises the bar only so far (cap): a strongly adaptive bar
    hides planted shocks in busy hours without removing the genuine moves of calm months, which mostly come out
    of ordinary hours.
  - activity ratio a = sqrt(trades / (activity_free * trades_center)), clipped to [1, activity_cap]. A minute's
    trades are the market's clock (the variance of a return grows with the number of trades that made it), so a
    move made by a burst of trading is less surprising than the same move on ordinary activity. Minutes with up
    to `activity_free` times the typical trade count are scored as usual; busier ones need a bigger move, never
    more than `activity_cap` times bigger, so crashes (moves of tens of sigmas) stay HIGH.
- Separate k for the range: a large move always has a large range, so the range vote adds information only with a
  bar of its own.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
from pandas.api.indexers import BaseIndexer

from lakehouse.settings import Settings
from lakehouse.tables import CANDLE_COLUMNS, positive_statistics

FEATURES = ["ret", "log_ret", "range", "log_volume"]
WINDOW_STATS = ["win_ret_std", "win_max_range", "win_mean_volume"]
THRESHOLD_COLUMNS = [
    "ret_center", "ret_scale", "range_center", "range_scale", "volume_center", "volume_scale",
    "trades_center", "win_ret_std_limit", "win_max_range_limit", "win_mean_volume_limit",
]  # fmt: skip
POSITIVE_COLUMNS = positive_statistics(THRESHOLD_COLUMNS)  # with every THRESHOLD_COLUMNS known
CONFIDENCE = {0: None, 1: "LOW", 2: "MEDIUM", 3: "HIGH"}
CONFIRM_VOTES = 2


@dataclass(frozen=True)
class DetectionConfig:
    k: float = 2.8  # the price move (and the volume, which does not vote) flags when |z| > k
    k_range: float = 3.5  # the range flags when its z > k_range
    window_minutes: int = 60  # trailing window of stream 2
    window_quantile: float = 0.999  # window limits: this quantile of the trained window-statistic distribution
    robust: bool = True  # typical (median) hourly volatility and medians; False: mean and std of single candles
    vol_minutes: int = 60  # trailing minutes that measure the current volatility (0: trained scales only)
    scale_quantile: float = 0.75  # robust scales: this quantile of the training minutes' trailing-hour values
    vol_floor: float = 1.0  # the volatility ratio never drops below this ...
    vol_cap: float = 1.5  # ... nor rises above this
    activity_free: float = 2.0  # up to this many times the typical trades a minute is scored as usual ...
    activity_cap: float = 3.0  # ... beyond, the bar rises with sqrt(trades), at most this factor (1: never)
    min_train_rows: int = 1440  # fewer training candles than this is not a threshold set worth trusting

    @classmethod
    def from_settings(cls, settings: Settings) -> DetectionConfig:
        """The defaults, with what the environment overrides (MARKETLAKE_DETECTION_*)."""
        overrides = {
            "k": settings.detection_k,
            "window_minutes": settings.detection_window_minutes,
            "robust": settings.detection_robust,
        }
        return replace(cls(), **{k: v for k, v in overrides.items() if v is not None})

    @property
    def history_minutes(self) -> int:
        """Candles of context a batch needs before the first candle it scores."""
        return max(self.window_minutes, self.vol_minutes)

    @property
    def scale_minutes(self) -> int:
        """Trailing minutes of the volatility estimate that the robust scales are typical values of."""
        return self.vol_minutes or self.window_minutes


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
    if frame.empty:
        columns = ["win_ret_std", "win_max_range", "win_mean_volume", "win_count"]
        return pd.concat([frame, pd.DataFrame(columns=columns)], axis=1)
    rolling = _rolling(frame, frame[["ret", "range", "volume"]], window_minutes)
    stats = pd.DataFrame(
        {
            "win_ret_std": rolling["ret"].std(ddof=0).to_numpy(),
            "win_max_range": rolling["range"].max().to_numpy(),
            "win_mean_volume": rolling["volume"].mean().to_numpy(),
            "win_count": rolling["ret"].count().to_numpy().astype("int32"),
        }
    )
    return pd.concat([frame, stats], axis=1)


def _rolling(frame: pd.DataFrame, values: pd.DataFrame | pd.Series, minutes: int, **options: object):
    """A trailing `minutes` window over `values` (aligned to `frame`, which is sorted by symbol and open_time), per
    symbol, in the frame's row order: the bounds of a grouped time-based rolling (each window within one symbol),
    computed directly. pandas' own grouped rolling checks each group's index on its own, ~0.2 s per rolling at
    2,000 symbols; a loop over symbols costs ~2 ms each. The sums restart at each symbol as they do in a group."""
    closed = options.pop("closed", "right")
    window = _TrailingWindow(frame["symbol"].to_numpy(), frame["open_time"].to_numpy(), minutes, closed)
    return values.rolling(window, min_periods=options.pop("min_periods", 1), **options)


class _TrailingWindow(BaseIndexer):
    """Row bounds of the window (t - minutes, t] ("right") or [t - minutes, t) ("left") of each row's symbol."""

    def __init__(self, symbols: np.ndarray, times: np.ndarray, minutes: int, closed: str) -> None:
        super().__init__()
        self.symbols, self.times, self.minutes, self.which = symbols, times.astype("datetime64[ns]"), minutes, closed
        self._bounds: tuple[np.ndarray, np.ndarray] | None = None

    def get_window_bounds(
        self,
        num_values: int = 0,
        min_periods: int | None = None,
        center: bool | None = None,
        closed: str | None = None,
        step: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        if self._bounds is None:
            self._bounds = self._computed()
        return self._bounds

    def _computed(self) -> tuple[np.ndarray, np.ndarray]:
        times = self.times.view("int64")
        width = self.minutes * 60_000_000_000
        side = "left" if self.which == "left" else "right"
        start, end = np.empty(len(times), "int64"), np.empty(len(times), "int64")
        cuts = np.flatnonzero(self.symbols[1:] != self.symbols[:-1]) + 1
        for first, last in zip(np.r_[0, cuts], np.r_[cuts, len(times)], strict=True):
            own = times[first:last]
            start[first:last] = first + np.searchsorted(own, own - width, side=side)
            end[first:last] = first + np.searchsorted(own, own, side=side)
        return start, end


def _trailing(frame: pd.DataFrame, values: pd.Series, minutes: int, how: str) -> pd.Series:
    """Per symbol, over the previous `minutes` minutes (the current candle excluded; NaN until half of them are
    there): "volatility" = sqrt(pi/2) * mean |values|, for normal returns their std, which one spike moves far less
    than it moves a std; "std" = the std of the values. `frame` is sorted by symbol and open_time."""
    magnitude = values.abs() if how == "volatility" else values
    rolling = _rolling(frame, magnitude, minutes, closed="left", min_periods=max(minutes // 2, 1))
    out = rolling.mean() * np.sqrt(np.pi / 2) if how == "volatility" else rolling.std(ddof=0)
    return pd.Series(out.to_numpy(), index=frame.index)


def train(candles: pd.DataFrame, config: DetectionConfig) -> pd.DataFrame:
    """Per-symbol thresholds from a training period of candles: one row per symbol, THRESHOLD_COLUMNS + train_*.

    robust: centers are medians; the return scale is the typical (median) trailing `scale_minutes` volatility of
    returns, the range scale the typical trailing std of the range (see _trailing); the volume scale is the median
    absolute deviation of log volume. Otherwise mean and std of single candles. Window limits: a quantile of the
    complete windows' statistics."""
    frame = window_stats(features(candles), config.window_minutes)
    if config.robust:
        frame["ret_vol"] = _trailing(frame, frame["ret"], config.scale_minutes, "volatility")
        frame["range_std"] = _trailing(frame, frame["range"], config.scale_minutes, "std")
    rows = []
    for symbol, group in frame.groupby("symbol", sort=True):
        complete = group[group["win_count"] >= config.window_minutes]
        if config.robust:
            volume_center = float(group["log_volume"].median())
            scales = {
                "ret_center": float(group["ret"].median()),
                "ret_scale": _quantile(group["ret_vol"], config.scale_quantile),
                "range_center": float(group["range"].median()),
                "range_scale": _quantile(group["range_std"], config.scale_quantile),
                "volume_center": volume_center,
                "volume_scale": float(1.4826 * (group["log_volume"] - volume_center).abs().median()),
                "trades_center": float(group["trades"].median()),
            }
        else:
            scales = {
                "ret_center": float(group["ret"].mean()),
                "ret_scale": float(group["ret"].std(ddof=0)),
                "range_center": float(group["range"].mean()),
                "range_scale": float(group["range"].std(ddof=0)),
                "volume_center": float(group["log_volume"].mean()),
                "volume_scale": float(group["log_volume"].std(ddof=0)),
                "trades_center": float(group["trades"].mean()),
            }
        limits = {
            f"{stat}_limit": float(complete[stat].quantile(config.window_quantile)) if len(complete) else np.nan
            for stat in WINDOW_STATS
        }
        rows.append(
            {
                "symbol": symbol,
                **scales,
                **limits,
                "train_start": group["open_time"].min(),
                "train_end": group["open_time"].max(),
                "train_rows": len(group),
            }
        )
    return pd.DataFrame(rows, columns=["symbol", *THRESHOLD_COLUMNS, "train_start", "train_end", "train_rows"])


def _quantile(values: pd.Series, q: float) -> float:
    """Quantile q of the known values; NaN (without a warning) when there are none."""
    values = values.dropna()
    return float(values.quantile(q)) if len(values) else np.nan


def degenerate(thresholds: pd.DataFrame, config: DetectionConfig, optional: tuple[str, ...] = ()) -> pd.DataFrame:
    """Threshold rows that must not be used, with the reason: zero, negative, NaN or infinite scales or limits, too
    few rows. Columns in `optional` may be NaN (a version trained before they were kept), else must be valid too."""
    values = thresholds[THRESHOLD_COLUMNS].astype("float64")
    bad_value = (
        values.drop(columns=list(optional)).isna().any(axis=1)
        | np.isinf(values).any(axis=1)
        | (values[POSITIVE_COLUMNS] <= 0).any(axis=1)
    )
    few_rows = thresholds["train_rows"] < config.min_train_rows
    reasons = np.where(
        bad_value, "zero, negative, NaN or infinite statistic", np.where(few_rows, "too few training rows", "")
    )
    return thresholds.assign(reason=reasons)[bad_value | few_rows]


def _volatility_ratio(current: pd.Series | None, ret_scale: pd.Series, config: DetectionConfig) -> pd.Series:
    """Current (see _measured) over typical volatility, clipped to [vol_floor, vol_cap]; 1 before there is enough
    history and when vol_minutes is 0."""
    if current is None:
        return pd.Series(1.0, index=ret_scale.index)
    return (current / ret_scale).fillna(1.0).clip(config.vol_floor, config.vol_cap)


def _activity_ratio(frame: pd.DataFrame, trades_center: pd.Series, config: DetectionConfig) -> pd.Series:
    """sqrt(trades / (activity_free * typical trades)), clipped to [1, activity_cap]; 1 without a typical count
    (thresholds trained before it was kept)."""
    ratio = np.sqrt(frame["trades"] / (config.activity_free * trades_center))
    return ratio.fillna(1.0).clip(1.0, config.activity_cap)


def score(candles: pd.DataFrame, thresholds: pd.DataFrame, config: DetectionConfig) -> pd.DataFrame:
    """Scores every candle of `candles` (history included; callers keep the rows they want).

    A batch scored with the `config.history_minutes` candles before it as context gets exactly the scores it
    gets inside a longer run. `thresholds` has one row per symbol (THRESHOLD_COLUMNS and `version`); candles of a
    symbol without thresholds get no z-scores, no votes and the reason "no thresholds".
    """
    return _voted(_measured(candles, config), thresholds, config)


def score_after(
    context: pd.DataFrame, new: pd.DataFrame, thresholds: pd.DataFrame, config: DetectionConfig
) -> pd.DataFrame:
    """Scores the `new` candles with the `context` candles before them; the rows of `new` only, with its extra
    columns (e.g. kafka_timestamp) kept. The one scoring step of the stream, the backtest and the evaluation.

    `context` should hold each symbol's `config.history_minutes` candles before its first new one: then a candle
    gets exactly the score it gets inside a longer run. A candle in both counts as new."""
    keys = ["symbol", "open_time"]
    candles = pd.concat([context[CANDLE_COLUMNS], new[CANDLE_COLUMNS]]).drop_duplicates(keys, keep="last")
    measured = _measured(candles.sort_values(keys, kind="stable"), config)
    extra = [c for c in new.columns if c not in measured.columns]
    # Only the new rows are scored: the context (60 times as many rows in a live batch) was needed for its windows.
    rows = measured.merge(new[keys + extra].drop_duplicates(keys, keep="last"), on=keys, how="inner")
    scored = _voted(rows, thresholds, config)
    return scored[[c for c in scored.columns if c not in extra] + extra]


def _measured(candles: pd.DataFrame, config: DetectionConfig) -> pd.DataFrame:
    """What needs each candle's history: features, window statistics and, as `_current_vol`, the volatility of the
    previous vol_minutes (when vol_minutes is not 0). Sorted by symbol and open_time."""
    frame = window_stats(features(candles), config.window_minutes)
    if config.vol_minutes:
        frame["_current_vol"] = _trailing(frame, frame["ret"], config.vol_minutes, "volatility")
    return frame


def _voted(frame: pd.DataFrame, thresholds: pd.DataFrame, config: DetectionConfig) -> pd.DataFrame:
    """z-scores, flags, votes and reasons of `_measured` rows (with a RangeIndex), row by row."""
    current = frame.pop("_current_vol") if "_current_vol" in frame else None
    t = frame[["symbol"]].merge(thresholds, on="symbol", how="left")

    spread = np.maximum(
        _volatility_ratio(current, t["ret_scale"], config), _activity_ratio(frame, t["trades_center"], config)
    )
    frame["z_ret"] = (frame["ret"] - t["ret_center"]) / (t["ret_scale"] * spread)
    frame["z_range"] = (frame["range"] - t["range_center"] * spread) / (t["range_scale"] * spread)
    frame["z_volume"] = (frame["log_volume"] - t["volume_center"]) / t["volume_scale"]

    has = t["ret_scale"].notna()
    complete = frame["win_count"] >= config.window_minutes
    frame["flag_price"] = has & (frame["z_ret"].abs() > config.k)
    frame["flag_range"] = has & (frame["z_range"] > config.k_range)
    frame["flag_volume"] = has & (frame["z_volume"] > config.k)
    for stat in WINDOW_STATS:
        frame[f"flag_{stat}"] = has & complete & (frame[stat] > t[f"{stat}_limit"])
    window_flags = frame[[f"flag_{s}" for s in WINDOW_STATS]].sum(axis=1)
    frame["flag_window"] = window_flags >= 2

    votes = frame[["flag_price", "flag_range", "flag_window"]].sum(axis=1).astype("int32")
    frame["votes"] = votes
    frame["confidence"] = votes.map(CONFIDENCE)
    frame["is_anomaly"] = votes >= CONFIRM_VOTES
    frame["thresholds_version"] = t.get("version", pd.NA)
    frame["reasons"] = _reasons(frame, t, config)
    return frame


def _reasons(frame: pd.DataFrame, t: pd.DataFrame, config: DetectionConfig) -> pd.Series:
    """Each flag in words, e.g. "price move z=+7.2 (|z|>3.3)"; "no thresholds" when the symbol has none."""
    reasons = pd.Series("", index=frame.index).where(t["ret_scale"].notna(), "no thresholds")
    flags = ["flag_price", "flag_range", "flag_volume", "flag_window"]
    flagged = frame.loc[frame[flags].any(axis=1)]  # words only where needed: formatting is the slow part
    if flagged.empty:
        return reasons
    t = t.loc[flagged.index]
    window_text = (
        "abnormal 1h window: "
        + (
            _when(flagged["flag_win_ret_std"], "return std " + _ratio(flagged, t, "win_ret_std"))
            + _when(flagged["flag_win_max_range"], " max range " + _ratio(flagged, t, "win_max_range"))
            + _when(flagged["flag_win_mean_volume"], " mean volume " + _ratio(flagged, t, "win_mean_volume"))
        ).str.strip()
    )
    k, k_range = config.k, config.k_range
    texts = [
        _when(flagged["flag_price"], "price move z=" + flagged["z_ret"].map("{:+.1f}".format) + f" (|z|>{k:g})"),
        _when(flagged["flag_range"], "range z=" + flagged["z_range"].map("{:.1f}".format) + f" (z>{k_range:g})"),
        _when(flagged["flag_volume"], "volume z=" + flagged["z_volume"].map("{:.1f}".format) + f" (z>{k:g})"),
        _when(flagged["flag_window"], window_text),
    ]
    joined = texts[0]
    for text in texts[1:]:
        joined = joined + _when((joined != "") & (text != ""), "; ") + text
    reasons.loc[flagged.index] = joined
    return reasons


def _when(flag: pd.Series, text: pd.Series | str) -> pd.Series:
    return pd.Series(np.where(flag, text, ""), index=flag.index)


def _ratio(frame: pd.DataFrame, t: pd.DataFrame, stat: str) -> pd.Series:
    return (frame[stat] / t[f"{stat}_limit"]).map("{:.1f}x limit".format)
