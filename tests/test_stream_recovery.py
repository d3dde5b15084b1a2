"""The stream as its own process (`marketlake stream`): killed with -9 mid-replay, or with the broker stopped
under it, it resumes from its checkpoint and silver/gold end up with exactly the input's keys."""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from lakehouse.delta_io import read_table
from lakehouse.settings import PROJECT_ROOT
from lakehouse.tables import GOLD_SCORES, SILVER_CANDLES
from pipelines.ingestion.kafka_io import make_producer
from pipelines.ingestion.replay import replay
from tests.test_stream import crash_day, prepare


@pytest.fixture
def settings(kafka_settings):
    """Every test here talks to Kafka: a topic of its own on the shared broker."""
    return kafka_settings


def start_stream_process(settings, log: Path) -> subprocess.Popen:
    env = {**os.environ, **settings.to_env(), "PYTHONUNBUFFERED": "1"}
    command = [str(Path(sys.executable).parent / "marketlake"), "stream"]
    return subprocess.Popen(
        command, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True, cwd=PROJECT_ROOT
    )


def stored_keys(spark, settings, table, day="2025-02-03"):
    rows = read_table(spark, settings, table).filter(f"open_date = '{day}'").select("symbol", "open_time")
    return [(r.symbol, r.open_time) for r in rows.collect()]


def gold_keys(spark, settings):
    return stored_keys(spark, settings, GOLD_SCORES)


def wait_for(predicate, timeout_s: float, what: str, log: Path):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(1)
    raise AssertionError(f"timed out waiting for {what}; stream log:\n{log.read_text()[-3000:]}")


def assert_exact(spark, settings, candles, log):
    expected = sorted({(c["symbol"], c["open_time"]) for c in candles})
    # Gold commits before silver within a micro-batch: wait for both.
    wait_for(lambda: len(gold_keys(spark, settings)) >= len(expected), 300, "gold to hold every candle", log)
    silver_keys = lambda: stored_keys(spark, settings, SILVER_CANDLES)  # noqa: E731
    wait_for(lambda: len(silver_keys()) >= len(expected), 60, "silver to hold every candle", log)
    to_ms = lambda keys: sorted((s, int(t.timestamp() * 1000)) for s, t in keys)  # noqa: E731
    assert to_ms(gold_keys(spark, settings)) == expected  # none lost, none doubled
    assert to_ms(silver_keys()) == expected


def stop(process: subprocess.Popen):
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(timeout=60)


def test_kill_9_mid_replay_then_restart_loses_and_doubles_nothing(spark, settings, tmp_path):
    prepare(spark, settings)
    candles = crash_day(hours=6)
    log = tmp_path / "stream.log"
    process = start_stream_process(settings, log)
    producer = make_producer(settings)
    replay(candles[:60], producer, settings.kafka_topic, progress=False)
    wait_for(lambda: len(gold_keys(spark, settings)) == 60, 180, "the stream to be up", log)

    # The rest at 60x (a market minute per second), and kill -9 as soon as the stream has written more of it.
    stop_replay, sent = threading.Event(), []
    sender = threading.Thread(
        target=lambda: sent.append(replay(candles[60:], producer, settings.kafka_topic, 60.0, False, stop=stop_replay))
    )
    sender.start()
    wait_for(lambda: len(gold_keys(spark, settings)) > 60, 180, "more gold rows", log)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert sender.is_alive()  # the kill landed mid-replay
    stop_replay.set()
    sender.join()
    rest = candles[60 + sent[0].sent :]
    assert rest  # some candles were not even sent yet when the stream died

    process = start_stream_process(settings, log)
    try:
        replay(rest, producer, settings.kafka_topic, progress=False)
        producer.close()
        assert_exact(spark, settings, candles, log)
    finally:
        stop(process)


def test_broker_stopped_and_restarted_under_the_stream(spark, settings, broker, tmp_path):
    prepare(spark, settings)
    candles = crash_day(hours=4)
    half = len(candles) // 2
    log = tmp_path / "stream.log"
    process = start_stream_process(settings, log)
    try:
        producer = make_producer(settings)
        replay(candles[:half], producer, settings.kafka_topic, progress=False)
        producer.close()
        wait_for(lambda: len(gold_keys(spark, settings)) == half, 180, "the first half in gold", log)

        broker.stop()
        time.sleep(10)  # the stream's Kafka source fails; the process stays up and retries with back-off
        assert process.poll() is None
        broker.start()
        producer = make_producer(settings)
        replay(candles[half:], producer, settings.kafka_topic, progress=False)
        producer.close()
        assert_exact(spark, settings, candles, log)
        assert process.poll() is None
    finally:
        stop(process)
