"""The long-running stream: Kafka -> bronze -> silver (+ quarantine) -> gold.scores, exactly once.

One Structured Streaming query; its foreachBatch body is `process_batch`, a plain function of (DataFrame, batch id)
that tests call on static DataFrames too. Exactly once, end to end:
- Kafka offsets advance only in the checkpoint (beside the tables), after process_batch returned;
- every write is an append with Delta's idempotent-transaction options (txnAppId + txnVersion = batch id), so a
  batch replayed after a crash is not written twice;
- silver and gold are written only for keys they do not hold yet, so duplicates and late copies of a candle
  (a replay overlapping live data) are resolved on (symbol, open_time), never doubled.
Every micro-batch checks gold.thresholds for a new commit (a listing of its log) and re-reads it when there is
one: a recalibration applies from the next batch on, without a restart.

No record can stop the stream. Bronze and silver are total (any bytes become a bronze row and a silver candle or
a quarantine row with a reason). Should a batch still fail, `failure_kind` decides what the failure is tied to:
- data (an error a value in a record can cause: Spark's SQLSTATE class 22 "data exception", e.g.
  CAST_INVALID_INPUT, ARITHMETIC_OVERFLOW, DIVIDE_BY_ZERO; Python's ValueError, TypeError, ArithmeticError,
  LookupError, e.g. from pandas or Arrow): the batch is retried once, then every record of it goes to bronze and
  to quarantine with the error as its reason, and the stream moves on;
- infrastructure (anything else: Kafka, disk and network I/O, Delta's concurrent-commit conflicts, memory, a
  stopped Spark context, or an error not known to be about data): raised, so the query stops and restarts from
  its checkpoint without skipping anything.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from enum import StrEnum

import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery

from lakehouse.delta_io import log_version, read_table
from lakehouse.settings import Settings
from lakehouse.tables import BRONZE_CANDLES, GOLD_SCORES, GOLD_THRESHOLDS, SILVER_CANDLES, SILVER_QUARANTINE, Table
from pipelines.bronze import kafka_to_bronze
from pipelines.detection import CANDLE_COLUMNS, DetectionConfig, score
from pipelines.gold import score_rows
from pipelines.silver import parse, quarantined
from pipelines.stream_context import SilverTail
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


def _stored(
    spark: SparkSession,
    settings: Settings,
    table: Table,
    symbols: list[str],
    first: pd.Timestamp,
    last: pd.Timestamp,
    columns: list[str],
) -> pd.DataFrame:
    """The table's rows of `symbols` with open_time from first to last (partition-pruned on open_date)."""
    return (
        read_table(spark, settings, table)
        .filter(F.col("open_date").between(first.date(), last.date()))
        .filter(F.col("symbol").isin(symbols))
        .filter(F.col("open_time").between(first.to_pydatetime(), last.to_pydatetime()))
        .select(*columns)
        .toPandas()
    )


