"""The live producer against a loopback server speaking Binance's formats, through the real Kafka broker."""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import Future

import pytest

from lakehouse.settings import PROJECT_ROOT, Settings
from marketlake.binance_server import (
    BinanceServer,
    delivery,
    kline_event,
    live_producer,
    read_topic,
    sample_rows,
    wait_for_topic_size,
)
from pipelines.ingestion.binance_rest import (
    Backoff,
    BinanceRest,
    backoff_delay,
    interval_ms,
    kline_aligned,
    weight_pause,
)
from pipelines.ingestion.live import LiveOptions, LiveProducer, MalformedMessage, parse_message, stream_url


@pytest.fixture
def settings(kafka_settings):
    """Every test here talks to Kafka: a topic of its own on the shared broker."""
    return kafka_settings


FAST = LiveOptions(backoff=Backoff(0.05, 0.5), recv_timeout_s=0.2, stale_after_s=5, stats_every_s=1)
ROW = sample_rows(("FILUSDT",), minutes=1)["FILUSDT"][0]


def closed_event(**k_changes: object) -> dict:
    event = copy.deepcopy(kline_event("FILUSDT", ROW, 1.0))
    event["data"]["k"].update(k_changes)
    return event


# -- pure ----------------------------------------------------------------------------------------------------


def test_combined_stream_url():
    url = stream_url("wss://stream.binance.com:9443/", ("BTCUSDT", "ETHUSDT"), "1m")
    assert url == "wss://stream.binance.com:9443/stream?streams=btcusdt@kline_1m/ethusdt@kline_1m"


def test_closed_and_forming_klines_parse_and_replies_are_ignored():
    now = int(time.time() * 1000)
    closed = parse_message(json.dumps(closed_event()), "1m", received_at=now)
    assert closed is not None and closed.closed
    assert closed.candle["open_time"] == int(ROW[0]) and closed.candle["close"] == float(ROW[4])
    assert closed.candle["source"] == "live" and closed.candle["received_at"] == now
    forming = parse_message(json.dumps(kline_event("FILUSDT", ROW, 0.5)), "1m", received_at=now)
    assert forming is not None and not forming.closed
    assert parse_message('{"result": null, "id": 1}', "1m", received_at=now) is None


MALFORMED = [
    "not json",
    b"\xff\xfe\x00\x01",  # a binary frame that is not even UTF-8
    "[1, 2, 3]",
    '{"stream": "filusdt@kline_1m"}',
    json.dumps({"stream": "filusdt@kline_1m", "data": {"e": "kline", "E": 1, "s": "FILUSDT", "k": {"t": "soon"}}}),
    json.dumps(closed_event(x="true")),
    json.dumps(closed_event(o="abc")),
    json.dumps(closed_event(t=None)),
    json.dumps(closed_event(t=int(ROW[0]) + 1, T=int(ROW[6]) + 1)),  # not on a minute boundary
    json.dumps(closed_event(t=4102444800000, T=4102444859999)),  # the year 2100
    json.dumps(closed_event(i="5m")),
]


@pytest.mark.parametrize("raw", MALFORMED)
def test_malformed_messages_are_refused(raw):
    with pytest.raises(MalformedMessage):
        parse_message(raw, "1m", received_at=int(time.time() * 1000))


def test_a_close_in_flight_when_a_symbol_is_unsubscribed_is_still_published_once(tmp_path):
    """A delisting: the server sent the symbol's last close before our UNSUBSCRIBE reached it."""
    gaps = []
    shard = LiveProducer(
        Settings.from_env(env={}, home=str(tmp_path)), None, None, threading.Event(), symbols=(),
        fill=lambda _, *gap: gaps.append(gap),
    )  # fmt: skip
    minute = int(ROW[0])
    shard.add(["FILUSDT"])
    shard.handle(json.dumps(closed_event()))
    shard.remove(["FILUSDT"])
    shard.handle(json.dumps(closed_event(t=minute + 60_000, T=minute + 119_999)))
    shard.handle(json.dumps(closed_event(t=minute + 60_000, T=minute + 119_999)))  # sent twice: published once
    assert [c["open_time"] for c in shard._outbox] == [minute, minute + 60_000]
    assert (shard.stats.malformed, shard.stats.duplicates) == (0, 1)
    shard.add(["FILUSDT"])  # listed again an hour later: its break is not a gap to fill
    shard.handle(json.dumps(closed_event(t=minute + 3_600_000, T=minute + 3_659_999)))
    assert gaps == [] and shard._outbox[-1]["open_time"] == minute + 3_600_000
    shard.handle(json.dumps(closed_event(s="ETHUSDT")))  # never subscribed
    assert shard.stats.malformed == 1


