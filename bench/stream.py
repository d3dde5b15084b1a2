"""Benchmarks of the stream, end to end through a real broker, Spark and Delta (own broker and lakehouse in a temp
folder; nothing else needs to run).

    .venv/bin/python bench/stream.py throughput [--batch 5000]   # replay 5 days x 2 symbols as fast as possible
    .venv/bin/python bench/stream.py throughput --cluster        # the same on `marketlake cluster`'s parts
    .venv/bin/python bench/stream.py latency [--symbols 200 --minutes 20 --every 5] [--alerts]

throughput: candles/s from the first record in Kafka to the last gold row committed, at maxOffsetsPerTrigger=batch.
--cluster: Spark on a standalone master with 2 workers (1 core each), the lake and checkpoint on S3Proxy (s3a://),
Kafka on 3 nodes (replication factor 3), all on this machine, instead of local[2], the local disk and one broker.
latency: a realistic live load, `symbols` closed candles arriving together once per (compressed) minute; for each
candle, Kafka's timestamp -> its gold.scores row committed (the end of the micro-batch that wrote it): p50 / p95,
after one warm-up minute (timed on its own).
--alerts: each symbol replays the day from its own minute (7 minutes apart), so they move at different times, as
symbols do; a local webhook receives the alerts, and for each alert, Kafka's timestamp of the candle that raised it
(the incident's first minute for `opened`, its peak for `escalated`) -> the alert at the receiver: p50 / p95.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import numpy as np
import pandas as pd
from delta.tables import DeltaTable
from pyspark.sql import functions as F

from lakehouse.delta_io import append, read_table
from lakehouse.services.cluster import LocalCluster
from lakehouse.services.kafka_broker import broker_of_its_own, ensure_topic
from lakehouse.services.process import free_port, free_port_block
from lakehouse.settings import PROJECT_ROOT, Settings
from lakehouse.spark import ensure_tables, get_spark
from lakehouse.tables import GOLD_SCORES, SILVER_CANDLES
from marketlake.demo import wait_for_catch_up
from pipelines.detection.thresholds import train_thresholds
from pipelines.ingestion.archives import ArchiveFile, read_frame
from pipelines.ingestion.kafka_io import make_producer, publish
from pipelines.streaming.batch import BatchResult
from pipelines.streaming.query import start_stream

SAMPLE = PROJECT_ROOT / "data" / "sample"
SOURCES = ("FILUSDT", "NEARUSDT")


@contextmanager
def cluster_of_its_own(home: str) -> Iterator[Settings]:
    """Settings for `marketlake cluster`'s parts on free ports, started with the candle topic, stopped on leaving."""
    base = Settings.from_env(
        env={},
        home=home,
        cluster_s3_port=free_port_block(1),
        cluster_spark_port=free_port_block(3),
        cluster_kafka_port=free_port_block(6),
    )
    cluster = LocalCluster.from_settings(base)
    cluster.start()
    try:
        settings = cluster.settings(base)
        ensure_topic(settings.kafka_bootstrap_servers, settings.kafka_topic, settings.kafka_topic_partitions)
        yield settings
    finally:
        cluster.stop()


def history(spark, settings: Settings, names: list[str]) -> None:
    """Two real days of history per symbol written to silver (a renamed copy of FILUSDT or NEARUSDT for each
    bench symbol: real prices, one more symbol), then thresholds trained on them. The copies are made by Spark
    (a join of the real days with the names), so 2,000 symbols x 2 days never pass through the driver."""
    days = [SAMPLE / "futures-um" / f"{s}-1m-2025-02-0{d}.zip" for s in SOURCES for d in (1, 2)]
    real = spark.createDataFrame(
        read_frame(days).assign(
            source="bench",
            kafka_timestamp=pd.NaT,
            ingested_at=pd.Timestamp.now(),
            open_date=lambda f: f["open_time"].dt.date,
        )[SILVER_CANDLES.columns],
        SILVER_CANDLES.schema,
    )
    copies = spark.createDataFrame([(n, _source(n)) for n in names], "name string, real string")
    silver = real.join(copies, real["symbol"] == copies["real"]).withColumn("symbol", F.col("name"))
    append(spark, settings, SILVER_CANDLES, silver)
    train_thresholds(spark, settings, trained_by="bench", days=2)


def _source(name: str) -> str:
    return name if name in SOURCES else SOURCES[int(name[1:-4]) % 2]


