"""The stream's tables checked every 10 minutes: off until someone turns it on (each run starts a JVM beside the
stream, on the same cores)."""

import dagster as dg

from orchestration.streaming.jobs import CHECK_STREAM_TABLES_JOB

STREAM_TABLES_CHECKS = dg.ScheduleDefinition(
    name="check_stream_tables_job_schedule",
    job=CHECK_STREAM_TABLES_JOB,
    cron_schedule="*/10 * * * *",
    execution_timezone="UTC",
    description="The contracts of gold.incidents, gold.market_incidents and gold.alerts, and the alerts' delivery.",
    default_status=dg.DefaultScheduleStatus.STOPPED,
)
