"""The whole-market producer: exchangeInfo, sharding and pacing (pure), then 2,000 symbols of the loopback Binance
through a real Kafka broker, across forced disconnects, a listing and a delisting."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from itertools import chain

import pytest
import websocket

from lakehouse.settings import PROJECT_ROOT
from marketlake.binance_server import (
    BinanceServer,
    delivery,
    live_producer,
    market_rows,
    read_topic,
    wait_for_topic_size,
)
from pipelines.ingestion.binance_rest import Backoff, pages_newest_first, weight_pause
from pipelines.ingestion.exchange_info import (
    ALL_QUOTES,
    ExchangeInfoError,
    WeightLimit,
    request_weight,
    server_time_ms,
    trading_symbols,
)
from pipelines.ingestion.live import LiveOptions
from pipelines.ingestion.shards import (
    PARAMS_PER_MESSAGE,
    RateLimiter,
    control_messages,
    limiter_wait_s,
    place,
    split,
)

INFO = {
    "serverTime": 1738540800000,
    "rateLimits": [
        {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 6000},
        {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
    ],
    "symbols": [
        {"symbol": "BTCUSDT", "status": "TRADING", "baseAsset": "BTC", "quoteAsset": "USDT"},
        {"symbol": "ETHBTC", "status": "TRADING", "baseAsset": "ETH", "quoteAsset": "BTC"},
        {"symbol": "LUNAUSDT", "status": "BREAK", "baseAsset": "LUNA", "quoteAsset": "USDT"},
        {"symbol": "AAAUSDT", "status": "TRADING", "baseAsset": "AAA", "quoteAsset": "USDT"},
    ],
}


# -- pure ----------------------------------------------------------------------------------------------------


@pytest.mark.pure
def test_exchange_info_gives_the_trading_symbols_of_a_quote_and_the_weight_budget():
    assert trading_symbols(INFO, "USDT") == ("AAAUSDT", "BTCUSDT")
    assert trading_symbols(INFO, "usdt") == ("AAAUSDT", "BTCUSDT")
    assert trading_symbols(INFO, ALL_QUOTES) == ("AAAUSDT", "BTCUSDT", "ETHBTC")
    assert request_weight(INFO) == WeightLimit(6000, 60.0, "X-MBX-USED-WEIGHT-1M")
    seconds = {"rateLimits": [{"rateLimitType": "REQUEST_WEIGHT", "interval": "SECOND", "intervalNum": 5, "limit": 9}]}
    assert request_weight(seconds) == WeightLimit(9, 5.0, "X-MBX-USED-WEIGHT-5S")
    assert request_weight({}) == WeightLimit()  # Binance's default when none is announced
    assert server_time_ms(INFO) == 1738540800000


@pytest.mark.pure
@pytest.mark.parametrize("info", [None, [], {}, {"symbols": None}, {"symbols": [{"status": "TRADING"}]}])
def test_an_exchange_info_without_symbols_is_an_error_not_an_empty_market(info):
    with pytest.raises(ExchangeInfoError):
        trading_symbols(info, "USDT")


@pytest.mark.pure
def test_symbols_are_split_into_shards_and_new_ones_fill_shards_with_room_first():
    symbols = [f"S{i:04d}USDT" for i in range(2000)]
    shards = split(symbols, 200)
    assert [len(s) for s in shards] == [200] * 10 and list(chain(*shards)) == symbols
    assert [len(s) for s in split(symbols[:450], 200)] == [200, 200, 50]
    with pytest.raises(ValueError):
        split(symbols, 1025)  # Binance's 1024 streams a connection
    assert place([200, 199, 150], 10, 200) == [0, 1, 9]
    assert place([200, 200], 450, 200) == [0, 0, 200, 200, 50]  # new shards after the full ones
    assert place([], 0, 200) == []


@pytest.mark.pure
def test_control_messages_carry_at_most_a_message_s_worth_of_streams():
    streams = [f"s{i:04d}usdt@kline_1m" for i in range(450)]
    messages = control_messages("SUBSCRIBE", streams, first_id=7)
    assert [m["id"] for m in messages] == [7, 8, 9]
    assert [len(m["params"]) for m in messages] == [PARAMS_PER_MESSAGE, PARAMS_PER_MESSAGE, 50]
    assert list(chain(*(m["params"] for m in messages))) == streams
    assert json.loads(json.dumps(messages[0]))["method"] == "SUBSCRIBE"


@pytest.mark.pure
def test_rate_limiter_allows_limit_events_per_sliding_window():
    assert limiter_wait_s([], now=10.0, limit=3, window_s=1.0) == 0
    assert limiter_wait_s([9.2, 9.5], now=10.0, limit=3, window_s=1.0) == 0
    assert limiter_wait_s([9.2, 9.5, 9.9], now=10.0, limit=3, window_s=1.0) == pytest.approx(0.2)
    assert limiter_wait_s([8.0, 9.5, 9.9], now=10.0, limit=3, window_s=1.0) == 0  # 8.0 is out of the window
    limiter, stop = RateLimiter(3, 0.3), threading.Event()
    started = time.monotonic()
    assert all(limiter.acquire(stop) for _ in range(7))  # 3 now, 3 after 0.3 s, 1 after 0.6 s
    assert 0.55 <= time.monotonic() - started < 1.5
    full = RateLimiter(1, 60.0)
    assert full.acquire(stop)
    stop.set()
    assert not full.acquire(stop)  # a stop ends the wait


@pytest.mark.pure
def test_gap_pages_come_newest_first_and_the_weight_window_is_announced():
    minute = 60_000
    assert pages_newest_first(0, 2500 * minute, minute) == [
        (1500 * minute, 2500 * minute),
        (500 * minute, 1500 * minute),
        (0, 500 * minute),
    ]
    assert pages_newest_first(0, 10 * minute, minute) == [(0, 10 * minute)]
    assert pages_newest_first(5, 5, minute) == []
    assert weight_pause(used=2700, limit=3000, now_s=1003.0, window_s=5.0) == pytest.approx(2.5)
    assert weight_pause(used=2600, limit=3000, now_s=1003.0, window_s=5.0) == 0


# -- the loopback server's side of the protocol --------------------------------------------------------------


@pytest.mark.integration  # a loopback Binance server of its own
def test_server_speaks_subscribe_and_enforces_binance_limits():
    with BinanceServer(market_rows(1100, minutes=5), minute_s=0.5, max_connects=3) as server:
        ws = websocket.create_connection(f"{server.ws_url}/stream", timeout=5)
        try:
            ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["s0001usdt@kline_1m"], "id": 1}))
            assert json.loads(ws.recv()) == {"result": None, "id": 1}
            ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 2}))
            assert json.loads(ws.recv()) == {"result": ["s0001usdt@kline_1m"], "id": 2}
            too_many = [f"s{i:04d}usdt@kline_1m" for i in range(2, 1027)]  # 1 + 1025 streams
            ws.send(json.dumps({"method": "SUBSCRIBE", "params": too_many, "id": 3}))
            reply = json.loads(ws.recv())
            while "id" not in reply:  # kline events of s0001usdt may come first
                reply = json.loads(ws.recv())
            assert reply["id"] == 3 and "1024" in reply["error"]["msg"]
            for i in range(4, 10):  # 6 more messages within a second: Binance cuts the connection
                ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": i}))
            with pytest.raises((websocket.WebSocketConnectionClosedException, ConnectionError)):
                while True:
                    ws.recv()
        finally:
            ws.close()
        assert server.closed_for_rate == 1
        for _ in range(2):  # attempts 2 and 3 of max_connects=3 are accepted, the 4th is refused
            websocket.create_connection(f"{server.ws_url}/stream", timeout=5).close()
        with pytest.raises(websocket.WebSocketBadStatusException) as refused:
            websocket.create_connection(f"{server.ws_url}/stream", timeout=5)
        assert refused.value.status_code == 429


# -- 2,000 symbols through the real broker -------------------------------------------------------------------

MINUTES = 32
FAST = LiveOptions(backoff=Backoff(0.05, 0.5), recv_timeout_s=0.2, stale_after_s=5, stats_every_s=5)


def test_whole_usdt_market_survives_disconnects_a_listing_and_a_delisting(kafka_settings):
    settings = kafka_settings
    rows = market_rows(2000, MINUTES) | market_rows(20, MINUTES, quote="BTC") | market_rows(1, MINUTES, first=2001)
    server = BinanceServer(
        rows, minute_s=1.0, updates_per_minute=1, unlisted=("S2001USDT",), weight_limit=3000, weight_window_s=5
    )
    with server:
        with live_producer(
            settings, server, FAST, live_quote="USDT", live_shard_size=200, live_refresh_minutes=2 / 60
        ) as future:
            server.wait_minute(6)
            assert server.drop_connections(outage_s=2.5) == 10  # 2,000 streams in shards of 200
            server.wait_minute(13)
            listed_from = server.list_symbol("S2001USDT")
            server.wait_minute(18)
            delisted_from = server.delist("S0007USDT")
            server.wait_minute(22)
            assert server.drop_connections(outage_s=1.0) == 11  # a shard of its own for the listing
            server.wait_minute(server.minutes + 1, timeout_s=120)
            expected = {key for key in server.keys() if key[0].endswith("USDT")}  # noqa: SIM118 (a method)
            wait_for_topic_size(settings.kafka_bootstrap_servers, settings.kafka_topic, len(expected), timeout_s=60)
            assert not future.done(), future.exception()
        stats = future.result(60)
    candles = [c for part in read_topic(settings.kafka_bootstrap_servers, settings.kafka_topic).values() for c in part]
    d = delivery(candles, expected)
    events = {
        "base": server.base,
        "listed": listed_from,
        "delisted": delisted_from,
        "cut_minutes": [(t - server.started_at) / server.minute_s for t in server.dropped_at],
    }
    assert (d.lost, d.doubled, d.unexpected) == (0, 0, 0), (d, events)
    listed = sorted(c["open_time"] for c in candles if c["symbol"] == "S2001USDT")
    assert listed[0] == listed_from and len(listed) == MINUTES - (listed_from - server.base) // 60_000
    assert max(c["open_time"] for c in candles if c["symbol"] == "S0007USDT") == delisted_from - 60_000
    assert stats.published + stats.gap_filled == len(expected) and (stats.unfilled, stats.malformed) == (0, 0)
    assert stats.gap_filled >= 2000 * 2  # every symbol missed minutes in the first outage
    # Within Binance's limits: no connection closed for its message rate, no attempt refused, no REST 429.
    assert (server.closed_for_rate, server.refused_attempts) == (0, 0)
    assert server.peak_weight <= 3000 and 429 not in {status for _, status, _ in server.rest_log}
    assert [r["params"] for r in server.requests if r["method"] == "UNSUBSCRIBE"] == [["s0007usdt@kline_1m"]]
    assert len(server.rest_log) > 2 * 2000  # the two outages' fills, weight-paced over several 5-s windows


def test_produce_command_with_a_quote_streams_only_that_quote(kafka_settings):
    settings = kafka_settings
    env = {
        **os.environ,
        "PYTHONPATH": str(PROJECT_ROOT),
        "MARKETLAKE_KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "MARKETLAKE_KAFKA_TOPIC": settings.kafka_topic,
        "MARKETLAKE_LIVE_SHARD_SIZE": "20",
    }
    rows = market_rows(50, minutes=600) | market_rows(10, minutes=600, quote="BTC")
    with BinanceServer(rows, minute_s=0.1) as server:
        command = [sys.executable, "-m", "marketlake.cli", "produce", "--quote", "usdt"]
        command += ["--ws-url", server.ws_url, "--rest-url", server.rest_url]
        proc = subprocess.Popen(command, cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            server.wait_minute(60)
            connections = server.connections
            proc.send_signal(signal.SIGTERM)
            out = proc.communicate(timeout=60)[0].decode()
        finally:
            proc.kill()
    assert proc.returncode == 0, out
    assert "every TRADING USDT symbol" in out and connections == 3  # 50 symbols in shards of 20
    candles = [c for part in read_topic(settings.kafka_bootstrap_servers, settings.kafka_topic).values() for c in part]
    assert {c["symbol"] for c in candles} == {f"S{i:04d}USDT" for i in range(1, 51)}
    for symbol in ("S0001USDT", "S0050USDT"):  # a gap-free run of minutes from the first one it saw
        times = sorted(c["open_time"] for c in candles if c["symbol"] == symbol)
        assert times == list(range(times[0], times[0] + 60_000 * len(times), 60_000)) and len(times) >= 40