def candles_of(day: str, symbol: str, as_name: str | None = None) -> list[dict]:
    out = list(ArchiveFile.parse(SAMPLE / "futures-um" / f"{symbol}-1m-{day}.zip").candles("replay"))
    return [{**c, "symbol": as_name or symbol} for c in out]


def shifted(candles: list[dict], offset: int, minutes: int) -> list[dict]:
    """`minutes` + 1 candles of the day from minute `offset` on, at the times of its first minutes."""
    return [
        {**c, "open_time": at["open_time"], "close_time": at["close_time"]}
        for c, at in zip(candles[offset : offset + minutes + 1], candles, strict=False)
    ]


class Webhook(BaseHTTPRequestHandler):
    """Records (arrival time, alert) of each POST."""

    received: ClassVar[list[tuple[float, dict]]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.received.append((time.time(), body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def alert_latency(received: list[tuple[float, dict]], gold: pd.DataFrame) -> str:
    """Kafka's timestamp of the candle that raised each alert -> its arrival at the webhook, for the candles in
    `gold` (not those of the warm-up minute)."""
    sent = gold.set_index(["symbol", "open_time"])["kafka_timestamp"]
    seconds = []
    for arrived, body in received:
        incident = body["incident"]
        minute = incident["start"] if body["kind"] == "opened" else incident["peak_time"]
        key = (incident.get("symbol", "MARKET"), pd.Timestamp(minute))
        if key in sent.index:  # a market incident's alert has no one candle
            seconds.append(arrived - sent[key].timestamp())
    if not seconds:
        return "alerts: none received"
    kinds = pd.Series([b["kind"] for _, b in received]).value_counts().to_dict()
    return (
        f"latency Kafka -> alert at the webhook, {len(seconds)} of {len(received)} alerts {kinds} (the others: the "
        "warm-up minute's, or a market incident's): "
        f"p50 {np.percentile(seconds, 50):.2f} s, p95 {np.percentile(seconds, 95):.2f} s, max {max(seconds):.2f} s"
    )


def _seconds(times: pd.Series) -> np.ndarray:
    return times.astype("datetime64[ns]").astype("int64").to_numpy() / 1e9


def _first_after(events: np.ndarray, times: np.ndarray) -> np.ndarray:
    """For each time, the first event at or after it."""
    events = np.sort(events)
    return events[np.searchsorted(events, times)]


def breakdown(batches: list[BatchResult]) -> str:
    """Median seconds of each step over the batches (steps on the raw-writer thread overlap the others)."""
    steps = pd.DataFrame([b.steps for b in batches]).median()
    parts = ", ".join(f"{step} {seconds:.2f}" for step, seconds in steps.items())
    return f"median of {len(batches)} batches: {np.median([b.seconds for b in batches]):.2f} s = {parts}"


def throughput(batch: int, cluster: bool) -> None:
    services = cluster_of_its_own if cluster else broker_of_its_own
    with tempfile.TemporaryDirectory() as home, services(home) as settings:
        spark = get_spark(settings, "bench-stream")
        try:
            ensure_tables(spark, settings)
            history(spark, settings, list(SOURCES))
            days = [f"2025-02-0{d}" for d in range(3, 8)]
            candles = sorted((c for d in days for s in SOURCES for c in candles_of(d, s)), key=lambda c: c["open_time"])
            batches: list[BatchResult] = []
            query = start_stream(spark, settings, on_batch=batches.append, max_offsets_per_trigger=batch)
            started = time.perf_counter()
            producer = make_producer(settings)
            publish(producer, settings.kafka_topic, candles)
            producer.close()
            wait_for_catch_up(settings, timeout_s=1800)
            seconds = time.perf_counter() - started
            query.stop()
            gold = read_table(spark, settings, GOLD_SCORES).count()
            print(
                f"throughput: {len(candles)} candles into gold ({gold} rows) in {seconds:.1f} s = "
                f"{len(candles) / seconds:.0f} candles/s; maxOffsetsPerTrigger={batch}, {len(batches)} micro-batches, "
                f"median batch {np.median([b.seconds for b in batches]):.2f} s; Spark {settings.spark_master}, "
                f"lake {settings.lakehouse_root}, Kafka {settings.kafka_bootstrap_servers}"
            )
            print(breakdown(batches))
        finally:
            spark.stop()


def latency(symbols: int, minutes: int, every_s: float, alerts: bool) -> None:
    names = [f"B{i:04d}USDT" for i in range(symbols)]
    with tempfile.TemporaryDirectory() as home, broker_of_its_own(home) as settings:
        webhook = ThreadingHTTPServer(("127.0.0.1", free_port()), Webhook)
        threading.Thread(target=webhook.serve_forever, daemon=True).start()
        if alerts:
            settings = dataclasses.replace(settings, alerts_webhook_url=f"http://127.0.0.1:{webhook.server_port}/")
        spark = get_spark(settings, "bench-stream")
        try:
            ensure_tables(spark, settings)
            history(spark, settings, names)
            series = {n: candles_of("2025-02-03", _source(n), n) for n in names}
            if alerts:
                series = {
                    n: shifted(c, (i * 7) % (1440 - minutes - 1), minutes) for i, (n, c) in enumerate(series.items())
                }
            ends: list[float] = []
            batches: list[BatchResult] = []

            def on_batch(batch: BatchResult) -> None:
                ends.append(time.time())
                batches.append(batch)

            query = start_stream(spark, settings, on_batch=on_batch)
            producer = make_producer(settings)
            time.sleep(5)
            # Warm-up: the first batch after a start seeds the detection context from silver. It is timed on its
            # own; in compressed minutes it would otherwise delay the next minute, which a real minute would not.
            publish(producer, settings.kafka_topic, [series[n][0] for n in names])
            wait_for_catch_up(settings)
            time.sleep(every_s)  # what follows the warm-up batch (preparing the next appends) has its minute too
            for minute in range(1, minutes + 1):  # all symbols' candle of this minute close together
                publish(producer, settings.kafka_topic, [series[n][minute] for n in names])
                time.sleep(every_s)
            producer.close()
            wait_for_catch_up(settings)
            query.stop()
            gold = read_table(spark, settings, GOLD_SCORES).toPandas().sort_values("open_time", kind="stable")
            commits = DeltaTable.forPath(spark, GOLD_SCORES.location(settings)).history().toPandas()
            sent, detected = _seconds(gold["kafka_timestamp"]), _seconds(gold["detected_at"])
            # A row is visible from the first gold commit after its detection on, and final once its micro-batch
            # ended (then its offsets commit): the first is what a reader of gold.scores sees.
            visible = _first_after(_seconds(commits["timestamp"]), detected) - sent
            final = _first_after(np.array(ends), detected) - sent
            warm_up = (gold["open_time"] == gold["open_time"].min()).to_numpy()
            print(f"warm-up minute (context seeded from silver): median {np.median(visible[warm_up]):.2f} s")
            gold, visible, final = gold[~warm_up], visible[~warm_up], final[~warm_up]
            spread = gold.groupby("open_time")["kafka_timestamp"].agg(lambda t: (t.max() - t.min()).total_seconds())
            print(
                f"latency Kafka -> gold committed, {symbols} symbols x {minutes} minutes ({len(gold)} candles): "
                f"p50 {np.percentile(visible, 50):.2f} s, p95 {np.percentile(visible, 95):.2f} s, "
                f"max {visible.max():.2f} s; to the end of the micro-batch: p50 {np.percentile(final, 50):.2f} s, "
                f"p95 {np.percentile(final, 95):.2f} s; a minute's candles reach Kafka within "
                f"{spread.median() * 1000:.0f} ms (median), in {len([b for b in batches if b.scored])} micro-batches"
            )
            by_minute = pd.Series(visible).groupby(gold["open_time"].to_numpy()).median()
            print("median latency per minute, s: " + " ".join(f"{v:.1f}" for v in by_minute))
            print(breakdown([b for b in batches if b.scored][1:]))
            if alerts:
                print(alert_latency(Webhook.received, gold))
        finally:
            webhook.shutdown()
            spark.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("which", choices=["throughput", "latency"])
    parser.add_argument("--batch", type=int, default=5000)
    parser.add_argument("--symbols", type=int, default=200)
    parser.add_argument("--minutes", type=int, default=20)
    parser.add_argument("--every", type=float, default=5.0)
    parser.add_argument("--alerts", action="store_true")
    parser.add_argument("--cluster", action="store_true")
    args = parser.parse_args()
    pd.set_option("display.width", 200)
    if args.which == "throughput":
        throughput(args.batch, args.cluster)
    else:
        latency(args.symbols, args.minutes, args.every, args.alerts)
