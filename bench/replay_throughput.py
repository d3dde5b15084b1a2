"""Benchmark: replay the whole bundled sample (41,760 real candles) into Kafka as fast as possible.

    .venv/bin/python bench/replay_throughput.py [RUNS]

Starts a Kafka broker of its own on free ports in a temporary home (stopped at the end). Prints the speed of
reading and merging the archives alone, then of each replay into a fresh topic, in candles/s, and checks that
each topic holds every candle.
"""

import sys
import tempfile
import time

from lakehouse.services.kafka_broker import KafkaBroker, ensure_topic
from lakehouse.services.process import free_port
from lakehouse.settings import PROJECT_ROOT, Settings
from marketlake.binance_server import topic_size
from pipelines.ingestion.replay import archive_candles, archive_files, replay_archives

SAMPLE = PROJECT_ROOT / "data" / "sample"
runs = int(sys.argv[1]) if len(sys.argv) > 1 else 3

started = time.perf_counter()
count = sum(1 for _ in archive_candles(archive_files([SAMPLE])))
read_s = time.perf_counter() - started
print(f"read + merge {count} candles (no Kafka): {read_s:.2f} s, {count / read_s:,.0f} candles/s")

with tempfile.TemporaryDirectory() as home:
    base = Settings.from_env(
        env={}, home=home, kafka_bootstrap_servers=f"127.0.0.1:{free_port()}", kafka_controller_port=free_port()
    )
    broker = KafkaBroker.from_settings(base)
    print(f"kafka broker ready in {broker.start()['start']:.1f} s")
    try:
        for run in range(1, runs + 1):
            settings = Settings.from_env(
                env={},
                home=home,
                kafka_bootstrap_servers=base.kafka_bootstrap_servers,
                kafka_topic=f"bench-replay-{run}",
            )
            ensure_topic(settings.kafka_bootstrap_servers, settings.kafka_topic, settings.kafka_topic_partitions)
            result = replay_archives(settings, [SAMPLE], progress=False)
            stored = topic_size(settings.kafka_bootstrap_servers, settings.kafka_topic)
            print(
                f"run {run}: replayed {result.sent} candles in {result.seconds:.2f} s = "
                f"{result.candles_per_s:,.0f} candles/s (acks=all, idempotent); topic holds {stored}"
            )
    finally:
        broker.stop()
