"""Which alerts are overdue (pipelines.alerts.audit): owed by gold.incidents and gold.market_incidents rows, not
recorded in gold.alerts, and their incident's row written more than the grace period ago. Pure pandas."""

from datetime import datetime, timedelta

import pandas as pd

from lakehouse.tables import GOLD_ALERTS, GOLD_INCIDENTS, GOLD_MARKET_INCIDENTS
from pipelines.alerts.audit import overdue, owed
from pipelines.alerts.sinks import KafkaSink, WebhookSink
from tests.test_expectations import alert_row, incident_row, market_row

# The Kafka topic takes MEDIUM and HIGH alerts, the webhook only HIGH ones; neither connects unless sent to.
SINKS = [KafkaSink("127.0.0.1:9", "alerts"), WebhookSink("http://127.0.0.1:9/", min_confidence="HIGH")]
NOW = datetime(2026, 12, 1, 6, 0)
THROUGH = incident_row()["scored_through"]  # every row's last write scored this minute
NO_MARKET = pd.DataFrame(columns=GOLD_MARKET_INCIDENTS.columns)
NOTHING_RECORDED = pd.DataFrame(columns=GOLD_ALERTS.columns)


def incidents(*rows: dict) -> pd.DataFrame:
    return pd.DataFrame(list(rows), columns=GOLD_INCIDENTS.columns)


def scores(**written_minutes_ago: int) -> pd.DataFrame:
    """gold.scores rows of THROUGH: {symbol: minutes before NOW it was scored}."""
    rows = [(s, THROUGH, NOW - timedelta(minutes=m)) for s, m in written_minutes_ago.items()]
    return pd.DataFrame(rows, columns=["symbol", "open_time", "detected_at"])


def test_owed_are_the_alerts_each_sink_wants_that_it_has_no_row_for():
    # Opened at MEDIUM (01:31), HIGH at 01:32: an opened alert (MEDIUM) and an escalated one (HIGH).
    rows = incidents(incident_row())
    due = owed(rows, NO_MARKET, NOTHING_RECORDED, SINKS, cooldown_minutes=0)
    assert sorted(zip(due["alert_id"], due["sink"], strict=True)) == [
        ("FILUSDT-20250203T0131:escalated", "kafka"),
        ("FILUSDT-20250203T0131:escalated", "webhook"),
        ("FILUSDT-20250203T0131:opened", "kafka"),
    ]
    # A dead letter is recorded too: it is reported as such, not as overdue.
    recorded = pd.DataFrame(
        [
            alert_row("FILUSDT-20250203T0131:opened", sink="kafka"),
            alert_row("FILUSDT-20250203T0131:escalated", sink="webhook", status="dead_letter", error="timeout"),
        ]
    )
    due = owed(rows, NO_MARKET, recorded, SINKS, cooldown_minutes=0)
    assert due[["alert_id", "sink"]].values.tolist() == [["FILUSDT-20250203T0131:escalated", "kafka"]]
    assert due["scored_through"].tolist() == [THROUGH]
    assert owed(incidents(), NO_MARKET, recorded, SINKS, cooldown_minutes=0).empty
    assert owed(rows, NO_MARKET, recorded, [], cooldown_minutes=0).empty  # no sink, nothing owed


def test_an_owed_alert_is_overdue_once_its_incident_row_is_older_than_the_grace_period():
    high = incident_row(peak_time=incident_row()["start"])  # HIGH from its first minute: one opened alert
    due = owed(incidents(high), NO_MARKET, NOTHING_RECORDED, SINKS, cooldown_minutes=0)
    assert len(due) == 2  # for both sinks
    grace = timedelta(minutes=5)
    assert overdue(due, scores(FILUSDT=4), NOW, grace).empty  # being sent, or about to be
    late = overdue(due, scores(FILUSDT=6, NEARUSDT=1), NOW, grace)
    assert late["sink"].tolist() == ["kafka", "webhook"]
    assert late["written_at"].tolist() == [pd.Timestamp(NOW - timedelta(minutes=6))] * 2
    # Written more than the lookback (a day) ago: no longer judged (a sink added later is owed every old alert).
    assert overdue(due, scores(FILUSDT=2 * 1440), NOW, grace).empty
    assert len(overdue(due, scores(FILUSDT=2 * 1440), NOW, grace, lookback=timedelta(days=3))) == 2
    # No known write time: counted from scored_through (candle time, here 2025).
    assert overdue(due, scores(), NOW, grace).empty
    assert len(overdue(due, scores(), NOW, grace, lookback=timedelta(days=700))) == 2
    assert overdue(due.iloc[:0], scores(FILUSDT=6), NOW, grace).empty


def test_a_market_incident_owes_its_own_alerts_written_when_its_last_symbol_was_scored():
    # FILUSDT and NEARUSDT moved with the market: no alert of their own, the market incident's instead.
    moved = [
        incident_row(s, scope="market", market_incident_id="MARKET-20250203T0131") for s in ("FILUSDT", "NEARUSDT")
    ]
    due = owed(incidents(*moved), pd.DataFrame([market_row()]), NOTHING_RECORDED, SINKS[1:], cooldown_minutes=0)
    assert due[["alert_id", "symbol"]].values.tolist() == [["MARKET-20250203T0131:escalated", "MARKET"]]
    # The market row was written by the batch that scored the minute's last symbol: NEARUSDT's, 4 minutes ago.
    assert overdue(due, scores(FILUSDT=6, NEARUSDT=4), NOW).empty
    assert overdue(due, scores(FILUSDT=7, NEARUSDT=6), NOW)["written_at"].tolist() == [NOW - timedelta(minutes=6)]
