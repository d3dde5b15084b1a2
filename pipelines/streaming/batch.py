"""One micro-batch of the stream: Kafka records -> bronze -> silver (+ quarantine) -> gold.scores, exactly once.

The streaming query (pipelines.streaming.query) calls `run_batch` for each micro-batch; its work is
`process_batch`, a plain function of (DataFrame, batch id) that tests call on static DataFrames too.
Exactly once, end to end:
- Kafka offsets advance only in the checkpoint (beside the tables), after process_batch returned;
- every write is an append with Delta's idempotent-transaction options (txnAppId + txnVersion = batch id), so a
  batch replayed after a crash is not written twice;
- silver and gold are written only for keys they do not hold yet, so duplicates and late copies of a candle
  (a replay overlapping live data) are resolved on (symbol, open_time), never doubled.
After gold.scores, the batch's scored minutes are folded into gold.incidents and gold.market_incidents (MERGE on
their ids: a replayed batch rewrites the same rows or none) and the alerts of what changed are sent and recorded
in gold.alerts (see pipelines.alerts.dispatch for what is guaranteed), before silver: a crash re-runs the batch,
which scores again.
Every micro-batch checks gold.thresholds for a new commit (a listing of its log) and re-reads it when there is
one: a recalibration applies from the next batch on, without a restart.
What a failed batch leads to: see pipelines.streaming.failures.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from lakehouse.delta_io import (
    append_once,
    as_spark,
    log_version,
    merge_into,
    prepare_appends,
    read_range,
    read_table,
    to_pandas,
)
from lakehouse.settings import Settings
from lakehouse.tables import (
    BRONZE_CANDLES,
    CANDLE_COLUMNS,
    GOLD_INCIDENTS,
    GOLD_MARKET_INCIDENTS,
    GOLD_SCORES,
    SILVER_CANDLES,
    SILVER_QUARANTINE,
)
from pipelines.alerts.dispatch import Alerting
from pipelines.alerts.sinks import DEAD_LETTER
from pipelines.detection.incidents import INCIDENT_GAP_MINUTES, OPEN, advance, latest_incidents, upsert
from pipelines.detection.market import CROSS_SECTION_COLUMNS, MarketConfig, MarketTracker, as_text
from pipelines.detection.maths import DetectionConfig, score_after
from pipelines.detection.thresholds import ThresholdsReader
from pipelines.layers.bronze import kafka_to_bronze
from pipelines.layers.gold import score_rows
from pipelines.layers.silver import PARSED_SCHEMA, parse_records, quarantined
from pipelines.streaming.context import SilverTail
from pipelines.streaming.failures import FailureKind, failure_kind, first_line

log = logging.getLogger(__name__)
APP_ID = "marketlake-stream"


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
    incidents: int = 0  # gold.incidents rows that opened, grew, closed or changed scope
    market_incidents: int = 0  # gold.market_incidents rows that opened, grew or closed
    alerts: int = 0  # deliveries recorded in gold.alerts
    dead_letters: int = 0  # of which dead_letter: every attempt failed
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
    incidents: int = 0
    market_incidents: int = 0
    alerts: int = 0
    dead_letters: int = 0
    thresholds_version: int | None = None

    def add(self, batch: BatchResult) -> None:
        self.batches += 1
        self.records += batch.records
        self.quarantined += batch.quarantined
        self.scored += batch.scored
        self.anomalies += batch.anomalies
        self.incidents += batch.incidents
        self.market_incidents += batch.market_incidents
        self.alerts += batch.alerts
        self.dead_letters += batch.dead_letters
        self.thresholds_version = max(batch.thresholds_versions, default=self.thresholds_version)

    def snapshot(self) -> dict[str, int | None]:
        return asdict(self)


class QueryState:
    """What a streaming query keeps between its micro-batches; a new query (a restart) starts from scratch."""

    def __init__(self, settings: Settings) -> None:
        config = DetectionConfig.from_settings(settings)
        self.thresholds = ThresholdsReader()
        # Twice the context a batch needs: candles up to history_minutes late are still served from memory.
        self.tail = SilverTail(behind_minutes=2 * config.history_minutes)
        self.incidents: pd.DataFrame | None = None  # each symbol's latest incident; None: read gold.incidents
        self.market = MarketTracker(MarketConfig.from_settings(settings))
        self.alerting = Alerting(settings)
        self._preparing: threading.Thread | None = None
        self._in_batch = threading.Event()

    def batch_started(self) -> None:
        self._in_batch.set()

    def prepare_next_batch(self, spark: SparkSession, settings: Settings) -> None:
        """While the stream waits for data, build the state the next batch's appends look their transaction ids up
        in (see prepare_appends), gold first. Not when the next batch has started (a backlog): its appends build
        the state themselves, and the two would share the 2 cores."""
        self._in_batch.clear()
        if self._preparing is not None and self._preparing.is_alive():
            return

        def prepare() -> None:
            for table in (GOLD_SCORES, SILVER_CANDLES, BRONZE_CANDLES):
                if self._in_batch.wait(0.05):
                    return
                try:
                    prepare_appends(spark, settings, table)
                except Exception as error:  # only an optimisation: the append builds the state itself
                    log.debug("state of %s not prepared: %s", table.name, first_line(error))

        self._preparing = threading.Thread(target=prepare, name="prepare-appends", daemon=True)
        self._preparing.start()

    def forget(self) -> None:
        """After a failed attempt: the tail and the incidents may hold half of it, so the next batch reads the
        tables again."""
        self.tail.clear()
        self.incidents = None


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
    config = DetectionConfig.from_settings(settings)
    state = state or QueryState(settings)
    result = BatchResult(batch_id, 0, 0, 0, 0, 0, ())
    with result.timed("collect"):
        bronze = kafka_to_bronze(records).cache()
        parsed = parse_records(bronze.toPandas())
    bad = parsed["reason"].notna()
    result.records, result.quarantined = len(parsed), int(bad.sum())
    try:
        # Earliest Kafka copy of each candle in the batch wins; latency is measured from its Kafka time.
        valid = (
            parsed.loc[~bad, SILVER_CANDLES.columns]
            .astype({"trades": "int64"})
            .sort_values("kafka_timestamp", kind="stable")
            .drop_duplicates(["symbol", "open_time"], keep="first")
        )
        new_in_silver = _gold(spark, settings, valid, batch_id, app_id, state, config, result) if len(valid) else valid
        _copies(spark, settings, bronze, parsed[bad], new_in_silver, batch_id, app_id, state.tail, result)
        if len(valid):
            state.tail.trim(valid)
    finally:
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
    state.batch_started()
    while len(failures) < 2:
        try:
            result = process(spark, settings, records, batch_id, app_id, state)
        except Exception as error:
            if failure_kind(error) is FailureKind.INFRASTRUCTURE:
                log.error("batch %d: infrastructure failure, stopping: %s", batch_id, first_line(error))
                raise
            failures.append(error)
            state.forget()
            log.warning("batch %d failed on its data (attempt %d): %s", batch_id, len(failures), first_line(error))
            continue
        result.data_failures = len(failures)
        state.prepare_next_batch(spark, settings)
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
        reason = f"micro-batch {batch_id} failed twice on its data: {first_line(error)}"
        rows = bronze.select(
            "source", "symbol", "open_time", "value", F.lit(reason).alias("reason"), "topic", "partition", "offset",
            F.current_timestamp().alias("quarantined_at"),
        )  # fmt: skip
        append_once(spark, settings, BRONZE_CANDLES, bronze, app_id, batch_id)
        # A writer of its own: the failed attempt may have committed some quarantine rows under app_id already.
        append_once(spark, settings, SILVER_QUARANTINE, rows, f"{app_id}:isolated", batch_id)
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
            keys = read_range(spark, settings, GOLD_SCORES, symbols, first, last, GOLD_SCORES.keys, inclusive=True)
            seen = _absent(seen, to_pandas(keys))
    to_score = pd.concat([new_in_silver, seen])
    if to_score.empty:
        return new_in_silver
    with result.timed("thresholds"):
        thresholds = state.thresholds(spark, settings)
    with result.timed("score"):
        gold = score_rows(score_after(context, to_score, thresholds, config))
    with result.timed("gold_write"):
        append_once(spark, settings, GOLD_SCORES, gold, app_id, batch_id)
    result.scored, result.anomalies = len(gold), int(gold["is_anomaly"].sum())
    result.thresholds_versions = tuple(sorted(int(v) for v in gold["thresholds_version"].dropna().unique()))
    _incidents(spark, settings, gold, state, result)
    return new_in_silver


def _incidents(
    spark: SparkSession, settings: Settings, gold: pd.DataFrame, state: QueryState, result: BatchResult
) -> None:
    """Fold the scored minutes into the incidents (symbols' incidents marked as moving with the market or on their
    own), send the alerts of what changed, then merge gold.incidents and gold.market_incidents and record the
    alerts in gold.alerts, all before silver (a crash re-runs the batch: the same incidents, the same alerts)."""
    with result.timed("incidents"):
        if state.incidents is None:  # after a start or a failed attempt: from the tables, never from memory
            _load_incidents(spark, settings, gold, state)
        changed = advance(state.incidents, gold, INCIDENT_GAP_MINUTES)
        latest = _latest(state.incidents, changed)
        market = state.market.update(gold, latest[latest["status"] == OPEN])
        # A changed market incident can change the scope of its symbols' latest incidents, not only of `changed`.
        movers = {s for symbols in market["symbols"] for s in symbols.split(",")}
        again = latest[latest["symbol"].isin(movers) & ~latest["incident_id"].isin(changed["incident_id"])]
        candidates = pd.concat([t for t in (changed, again) if not t.empty] or [changed])
        marked = state.market.mark(candidates)
        moved = marked[marked["incident_id"].isin(changed["incident_id"]) | _marks_differ(marked, candidates)]
    result.incidents, result.market_incidents = len(moved), len(market)
    deliveries = []
    if not (moved.empty and market.empty) or state.alerting.pending_incidents:
        with result.timed("alerts"):
            deliveries = state.alerting.send(moved, market)
        result.alerts = len(deliveries)
        result.dead_letters = sum(d.status == DEAD_LETTER for d in deliveries)
    with result.timed("incidents_write"), ThreadPoolExecutor(max_workers=3) as writers:
        # Three small commits, each mostly waiting: together they take about as long as one.
        writes = [writers.submit(state.alerting.record, spark, deliveries)]
        for table, rows in ((GOLD_INCIDENTS, moved), (GOLD_MARKET_INCIDENTS, market)):
            if not rows.empty:
                writes.append(writers.submit(merge_into, spark, settings, table, as_spark(spark, table, rows), True))
        for write in writes:
            write.result()
    if not moved.empty:
        state.incidents = _latest(state.incidents, moved)


def _latest(incidents: pd.DataFrame, changed: pd.DataFrame) -> pd.DataFrame:
    """Each symbol's latest incident once `changed` (gold.incidents rows) is merged."""
    return latest_incidents(upsert(incidents, changed, "incident_id"))


