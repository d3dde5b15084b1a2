"""The stream's supervision: the back-off rule (pure) and the Dagster sensor on a real instance."""

import dataclasses
import re

import dagster as dg

from orchestration.definitions import build_definitions
from pipelines.streaming.health import committed_offsets, lag, supervise


def test_supervise_starts_leaves_running_and_backs_off():
    assert supervise([], now=1000).start
    assert not supervise([("STARTED", None)], now=1000).start
    assert not supervise([("CANCELED", 900.0)], now=1000).start  # stopped by a person stays stopped
    assert supervise([("SUCCESS", 900.0)], now=1000).start
    one_failure = [("FAILURE", 990.0), ("SUCCESS", 100.0)]
    assert not supervise(one_failure, now=1000).start  # 10 s after the failure, back-off is 30 s
    assert supervise(one_failure, now=1021).start
    three_failures = [("FAILURE", 900.0)] * 3
    assert "restarting in 20 s" in supervise(three_failures, now=1000).reason  # 120 s back-off
    assert supervise(three_failures, now=1021).start
    assert not supervise([("FAILURE", 0.0)] * 20, now=599).start  # capped at 600 s
    assert supervise([("FAILURE", 0.0)] * 20, now=600).start


def test_lag_counts_uncommitted_records(tmp_path):
    (tmp_path / "commits").mkdir()
    (tmp_path / "offsets").mkdir()
    assert committed_offsets(str(tmp_path)) == {}
    (tmp_path / "offsets" / "4").write_text('v1\n{"batchWatermarkMs":0}\n{"topic":{"0":10,"1":7,"2":0}}\n')
    (tmp_path / "offsets" / "5").write_text('v1\n{"batchWatermarkMs":0}\n{"topic":{"0":12,"1":9,"2":3}}\n')
    (tmp_path / "commits" / "4").write_text("v1\n{}\n")  # batch 5 planned but not committed
    assert committed_offsets(str(tmp_path)) == {0: 10, 1: 7, 2: 0}
    assert lag({0: 10, 1: 7, 2: 0}, {0: 12, 1: 9, 2: 3}) == 7


def test_sensor_launches_the_stream_and_backs_off_after_a_failure(settings):
    defs = build_definitions(settings)
    sensor = defs.resolve_sensor_def("stream_supervisor_sensor")
    job = defs.resolve_job_def("run_stream_job")
    with dg.instance_for_test() as instance:
        result = sensor(dg.build_sensor_context(instance=instance))
        assert [r.job_name or "run_stream_job" for r in result.run_requests] == ["run_stream_job"]

        run = instance.create_run_for_job(job)
        instance.report_run_failed(run)
        result = sensor(dg.build_sensor_context(instance=instance))
        assert not result.run_requests
        assert "failed 1 time(s); restarting in" in result.skip_reason.skip_message


def test_the_sensors_look_and_restart_as_soon_as_the_settings_say(settings):
    quick = dataclasses.replace(settings, dagster_sensor_interval_s=10, dagster_restart_backoff_s=5.0)
    defs = build_definitions(quick)
    sensor = defs.resolve_sensor_def("stream_supervisor_sensor")
    assert sensor.minimum_interval_seconds == 10
    with dg.instance_for_test() as instance:
        instance.report_run_failed(instance.create_run_for_job(defs.resolve_job_def("run_stream_job")))
        result = sensor(dg.build_sensor_context(instance=instance))
        assert re.search(r"restarting in [45] s", result.skip_reason.skip_message)
