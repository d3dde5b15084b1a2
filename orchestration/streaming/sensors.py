"""The supervisor sensors: each keeps its long-running run alive (orchestration.supervision)."""

import dagster as dg

from lakehouse.settings import Settings
from orchestration.supervision import supervisor_sensor
from pipelines.streaming.health import describe_lag


def build_sensors(
    settings: Settings, stream_job: dg.JobDefinition, producer_job: dg.JobDefinition
) -> list[dg.SensorDefinition]:
    timing = {"interval_s": settings.dagster_sensor_interval_s, "backoff_s": settings.dagster_restart_backoff_s}
    sensors = [supervisor_sensor(stream_job, "stream_supervisor_sensor", lambda: describe_lag(settings), **timing)]
    if settings.producer != "off":  # a replayed day is published once; live candles for ever
        sensors.append(
            supervisor_sensor(producer_job, "producer_supervisor_sensor", once=settings.producer == "replay", **timing)
        )
    return sensors