def _marks_differ(marked: pd.DataFrame, was: pd.DataFrame) -> pd.Series:
    """Whether mark() changed an incident's scope, market incident or market change."""
    columns = ["scope", "market_incident_id", "market_change"]
    return pd.Series(as_text(was[columns]).to_numpy() != as_text(marked[columns]).to_numpy(), index=marked.index)


def _load_incidents(spark: SparkSession, settings: Settings, gold: pd.DataFrame, state: QueryState) -> None:
    """The incident state from the tables: each symbol's latest incident, the market tracker's scored minutes and
    market incidents, and the alerts a crash may have interrupted. Only the rows those need are read (the tables
    grow with history; at 2,000 symbols a year of incidents would not fit the driver)."""
    table = to_pandas(_last_rows(read_table(spark, settings, GOLD_INCIDENTS), "symbol", "start", "scored_through"))
    newest = gold["open_time"].max()
    earliest = state.market.since(gold["open_time"], [newest - pd.Timedelta(minutes=state.market.max_minutes)])
    written = read_table(spark, settings, GOLD_MARKET_INCIDENTS)
    last_write = F.col("scored_through") == F.max("scored_through").over(Window.partitionBy())
    market = to_pandas(
        written.withColumn("_last", last_write)
        .filter(F.col("_last") | (F.col("last_minute") >= F.lit(earliest.to_pydatetime())))
        .drop("_last")
    )
    state.incidents = latest_incidents(table)
    open_starts = [t for rows in (state.incidents, market) for t in rows.loc[rows["status"] == OPEN, "start"]]
    first = state.market.since(gold["open_time"], open_starts)
    tail = to_pandas(read_range(spark, settings, GOLD_SCORES, first=first, columns=CROSS_SECTION_COLUMNS))
    state.market.load(tail, market[market["last_minute"] >= first])
    state.alerting.load(spark, table, market)


