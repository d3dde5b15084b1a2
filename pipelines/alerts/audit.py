"""Alerts the stream owed and did not deliver: what Dagster's checks on gold.alerts report.

The stream sends an incident's alerts in the micro-batch that writes its gold.incidents row, and again in each later
batch that rewrites the row, until every (alert, sink) has a gold.alerts row (delivered or dead_letter). Once the
row stops changing nothing sends them any more (short of a restart), so an alert is overdue when its incident's row
was last written more than a grace period ago and the sink still has no row for it.

When was a row last written? Not `scored_through`: it is candle time (a replay of 2025 candles makes every row a
year old, and an alert being sent right now would count as overdue), and Delta file times move whenever a MERGE
rewrites a file for a neighbouring row. The batch that last wrote the row is the one that scored its
`scored_through` minute, so gold.scores' `detected_at` of (symbol, scored_through) is its wall-clock time.
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
from lakehouse.tables import GOLD_ALERTS, GOLD_INCIDENTS, GOLD_SCORES
from pipelines.alerts.dispatch import pending
from pipelines.alerts.events import alerts_of
from pipelines.alerts.sinks import DEAD_LETTER, Sink, configured_sinks

GRACE = timedelta(minutes=5)
LOOKBACK = timedelta(days=1)
OWED_COLUMNS = ["alert_id", "sink", "incident_id", "symbol", "scored_through"]


def owed(
    incidents: pd.DataFrame,
    recorded: pd.DataFrame,
    sinks: Sequence[Sink],
    cooldown_minutes: int,
    on_close: bool = False,
) -> pd.DataFrame:
    """The (alert, sink) pairs that gold.incidents rows imply (as the stream decides: events.alerts_of, each sink's
    minimum confidence) and that have no gold.alerts row (`recorded`: its alert_id and sink) yet."""
    done = set(zip(recorded["alert_id"], recorded["sink"], strict=True))
    through = incidents.set_index("incident_id")["scored_through"]
    rows = [
        (alert.alert_id, sink.name, alert.incident_id, alert.symbol, through[alert.incident_id])
        for sink, alert in pending(alerts_of(incidents, cooldown_minutes, on_close), sinks, done)
    ]
    return pd.DataFrame(rows, columns=OWED_COLUMNS)


def overdue(
    owed: pd.DataFrame,
    written_at: pd.DataFrame,
    now: datetime,
    grace: timedelta = GRACE,
    lookback: timedelta = LOOKBACK,
) -> pd.DataFrame:
    """The owed alerts whose incident row was last written between `lookback` and `grace` before `now` (naive UTC,
    as the tables hold times). `written_at`: (symbol, scored_through, written_at). A row with no known write time
    (its gold.scores minute is gone) counts from its scored_through, candle time, which live trails the clock by a
    minute or two."""
    out = owed.merge(written_at, on=["symbol", "scored_through"], how="left")
    out["written_at"] = pd.to_datetime(out["written_at"]).fillna(out["scored_through"])
    now = pd.Timestamp(now)
    return out[out["written_at"].between(now - lookback, now - grace, inclusive="left")].reset_index(drop=True)


@dataclass(frozen=True)
class Audit:
    overdue: pd.DataFrame  # OWED_COLUMNS + written_at
    dead_letters: pd.DataFrame  # gold.alerts rows that are dead_letter: alert_id, sink, attempts, error


def audit(spark: SparkSession, settings: Settings, now: datetime, grace: timedelta = GRACE) -> Audit:
    """The overdue alerts and the dead letters, from gold.incidents, gold.alerts and gold.scores, for the sinks
    these settings configure (the stream's, when both run with the same settings)."""
    alerts = to_pandas(
        read_table(spark, settings, GOLD_ALERTS).select("alert_id", "sink", "status", "attempts", "error")
    )
    incidents = to_pandas(read_table(spark, settings, GOLD_INCIDENTS))
    due = owed(
        incidents, alerts, configured_sinks(settings), settings.alerts_cooldown_minutes, settings.alerts_on_close
    )
    dead = alerts[alerts["status"] == DEAD_LETTER].drop(columns="status").reset_index(drop=True)
    return Audit(overdue(due, _written_at(spark, settings, due), now, grace), dead)


def _written_at(spark: SparkSession, settings: Settings, due: pd.DataFrame) -> pd.DataFrame:
    """detected_at of the gold.scores minutes (symbol, scored_through) of the owed alerts' incidents."""
    keys = due[["symbol", "scored_through"]].drop_duplicates()
    if keys.empty:
        return pd.DataFrame(columns=["symbol", "scored_through", "written_at"])
    wanted = spark.createDataFrame(
        keys.rename(columns={"scored_through": "open_time"}), "symbol string, open_time timestamp"
    )
    days = sorted({t.date() for t in keys["scored_through"]})
    scores = read_table(spark, settings, GOLD_SCORES).filter(F.col("open_date").isin(days))  # partitions pruned
    rows = scores.join(F.broadcast(wanted), ["symbol", "open_time"])
    return to_pandas(
        rows.select("symbol", F.col("open_time").alias("scored_through"), F.col("detected_at").alias("written_at"))
    )
