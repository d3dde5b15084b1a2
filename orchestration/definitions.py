"""The code location: merges the domains. `dagster dev -m orchestration.definitions`."""

from __future__ import annotations

import dagster as dg

from lakehouse.settings import Settings
from orchestration.ingestion.assets import build_ingestion_assets
from orchestration.resources import build_resources
from orchestration.streaming.jobs import build_streaming
from orchestration.training.assets import build_training_assets, build_training_jobs


def build_definitions(settings: Settings) -> dg.Definitions:
    training_jobs, schedules = build_training_jobs(settings)
    stream_jobs, sensors = build_streaming(settings)
    return dg.Definitions(
        assets=[*build_ingestion_assets(settings), *build_training_assets(settings)],
        jobs=[*training_jobs, *stream_jobs],
        schedules=schedules,
        sensors=sensors,
        resources=build_resources(settings),
        # One process, one SparkSession: each step of a multiprocess run would start its own JVM.
        executor=dg.in_process_executor,
    )


# Dagster's entry point (`dagster dev -m orchestration.definitions`) builds the settings, once, from the environment.
defs = build_definitions(Settings.from_env())