def _last_rows(rows: DataFrame, key: str, *columns: str) -> DataFrame:
    """The rows holding, within their `key`, the largest value of any of `columns`."""
    by_key = Window.partitionBy(key)
    newest = [F.col(c) == F.max(c).over(by_key) for c in columns]
    flags = [f"_newest_{c}" for c in columns]
    for flag, test in zip(flags, newest, strict=True):
        rows = rows.withColumn(flag, test)
    return rows.filter(" OR ".join(flags)).drop(*flags)


def _context(
    spark: SparkSession, settings: Settings, tail: SilverTail, valid: pd.DataFrame, history_minutes: int
) -> pd.DataFrame:
    """Silver's candles of the batch's symbols from `history_minutes` before its first candle to its last: the
    detection context and the keys silver holds (see SilverTail.context)."""

    def read_silver(symbols: list[str], first: pd.Timestamp, last: pd.Timestamp) -> pd.DataFrame:
        rows = read_range(spark, settings, SILVER_CANDLES, symbols, first, last, CANDLE_COLUMNS, inclusive=True)
        return to_pandas(rows)

    return tail.context(valid, history_minutes, log_version(spark, settings, SILVER_CANDLES), read_silver)


def _copies(
    spark: SparkSession,
    settings: Settings,
    bronze: DataFrame,
    rejected: pd.DataFrame,
    new_in_silver: pd.DataFrame,
    batch_id: int,
    app_id: str,
    tail: SilverTail,
    result: BatchResult,
) -> None:
    """Bronze and quarantine (of the `rejected` parsed records) on a second thread while silver is written: each
    commit is mostly waiting."""

    def write_raw() -> None:
        with result.timed("bronze_write"):
            append_once(spark, settings, BRONZE_CANDLES, bronze, app_id, batch_id)
            if not rejected.empty:
                rows = quarantined(spark.createDataFrame(rejected, PARSED_SCHEMA))
                append_once(spark, settings, SILVER_QUARANTINE, rows, app_id, batch_id)

    with ThreadPoolExecutor(max_workers=1) as raw_writer:
        raw = raw_writer.submit(write_raw)
        if not new_in_silver.empty:
            with result.timed("silver_write"):
                append_once(spark, settings, SILVER_CANDLES, new_in_silver, app_id, batch_id)
            tail.committed(new_in_silver, log_version(spark, settings, SILVER_CANDLES))
        raw.result()


def _absent(candles: pd.DataFrame, stored: pd.DataFrame) -> pd.DataFrame:
    """Rows of `candles` whose (symbol, open_time) is not in `stored`."""
    keys = stored[["symbol", "open_time"]].assign(_stored=True)
    merged = candles.merge(keys, on=["symbol", "open_time"], how="left")
    return candles[merged["_stored"].isna().to_numpy()]
