"""Benchmark: replay the whole bundled sample (41,760 real candles) into Kafka as fast as possible.

    .venv/bin/python bench/replay_throughput.py [--runs 3] [--compression zstd,lz4,none] [--linger-ms 5,20]

Starts a Kafka broker of its own on free ports in a temporary home (stopped at the end). Prints the speed of
the replay's stages without Kafka (reading, merging, encoding), then of each replay (archives -> Kafka, end to
end: reading included, acks=all, idempotent) into a fresh topic for every compression x linger case, in
candles/s, checks that each topic holds every candle, and
how many bytes its log segments take on the broker's disk.
"""

import argparse
import itertools
import tempfile
import time
from collections.abc import Callable, Iterable

from lakehouse.services.kafka_broker import KafkaBroker, ensure_topic
from lakehouse.services.process import free_port
from lakehouse.settings import PROJECT_ROOT, Settings
from marketlake.binance_server import topic_size
from pipelines.ingestion.candles import encode
from pipelines.ingestion.replay import archive_candles, archive_files, replay_archives

SAMPLE = PROJECT_ROOT / "data" / "sample"

parser = argparse.ArgumentParser()
parser.add_argument("--runs", type=int, default=3, help="replays per case")
parser.add_argument("--compression", default="zstd,lz4,none", help="comma-separated producer compressions")
parser.add_argument("--linger-ms", default="5", help="comma-separated producer linger times")
args = parser.parse_args()


def stage(name: str, count: Callable[[], Iterable[object]]) -> None:
    started = time.perf_counter()
    n = sum(1 for _ in count())
    seconds = time.perf_counter() - started
    print(f"{name} ({n} candles, no Kafka): {seconds:.2f} s, {n / seconds:,.0f} candles/s")


files = archive_files([SAMPLE])
stage("read archives", lambda: (c for f in files for c in f.candles()))
stage("read + merge", lambda: archive_candles(files))
candles = list(archive_candles(files))
stage("encode (json)", lambda: map(encode, candles))

with tempfile.TemporaryDirectory() as home:
    base = Settings.from_env(
        env={}, home=home, kafka_bootstrap_servers=f"127.0.0.1:{free_port()}", kafka_controller_port=free_port()
    )
    broker = KafkaBroker.from_settings(base)
    print(f"kafka broker ready in {broker.start()['start']:.1f} s")
    try:
        cases = itertools.product(args.compression.split(","), map(int, args.linger_ms.split(",")))
        for (compression, linger_ms), run in itertools.product(cases, range(1, args.runs + 1)):
            settings = Settings.from_env(
                env={},
                home=home,
                kafka_bootstrap_servers=base.kafka_bootstrap_servers,
                kafka_topic=f"bench-replay-{compression}-{linger_ms}-{run}",
                kafka_compression=compression,
                kafka_linger_ms=linger_ms,
            )
            ensure_topic(settings.kafka_bootstrap_servers, settings.kafka_topic, settings.kafka_topic_partitions)
            result = replay_archives(settings, [SAMPLE], progress=False)
            stored = topic_size(settings.kafka_bootstrap_servers, settings.kafka_topic)
            on_disk = sum(f.stat().st_size for f in broker.data_dir.glob(f"{settings.kafka_topic}-*/*.log"))
            print(
                f"compression={compression} linger.ms={linger_ms} run {run}: replayed {result.sent} candles "
                f"in {result.seconds:.2f} s = {result.candles_per_s:,.0f} candles/s; topic holds {stored} "
                f"in {on_disk / 2**20:.1f} MiB"
            )
    finally:
        broker.stop()
