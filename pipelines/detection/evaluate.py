"""How good is the detector? Incidents per day on real data, and the recall of planted single-candle shocks.

The candles are scored as `marketlake backtest` scores them (pipelines.detection.backtest.walk_forward): per
symbol, the first `train_days` of candles only train; each later day (every `recalibrate_days`, 1 by default as
the nightly recalibration; 0: trained once on the first `train_days`) is scored with thresholds trained on the
`train_days` before it, with the `history_minutes` candles before it as context. Thresholds are trained on the real
candles only; the shocked copies are scored with them.

Incidents are pipelines.detection.incidents' (one per market event: a 30-minute cool-down). A planted shock moves one
candle's close by k times sigma, the std of that symbol's 1-minute returns over the scored period (and stretches
high/low to keep the candle valid); it is caught when a confirmed anomaly is raised at its minute or within the
next `catch_minutes`. Shocks are spaced `shock_spacing_minutes` apart, more than the detector's history_minutes,
so that no shock is in another one's trailing windows or volatility: every shock is an independent trial, and the
denser they are, the smaller the recall's sampling error (61 minutes: about 500 shocks in 3 weeks).

Files of several symbols over the same period are also scored together (`evaluate_market`): how many of their
incidents moved with the market (pipelines.detection.market), how many market incidents that makes, and the alerts
it takes to tell them, grouped (one per market incident) and not.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from pipelines.alerts.events import alerts_of
from pipelines.detection.backtest import period_starts, score_periods, split_train, walk_forward
from pipelines.detection.incidents import INCIDENT_GAP_MINUTES, incidents
from pipelines.detection.market import MARKET, MarketConfig, period_incidents
from pipelines.detection.maths import DetectionConfig, features


@dataclass(frozen=True)
class EvaluationConfig:
    train_days: float = 7.0
    recalibrate_days: int = 1  # as the nightly schedule; 0: trained once on the first train_days
    shock_sizes: tuple[float, ...] = (4.0, 6.0, 8.0)
    shock_spacing_minutes: int = 61  # more than the detector's history_minutes: no shock sees another
    catch_minutes: int = 2
    incident_gap_minutes: int = INCIDENT_GAP_MINUTES
    seed: int = 7


# What every calm month must reach (issue #14): incidents and HIGH incidents per day, 6-sigma recall.
TARGETS = {"incidents_per_day": 1.5, "high_per_day": 0.2, "recall_6sigma": 0.95}


def plant_shocks(
    candles: pd.DataFrame, k: float, sigma: float, spacing: int, rng: np.random.Generator
) -> tuple[pd.DataFrame, pd.Series]:
    """One symbol's candles with a shock every `spacing` minutes (random sign, random offset); returns the
    changed candles and the shocked open_times."""
    out = candles.sort_values("open_time").reset_index(drop=True)
    first = int(rng.integers(0, spacing))
    positions = np.arange(first, len(out), spacing)
    signs = rng.choice([-1.0, 1.0], size=len(positions))
    idx = out.index[positions]
    close = out.loc[idx, "close"] + signs * k * sigma * out.loc[idx, "open"]
    out.loc[idx, "close"] = close
    out.loc[idx, "high"] = np.maximum(out.loc[idx, "high"], close)
    out.loc[idx, "low"] = np.minimum(out.loc[idx, "low"], close)
    return out, out.loc[idx, "open_time"]


def recall(scored: pd.DataFrame, shocks: pd.Series, catch_minutes: int) -> float:
    confirmed = set(scored.loc[scored["is_anomaly"], "open_time"])
    caught = sum(
        any(t + pd.Timedelta(minutes=m) in confirmed for m in range(catch_minutes + 1)) for t in shocks
    )  # fmt: skip
    return caught / len(shocks) if len(shocks) else float("nan")


def evaluate(candles: pd.DataFrame, detection: DetectionConfig, config: EvaluationConfig) -> pd.DataFrame:
    """One row per symbol with candles after its training days: days scored, incidents and HIGH incidents per day,
    recall of each shock size. The candles are scored by walk_forward, as `marketlake backtest` scores them.

    Only periods that have thresholds count: a day with no candles in the `train_days` before it (e.g. a coin
    relisted after a long halt) is left out rather than scored blind."""
    if config.shock_spacing_minutes <= detection.history_minutes:
        raise ValueError(
            f"shock_spacing_minutes={config.shock_spacing_minutes} must exceed history_minutes="
            f"{detection.history_minutes}, or shocks would see each other"
        )
    rows = []
    for symbol, group in candles.groupby("symbol", sort=True):
        train_part, scored_part = split_train(group, config.train_days)
        if scored_part.empty:
            continue  # nothing after the training days
        scored, thresholds = walk_forward(group, detection, config.train_days, config.recalibrate_days)
        scored = scored[scored["thresholds_version"].notna()]
        covered = scored_part["open_time"].isin(scored["open_time"])
        days = covered.sum() / 1440
        found = incidents(scored, config.incident_gap_minutes)
        row = {
            "symbol": symbol,
            "days": round(days, 1),
            "incidents_per_day": len(found) / days,
            "high_per_day": (found["peak_votes"] == 3).sum() / days,
        }
        sigma = float(features(scored_part[covered])["ret"].std(ddof=0))
        rng = np.random.default_rng(config.seed)
        starts = period_starts(scored_part, config.recalibrate_days)
        for k in config.shock_sizes:
            shocked, times = plant_shocks(scored_part[covered], k, sigma, config.shock_spacing_minutes, rng)
            rescored = score_periods(
                pd.concat([train_part, scored_part[~covered], shocked]), starts, thresholds, detection
            )
            row[f"recall_{k:g}sigma"] = recall(rescored, times, config.catch_minutes)
        rows.append(row)
    recalls = [f"recall_{k:g}sigma" for k in config.shock_sizes]
    return pd.DataFrame(rows, columns=["symbol", "days", "incidents_per_day", "high_per_day", *recalls])


def evaluate_files(
    frames: dict[str, pd.DataFrame], detection: DetectionConfig, config: EvaluationConfig
) -> pd.DataFrame:
    """evaluate() on each named set of candles (e.g. one kline file each): one row per name and symbol."""
    tables = [evaluate(frame, detection, config).assign(file=name) for name, frame in frames.items()]
    table = pd.concat([t for t in tables if len(t)] or tables[:1], ignore_index=True)  # skip the empty ones
    return table[["file", *table.columns.drop("file")]]


def target_gap(table: pd.DataFrame, calm: set[str]) -> pd.Series:
    """Per row of an evaluate_files table, the worst of its ratios to the targets (<= 1: all met): 6-sigma recall
    on every file; incidents and HIGH per day on the calm files only (a crash month's incidents are its crash)."""
    ratios = pd.DataFrame({"recall": TARGETS["recall_6sigma"] / table["recall_6sigma"]})
    is_calm = table["file"].isin(calm)
    for column in ("incidents_per_day", "high_per_day"):
        ratios[column] = (table[column] / TARGETS[column]).where(is_calm, 0.0)
    return ratios.max(axis=1)


def leave_one_out(tables: dict[str, pd.DataFrame], calm: set[str]) -> pd.DataFrame:
    """Each file scored with the setting chosen without it. `tables` maps a setting's name to its evaluate_files
    table (same files and symbols). For each file, among the settings that meet every target on the other files,
    the one with the fewest incidents per day on the other calm files (the product's aim); when none meets them
    all, the one whose worst target_gap there is the smallest. One row per file and symbol: the chosen setting's
    figures, with column `setting`."""
    rows = []
    for file in next(iter(tables.values()))["file"].unique():
        others = {name: table[table["file"] != file] for name, table in tables.items()}
        worst = {name: target_gap(other, calm).max() for name, other in others.items()}
        per_day = {
            name: other.loc[other["file"].isin(calm), "incidents_per_day"].mean() for name, other in others.items()
        }
        meeting = [name for name in tables if worst[name] <= 1]
        # dicts keep order: a tie goes to the first setting
        chosen = min(meeting, key=per_day.get) if meeting else min(worst, key=worst.get)
        rows.append(tables[chosen][tables[chosen]["file"] == file].assign(setting=chosen))
    return pd.concat(rows, ignore_index=True)


def setting_grid(base: DetectionConfig) -> dict[str, DetectionConfig]:
    """The settings leave_one_out chooses among: `base` ("default") and its neighbours in k and k_range, the bars
    that were tuned on the dev files."""
    grid = {"default": base}
    for dk, dk_range in itertools.product((-0.2, 0.0, 0.2), (-0.5, 0.0, 0.5)):
        if dk or dk_range:
            k, k_range = round(base.k + dk, 2), round(base.k_range + dk_range, 2)
            grid[f"k={k:g} k_range={k_range:g}"] = replace(base, k=k, k_range=k_range)
    return grid


def market_row(scored: pd.DataFrame, symbols: pd.DataFrame, market_rows: pd.DataFrame) -> dict[str, object]:
    """Scored candles of several symbols over one period, and their period_incidents: per day, symbol incidents (all,
    and those with the market), market incidents, and the alerts that tell them, market incidents grouped and not."""
    days = scored.groupby("symbol")["open_time"].size().max() / 1440
    grouped = len(alerts_of(symbols, 0, market=market_rows))
    alone = len(alerts_of(symbols.assign(scope="own"), 0))
    return {
        "symbols": ",".join(sorted(scored["symbol"].unique())),
        "days": round(days, 1),
        "incidents_per_day": len(symbols) / days,
        "with_market_per_day": (symbols["scope"] == MARKET).sum() / days,
        "market_incidents_per_day": len(market_rows) / days,
        "alerts_per_day": grouped / days,
        "alerts_per_day_ungrouped": alone / days,
    }


def evaluate_market(
    frames: dict[str, pd.DataFrame], detection: DetectionConfig, config: EvaluationConfig, market: MarketConfig
) -> pd.DataFrame:
    """market_row for each period (the part after the symbol in the frames' names, e.g. "BTCUSDT 2023-02") that
    has two symbols or more, over the whole period and over the day of its largest market move (e.g. a crash)."""
    periods: dict[str, list[pd.DataFrame]] = {}
    for name, frame in frames.items():
        periods.setdefault(name.split(" ", 1)[-1], []).append(frame)
    rows = []
    for period, parts in sorted(periods.items()):
        if len(parts) < 2:
            continue
        scored, _ = walk_forward(
            pd.concat(parts, ignore_index=True), detection, config.train_days, config.recalibrate_days
        )
        scored = scored[scored["thresholds_version"].notna()]
        symbols, moves = period_incidents(scored, market)
        rows.append({"period": period, **market_row(scored, symbols, moves)})
        if len(moves):
            day = moves.loc[moves["market_change"].abs().idxmax(), "start"].floor("D")
            on_day = scored[scored["open_time"].dt.floor("D") == day]
            rows.append({"period": f"{day:%Y-%m-%d}", **market_row(on_day, *period_incidents(on_day, market))})
    return pd.DataFrame(rows)
