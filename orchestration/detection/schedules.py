"""Nightly recalibration."""

import dagster as dg

from orchestration.detection.jobs import TRAIN_THRESHOLDS_JOB

NIGHTLY_RECALIBRATION = dg.ScheduleDefinition(
    name="train_thresholds_job_schedule",
    job=TRAIN_THRESHOLDS_JOB,
    cron_schedule="0 2 * * *",
    execution_timezone="UTC",
    description="Nightly recalibration at 02:00 UTC.",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
