"""Incidents and alerts through the running stream, on the real broker, Spark and Delta, with a real local HTTP
receiver and a real Kafka consumer: the 2025-02-03 crash, a webhook that fails once, a webhook that is down, and
kill -9 mid-replay."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import threading
from collections import Counter
from datetime import UTC, datetime

import pandas as pd
import pytest
from kafka import KafkaConsumer
from pyspark.sql import functions as F

from lakehouse.delta_io import read_table, to_pandas
from lakehouse.services.process import free_port
from lakehouse.tables import GOLD_ALERTS, GOLD_INCIDENTS, GOLD_MARKET_INCIDENTS, GOLD_SCORES, SILVER_CANDLES
from pipelines.alerts.events import alerts_of
from pipelines.alerts.sinks import send_test_alert
from pipelines.alerts.tail import follow
from pipelines.detection.incidents import incidents
from pipelines.detection.market import MarketConfig, period_incidents
from pipelines.ingestion.kafka_io import make_producer
from pipelines.ingestion.replay import replay
from pipelines.layers.bronze import read_topic
from pipelines.streaming import batch
from pipelines.streaming.batch import process_batch
from pipelines.streaming.query import start_stream
from tests.test_stream import crash_day, prepare, send
from tests.test_stream_recovery import start_stream_process, stop, stored_keys, wait_for


def with_alerts(kafka_settings, webhook_url: str, **more):
    """Both sinks on: an alert topic of the test's own and the webhook."""
    return dataclasses.replace(
        kafka_settings,
        alerts_kafka_topic=f"{kafka_settings.kafka_topic}-alerts",
        alerts_webhook_url=webhook_url,
        alerts_backoff_s=0.05,
        **more,
    )


def url(receiver) -> str:
    return f"http://127.0.0.1:{receiver.server_address[1]}/hook"


def consumed(settings) -> list[tuple[str, str]]:
    """(key, alert id) of every record on the alert topic, read by a real consumer from the beginning."""
    consumer = KafkaConsumer(
        settings.alerts_kafka_topic,
        bootstrap_servers=settings.kafka_bootstrap_servers,
        auto_offset_reset="earliest",
        consumer_timeout_ms=5000,
    )
    try:
        return [(r.key.decode(), json.loads(r.value)["alert_id"]) for r in consumer]
    finally:
        consumer.close()


def table(spark, settings, which) -> pd.DataFrame:
    return to_pandas(read_table(spark, settings, which))


def assert_incidents_are_the_evaluations(spark, settings) -> pd.DataFrame:
    """gold.incidents equals the one definition over gold.scores, and so do its marks and gold.market_incidents
    (but for when they were last written); returns it."""
    stored = table(spark, settings, GOLD_INCIDENTS).sort_values(["symbol", "start"]).reset_index(drop=True)
    expected = incidents(table(spark, settings, GOLD_SCORES))
    assert stored[["symbol", "start", "last_minute", "minutes"]].values.tolist() == (
        expected[["symbol", "start", "end", "minutes"]].values.tolist()
    )
    assert stored["incident_id"].is_unique
    high = stored[stored["peak_confidence"] == "HIGH"].groupby("symbol")["peak_time"].min()
    assert high.to_dict() == {s: pd.Timestamp("2025-02-03 01:54") for s in ("FILUSDT", "NEARUSDT")}
    symbols, market = period_incidents(table(spark, settings, GOLD_SCORES), MarketConfig.from_settings(settings))
    marks = ["incident_id", "scope", "market_incident_id"]
    assert stored[marks].values.tolist() == symbols.sort_values(["symbol", "start"])[marks].values.tolist()
    stored_market = table(spark, settings, GOLD_MARKET_INCIDENTS).sort_values("start").reset_index(drop=True)
    unwritten = ["status", "scored_through"]
    pd.testing.assert_frame_equal(
        stored_market.drop(columns=unwritten), market.drop(columns=unwritten), check_dtype=False
    )
    assert (stored["scope"] == "market").any() and (stored["scope"] == "own").any()
    return stored


def expected_alerts(spark, settings, stored: pd.DataFrame) -> tuple[set[str], set[str]]:
    """The alerts the final tables imply, and those a symbol's incident may have had before the market joined it:
    a symbol that moves first is told as its own, until others follow (then the market's alert names them all)."""
    market = table(spark, settings, GOLD_MARKET_INCIDENTS)
    cooldown = settings.alerts_cooldown_minutes
    must = {a.alert_id for a in alerts_of(stored, cooldown, market=market)}
    return must, {a.alert_id for a in alerts_of(stored.assign(scope="own"), cooldown)} - must


