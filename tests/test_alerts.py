"""Alerts (pipelines.alerts): which alerts incidents imply, their ids and messages, the sinks' minimum confidence,
retries with back-off against a real local HTTP receiver, dead letters. No Spark, no broker."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from lakehouse.services.process import free_port
from lakehouse.settings import Settings
from lakehouse.tables import GOLD_ALERTS, GOLD_MARKET_INCIDENTS
from pipelines.alerts.dispatch import delivery_rows, last_written, pending
from pipelines.alerts.events import ESCALATED, OPENED, Alert, alerts_of, describe
from pipelines.alerts.sinks import DEAD_LETTER, DELIVERED, KafkaSink, WebhookSink, configured_sinks, deliver
from pipelines.detection.incidents import advance
from pipelines.ingestion.binance_rest import Backoff
from tests.test_incidents import NONE, at, quiet, scored

NO_MARKET = pd.DataFrame(columns=GOLD_MARKET_INCIDENTS.columns)


def incident(votes: dict[int, int], then: dict[int, int] | None = None) -> pd.DataFrame:
    rows = advance(NONE, scored("A", votes), 5)
    return advance(rows, scored("A", then), 5) if then else rows


def kinds(alerts: list[Alert]) -> list[tuple[str, str]]:
    return [(a.kind, a.confidence) for a in alerts]


def test_an_incident_that_opens_medium_and_reaches_high_gives_an_opened_and_an_escalated_alert():
    # However its minutes were batched: one batch, or the HIGH minute later.
    for rows in (incident({0: 2, 1: 3}), incident({0: 2}, {1: 3})):
        alerts = alerts_of(rows, cooldown_minutes=60)
        assert kinds(alerts) == [(OPENED, "MEDIUM"), (ESCALATED, "HIGH")]
        assert [a.alert_id for a in alerts] == ["A-20240101T0000:opened", "A-20240101T0000:escalated"]
    assert kinds(alerts_of(incident({0: 3, 1: 2}), 60)) == [(OPENED, "HIGH")]  # HIGH from its first minute
    assert kinds(alerts_of(incident({0: 2, 1: 2}), 60)) == [(OPENED, "MEDIUM")]
    assert alerts_of(incident({0: 2}), 60) == alerts_of(incident({0: 2}), 60)  # the same alert, the same message


def test_a_closed_alert_only_when_asked_and_the_cool_down_silences_storms_but_not_escalations():
    closed = advance(incident({0: 2}), quiet("A", 10), 5)
    assert kinds(alerts_of(closed, 60)) == [(OPENED, "MEDIUM")]
    assert kinds(alerts_of(closed, 60, on_close=True)) == [(OPENED, "MEDIUM"), ("closed", "MEDIUM")]
    # A second incident 11 minutes after the first ended: inside a 60-minute cool-down, outside a 10-minute one.
    second = advance(closed, scored("A", {11: 2, 12: 3}), 5)
    assert second["previous_last_minute"].tolist() == [at(0)]
    assert kinds(alerts_of(second, 60, on_close=True)) == [(ESCALATED, "HIGH")]
    assert kinds(alerts_of(second, 10)) == [(OPENED, "MEDIUM"), (ESCALATED, "HIGH")]


def test_the_message_is_json_with_a_slack_text_and_the_incident():
    (alert,) = alerts_of(incident({0: 3}), 60)
    body = json.loads(alert.message)
    assert body["alert_id"] == alert.alert_id and body["kind"] == OPENED and body["confidence"] == "HIGH"
    assert body["text"].startswith("A HIGH incident opened at 2024-01-01 00:00 UTC: price +1.00% over 1 confirmed")
    assert "minute 0" in body["text"] and "[A-20240101T0000]" in body["text"]
    assert body["incident"]["start"] == "2024-01-01T00:00:00" and body["incident"]["previous_last_minute"] is None


def test_each_sink_gets_what_is_confident_enough_and_not_recorded():
    alerts = alerts_of(incident({0: 2, 1: 3}), 60)  # opened MEDIUM, escalated HIGH
    everything, high = WebhookSink("http://x", "MEDIUM"), KafkaSink("b:1", "t", "HIGH")
    todo = pending(alerts, [everything, high], recorded={("A-20240101T0000:opened", "webhook")})
    assert [(sink.name, alert.kind) for sink, alert in todo] == [("webhook", ESCALATED), ("kafka", ESCALATED)]


class FlakySink:
    name, min_confidence = "flaky", "MEDIUM"

    def __init__(self, failures: int) -> None:
        self.failures, self.sent = failures, 0

    def send(self, alert: Alert) -> None:
        self.sent += 1
        if self.sent <= self.failures:
            raise ConnectionError(f"attempt {self.sent}")

    def close(self) -> None:
        pass


def test_deliver_retries_with_back_off_then_dead_letters():
    (alert,) = alerts_of(incident({0: 2}), 60)
    pauses: list[float] = []
    backoff = Backoff(initial_s=1.0)
    ok = deliver(FlakySink(failures=2), alert, 3, backoff, pauses.append)
    assert (ok.status, ok.attempts, ok.error) == (DELIVERED, 3, None)
    assert len(pauses) == 2 and 0.5 <= pauses[0] <= 1.0 <= pauses[1] <= 2.0  # doubling, with jitter
    dead = deliver(FlakySink(failures=5), alert, 3, backoff, lambda _: None)
    assert (dead.status, dead.attempts, dead.error) == (DEAD_LETTER, 3, "ConnectionError: attempt 3")
    rows = delivery_rows([ok, dead], pd.Timestamp("2026-01-01").to_pydatetime())
    assert rows.columns.tolist() == GOLD_ALERTS.columns
    assert rows[["sink", "status", "attempts"]].values.tolist() == [["flaky", DELIVERED, 3], ["flaky", DEAD_LETTER, 3]]


def test_a_webhook_that_answers_500_then_200_gets_the_alert_once(receiver):
    (alert,) = alerts_of(incident({0: 2}), 60)
    receiver.statuses = [500]
    sink = WebhookSink(f"http://127.0.0.1:{receiver.server_address[1]}/hook", timeout_s=2)
    outcome = deliver(sink, alert, 3, Backoff(initial_s=0.01))
    assert (outcome.status, outcome.attempts) == (DELIVERED, 2)
    assert [alert_id for alert_id, _ in receiver.received] == [alert.alert_id] * 2  # the 500 one, then the 200 one
    assert receiver.received[-1][1]["text"].startswith("A MEDIUM incident opened")


def test_a_webhook_that_is_down_dead_letters_the_alert():
    (alert,) = alerts_of(incident({0: 2}), 60)
    sink = WebhookSink(f"http://127.0.0.1:{free_port()}/hook", timeout_s=1)
    outcome = deliver(sink, alert, 2, Backoff(initial_s=0.01))
    assert (outcome.status, outcome.attempts) == (DEAD_LETTER, 2) and "ConnectionError" in outcome.error


def test_sinks_from_settings_kafka_on_webhook_only_with_a_url():
    assert [s.name for s in configured_sinks(Settings.from_env(env={}))] == ["kafka"]
    both = Settings.from_env(
        env={
            "MARKETLAKE_ALERTS_WEBHOOK_URL": "http://hooks.example/x",
            "MARKETLAKE_ALERTS_WEBHOOK_MIN_CONFIDENCE": "HIGH",
            "MARKETLAKE_ALERTS_KAFKA_TOPIC": "",
        }
    )
    assert [(s.name, s.min_confidence) for s in configured_sinks(both)] == [("webhook", "HIGH")]
    assert "hooks.example" not in repr(both)  # a webhook URL is a secret
    with pytest.raises(ValueError, match="LOW, MEDIUM or HIGH"):
        Settings.from_env(env={"MARKETLAKE_ALERTS_KAFKA_MIN_CONFIDENCE": "high"})


def test_after_a_restart_the_incidents_of_each_symbols_last_write_may_have_pending_alerts():
    first = advance(NONE, scored("A", {0: 2}), 5)
    both = advance(first, scored("A", {20: 2}), 5)  # closes the first, opens a second, in one write
    b = advance(NONE, scored("B", {0: 2}), 5)
    table = pd.concat([both, b], ignore_index=True)
    assert last_written(table)["incident_id"].tolist() == both["incident_id"].tolist() + b["incident_id"].tolist()
    assert last_written(pd.concat([first, b]))["incident_id"].tolist() == ["A-20240101T0000", "B-20240101T0000"]


def test_marketlake_alerts_test_sends_one_alert_to_each_sink_and_says_how_it_went(receiver, monkeypatch):
    from typer.testing import CliRunner

    from marketlake.cli import app

    monkeypatch.setenv("MARKETLAKE_ALERTS_KAFKA_TOPIC", "")
    monkeypatch.setenv("MARKETLAKE_ALERTS_WEBHOOK_URL", f"http://127.0.0.1:{receiver.server_address[1]}/hook")
    monkeypatch.setenv("MARKETLAKE_ALERTS_BACKOFF_S", "0.01")
    result = CliRunner().invoke(app, ["alerts", "test"])
    assert result.exit_code == 0, result.output
    assert result.output == "webhook: delivered after 1 attempt(s)\n"
    ((alert_id, body),) = receiver.received
    assert alert_id.startswith("test-") and body["kind"] == "test" and "reachable" in body["text"]

    receiver.statuses = [503, 503, 503]
    failed = CliRunner().invoke(app, ["alerts", "test"])
    assert failed.exit_code == 1 and "webhook: dead_letter after 3 attempt(s): HTTPError: 503" in failed.output


def test_tail_describes_alerts_and_survives_anything_else():
    (alert,) = alerts_of(incident({0: 2}), 60)
    assert describe(alert.message.encode()).startswith("opened    MEDIUM A MEDIUM incident opened at 2024-01-01 00:00")
    assert describe(b"\xff{") == "(not an alert) b'\\xff{'"
    assert describe(b'{"kind": 1}').startswith("(not an alert)")


def test_the_streams_alerting_sends_each_alert_once_per_sink_and_records_every_outcome(monkeypatch):
    """Alerting.run with its Delta record captured: what a restart finds unsent is sent, what is recorded is not."""
    from pipelines.alerts import dispatch

    merged: list[pd.DataFrame] = []
    monkeypatch.setattr(dispatch, "as_spark", lambda spark, table, rows: rows)
    monkeypatch.setattr(dispatch, "merge_into", lambda spark, settings, table, rows: merged.append(rows))
    alerting = dispatch.Alerting(Settings.from_env(env={}, alerts_kafka_topic=""))
    good, down = FlakySink(failures=0), FlakySink(failures=99)
    down.name = "down"
    alerting.sinks, alerting.backoff = [good, down], Backoff(initial_s=0.001)

    opened = incident({0: 2})
    first = alerting.run(None, opened, NO_MARKET)
    outcomes = [(d.sink, d.alert.kind, d.status) for d in first]
    assert outcomes == [("flaky", OPENED, DELIVERED), ("down", OPENED, DEAD_LETTER)]
    assert merged[-1][["sink", "status"]].values.tolist() == [["flaky", DELIVERED], ["down", DEAD_LETTER]]
    grown = advance(opened, scored("A", {1: 3}), 5)
    second = alerting.run(
        None, grown, NO_MARKET
    )  # the opened alert is recorded for both sinks: only the escalation goes
    assert [(d.sink, d.alert.kind) for d in second] == [("flaky", ESCALATED), ("down", ESCALATED)]
    assert alerting.run(None, grown, NO_MARKET) == [] and len(merged) == 2  # nothing twice, nothing recorded twice
    assert good.sent == 2

    # A restart that finds the opened alert recorded for one sink only (a crash between two sends and the record).
    alerting.recorded = {("A-20240101T0000:opened", "flaky")}
    alerting.unsent = last_written(opened)
    assert [(d.sink, d.alert.kind) for d in alerting.run(None, opened.iloc[:0], NO_MARKET)] == [("down", OPENED)]