def _absent(candles: pd.DataFrame, stored: pd.DataFrame) -> pd.DataFrame:
    """Rows of `candles` whose (symbol, open_time) is not in `stored`."""
    keys = stored[["symbol", "open_time"]].assign(_stored=True)
    merged = candles.merge(keys, on=["symbol", "open_time"], how="left")
    return candles[merged["_stored"].isna().to_numpy()]


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
    seconds: float = 0.0
    steps: dict[str, float] = field(default_factory=dict)  # seconds per step; steps on two threads overlap
    data_failures: int = 0  # attempts of this batch that failed on its data (see failure_kind)
    isolated: int = 0  # records quarantined because their batch failed twice on its data

    @contextmanager
    def timed(self, step: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.steps[step] = self.steps.get(step, 0.0) + time.perf_counter() - started


@dataclass
class StreamCounters:
    """Totals over the micro-batches of a running stream (reported on its Dagster run)."""

    batches: int = 0
    records: int = 0
    quarantined: int = 0
    scored: int = 0
    anomalies: int = 0
    thresholds_version: int | None = None

    def add(self, batch: BatchResult) -> None:
        self.batches += 1
        self.records += batch.records
        self.quarantined += batch.quarantined
        self.scored += batch.scored
        self.anomalies += batch.anomalies
        self.thresholds_version = max(batch.thresholds_versions, default=self.thresholds_version)

    def snapshot(self) -> dict[str, int | None]:
        return asdict(self)


class ThresholdsReader:
    """The latest thresholds, re-read only when gold.thresholds has a new commit: a recalibration is seen by the
    next micro-batch, and a batch without one pays a directory listing instead of a table scan."""

    def __init__(self) -> None:
        self.version: int | None = None
        self.frame = pd.DataFrame()

    def __call__(self, spark: SparkSession, settings: Settings) -> pd.DataFrame:
        version = log_version(spark, settings, GOLD_THRESHOLDS)
        if version != self.version:
            try:
                self.frame, self.version = latest_thresholds(spark, settings), version
            except Exception as error:
                if self.version is None:  # nothing to keep: the query stops and restarts
                    raise
                # A version that cannot be read (e.g. a corrupted file) leaves the last good one in force; it is
                # tried again at the next batch.
                log.error("thresholds v%s unreadable, keeping v%s: %s", version, self.version, _first_line(error))
        return self.frame


class QueryState:
    """What a streaming query keeps between its micro-batches; a new query (a restart) starts from scratch."""

    def __init__(self, config: DetectionConfig) -> None:
        self.thresholds = ThresholdsReader()
        # Twice the context a batch needs: candles up to history_minutes late are still served from memory.
        self.tail = SilverTail(behind_minutes=2 * config.history_minutes)

    def forget(self) -> None:
        """After a failed attempt: the tail may hold half of it, so the next batch reads silver again."""
        self.tail.clear()


class FailureKind(StrEnum):
    DATA = "data"
    INFRASTRUCTURE = "infrastructure"


# Raised by the environment, whatever the records hold. Errors of Kafka, Delta (concurrent commits), the JVM or
# Spark arrive as other exception types and, not being known as data errors, count as infrastructure too.
_INFRASTRUCTURE_TYPES: tuple[type[BaseException], ...] = (OSError, MemoryError)
# What a value in a record can raise: Python's value errors (pandas, Arrow, conversions) and SQLSTATE class 22,
# "data exception", which Spark gives CAST_INVALID_INPUT, ARITHMETIC_OVERFLOW, DIVIDE_BY_ZERO, DATETIME_OVERFLOW...
_DATA_TYPES: tuple[type[BaseException], ...] = (ValueError, TypeError, ArithmeticError, LookupError)
_DATA_SQLSTATE = re.compile(r"SQLSTATE: 22[0-9A-Z]{3}")


def failure_kind(error: BaseException) -> FailureKind:
    """Whether a failed micro-batch failed on its data (retry, then quarantine its records) or on infrastructure
    (stop; restart from the checkpoint). Unknown errors count as infrastructure: stopping skips nothing.
    Structured signs (SQLSTATE, exception types) are read before message text, which may quote a record: a value
    such as "java.io.IOException" in a record cannot make its data error pass for infrastructure."""
    chain = _chain(error)
    if any(str(_sqlstate(e)).startswith("22") for e in chain):
        return FailureKind.DATA
    if any(isinstance(e, _INFRASTRUCTURE_TYPES) for e in chain):
        return FailureKind.INFRASTRUCTURE
    if any(isinstance(e, _DATA_TYPES) for e in chain):
        return FailureKind.DATA
    text = "\n".join(f"{type(e).__name__}: {e}" for e in chain)  # e.g. a Py4JJavaError's Java exception
    if _DATA_SQLSTATE.search(text):
        return FailureKind.DATA
    return FailureKind.INFRASTRUCTURE


def _chain(error: BaseException) -> list[BaseException]:
    """The error and its causes (explicit or implicit), each once."""
    chain: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def _sqlstate(error: BaseException) -> str | None:
    getter = getattr(error, "getSqlState", None)
    try:
        return getter() if callable(getter) else None
    except Exception:  # a JVM that is gone cannot be asked
        return None


def _first_line(error: BaseException) -> str:
    return f"{type(error).__name__}: {(str(error).strip().splitlines() or [''])[0][:300]}"


def process_batch(
    spark: SparkSession,
    settings: Settings,
    records: DataFrame,
    batch_id: int,
    app_id: str = APP_ID,
    state: QueryState | None = None,
) -> BatchResult:
    """One micro-batch of Kafka records (Kafka source schema) through bronze, silver, quarantine and gold.

    `app_id` names the writer for Delta's idempotent appends: the stream passes its query id, which lives in
    its checkpoint, so a new checkpoint (batch ids from 0 again) is a new writer and is not skipped.
    Gold is written first, as it is what readers wait for; then bronze, quarantine and silver. All are committed
    before the batch returns (and its offsets commit)."""
    started = time.perf_counter()
    config = detection_config(settings)
    state = state or QueryState(config)
    result = BatchResult(batch_id, 0, 0, 0, 0, 0, ())
    with result.timed("collect"):
        bronze = kafka_to_bronze(records).cache()
        parsed = parse(bronze).cache()
        checked = parsed.select(*SILVER_CANDLES.columns, "reason").toPandas()
    result.records, result.quarantined = len(checked), int(checked["reason"].notna().sum())
    try:
        # Earliest Kafka copy of each candle in the batch wins; latency is measured from its Kafka time.
        valid = (
            checked[checked["reason"].isna()]
            .drop(columns="reason")
            .sort_values("kafka_timestamp", kind="stable")
            .drop_duplicates(["symbol", "open_time"], keep="first")
        )
        new_in_silver = _gold(spark, settings, valid, batch_id, app_id, state, config, result) if len(valid) else valid
        _copies(spark, settings, bronze, parsed, new_in_silver, batch_id, app_id, state.tail, result)
        if len(valid):
            state.tail.trim(valid)
    finally:
        parsed.unpersist()
        bronze.unpersist()
        result.seconds = time.perf_counter() - started
    return result


def run_batch(
    spark: SparkSession,
    settings: Settings,
    records: DataFrame,
    batch_id: int,
    app_id: str,
    state: QueryState,
    process: Callable[..., BatchResult] = process_batch,
) -> BatchResult:
    """`process` (process_batch), retried once when it fails on its data; if it fails again, the batch's records go
    to quarantine one row each, with the error as their reason, so the stream moves on. Failures of
    infrastructure are raised at once (see failure_kind)."""
    failures: list[BaseException] = []
    while len(failures) < 2:
        try:
            result = process(spark, settings, records, batch_id, app_id, state)
        except Exception as error:
            if failure_kind(error) is FailureKind.INFRASTRUCTURE:
                log.error("batch %d: infrastructure failure, stopping: %s", batch_id, _first_line(error))
                raise
            failures.append(error)
            state.forget()
            log.warning("batch %d failed on its data (attempt %d): %s", batch_id, len(failures), _first_line(error))
            continue
        result.data_failures = len(failures)
        return result
    return quarantine_batch(spark, settings, records, batch_id, app_id, failures[-1])


def quarantine_batch(
    spark: SparkSession, settings: Settings, records: DataFrame, batch_id: int, app_id: str, error: BaseException
) -> BatchResult:
    """Every record of a batch that failed on its data -> bronze (if that failed attempt had not written it: same
    transaction) and one quarantine row each, with its Kafka coordinates and the error."""
    started = time.perf_counter()
    bronze = kafka_to_bronze(records).cache()
    try:
        reason = f"micro-batch {batch_id} failed twice on its data: {_first_line(error)}"
        rows = bronze.select(
            "source", "symbol", "open_time", "value", F.lit(reason).alias("reason"), "topic", "partition", "offset",
            F.current_timestamp().alias("quarantined_at"),
        )  # fmt: skip
        append_once(bronze, settings, BRONZE_CANDLES, app_id, batch_id)
        # A writer of its own: the failed attempt may have committed some quarantine rows under app_id already.
        append_once(rows, settings, SILVER_QUARANTINE, f"{app_id}:isolated", batch_id)
        isolated = bronze.count()
    finally:
        bronze.unpersist()
    log.error("batch %d: %d record(s) moved to quarantine: %s", batch_id, isolated, reason)
    result = BatchResult(batch_id, isolated, isolated, 0, 0, 0, (), data_failures=2, isolated=isolated)
    result.seconds = time.perf_counter() - started
    return result


def _gold(
    spark: SparkSession,
    settings: Settings,
    valid: pd.DataFrame,
    batch_id: int,
    app_id: str,
    state: QueryState,
    config: DetectionConfig,
    result: BatchResult,
) -> pd.DataFrame:
    """Score the batch's candles that gold lacks and append them; returns the candles that silver lacks."""
    with result.timed("context"):
        context = _context(spark, settings, state.tail, valid, config.history_minutes)
    new_in_silver = _absent(valid, context)
    result.new_candles = len(new_in_silver)
    # Candles new to silver are not in gold either, except when this very batch crashed after its gold commit:
    # then its gold append is skipped whole (same txnVersion). The other candles (duplicates, a batch re-run after
    # a crash after its silver commit) are looked up in gold.
    seen = _absent(valid, new_in_silver)
    if not seen.empty:
        with result.timed("gold_read"):
            symbols = sorted(seen["symbol"].unique())
            first, last = seen["open_time"].min(), seen["open_time"].max()
            seen = _absent(seen, _stored(spark, settings, GOLD_SCORES, symbols, first, last, ["symbol", "open_time"]))
    to_score = pd.concat([new_in_silver, seen])
    if to_score.empty:
        return new_in_silver
    with result.timed("thresholds"):
        thresholds = state.thresholds(spark, settings)
    with result.timed("score"):
        gold = score_new(context, to_score, thresholds, config)
    with result.timed("gold_write"):
        append_once(_to_spark(spark, gold, GOLD_SCORES), settings, GOLD_SCORES, app_id, batch_id)
    result.scored, result.anomalies = len(gold), int(gold["is_anomaly"].sum())
    result.thresholds_versions = tuple(sorted(int(v) for v in gold["thresholds_version"].dropna().unique()))
    return new_in_silver


def _context(
    spark: SparkSession, settings: Settings, tail: SilverTail, valid: pd.DataFrame, history_minutes: int
) -> pd.DataFrame:
    """Silver's candles of the batch's symbols from `history_minutes` before its first candle to its last: the
    detection context and the keys silver holds. From the tail, once silver was read for what it lacks."""
    version = log_version(spark, settings, SILVER_CANDLES)
    if version != tail.version:  # the first batch, or someone else committed to silver
        tail.clear(version)
    bounds = valid.groupby("symbol")["open_time"].agg(first="min", last="max")
    bounds["first"] -= pd.Timedelta(minutes=history_minutes)
    missing = tail.uncovered(bounds)
    if missing:  # one read for all of them; it covers each from the earliest first to the latest last
        first, last = bounds.loc[missing, "first"].min(), bounds.loc[missing, "last"].max()
        stored = _stored(spark, settings, SILVER_CANDLES, missing, *tail.seed_window(first, last), CANDLE_COLUMNS)
        tail.seed(stored, missing, first, last)
    return tail.between(bounds.index, bounds["first"].min(), bounds["last"].max())


def _copies(
    spark: SparkSession,
    settings: Settings,
    bronze: DataFrame,
    parsed: DataFrame,
    new_in_silver: pd.DataFrame,
    batch_id: int,
    app_id: str,
    tail: SilverTail,
    result: BatchResult,
) -> None:
    """Bronze and quarantine on a second thread while silver is written: each commit is mostly waiting."""

    def write_raw() -> None:
        with result.timed("bronze_write"):
            append_once(bronze, settings, BRONZE_CANDLES, app_id, batch_id)
            if result.quarantined:
                append_once(quarantined(parsed), settings, SILVER_QUARANTINE, app_id, batch_id)

    with ThreadPoolExecutor(max_workers=1) as raw_writer:
        raw = raw_writer.submit(write_raw)
        if not new_in_silver.empty:
            with result.timed("silver_write"):
                append_once(_to_spark(spark, new_in_silver, SILVER_CANDLES), settings, SILVER_CANDLES, app_id, batch_id)
            tail.committed(new_in_silver, log_version(spark, settings, SILVER_CANDLES))
        raw.result()


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
    state = QueryState(detection_config(settings))

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
                _first_line(error),
                backoff,
            )
            stop.wait(backoff)
            backoff = min(backoff * 2, max_backoff_s)