def assert_each_once(received: list[str], must: set[str], may: set[str]) -> None:
    assert must <= set(received) <= must | may
    assert max(Counter(received).values()) == 1


def test_the_crash_day_gives_its_incidents_and_each_alert_once_per_sink(spark, kafka_settings, receiver, tmp_path):
    settings = with_alerts(kafka_settings, url(receiver))
    prepare(spark, settings)
    receiver.statuses = [500]  # the first alert is refused once, then retried
    send(settings, crash_day(hours=6))
    start_stream(spark, settings, available_now=True, max_offsets_per_trigger=250).awaitTermination()

    stored = assert_incidents_are_the_evaluations(spark, settings)
    must, may = expected_alerts(spark, settings, stored)
    assert {"MARKET-20250203T0131:opened", "MARKET-20250203T0131:escalated"} <= must  # the crash, told once
    assert any(not a.startswith("MARKET") for a in must)  # a symbol moving on its own is told as such
    webhook = [alert_id for alert_id, _ in receiver.received]
    assert webhook[0] == webhook[1]  # the 500, then the retry
    assert_each_once(webhook[1:], must, may)
    assert all(body["text"] for _, body in receiver.received)
    kafka = consumed(settings)
    assert sorted(alert_id for _, alert_id in kafka) == sorted(webhook[1:])
    assert all(alert_id.startswith(key) for key, alert_id in kafka)  # key = symbol, or MARKET
    deliveries = table(spark, settings, GOLD_ALERTS)
    assert sorted(zip(deliveries["alert_id"], deliveries["sink"], strict=True)) == sorted(
        (a, sink) for a in webhook[1:] for sink in ("kafka", "webhook")
    )
    assert (deliveries["status"] == "delivered").all()
    first = deliveries[deliveries["alert_id"] == webhook[0]].set_index("sink")["attempts"].to_dict()
    assert first == {"kafka": 1, "webhook": 2}

    # The same topic replayed by a new query (a new checkpoint): nothing new, nothing sent again.
    again = dataclasses.replace(settings, checkpoint_root=str(tmp_path / "again"))
    start_stream(spark, again, available_now=True).awaitTermination()
    assert len(receiver.received) == len(webhook) and len(consumed(settings)) == len(kafka)
    pd.testing.assert_frame_equal(
        table(spark, settings, GOLD_INCIDENTS).sort_values("incident_id").reset_index(drop=True),
        stored.sort_values("incident_id").reset_index(drop=True),
    )


def test_a_webhook_that_is_down_dead_letters_its_alerts_and_the_stream_goes_on(spark, kafka_settings):
    settings = with_alerts(kafka_settings, f"http://127.0.0.1:{free_port()}/hook", alerts_attempts=2)
    prepare(spark, settings)
    send(settings, crash_day(hours=3))
    start_stream(spark, settings, available_now=True).awaitTermination()

    assert len(table(spark, settings, GOLD_SCORES)) == 2 * 180
    deliveries = table(spark, settings, GOLD_ALERTS)
    webhook, kafka = deliveries[deliveries["sink"] == "webhook"], deliveries[deliveries["sink"] == "kafka"]
    assert len(webhook) == len(kafka) > 0
    assert (webhook["status"] == "dead_letter").all() and (webhook["attempts"] == 2).all()
    assert webhook["error"].str.contains("ConnectionError").all()
    assert (kafka["status"] == "delivered").all()


