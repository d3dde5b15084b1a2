"""Benchmark: what a forced disconnect costs the live producer (production backoff settings).

    .venv/bin/python bench/live_disconnect.py [MINUTE_S]

Starts a Kafka broker of its own on free ports (stopped at the end) and the loopback Binance server with two real
symbols (FILUSDT, NEARUSDT, 2025-02-03), a market minute lasting MINUTE_S seconds (default 0.05). It cuts every
connection three times, with outages of 0, 1 and 3 seconds, and prints per cut: seconds until the producer was
connected again, market minutes gap-filled from REST; then candles lost and doubled in the topic (both must be 0).
"""

import sys
import tempfile
from itertools import pairwise

from lakehouse.services.kafka_broker import broker_of_its_own
from marketlake.binance_server import (
    BinanceServer,
    delivery,
    live_producer,
    read_topic,
    sample_rows,
    wait_for_topic_size,
)
from pipelines.ingestion.live import LiveOptions

minute_s = float(sys.argv[1]) if len(sys.argv) > 1 else 0.05
CUTS = [(60, 0.0), (160, 1.0), (300, 3.0)]  # (market minute, outage seconds)
MINUTES = 440


def gap_runs(candles: list[dict], symbol: str) -> list[tuple[int, int]]:
    """(first open_time, minutes) of each run of consecutive gap-filled minutes of one symbol."""
    times = sorted(c["open_time"] for c in candles if c["symbol"] == symbol and c["source"] == "gapfill")
    runs: list[list[int]] = []
    for previous, current in pairwise([None, *times]):
        if previous is not None and current - previous == 60_000:
            runs[-1][1] += 1
        else:
            runs.append([current, 1])
    return [(first, n) for first, n in runs]


with tempfile.TemporaryDirectory() as home, broker_of_its_own(home, kafka_topic="bench-live") as settings:
    options = LiveOptions(stats_every_s=3600)  # production backoff: 1 s doubling to 60 s, with jitter
    with BinanceServer(sample_rows(minutes=MINUTES), minute_s=minute_s) as server:
        with live_producer(settings, server, options) as future:
            for minute, outage_s in CUTS:
                server.wait_minute(minute)
                server.drop_connections(outage_s)
            server.wait_minute(server.minutes + 1, timeout_s=600)
            wait_for_topic_size(settings.kafka_bootstrap_servers, settings.kafka_topic, len(server.keys()), 60)
        stats = future.result(60)
        reconnected = [min(t for t in server.connected_at if t > cut) for cut in server.dropped_at]
        reconnect_s = [after - cut for cut, after in zip(server.dropped_at, reconnected, strict=True)]
        base = server.base
        expected = server.keys()
    candles = [c for part in read_topic(settings.kafka_bootstrap_servers, settings.kafka_topic).values() for c in part]

print(f"{MINUTES} market minutes x 2 symbols, a market minute = {minute_s * 1000:.0f} ms; {stats.line()}")
runs = {symbol: gap_runs(candles, symbol) for symbol in ("FILUSDT", "NEARUSDT")}
bounds = [minute for minute, _ in CUTS] + [MINUTES]
for i, ((minute, outage_s), seconds) in enumerate(zip(CUTS, reconnect_s, strict=True)):
    # The gap a cut leaves starts after the cut and before the next one.
    filled = {
        s: sum(n for first, n in r if minute <= (first - base) // 60_000 < bounds[i + 1]) for s, r in runs.items()
    }
    print(
        f"cut {i + 1} at market minute {minute}, outage {outage_s:.0f} s: connected again after {seconds:.2f} s "
        f"({seconds / minute_s:.0f} market minutes); gap-filled from REST: "
        + ", ".join(f"{s} {n} min" for s, n in filled.items())
    )
d = delivery(candles, expected)
print(f"topic: {d.received} candles of {len(expected)} expected; lost {d.lost}, doubled {d.doubled}; {d.sources}")
