"""Alerts the stream owed and did not deliver: what Dagster's checks on gold.alerts report.

The stream sends an incident's alerts (a symbol's or the market's) in the micro-batch that writes its row, and
again in each later batch that rewrites the row, until every (alert, sink) has a gold.alerts row (delivered or
dead_letter). Once the row stops changing nothing sends them any more (short of a restart), so an alert is overdue
when its incident's row was last written more than a grace period ago and the sink still has no row for it.

When was a row last written? Not `scored_through`: it is candle time (a replay of 2025 candles makes every row a
year old, and an alert being sent right now would count as overdue), and Delta file times move whenever a MERGE
rewrites a file for a neighbouring row. The batch that last wrote a symbol's row is the one that scored its
`scored_through` minute, so gold.scores' `detected_at` of (symbol, scored_through) is its wall-clock time; a market
row's is the latest `detected_at` of its `scored_through` minute over the symbols (never earlier than its write).
Only incidents written within a lookback (a day) are judged: a sink added later (or `on_close` turned on) is owed
the alerts of every older incident, which the stream never sends it, and the check would stay red for ever.
`owed` and `overdue` are pure; `audit` reads the tables.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import pandas as pd
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from lakehouse.delta_io import read_table, to_pandas
from lakehouse.settings import Settings
from lakehouse.tables import GOLD_ALERTS, GOLD_INCIDENTS, GOLD_MARKET_INCIDENTS, GOLD_SCORES
from pipelines.alerts.dispatch import pending
from pipelines.alerts.events import alerts_of
from pipelines.alerts.sinks import DEAD_LETTER, Sink, configured_sinks
from pipelines.detection.market import MARKET_SYMBOL

GRACE = timedelta(minutes=5)
LOOKBACK = timedelta(days=1)
OWED_COLUMNS = ["alert_id", "sink", "incident_id", "symbol", "scored_through"]


def owed(
    incidents: pd.DataFrame,
    market: pd.DataFrame,
    recorded: pd.DataFrame,
    sinks: Sequence[Sink],
    cooldown_minutes: int,
    on_close: bool = False,
) -> pd.DataFrame:
    """The (alert, sink) pairs that gold.incidents and gold.market_incidents rows imply (as the stream decides:
    events.alerts_of, each sink's minimum confidence) with no gold.alerts row (`recorded`: alert_id, sink) yet."""
    done = set(zip(recorded["alert_id"], recorded["sink"], strict=True))
    through = dict(zip(incidents["incident_id"], incidents["scored_through"], strict=True))
    through |= dict(zip(market["market_incident_id"], market["scored_through"], strict=True))
    rows = [
        (alert.alert_id, sink.name, alert.incident_id, alert.symbol, through[alert.incident_id])
        for sink, alert in pending(alerts_of(incidents, cooldown_minutes, on_close, market), sinks, done)
    ]
    return pd.DataFrame(rows, columns=OWED_COLUMNS)


def overdue(
    owed: pd.DataFrame,
    scores: pd.DataFrame,
    now: datetime,
    grace: timedelta = GRACE,
    lookback: timedelta = LOOKBACK,
) -> pd.DataFrame:
    """The owed alerts whose incident row was last written between `lookback` and `grace` before `now` (naive UTC,
    as the tables hold times), with that time as `written_at`. `scores`: gold.scores rows (symbol, open_time,
    detected_at) of the owed rows' scored_through minutes. A row with no known write time (its minute is gone from
    gold.scores) counts from its scored_through, candle time, which live trails the clock by a minute or two."""
    market = scores.groupby("open_time", as_index=False)["detected_at"].max().assign(symbol=MARKET_SYMBOL)
    written = pd.concat([scores, market]).rename(columns={"open_time": "scored_through", "detected_at": "written_at"})
    out = owed.merge(written[["symbol", "scored_through", "written_at"]], on=["symbol", "scored_through"], how="left")
    out["written_at"] = pd.to_datetime(out["written_at"]).fillna(out["scored_through"])
    now = pd.Timestamp(now)
    return out[out["written_at"].between(now - lookback, now - grace, inclusive="left")].reset_index(drop=True)


@dataclass(frozen=True)
class Audit:
    overdue: pd.DataFrame  # OWED_COLUMNS + written_at
    dead_letters: pd.DataFrame  # gold.alerts rows that are dead_letter: alert_id, sink, attempts, error


def audit(spark: SparkSession, settings: Settings, now: datetime, grace: timedelta = GRACE) -> Audit:
    """The overdue alerts and the dead letters, from gold.incidents, gold.market_incidents, gold.alerts and
    gold.scores, for the sinks these settings configure (the stream's, when both run with the same settings)."""
    alerts = to_pandas(
        read_table(spark, settings, GOLD_ALERTS).select("alert_id", "sink", "status", "attempts", "error")
    )
    incidents, market = (to_pandas(read_table(spark, settings, t)) for t in (GOLD_INCIDENTS, GOLD_MARKET_INCIDENTS))
    sinks = configured_sinks(settings)
    due = owed(incidents, market, alerts, sinks, settings.alerts_cooldown_minutes, settings.alerts_on_close)
    dead = alerts[alerts["status"] == DEAD_LETTER].drop(columns="status").reset_index(drop=True)
    return Audit(overdue(due, _scores_of(spark, settings, due["scored_through"]), now, grace), dead)


def _scores_of(spark: SparkSession, settings: Settings, minutes: pd.Series) -> pd.DataFrame:
    """(symbol, open_time, detected_at) of gold.scores' rows of these minutes."""
    minutes = pd.to_datetime(minutes).drop_duplicates()
    if minutes.empty:
        return pd.DataFrame(columns=["symbol", "open_time", "detected_at"])
    wanted = spark.createDataFrame(minutes.to_frame("open_time"), "open_time timestamp")
    days = sorted({t.date() for t in minutes})
    scores = read_table(spark, settings, GOLD_SCORES).filter(F.col("open_date").isin(days))  # partitions pruned
    return to_pandas(scores.join(F.broadcast(wanted), "open_time").select("symbol", "open_time", "detected_at"))