def test_backoff_grows_with_jitter_up_to_the_cap():
    assert [backoff_delay(a, 1, 60, rand=lambda: 0.0) for a in range(8)] == [0.5, 1, 2, 4, 8, 16, 30, 30]
    assert [backoff_delay(a, 1, 60, rand=lambda: 1.0) for a in range(8)] == [1, 2, 4, 8, 16, 32, 60, 60]


def test_weight_budget_pauses_until_the_next_minute():
    assert weight_pause(used=100, limit=6000, now_s=1_000_000.0) == 0
    assert weight_pause(used=5900, limit=6000, now_s=1_000_040.0) == pytest.approx(40.5)


def test_intervals():
    assert interval_ms("1m") == 60_000 and interval_ms("4h") == 14_400_000
    assert kline_aligned(int(ROW[0]), "1m") and not kline_aligned(int(ROW[0]) + 1, "1m")
    assert kline_aligned(int(ROW[0]), "1w") and not kline_aligned(int(ROW[0]) + 86_400_000, "1w")  # a Monday
    with pytest.raises(ValueError):
        interval_ms("1M")


# -- against the loopback Binance and the real broker ----------------------------------------------------------


def run_to_the_end(settings: Settings, server: BinanceServer, future: Future) -> None:
    """Wait for the last close, and for the topic to hold as many candles as the server served."""
    server.wait_minute(server.minutes + 1)
    wait_for_topic_size(settings.kafka_bootstrap_servers, settings.kafka_topic, len(server.keys()), timeout_s=30)
    assert not future.done(), future.exception()


def topic_candles(settings: Settings) -> list[dict]:
    return [c for part in read_topic(settings.kafka_bootstrap_servers, settings.kafka_topic).values() for c in part]


def assert_exactly_the_closed_candles(settings: Settings, server: BinanceServer) -> list[dict]:
    candles = topic_candles(settings)
    d = delivery(candles, server.keys())
    assert (d.lost, d.doubled, d.unexpected) == (0, 0, 0), d
    for c in candles:  # the closed candle's values, never a forming one's
        row = server.row(c["symbol"], c["open_time"])
        assert (c["close"], c["volume"], c["trades"]) == (float(row[4]), float(row[5]), int(row[8]))
    return candles


def test_publishes_each_closed_candle_once(settings):
    with BinanceServer(sample_rows(minutes=60), ping_interval_s=0.1) as server:
        with live_producer(settings, server, FAST) as future:
            run_to_the_end(settings, server, future)
        stats = future.result(30)
        pongs = server.pongs
    candles = assert_exactly_the_closed_candles(settings, server)
    assert {c["source"] for c in candles} == {"live"}
    assert stats.published == 120 and stats.messages == 120 * 4
    assert (stats.reconnects, stats.gap_filled, stats.malformed, stats.unfilled) == (0, 0, 0, 0)
    assert pongs >= 5  # it answered the server's pings (else the server would have dropped it)


def test_forced_disconnect_is_gap_filled_from_rest_without_loss_or_doubles(settings):
    with BinanceServer(sample_rows(minutes=150)) as server:
        with live_producer(settings, server, FAST) as future:
            server.wait_minute(40)
            server.rate_limit(times=1, retry_after_s=1)  # the gap fill's first request is told to wait
            assert server.drop_connections(outage_s=0.6) == 1  # about 20 market minutes with no connection
            run_to_the_end(settings, server, future)
        stats = future.result(30)
        connections = len(server.connected_at)
        rest_log = server.rest_log
    candles = assert_exactly_the_closed_candles(settings, server)
    assert stats.reconnects == connections - 1 >= 1
    assert stats.gap_filled >= 2 * 15
    assert sum(c["source"] == "gapfill" for c in candles) == stats.gap_filled
    assert stats.published + stats.gap_filled == len(server.keys()) and stats.unfilled == 0
    assert [status for _, status, _ in rest_log] == [429, 200, 200]  # one request per symbol, one retried
    assert rest_log[1][0] - rest_log[0][0] >= 1.0


