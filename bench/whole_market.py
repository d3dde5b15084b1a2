"""Benchmark: the whole-market producer at N symbols through forced disconnects (production backoff settings).

    .venv/bin/python bench/whole_market.py [SYMBOLS] [MINUTE_S] [MINUTES] [UPDATES_PER_MINUTE]

Starts a Kafka broker of its own on free ports (stopped at the end) and the loopback Binance server with SYMBOLS
(default 2000) renamed copies of the real sample (S0001USDT, ...), a market minute lasting MINUTE_S seconds
(default 2.0), MINUTES market minutes (default 30) and UPDATES_PER_MINUTE forming-candle updates per minute before
each close (default 1). The producer runs as `marketlake produce --quote USDT` would (shards of 200). Every
connection is cut twice, at a third and at two thirds of the run (outages of 3 s and 1 s).
Prints: candles/s the server offered and the average into Kafka, how late the live closed candles reached the
producer after their close (p50/p99/max: the producer keeps up while these stay well under a market minute), the
REST weight used and any limit hit, the producer's counters, and candles lost and doubled in the topic.
"""

import sys
import tempfile
import time

import numpy as np

from lakehouse.services.kafka_broker import broker_of_its_own
from marketlake.binance_server import BinanceServer, delivery, live_producer, market_rows, read_topic
from marketlake.binance_server import wait_for_topic_size as wait_for_size
from pipelines.ingestion.live import LiveOptions

symbols = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
minute_s = float(sys.argv[2]) if len(sys.argv) > 2 else 2.0
minutes = int(sys.argv[3]) if len(sys.argv) > 3 else 30
updates = int(sys.argv[4]) if len(sys.argv) > 4 else 1
CUTS = [(minutes // 3, 3.0), (2 * minutes // 3, 1.0)]  # (market minute, outage seconds)

with tempfile.TemporaryDirectory() as home, broker_of_its_own(home, kafka_topic="bench-whole-market") as settings:
    options = LiveOptions(stats_every_s=3600)  # production backoff: 1 s doubling to 60 s, with jitter
    with BinanceServer(market_rows(symbols, minutes), minute_s=minute_s, updates_per_minute=updates) as server:
        with live_producer(settings, server, options, live_quote="USDT") as future:
            for minute, outage_s in CUTS:
                server.wait_minute(minute, timeout_s=600)
                server.drop_connections(outage_s)
            server.wait_minute(server.minutes + 1, timeout_s=600)
            ended = time.monotonic()
            expected = server.keys()
            wait_for_size(settings.kafka_bootstrap_servers, settings.kafka_topic, len(expected), 300)
            caught_up_s = time.monotonic() - ended
        stats = future.result(60)
        # The wall-clock time at which market minute m closed (and the server sent its closed candle).
        wall_of_start = time.time() - (time.monotonic() - server.started_at)
        run_s = ended - server.started_at
        base = server.base
        rest = (len(server.rest_log), sum(status == 429 for _, status, _ in server.rest_log), server.peak_weight)
        refused = (server.closed_for_rate, server.refused_attempts)
    candles = [c for part in read_topic(settings.kafka_bootstrap_servers, settings.kafka_topic).values() for c in part]

live = [c for c in candles if c["source"] == "live"]
lags = np.array(
    [c["received_at"] / 1000 - (wall_of_start + ((c["open_time"] - base) // 60_000 + 1) * minute_s) for c in live]
)
d = delivery(candles, expected)
print(
    f"{symbols} symbols x {minutes} market minutes, a market minute = {minute_s:.2f} s, "
    f"{updates} update(s) + the close per minute; cuts at minutes {[m for m, _ in CUTS]} "
    f"(outages {[o for _, o in CUTS]} s)"
)
print(
    f"offered {len(expected) / run_s:.0f} closed candles/s ({len(expected) * (updates + 1) / run_s:.0f} messages/s); "
    f"{d.received / (run_s + caught_up_s):.0f} candles/s into Kafka on average until the topic was complete, "
    f"{caught_up_s:.1f} s after the last close (gap fills wait for the REST weight budget)"
)
print(
    f"REST: {rest[0]} requests, {rest[1]} answered 429, peak weight {rest[2]} of 6000 in a minute; "
    f"connections closed for their message rate {refused[0]}, connection attempts refused {refused[1]}"
)
print(
    f"live candles reached the producer after their close: p50 {np.percentile(lags, 50):.2f} s, "
    f"p99 {np.percentile(lags, 99):.2f} s, max {lags.max():.2f} s"
)
print(f"producer: {stats.line()}")
print(f"topic: {d.received} candles of {len(expected)} expected; lost {d.lost}, doubled {d.doubled}; {d.sources}")
