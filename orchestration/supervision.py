"""How Dagster keeps the long-running runs (the stream, the producer) alive.

- A supervisor sensor per job starts its run when none is running, restarts it after failures with back-off, and
  leaves it stopped when someone stopped it from the UI (pipelines.streaming.health.supervise decides).
- Each long-running run tags itself with a heartbeat (and its counters) every 30 s. The instance's run launcher
  (`SupervisedRunLauncher`, named in the dagster.yaml the project writes) turns a stale heartbeat into a failed
  worker for Dagster's run monitoring, which marks the run failed; the sensor then starts a new one. Dagster's
  default launcher has no health check at all: a run whose process was killed would stay "started" for ever.
"""

import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import dagster as dg
from dagster._core.launcher import CheckRunHealthResult, DefaultRunLauncher, WorkerStatus
from dagster._serdes import ConfigurableClassData

from lakehouse.services.dagster import HEARTBEAT_TAG, LONG_RUNNING_TAG
from pipelines.streaming.health import supervise


@contextmanager
def heartbeat(
    context: dg.OpExecutionContext, timeout_s: float, counters: Callable[[], Mapping[str, Any]] = dict
) -> Iterator[None]:
    """While the block runs, tag the run with the time, its process id and `counters()` (shown on the runs page),
    four times per heartbeat timeout (at most every 30 s)."""
    done = threading.Event()
    every_s = min(timeout_s / 4, 30.0)

    def beat() -> None:
        while True:
            tags = {HEARTBEAT_TAG: str(int(time.time())), "marketlake/pid": str(os.getpid())}
            try:
                tags |= {f"marketlake/{name}": str(value) for name, value in counters().items()}
                context.instance.add_run_tags(context.run_id, tags)
            except Exception as error:  # a storage hiccup must not end the run; the next beat tries again
                context.log.warning(f"heartbeat not recorded: {error}")
            if done.wait(every_s):
                return

    thread = threading.Thread(target=beat, name="marketlake-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join(timeout=5)


def worker_health(tags: Mapping[str, str], started_at: float | None, now: float, stale_after_s: float) -> str | None:
    """Why a long-running run's worker is dead (no heartbeat for stale_after_s), or None when it looks alive."""
    if tags.get(LONG_RUNNING_TAG) != "true":
        return None
    last = float(tags[HEARTBEAT_TAG]) if HEARTBEAT_TAG in tags else started_at
    if last is None or now - last <= stale_after_s:
        return None
    return f"no heartbeat for {now - last:.0f} s (its process died or hangs)"


class SupervisedRunLauncher(DefaultRunLauncher):
    """Dagster's default launcher, plus a worker health check for long-running runs (from their heartbeat tag)."""

    def __init__(self, stale_after_seconds: int = 120, inst_data: ConfigurableClassData | None = None) -> None:
        super().__init__(inst_data=inst_data)
        self.stale_after_seconds = stale_after_seconds

    @classmethod
    def config_type(cls) -> dict:
        return {"stale_after_seconds": dg.Field(int, is_required=False, default_value=120)}

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData, config_value: Mapping[str, Any]):
        return cls(inst_data=inst_data, **config_value)

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: dg.DagsterRun) -> CheckRunHealthResult:
        record = self._instance.get_run_record_by_id(run.run_id)
        started_at = record.start_time if record else None
        problem = worker_health(run.tags, started_at, time.time(), self.stale_after_seconds)
        if problem:
            return CheckRunHealthResult(WorkerStatus.FAILED, problem)
        return CheckRunHealthResult(WorkerStatus.RUNNING)


def supervisor_sensor(
    job: dg.JobDefinition,
    name: str,
    health: Callable[[], str] = lambda: "",
    once: bool = False,
    *,
    interval_s: int,
    backoff_s: float,
) -> dg.SensorDefinition:
    """A sensor that keeps `job` running, looking every `interval_s`; `health` adds a word on how it is doing (e.g.
    the stream's lag); a job run `once` (a replay) is left alone after it succeeded."""

    @dg.sensor(
        name=name,
        job=job,
        minimum_interval_seconds=interval_s,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Starts {job.name} when it is not running, restarts it after failures with back-off "
        f"({backoff_s:g} s doubling, at most 10 min), leaves it stopped when it was stopped from the UI.",
    )
    def _sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        runs = context.instance.get_run_records(dg.RunsFilter(job_name=job.name), limit=10)
        recent = [(r.dagster_run.status.value, r.end_time) for r in runs]
        decision = supervise(recent, time.time(), base_backoff_s=backoff_s, done_when_succeeded=once)
        report = "; ".join(part for part in (decision.reason, health()) if part)
        context.log.info(report)
        if decision.start:
            return dg.SensorResult(run_requests=[dg.RunRequest(run_key=f"{job.name}-{int(time.time())}")])
        return dg.SensorResult(skip_reason=report)

    return _sensor
