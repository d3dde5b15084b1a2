"""Which alerts are overdue (pipelines.alerts.audit): owed by gold.incidents rows, not recorded in gold.alerts, and
their incident's row written more than the grace period ago. Pure pandas."""

from datetime import datetime, timedelta

import pandas as pd

from lakehouse.tables import GOLD_ALERTS, GOLD_INCIDENTS
from pipelines.alerts.audit import overdue, owed
from pipelines.alerts.sinks import KafkaSink, WebhookSink
from tests.test_expectations import alert_row, incident_row

# The Kafka topic takes MEDIUM and HIGH alerts, the webhook only HIGH ones; neither connects unless sent to.
SINKS = [KafkaSink("127.0.0.1:9", "alerts"), WebhookSink("http://127.0.0.1:9/", min_confidence="HIGH")]
NOW = datetime(2026, 12, 1, 6, 0)


def table(columns: list[str], *rows: dict) -> pd.DataFrame:
    return pd.DataFrame(list(rows), columns=columns)


def incidents(*rows: dict) -> pd.DataFrame:
    return table(GOLD_INCIDENTS.columns, *rows)


def written(at: datetime) -> pd.DataFrame:
    """The write time of incident_row()'s row, as gold.scores' detected_at of its scored_through minute."""
    row = incident_row()
    return pd.DataFrame([{"symbol": row["symbol"], "scored_through": row["scored_through"], "written_at": at}])


def test_owed_are_the_alerts_each_sink_wants_that_it_has_no_row_for():
    # Opened at MEDIUM (01:31), HIGH at 01:32: an opened alert (MEDIUM) and an escalated one (HIGH).
    rows = incidents(incident_row())
    due = owed(rows, table(GOLD_ALERTS.columns), SINKS, cooldown_minutes=0)
    assert sorted(zip(due["alert_id"], due["sink"], strict=True)) == [
        ("FILUSDT-20250203T0131:escalated", "kafka"),
        ("FILUSDT-20250203T0131:escalated", "webhook"),
        ("FILUSDT-20250203T0131:opened", "kafka"),
    ]
    # A dead letter is recorded too: it is reported as such, not as overdue.
    recorded = table(
        GOLD_ALERTS.columns,
        alert_row("FILUSDT-20250203T0131:opened", sink="kafka"),
        alert_row("FILUSDT-20250203T0131:escalated", sink="webhook", status="dead_letter", error="timeout"),
    )
    due = owed(rows, recorded, SINKS, cooldown_minutes=0)
    assert due[["alert_id", "sink"]].values.tolist() == [["FILUSDT-20250203T0131:escalated", "kafka"]]
    assert due["scored_through"].tolist() == [incident_row()["scored_through"]]
    assert owed(incidents(), recorded, SINKS, cooldown_minutes=0).empty
    assert owed(rows, recorded, [], cooldown_minutes=0).empty  # no sink, nothing owed


def test_an_owed_alert_is_overdue_once_its_incident_row_is_older_than_the_grace_period():
    high = incident_row(peak_time=incident_row()["start"])
    due = owed(incidents(high), table(GOLD_ALERTS.columns), SINKS, cooldown_minutes=0)
    assert len(due) == 2  # HIGH from its first minute: one opened alert, for both sinks
    grace = timedelta(minutes=5)
    assert overdue(due, written(NOW - timedelta(minutes=4)), NOW, grace).empty  # being sent, or about to be
    late = overdue(due, written(NOW - timedelta(minutes=6)), NOW, grace)
    assert late["sink"].tolist() == ["kafka", "webhook"]
    assert late["written_at"].tolist() == [pd.Timestamp(NOW - timedelta(minutes=6))] * 2
    # Written more than the lookback (a day) ago: no longer judged (a sink added later is owed every old alert).
    assert overdue(due, written(NOW - timedelta(days=2)), NOW, grace).empty
    assert len(overdue(due, written(NOW - timedelta(days=2)), NOW, grace, lookback=timedelta(days=3))) == 2
    # No known write time: counted from scored_through (candle time, here 2025).
    assert overdue(due, written(NOW).iloc[:0], NOW, grace).empty
    assert len(overdue(due, written(NOW).iloc[:0], NOW, grace, lookback=timedelta(days=700))) == 2
    assert overdue(due.iloc[:0], written(NOW), NOW, grace).empty
