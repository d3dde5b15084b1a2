"""The Dagster instance the project writes (dagster.yaml), and how it keeps long-running runs alive: the heartbeat
health check of the run launcher, the supervisor sensors, and `marketlake doctor`'s checks."""

import dataclasses
import os
import socket
import time
from pathlib import Path
from unittest import mock

import dagster as dg
import pytest
import yaml

from lakehouse.services.dagster import HEARTBEAT_TAG, LONG_RUNNING_TAG, command, instance_config, write_config
from lakehouse.services.process import free_port
from lakehouse.settings import Settings
from marketlake.doctor import check_ports, java_version
from orchestration.definitions import build_definitions
from orchestration.supervision import SupervisedRunLauncher, worker_health


@pytest.fixture
def local(tmp_path) -> Settings:
    return Settings.from_env(env={}, home=str(tmp_path), producer="replay", replay_day="2025-02-03")


def test_the_written_instance_is_what_dagster_loads(local: Settings):
    write_config(local)
    with mock.patch.dict(os.environ, {"DAGSTER_HOME": local.dagster_home}):
        instance = dg.DagsterInstance.get()
        assert isinstance(instance.run_launcher, SupervisedRunLauncher)
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        assert instance.run_monitoring_enabled
        queue = instance.get_concurrency_config().run_queue_config
        limits = {(limit["key"], limit.get("value")) for limit in queue.tag_concurrency_limits}
        assert limits == {("dagster/backfill", None), ("marketlake/spark", "batch")}
        instance.dispose()
    written = yaml.safe_load(Path(local.dagster_home, "dagster.yaml").read_text())
    assert written["telemetry"] == {"enabled": False} and written["nux"] == {"enabled": False}
    assert "storage" not in written  # local: Dagster's default SQLite storage under dagster_home


def test_compose_storage_is_postgres_from_the_environment(local: Settings):
    config = instance_config(dataclasses.replace(local, dagster_postgres_url="postgresql://u:p@db:5432/dagster"))
    assert config["storage"] == {"postgres": {"postgres_url": {"env": "MARKETLAKE_DAGSTER_POSTGRES_URL"}}}


def test_each_role_runs_the_dagster_command_on_the_settings_ports(local: Settings):
    assert command(local, "code-server")[1:4] == ["code-server", "start", "-m"]
    assert command(local, "webserver")[-4:] == ["-p", "3000", "-w", f"{local.dagster_home}/workspace.yaml"]
    assert command(local, "daemon")[1] == "run"
    with pytest.raises(ValueError):
        command(local, "scheduler")


def test_a_long_running_run_without_a_heartbeat_is_a_dead_worker():
    tags = {LONG_RUNNING_TAG: "true", HEARTBEAT_TAG: "1000"}
    assert worker_health(tags, started_at=900.0, now=1100.0, stale_after_s=120) is None
    assert "no heartbeat for 200 s" in worker_health(tags, started_at=900.0, now=1200.0, stale_after_s=120)
    # Before its first beat, the run's start time counts; runs that are not long-running are never judged.
    assert worker_health({LONG_RUNNING_TAG: "true"}, started_at=900.0, now=1100.0, stale_after_s=120)
    assert worker_health({}, started_at=0.0, now=1e9, stale_after_s=120) is None


def test_the_launcher_fails_a_silent_long_running_run_on_a_real_instance(local: Settings):
    job = build_definitions(local).resolve_job_def("run_stream_job")
    with dg.instance_for_test(
        overrides={"run_launcher": {"module": "orchestration.supervision", "class": "SupervisedRunLauncher"}}
    ) as instance:
        run = instance.create_run_for_job(job, tags=job.tags)  # as the daemon creates it: with the job's tags
        assert run.tags[LONG_RUNNING_TAG] == "true"
        instance.add_run_tags(run.run_id, {HEARTBEAT_TAG: str(int(time.time()))})
        launcher = instance.run_launcher
        assert launcher.check_run_worker_health(instance.get_run_by_id(run.run_id)).status.value == "RUNNING"
        instance.add_run_tags(run.run_id, {HEARTBEAT_TAG: str(int(time.time()) - 600)})
        health = launcher.check_run_worker_health(instance.get_run_by_id(run.run_id))
        assert health.status.value == "FAILED" and "no heartbeat" in health.msg


def test_the_producer_sensor_leaves_a_finished_replay_alone(local: Settings):
    defs = build_definitions(local)
    sensor = defs.resolve_sensor_def("producer_supervisor_sensor")
    job = defs.resolve_job_def("run_producer_job")
    with dg.instance_for_test() as instance:
        assert sensor(dg.build_sensor_context(instance=instance)).run_requests
        run = instance.create_run_for_job(job)
        instance.report_run_failed(run)
        assert not sensor(dg.build_sensor_context(instance=instance)).run_requests  # back-off
        done = instance.create_run_for_job(job, status=dg.DagsterRunStatus.SUCCESS)
        assert done.status == dg.DagsterRunStatus.SUCCESS
        result = sensor(dg.build_sensor_context(instance=instance))
        assert not result.run_requests and "finished" in result.skip_reason.skip_message


def test_live_producer_is_restarted_after_it_ended(tmp_path):
    live = Settings.from_env(env={}, home=str(tmp_path), producer="live")
    defs = build_definitions(live)
    with dg.instance_for_test() as instance:
        instance.create_run_for_job(defs.resolve_job_def("run_producer_job"), status=dg.DagsterRunStatus.SUCCESS)
        assert defs.resolve_sensor_def("producer_supervisor_sensor")(
            dg.build_sensor_context(instance=instance)
        ).run_requests


def test_no_producer_sensor_when_the_producer_is_off(tmp_path):
    defs = build_definitions(Settings.from_env(env={}, home=str(tmp_path), producer="off"))
    assert [s.name for s in defs.sensors] == ["stream_supervisor_sensor"]


def test_doctor_reads_java_versions_and_names_a_taken_port(local: Settings):
    assert java_version('openjdk version "17.0.15" 2025-04-15') == 17
    assert java_version('java version "1.8.0_392"') == 8
    assert java_version("no java here") is None
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        elsewhere = dataclasses.replace(
            local,
            superset_port=port,
            sql_port=free_port(),
            kafka_bootstrap_servers=f"127.0.0.1:{free_port()}",
            kafka_controller_port=free_port(),
            dagster_port=free_port(),
            dagster_code_server=f"127.0.0.1:{free_port()}",
        )
        findings = list(check_ports(elsewhere))
    (problem,) = [f for f in findings if not f.ok]
    assert f"port {port}" in problem.what and "MARKETLAKE_SUPERSET_PORT" in problem.fix
