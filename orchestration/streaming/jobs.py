"""The stream as a long-running Dagster run, launched and watched by a sensor."""

import time
from pathlib import Path

import dagster as dg
from dagster_pyspark import LazyPySparkResource

from lakehouse.settings import Settings
from orchestration.resources import lakehouse_session
from pipelines.stream import checkpoint, run_supervised
from pipelines.stream_health import committed_offsets, end_offsets, lag, supervise


def build_streaming(settings: Settings) -> tuple[list, list]:
    @dg.op(description="Runs the streaming job until the run is terminated from the UI.")
    def run_stream(context: dg.OpExecutionContext, pyspark: LazyPySparkResource) -> None:
        import threading

        spark = lakehouse_session(pyspark, settings)
        context.log.info(f"streaming {settings.kafka_topic} into {settings.lakehouse_root}")
        run_supervised(spark, settings, threading.Event())

    @dg.job(description="The long-running stream: Kafka -> bronze/silver/gold.", tags={"marketlake/stream": "true"})
    def run_stream_job() -> None:
        run_stream()

    @dg.sensor(
        job=run_stream_job,
        minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Starts the stream when it is not running, restarts it after failures with back-off, reports lag.",
    )
    def stream_supervisor_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        runs = context.instance.get_runs(dg.RunsFilter(job_name="run_stream_job"), limit=10)
        recent = [(r.status.value, _end_time(context.instance, r.run_id)) for r in runs]
        decision = supervise(recent, time.time())
        health = decision.reason
        if Path(checkpoint(settings)).exists():
            try:
                health += f"; lag {lag(committed_offsets(checkpoint(settings)), end_offsets(settings))} records"
            except Exception as error:  # the broker may be down: say so, do not fail the sensor
                health += f"; lag unknown ({type(error).__name__})"
        context.log.info(health)
        if decision.start:
            return dg.SensorResult(run_requests=[dg.RunRequest(run_key=f"stream-{int(time.time())}")])
        return dg.SensorResult(skip_reason=health)

    return [run_stream_job], [stream_supervisor_sensor]


def _end_time(instance: dg.DagsterInstance, run_id: str) -> float | None:
    record = instance.get_run_record_by_id(run_id)
    return record.end_time if record else None
