"""The long-running Structured Streaming query: Kafka -> `pipelines.streaming.batch.run_batch`, every 500 ms.

Kafka offsets advance only in the checkpoint (beside the tables), after a micro-batch returned; a query that
fails is started again from its checkpoint (`run_supervised`), so nothing is skipped.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.streaming import StreamingQuery

from lakehouse.settings import Settings
from pipelines.streaming.batch import APP_ID, BatchResult, QueryState, run_batch
from pipelines.streaming.failures import failure_kind, first_line

log = logging.getLogger(__name__)


def checkpoint(settings: Settings) -> str:
    return f"{settings.checkpoint_root.rstrip('/')}/stream"


def kafka_stream(spark: SparkSession, settings: Settings, max_offsets_per_trigger: int | None = None) -> DataFrame:
    reader = (
        spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", settings.kafka_bootstrap_servers)
        .option("subscribe", settings.kafka_topic)
        # First start only; afterwards the checkpoint's offsets rule.
        .option("startingOffsets", "earliest")
        # Offsets that vanished (retention, topic re-created) stop the query instead of being skipped.
        .option("failOnDataLoss", "true")
        # A consumer's prefetch at the end of the topic would wait at the broker this long (Kafka's default:
        # 500 ms), and the next micro-batch's read waits for it: ~1 s of a 200-candle batch.
        .option("kafka.fetch.max.wait.ms", 10)
    )
    if max_offsets_per_trigger:
        reader = reader.option("maxOffsetsPerTrigger", max_offsets_per_trigger)
    return reader.load()


def start_stream(
    spark: SparkSession,
    settings: Settings,
    available_now: bool = False,
    on_batch: Callable[[BatchResult], None] | None = None,
    max_offsets_per_trigger: int | None = None,
) -> StreamingQuery:
    started = threading.Event()
    query_id: list[str] = []
    state = QueryState(settings)

    def body(records: DataFrame, batch_id: int) -> None:
        started.wait()
        result = run_batch(spark, settings, records, batch_id, f"{APP_ID}-{query_id[0]}", state)
        log.info("batch %s", result)
        if on_batch:
            on_batch(result)

    writer = (
        kafka_stream(spark, settings, max_offsets_per_trigger)
        .writeStream.queryName("marketlake_stream")
        .foreachBatch(body)
        .option("checkpointLocation", checkpoint(settings))
    )
    # Not "0 seconds": a batch would start with the first candle of a minute and leave the rest (Kafka gets them
    # within milliseconds) to the next batch, which first waits for this one. Polling every 500 ms keeps a
    # minute's candles together at the cost of 250 ms on average.
    writer = writer.trigger(availableNow=True) if available_now else writer.trigger(processingTime="500 milliseconds")
    query = writer.start()
    query_id.append(str(query.id))  # stable across restarts from the same checkpoint
    started.set()
    return query


def run_until_stopped(query: StreamingQuery, stop: threading.Event, report_every_s: float = 30.0) -> None:
    """Block until the query ends (its exception is raised) or `stop` is set (then stop it cleanly)."""
    try:
        while query.isActive and not stop.is_set():
            query.awaitTermination(report_every_s)
            if query.lastProgress:
                log.info("progress %s", query.lastProgress.get("sources", [{}])[0].get("endOffset"))
    finally:  # also when the run is interrupted (Dagster's terminate, Ctrl-C)
        if query.isActive:
            query.stop()
    if query.exception():
        raise query.exception()


def run_supervised(
    spark: SparkSession,
    settings: Settings,
    stop: threading.Event,
    max_backoff_s: float = 60.0,
    on_batch: Callable[[BatchResult], None] | None = None,
) -> None:
    """Run the stream until `stop`; when the query fails (e.g. the broker went away), log it and start it again
    from its checkpoint after an exponential back-off. Nothing is lost: offsets only advance in the checkpoint."""
    backoff, failures = 1.0, 0
    while not stop.is_set():
        query = start_stream(spark, settings, on_batch=on_batch)
        try:
            run_until_stopped(query, stop)
            return
        except Exception as error:  # any query failure is retried; the process stays up
            failures += 1
            log.warning(
                "stream failed (%s failure %d: %s); restarting from its checkpoint in %.0f s",
                failure_kind(error),
                failures,
                first_line(error),
                backoff,
            )
            stop.wait(backoff)
            backoff = min(backoff * 2, max_backoff_s)
