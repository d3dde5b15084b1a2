"""The long-running stream: Kafka -> bronze -> silver (+ quarantine) -> gold.scores, exactly once.

One Structured Streaming query; its foreachBatch body is `process_batch`, a plain function of (DataFrame, batch id)
that tests call on static DataFrames too. Exactly once, end to end:
- Kafka offsets advance only in the checkpoint (beside the tables), after process_batch returned;
- every write is an append with Delta's idempotent-transaction options (txnAppId + txnVersion = batch id), so a
  batch replayed after a crash is not written twice;
- silver and gold are written only for keys they do not hold yet, so duplicates and late copies of a candle
  (a replay overlapping live data) are resolved on (symbol, open_time), never doubled.
Thresholds are read from gold.thresholds at every micro-batch: a recalibration applies from the next batch on.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery

from lakehouse.delta_io import read_table
from lakehouse.settings import Settings
from lakehouse.tables import BRONZE_CANDLES, GOLD_SCORES, SILVER_CANDLES, SILVER_QUARANTINE, Table
from pipelines.bronze import kafka_to_bronze
from pipelines.detection import CANDLE_COLUMNS, DetectionConfig, score
from pipelines.gold import score_rows
from pipelines.silver import parse, quarantined, valid_candles
from pipelines.training import detection_config, latest_thresholds

log = logging.getLogger(__name__)
APP_ID = "marketlake-stream"


def checkpoint(settings: Settings) -> str:
    return f"{settings.checkpoint_root.rstrip('/')}/stream"


def append_once(frame: DataFrame, settings: Settings, table: Table, app_id: str, batch_id: int) -> None:
    """Append; Delta skips the write if this (app, batch) already committed to the table."""
    (
        frame.select(*table.columns)
        .write.format("delta")
        .mode("append")
        .option("txnAppId", f"{app_id}:{table.name}")
        .option("txnVersion", batch_id)
        .save(table.location(settings))
    )


def _absent(spark: SparkSession, settings: Settings, table: Table, keys: pd.DataFrame) -> pd.DataFrame:
    """Rows of `keys` (symbol, open_time, ...) whose (symbol, open_time) the table does not hold yet."""
    if keys.empty:
        return keys
    first, last = keys["open_time"].min(), keys["open_time"].max()
    stored = (
        read_table(spark, settings, table)
        .filter(F.col("open_date").between(first.date(), last.date()))
        .filter(F.col("symbol").isin(sorted(keys["symbol"].unique())))
        .filter(F.col("open_time").between(first.to_pydatetime(), last.to_pydatetime()))
        .select("symbol", "open_time")
        .toPandas()
    )
    merged = keys.merge(stored.assign(_stored=True), on=["symbol", "open_time"], how="left")
    return keys[merged["_stored"].isna().to_numpy()]


def history(spark: SparkSession, settings: Settings, candles: pd.DataFrame, minutes: int) -> pd.DataFrame:
    """Silver candles of the batch's symbols from `minutes` before its first candle to its last one."""
    first = candles["open_time"].min() - pd.Timedelta(minutes=minutes)
    last = candles["open_time"].max()
    return (
        read_table(spark, settings, SILVER_CANDLES)
        .filter(F.col("open_date").between(first.date(), last.date()))
        .filter(F.col("symbol").isin(sorted(candles["symbol"].unique())))
        .filter(F.col("open_time").between(first.to_pydatetime(), last.to_pydatetime()))
        .select(*CANDLE_COLUMNS)
        .toPandas()
    )


def score_new(
    context: pd.DataFrame, new: pd.DataFrame, thresholds: pd.DataFrame, config: DetectionConfig
) -> pd.DataFrame:
    """Score the new candles with the context before them; gold rows for the new candles only."""
    candles = pd.concat([context, new[CANDLE_COLUMNS]]).drop_duplicates(["symbol", "open_time"], keep="last")
    scored = score(candles.sort_values(["symbol", "open_time"]), thresholds, config)
    keys = new[["symbol", "open_time", "kafka_timestamp"]]
    scored = scored.merge(keys, on=["symbol", "open_time"], how="inner")
    return score_rows(scored)


