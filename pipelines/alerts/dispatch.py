"""The stream's alerting: with each micro-batch's incidents, send the alerts not yet recorded for a sink, then
record them (while the incidents are merged: a crash before either re-runs the batch, which finds the same alerts).

What is guaranteed, per alert id and sink (the id is the incident's id and the kind, see events):
- an alert recorded in gold.alerts for a sink (delivered or dead_letter) is never sent to that sink again, across
  replays and restarts;
- deliveries are recorded (one MERGE per micro-batch, after its sends) before the batch returns and its Kafka
  offsets commit; a crash between a send and that record sends the alert again after the restart, with the same
  id (receivers drop what they already have by `alert_id`, also in the webhook's X-Marketlake-Alert-Id header);
- a sink that fails every attempt gets a dead_letter row with the last error, and the stream goes on.
At least once per sink, then; exactly once unless the process dies between a send and its record.
After a restart, the incidents of each symbol's last write are alerted again unless recorded: they are the only
ones whose alerts a crash can have interrupted, as the batch that wrote them re-runs and finds them written.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime

import pandas as pd
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from lakehouse.delta_io import as_spark, merge_into, read_table, to_pandas
from lakehouse.settings import Settings
from lakehouse.tables import GOLD_ALERTS, GOLD_INCIDENTS, GOLD_MARKET_INCIDENTS
from pipelines.alerts.events import Alert, alerts_of
from pipelines.alerts.sinks import DELIVERED, Delivery, Sink, configured_sinks, deliver
from pipelines.detection.incidents import upsert
from pipelines.ingestion.binance_rest import Backoff

log = logging.getLogger(__name__)


def pending(alerts: Sequence[Alert], sinks: Sequence[Sink], recorded: set[tuple[str, str]]) -> list[tuple[Sink, Alert]]:
    """(sink, alert) pairs still to send: confident enough for the sink and not recorded for it."""
    return [
        (sink, alert)
        for alert in alerts
        for sink in sinks
        if alert.at_least(sink.min_confidence) and (alert.alert_id, sink.name) not in recorded
    ]


def delivery_rows(deliveries: Sequence[Delivery], delivered_at: datetime) -> pd.DataFrame:
    """gold.alerts rows of deliveries."""
    rows = [
        {
            "alert_id": d.alert.alert_id,
            "sink": d.sink,
            "incident_id": d.alert.incident_id,
            "kind": d.alert.kind,
            "symbol": d.alert.symbol,
            "confidence": d.alert.confidence,
            "status": d.status,
            "attempts": d.attempts,
            "error": d.error,
            "message": d.alert.message,
            "delivered_at": delivered_at.replace(tzinfo=None),
        }
        for d in deliveries
    ]
    return pd.DataFrame(rows, columns=GOLD_ALERTS.columns).astype({"attempts": "int32"})


def last_written(incidents: pd.DataFrame) -> pd.DataFrame:
    """Each symbol's incidents of its last write (gold.incidents rows sharing the symbol's newest scored_through);
    for gold.market_incidents rows (no symbol), those of the last write."""
    if "symbol" not in incidents:
        return incidents[incidents["scored_through"] == incidents["scored_through"].max()]
    newest = incidents.groupby("symbol")["scored_through"].transform("max")
    return incidents[incidents["scored_through"] == newest]


class Alerting:
    """What the stream keeps for alerting between micro-batches; `load` (again) after a start or a failed batch."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.sinks = configured_sinks(settings)
        self.backoff = Backoff(initial_s=settings.alerts_backoff_s)
        # Incidents whose alerts may not all be sent: a symbol's and the market's.
        self.unsent = pd.DataFrame(columns=GOLD_INCIDENTS.columns)
        self.unsent_market = pd.DataFrame(columns=GOLD_MARKET_INCIDENTS.columns)
        self.recorded: set[tuple[str, str]] = set()  # (alert_id, sink) in gold.alerts

    def load(self, spark: SparkSession, incidents: pd.DataFrame, market: pd.DataFrame) -> None:
        """From the tables: gold.incidents and gold.market_incidents (whole)."""
        self.unsent, self.unsent_market = last_written(incidents), last_written(market)
        self.recorded = set()
        ids = self.unsent["incident_id"].tolist() + self.unsent_market["market_incident_id"].tolist()
        if self.sinks and ids:
            rows = read_table(spark, self.settings, GOLD_ALERTS).filter(F.col("incident_id").isin(ids))
            self.recorded = set(to_pandas(rows.select("alert_id", "sink")).itertuples(index=False, name=None))

    @property
    def pending_incidents(self) -> bool:
        return not (self.unsent.empty and self.unsent_market.empty)

    def send(self, changed: pd.DataFrame, changed_market: pd.DataFrame) -> list[Delivery]:
        """Send the alerts of the unsent and changed incidents (rows of gold.incidents and gold.market_incidents
        about to be merged) that no sink has recorded; `record` their outcomes next."""
        candidates = upsert(self.unsent, changed, "incident_id")
        market = upsert(self.unsent_market, changed_market, "market_incident_id")
        settings = self.settings
        alerts = alerts_of(candidates, settings.alerts_cooldown_minutes, settings.alerts_on_close, market)
        deliveries = [
            deliver(sink, alert, settings.alerts_attempts, self.backoff)
            for sink, alert in pending(alerts, self.sinks, self.recorded)
        ]
        for d in deliveries:
            log.log(
                logging.INFO if d.status == DELIVERED else logging.ERROR,
                "alert %s -> %s: %s after %d attempt(s)%s", d.alert.alert_id, d.sink, d.status, d.attempts,
                f": {d.error}" if d.error else "",
            )  # fmt: skip
        self.unsent, self.unsent_market = candidates.iloc[:0], market.iloc[:0]
        return deliveries

    def record(self, spark: SparkSession, deliveries: Sequence[Delivery]) -> None:
        """The outcomes in gold.alerts: from then on, never sent to their sinks again."""
        if deliveries:
            rows = delivery_rows(deliveries, datetime.now(UTC))
            merge_into(spark, self.settings, GOLD_ALERTS, as_spark(spark, GOLD_ALERTS, rows))
            self.recorded |= {(d.alert.alert_id, d.sink) for d in deliveries}

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()
