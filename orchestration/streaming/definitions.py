"""Streaming: the long-running stream and producer runs, and the sensors that keep them alive."""

import dagster as dg

from lakehouse.settings import Settings
from orchestration.streaming.jobs import build_jobs
from orchestration.streaming.sensors import build_sensors


def build(settings: Settings) -> dg.Definitions:
    stream_job, producer_job = build_jobs(settings)
    return dg.Definitions(jobs=[stream_job, producer_job], sensors=build_sensors(settings, stream_job, producer_job))