@dataclass
class BatchResult:
    batch_id: int
    records: int
    quarantined: int
    new_candles: int
    scored: int
    anomalies: int
    thresholds_versions: tuple[int, ...]


def process_batch(
    spark: SparkSession, settings: Settings, records: DataFrame, batch_id: int, app_id: str = APP_ID
) -> BatchResult:
    """One micro-batch of Kafka records (Kafka source schema) through bronze, silver, quarantine and gold.

    `app_id` names the writer for Delta's idempotent appends: the stream passes its query id, which lives in
    its checkpoint, so a new checkpoint (batch ids from 0 again) is a new writer and is not skipped."""
    config = detection_config(settings)
    bronze = kafka_to_bronze(records).cache()
    try:
        append_once(bronze, settings, BRONZE_CANDLES, app_id, batch_id)
        parsed = parse(bronze)
        bad = quarantined(parsed)
        append_once(bad, settings, SILVER_QUARANTINE, app_id, batch_id)
        # Earliest Kafka copy of each candle in the batch wins; its Kafka time is what latency is measured from.
        valid = (
            valid_candles(parsed)
            .toPandas()
            .sort_values("kafka_timestamp", kind="stable")
            .drop_duplicates(["symbol", "open_time"], keep="first")
        )
        result = BatchResult(batch_id, bronze.count(), bad.count(), 0, 0, 0, ())
        if valid.empty:
            return result
        new_in_silver = _absent(spark, settings, SILVER_CANDLES, valid)
        append_once(_to_spark(spark, new_in_silver, SILVER_CANDLES), settings, SILVER_CANDLES, app_id, batch_id)
        result.new_candles = len(new_in_silver)

        to_score = _absent(spark, settings, GOLD_SCORES, valid)
        if not to_score.empty:
            context = history(spark, settings, to_score, config.history_minutes)
            thresholds = latest_thresholds(spark, settings)
            gold = score_new(context, to_score, thresholds, config)
            append_once(_to_spark(spark, gold, GOLD_SCORES), settings, GOLD_SCORES, app_id, batch_id)
            result.scored, result.anomalies = len(gold), int(gold["is_anomaly"].sum())
            result.thresholds_versions = tuple(sorted(int(v) for v in gold["thresholds_version"].dropna().unique()))
        return result
    finally:
        bronze.unpersist()


def _to_spark(spark: SparkSession, frame: pd.DataFrame, table: Table) -> DataFrame:
    return spark.createDataFrame(frame[table.columns], table.schema)


def kafka_stream(spark: SparkSession, settings: Settings, max_offsets_per_trigger: int | None = None) -> DataFrame:
    reader = (
        spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", settings.kafka_bootstrap_servers)
        .option("subscribe", settings.kafka_topic)
        # First start only; afterwards the checkpoint's offsets rule.
        .option("startingOffsets", "earliest")
        # Offsets that vanished (retention, topic re-created) stop the query instead of being skipped.
        .option("failOnDataLoss", "true")
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

    def body(records: DataFrame, batch_id: int) -> None:
        started.wait()
        result = process_batch(spark, settings, records, batch_id, app_id=f"{APP_ID}-{query_id[0]}")
        log.info("batch %s", result)
        if on_batch:
            on_batch(result)

    writer = (
        kafka_stream(spark, settings, max_offsets_per_trigger)
        .writeStream.queryName("marketlake_stream")
        .foreachBatch(body)
        .option("checkpointLocation", checkpoint(settings))
    )
    writer = writer.trigger(availableNow=True) if available_now else writer.trigger(processingTime="0 seconds")
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


def run_supervised(spark: SparkSession, settings: Settings, stop: threading.Event, max_backoff_s: float = 60.0) -> None:
    """Run the stream until `stop`; when the query fails (e.g. the broker went away), log it and start it again
    from its checkpoint after an exponential back-off. Nothing is lost: offsets only advance in the checkpoint."""
    backoff = 1.0
    while not stop.is_set():
        query = start_stream(spark, settings)
        try:
            run_until_stopped(query, stop)
            return
        except Exception as error:  # any query failure is retried; the process stays up
            log.warning("stream failed (%s); restarting in %.0f s", str(error).splitlines()[0][:300], backoff)
            stop.wait(backoff)
            backoff = min(backoff * 2, max_backoff_s)
