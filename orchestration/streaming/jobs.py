"""The two long-running runs, each launched and kept alive by a supervisor sensor: the stream
(Kafka -> bronze/silver/gold) and the producer (Binance live, or a replay of one day of the archive -> Kafka);
and the checks of the stream's gold tables, as a job of their own."""

import threading
from dataclasses import asdict
from datetime import date

import dagster as dg
from dagster_pyspark import LazyPySparkResource

from lakehouse.services.dagster import SPARK_BATCH_TAG
from lakehouse.settings import Settings
from orchestration.resources import lakehouse_session
from orchestration.streaming.assets import ALERTS_KEY, INCIDENTS_KEY, MARKET_INCIDENTS_KEY
from orchestration.supervision import LONG_RUNNING_TAG, heartbeat
from pipelines.ingestion.live import LiveStats, produce_live
from pipelines.ingestion.replay import replay_day
from pipelines.streaming.batch import StreamCounters
from pipelines.streaming.query import run_supervised

LONG_RUNNING = {LONG_RUNNING_TAG: "true"}

CHECK_STREAM_TABLES_JOB = dg.define_asset_job(
    "check_stream_tables_job",
    selection=dg.AssetSelection.checks_for_assets(INCIDENTS_KEY, MARKET_INCIDENTS_KEY, ALERTS_KEY),
    description="Check the incidents', market incidents' and alerts' contracts, and that no alert is overdue.",
    tags={SPARK_BATCH_TAG: "batch"},  # queued one at a time with the other Spark batch runs (dagster.yaml)
)


def build_jobs(settings: Settings) -> tuple[dg.JobDefinition, dg.JobDefinition]:
    @dg.op(description="Runs the streaming job until the run is terminated from the UI.")
    def run_stream(context: dg.OpExecutionContext, pyspark: LazyPySparkResource) -> None:
        counters = StreamCounters()
        with heartbeat(context, settings.dagster_heartbeat_timeout_s, counters.snapshot):
            spark = lakehouse_session(pyspark, settings)
            context.log.info(f"streaming {settings.kafka_topic} into {settings.lakehouse_root}")
            run_supervised(spark, settings, threading.Event(), on_batch=counters.add)

    @dg.op(description="Publishes candles to Kafka: Binance live until terminated, or a replay of one archive day.")
    def run_producer(context: dg.OpExecutionContext) -> None:
        if settings.producer == "replay":
            day = date.fromisoformat(settings.replay_day)
            context.log.info(f"replaying {day} of {settings.archive_dir} at {settings.replay_speed}x")
            with heartbeat(context, settings.dagster_heartbeat_timeout_s):
                result = replay_day(settings, day, threading.Event())
            context.log.info(f"replayed {result.sent} candles of {day}: {result.per_symbol}")
            return
        stats = LiveStats()
        context.log.info(f"publishing live candles of {', '.join(settings.symbols)} from {settings.binance_ws_url}")
        with heartbeat(context, settings.dagster_heartbeat_timeout_s, lambda: asdict(stats)):
            produce_live(settings, threading.Event(), stats=stats)

    @dg.job(description="The long-running stream: Kafka -> bronze/silver/gold.", tags=LONG_RUNNING)
    def run_stream_job() -> None:
        run_stream()

    @dg.job(description="The long-running producer: Binance (or a replayed day) -> Kafka.", tags=LONG_RUNNING)
    def run_producer_job() -> None:
        run_producer()

    return run_stream_job, run_producer_job