def test_kill_9_mid_replay_then_restart_sends_each_alert_once_unless_caught_between_send_and_record(
    spark, kafka_settings, receiver, tmp_path
):
    settings = with_alerts(kafka_settings, url(receiver))
    prepare(spark, settings)
    candles = crash_day(hours=6)
    log = tmp_path / "stream.log"
    process = start_stream_process(settings, log)
    producer = make_producer(settings)
    replay(candles[:200], producer, settings.kafka_topic, progress=False)  # to 01:40: two market incidents
    wait_for(lambda: len(receiver.received) >= 2, 240, "the first alerts", log)  # two market incidents opened

    stop_replay, sent = threading.Event(), []
    sender = threading.Thread(
        target=lambda: sent.append(replay(candles[200:], producer, settings.kafka_topic, 60.0, False, stop=stop_replay))
    )
    sender.start()
    wait_for(lambda: len(receiver.received) >= 3, 240, "alerts of the crash", log)  # the escalation at 01:54
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    stop_replay.set()
    sender.join()
    # What each sink had, and what was recorded, when the process died.
    had = {"webhook": {a for a, _ in receiver.received}, "kafka": {a for _, a in consumed(settings)}}
    deliveries = table(spark, settings, GOLD_ALERTS)
    recorded = set(zip(deliveries["alert_id"], deliveries["sink"], strict=True))

    process = start_stream_process(settings, log)
    try:
        replay(candles[200 + sent[0].sent :], producer, settings.kafka_topic, progress=False)
        producer.close()

        # gold.scores commits after a micro-batch's incidents and alerts, silver beside them: wait for both.
        # Silver commits last in a micro-batch, after its incidents and alerts.
        done = lambda: len(stored_keys(spark, settings, SILVER_CANDLES)) == len(candles)  # noqa: E731
        wait_for(done, 300, "every candle through the stream", log)
        stored = assert_incidents_are_the_evaluations(spark, settings)
        must, may = expected_alerts(spark, settings, stored)
        # Recorded after it was sent: every alert on both sinks, then the process may stop.
        recorded_all = lambda: set(table(spark, settings, GOLD_ALERTS)["alert_id"]) >= must  # noqa: E731
        wait_for(recorded_all, 60, "every alert", log)
    finally:
        stop(process)
    # Each alert once on each sink, except one the kill caught between its send and its record: sent again once.
    got = {"webhook": [a for a, _ in receiver.received], "kafka": [a for _, a in consumed(settings)]}
    deliveries = table(spark, settings, GOLD_ALERTS)
    for sink, received in got.items():
        counts = Counter(received)
        assert must <= set(counts) <= must | may, sink
        assert set(counts) == set(deliveries.loc[deliveries["sink"] == sink, "alert_id"]), sink
        may_repeat = {a for a in had[sink] if (a, sink) not in recorded}
        assert {a for a, n in counts.items() if n > 1} <= may_repeat and max(counts.values()) <= 2, sink
    assert deliveries.groupby(["alert_id", "sink"]).size().max() == 1 and (deliveries["status"] == "delivered").all()


def test_alerts_test_reaches_the_topic_and_tail_shows_it(kafka_settings):
    settings = dataclasses.replace(kafka_settings, alerts_kafka_topic=f"{kafka_settings.kafka_topic}-alerts")
    (outcome,) = send_test_alert(settings, datetime(2026, 1, 1, tzinfo=UTC))
    assert (outcome.sink, outcome.status) == ("kafka", "delivered")
    lines = follow(settings, threading.Event(), from_beginning=True)
    assert next(lines).startswith("test      HIGH   marketlake test alert test-20260101T000000: this sink")
    lines.close()  # closes the consumer


def test_a_crash_at_the_incidents_commit_loses_no_incident(spark, kafka_settings, monkeypatch):
    """A batch that dies with its scores in gold but not yet folded into the incidents (silver, written last, does
    not hold its candles): the re-run scores them again, its gold append is skipped whole, and they are folded in."""
    settings = kafka_settings
    prepare(spark, settings)
    send(settings, crash_day(hours=6))
    records = read_topic(spark, settings).cache()

    def killed(*args, **kwargs):
        raise OSError("killed at the incidents commit")

    with monkeypatch.context() as patched:
        patched.setattr(batch, "merge_into", killed)
        with pytest.raises(OSError):
            process_batch(spark, settings, records, batch_id=0)
    day = F.col("open_time") >= F.lit(datetime(2025, 2, 3))
    assert read_table(spark, settings, GOLD_SCORES).count() == 720
    assert read_table(spark, settings, SILVER_CANDLES).filter(day).count() == 0
    assert read_table(spark, settings, GOLD_INCIDENTS).count() == 0

    rerun = process_batch(spark, settings, records, batch_id=0)  # after the restart: a new query state
    assert (rerun.new_candles, rerun.scored) == (720, 720) and rerun.incidents > 0
    assert read_table(spark, settings, GOLD_SCORES).count() == 720  # the gold append of the re-run: skipped
    assert_incidents_are_the_evaluations(spark, settings)
