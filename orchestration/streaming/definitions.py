"""Streaming: the long-running stream and producer runs, the sensors that keep them alive, and the stream's gold
tables with their checks."""

import dagster as dg

from lakehouse.settings import Settings
from orchestration.streaming.assets import STREAM_TABLES
from orchestration.streaming.checks import build_checks
from orchestration.streaming.jobs import CHECK_STREAM_TABLES_JOB, build_jobs
from orchestration.streaming.schedules import STREAM_TABLES_CHECKS
from orchestration.streaming.sensors import build_sensors


def build(settings: Settings) -> dg.Definitions:
    stream_job, producer_job = build_jobs(settings)
    return dg.Definitions(
        assets=STREAM_TABLES,
        asset_checks=build_checks(settings),
        jobs=[stream_job, producer_job, CHECK_STREAM_TABLES_JOB],
        schedules=[STREAM_TABLES_CHECKS],
        sensors=build_sensors(settings, stream_job, producer_job),
    )