def test_a_gap_rest_cannot_fill_is_counted_and_the_stream_goes_on(settings):
    with BinanceServer(sample_rows(minutes=100)) as server:
        with live_producer(settings, server, FAST) as future:
            server.wait_minute(30)
            server.rate_limit(times=2, retry_after_s=3600)  # an IP ban: longer than the client will wait
            server.drop_connections(outage_s=0.3)
            server.wait_minute(server.minutes + 1)
            time.sleep(0.5)
        stats = future.result(30)
    d = delivery(topic_candles(settings), server.keys())
    assert stats.unfilled > 0 and stats.gap_filled == 0
    assert (d.lost, d.doubled, d.unexpected) == (stats.unfilled, 0, 0)


def test_malformed_messages_are_counted_and_the_stream_goes_on(settings):
    with BinanceServer(sample_rows(minutes=80)) as server:
        with live_producer(settings, server, FAST) as future:
            server.wait_minute(20)
            for raw in [*MALFORMED, '{"result": null, "id": 7}']:
                assert server.inject(raw) == 1
            run_to_the_end(settings, server, future)
        stats = future.result(30)
    assert stats.malformed == len(MALFORMED)
    assert stats.reconnects == 0
    assert_exactly_the_closed_candles(settings, server)


def test_planned_reconnects_before_the_connection_age_limit_lose_nothing(settings):
    with BinanceServer(sample_rows(minutes=120)) as server:
        with live_producer(settings, server, dataclasses.replace(FAST, max_connection_age_s=1.0)) as future:
            run_to_the_end(settings, server, future)
        stats = future.result(30)
    assert stats.reconnects >= 2
    assert_exactly_the_closed_candles(settings, server)


@pytest.mark.integration  # a loopback Binance server of its own
def test_rest_pages_by_1000_and_honours_retry_after():
    with BinanceServer(sample_rows(("NEARUSDT",), minutes=None)) as server:
        server.set_clock(server.minutes)  # the whole day has closed
        server.rate_limit(times=1, retry_after_s=1)
        rest = BinanceRest(server.rest_url)
        rows = list(rest.klines("NEARUSDT", "1m", server.base, server.base + 1440 * 60_000))
        assert [int(r[0]) for r in rows] == [server.base + i * 60_000 for i in range(1440)]
        assert rows[100][1:6] == server.row("NEARUSDT", int(rows[100][0]))[1:6]
        log = server.rest_log
        assert [status for _, status, _ in log] == [429, 200, 200]
        assert log[1][0] - log[0][0] >= 1.0  # waited as long as Retry-After said
        assert [p["limit"] for _, _, p in log] == ["1000"] * 3
        # [start, end): the end minute itself is not included
        assert len(list(rest.klines("NEARUSDT", "1m", server.base + 60_000, server.base + 11 * 60_000))) == 10


def test_produce_command_flushes_and_exits_cleanly_on_sigterm(settings):
    env = {
        **os.environ,
        "MARKETLAKE_KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "MARKETLAKE_KAFKA_TOPIC": settings.kafka_topic,
    }
    with BinanceServer(sample_rows(minutes=1000)) as server:
        command = [sys.executable, "-m", "marketlake.cli", "produce", "--symbols", "FILUSDT,NEARUSDT"]
        command += ["--ws-url", server.ws_url, "--rest-url", server.rest_url]
        proc = subprocess.Popen(command, cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            server.wait_minute(50)
            proc.send_signal(signal.SIGTERM)
            out = proc.communicate(timeout=30)[0].decode()
        finally:
            proc.kill()
    assert proc.returncode == 0, out
    assert f"to topic {settings.kafka_topic} at {settings.kafka_bootstrap_servers}" in out
    counters = dict(re.findall(r"(\w+)=(\d+)", out.rsplit("stopped:", 1)[1]))
    sent = int(counters["published"]) + int(counters["gap_filled"])
    candles = topic_candles(settings)
    # Everything it counted reached the topic: a gap-free run of minutes per symbol from minute 0.
    assert len(candles) == sent >= 2 * 45
    for symbol in ("FILUSDT", "NEARUSDT"):
        times = sorted(c["open_time"] for c in candles if c["symbol"] == symbol)
        assert times == [server.base + i * 60_000 for i in range(len(times))]
