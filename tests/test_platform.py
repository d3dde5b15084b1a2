"""The platform as its users run it: `marketlake up --replay DAY` in a temporary home, then only the interfaces a
user has: Dagster's GraphQL API (what its UI calls), Superset's REST API, a headless browser, `marketlake status`.

The real daemon's sensors start the stream and the producer (a replay of the crash day); a backfill of 2 days x
2 symbols and a retraining run are launched while the stream runs, then the next day is replayed with
`marketlake replay`. Every run must succeed, the stream run must still be the first one and running, silver and
gold must hold each key exactly once, and the day replayed after the retraining must carry the new thresholds
version. Then the stream's process is killed: run monitoring fails the run and its sensor starts a new one.
Screenshots of the Dagster UI go to test-artifacts/dagster/.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path

import pyarrow.compute as pc
import pytest
from deltalake import DeltaTable

from lakehouse.services.dagster import Dagster
from lakehouse.services.process import free_port
from lakehouse.services.superset import Superset
from lakehouse.settings import PROJECT_ROOT, Settings
from lakehouse.tables import GOLD_SCORES, GOLD_THRESHOLDS, SILVER_CANDLES
from pipelines.streaming.health import committed_offsets, end_offsets, lag
from pipelines.streaming.query import checkpoint

pytestmark = pytest.mark.integration
MARKETLAKE = Path(sys.executable).parent / "marketlake"
ARTIFACTS = PROJECT_ROOT / "test-artifacts" / "dagster"
SYMBOLS = ("FILUSDT", "NEARUSDT")
HISTORY = ("2025-02-01", "2025-02-02")
REPLAY_DAY = "2025-02-03"
NEXT_DAY = "2025-02-04"
REPLAY_SPEED = 720  # market minutes per wall minute: the day takes 2 minutes
DONE = {"SUCCESS", "FAILURE", "CANCELED"}
ASSETS = [["bronze", "candles"], ["silver", "candles"]]


def wait_until(what: str, check: Callable[[], object], timeout_s: float, every_s: float = 3.0) -> object:
    started = time.monotonic()
    while time.monotonic() < started + timeout_s:
        if result := check():
            print(f"{what}: {time.monotonic() - started:.0f} s")
            return result
        time.sleep(every_s)
    raise TimeoutError(f"{what}: not within {timeout_s:.0f} s")


def job_runs(dagster: Dagster, job: str) -> list[dict]:
    return dagster.runs(pipelineName=job)


def finished(dagster: Dagster, **run_filter: object) -> list[dict] | None:
    found = dagster.runs(**run_filter)
    return found if found and all(r["status"] in DONE for r in found) else None


def table(settings: Settings, registry_table) -> DeltaTable:
    return DeltaTable(registry_table.location(settings))


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Settings, dict[str, str], float]]:
    home = tmp_path_factory.mktemp("platform")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MARKETLAKE_", "DAGSTER_", "SUPERSET_"))}
    env |= {
        "MARKETLAKE_HOME": str(home),
        "MARKETLAKE_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
        "MARKETLAKE_KAFKA_CONTROLLER_PORT": str(free_port()),
        "MARKETLAKE_DAGSTER_PORT": str(free_port()),
        "MARKETLAKE_DAGSTER_CODE_SERVER": f"127.0.0.1:{free_port()}",
        "MARKETLAKE_SUPERSET_PORT": str(free_port()),
        "MARKETLAKE_SYMBOLS": ",".join(SYMBOLS),
        "MARKETLAKE_BACKFILL_START": HISTORY[0],
        "MARKETLAKE_DAGSTER_HEARTBEAT_TIMEOUT_S": "40",  # a dead run is noticed within a minute
        # and restarted within seconds, not the minute of a 30 s sensor interval plus a 30 s back-off
        "MARKETLAKE_DAGSTER_SENSOR_INTERVAL_S": "10",
        "MARKETLAKE_DAGSTER_RESTART_BACKOFF_S": "5",
    }
    settings = Settings.from_env(env)
    started = time.monotonic()
    up = subprocess.run(
        [str(MARKETLAKE), "up", "--replay", REPLAY_DAY, "--speed", str(REPLAY_SPEED)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    up_seconds = time.monotonic() - started
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        # Spark's log lines belong in var/logs, not the terminal (the JVM's own "WARNING: Using incubator
        # modules" line is printed before any log configuration applies).
        assert not re.search(r"\b(WARN|INFO)\b", up.stdout + up.stderr), up.stdout + up.stderr
        yield settings, env, up_seconds
    finally:
        subprocess.run([str(MARKETLAKE), "down"], env=env, capture_output=True, timeout=300, check=False)


def test_the_platform_through_its_real_interfaces(platform: tuple[Settings, dict[str, str], float]) -> None:
    settings, env, up_seconds = platform
    dagster = Dagster(settings)
    print(f"marketlake up: {up_seconds:.0f} s to all healthy")

    # The daemon's sensors start the stream and the producer as runs of their own.
    wait_until(
        "the stream and the producer running",
        lambda: (
            [r["status"] for r in job_runs(dagster, "run_stream_job")] == ["STARTED"]
            and [r["status"] for r in job_runs(dagster, "run_producer_job")] == ["STARTED"]
        ),
        timeout_s=240,
    )
    stream_run = job_runs(dagster, "run_stream_job")[0]["runId"]

    # A backfill of 2 days x 2 symbols launched like the UI does, while the stream runs: one run per range.
    started = time.monotonic()
    backfill = dagster.launch_backfill(ASSETS, [f"{day}|{symbol}" for day in HISTORY for symbol in SYMBOLS])
    backfill_runs = wait_until(
        "the backfill's runs", lambda: finished(dagster, tags=[{"key": "dagster/backfill", "value": backfill}]), 900
    )
    print(f"backfill of 2 days x 2 symbols: {len(backfill_runs)} runs, {time.monotonic() - started:.0f} s")
    assert [r["status"] for r in backfill_runs] == ["SUCCESS"] * len(backfill_runs) <= ["SUCCESS"] * 2

    # Retraining from the UI while the stream runs.
    training = dagster.launch_job("train_thresholds_job", {"ops": {"gold__thresholds": {"config": {"train_days": 2}}}})
    (trained,) = wait_until("the training run", lambda: finished(dagster, runIds=[training]), 600)
    assert trained["status"] == "SUCCESS"
    version = pc.max(table(settings, GOLD_THRESHOLDS).to_pyarrow_table(columns=["version"])["version"]).as_py()
    assert version == 1

    # The replay ends (the producer run succeeds, and its sensor leaves it alone); then a user replays the next day
    # with `marketlake replay`: every one of its candles arrives after the retraining.
    wait_until("the replay", lambda: [r["status"] for r in job_runs(dagster, "run_producer_job")] == ["SUCCESS"], 900)
    files = [str(PROJECT_ROOT / "data" / "sample" / "futures-um" / f"{s}-1m-{NEXT_DAY}.zip") for s in SYMBOLS]
    subprocess.run([str(MARKETLAKE), "replay", *files, "--no-progress"], env=env, check=True, timeout=300)
    wait_until(
        "the stream to catch up", lambda: lag(committed_offsets(checkpoint(settings)), end_offsets(settings)) == 0, 600
    )
    assert [(r["runId"], r["status"]) for r in job_runs(dagster, "run_stream_job")] == [(stream_run, "STARTED")]

    # Silver holds the backfilled and the replayed days, gold the replayed days: every key exactly once; the day
    # replayed after the retraining is scored with the new thresholds.
    silver = table(settings, SILVER_CANDLES).to_pandas(columns=["symbol", "open_time"])
    assert not silver.duplicated().any()
    assert silver.groupby("symbol").size().to_dict() == {symbol: 4 * 1440 for symbol in SYMBOLS}
    gold = table(settings, GOLD_SCORES).to_pandas(columns=["symbol", "open_date", "open_time", "thresholds_version"])
    assert not gold[["symbol", "open_time"]].duplicated().any()
    assert gold.groupby(["open_date", "symbol"]).size().to_dict() == {
        (date.fromisoformat(day), symbol): 1440 for day in (REPLAY_DAY, NEXT_DAY) for symbol in SYMBOLS
    }
    assert (gold[gold["open_date"] == date.fromisoformat(NEXT_DAY)]["thresholds_version"] == version).all()

    # `marketlake status` tells the same story.
    status = subprocess.run([str(MARKETLAKE), "status"], env=env, capture_output=True, text=True, check=True).stdout
    assert re.search(r"^stream\s+started", status, re.MULTILINE) and f"{NEXT_DAY} 23:59" in status, status

    # Run monitoring: the stream's process dies (kill -9). Its run is failed for its silent heartbeat and the sensor
    # starts a new stream run, which resumes from the checkpoint.
    tags = {t["key"]: t["value"] for t in job_runs(dagster, "run_stream_job")[0]["tags"]}
    os.kill(int(tags["marketlake/pid"]), signal.SIGKILL)
    wait_until(
        "the dead stream run failed and a new one running",
        lambda: [r["status"] for r in job_runs(dagster, "run_stream_job")] == ["STARTED", "FAILURE"],
        timeout_s=600,
    )

    # A Superset chart over gold returns rows.
    api = Superset(settings).api()
    chart = api.find("chart", slice_name="Latest HIGH and MEDIUM anomalies with reasons")
    assert chart, "the provisioned chart exists"
    data = api.call("GET", f"chart/{chart}/data/")
    assert data["result"][0]["rowcount"] > 0

    screenshots(dagster)


def screenshots(dagster: Dagster) -> None:
    """The asset graph and the runs page as a user sees them, kept as test artifacts."""
    sync_api = pytest.importorskip("playwright.sync_api")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        for name, path in (("asset-graph", "/asset-groups"), ("runs", "/runs")):
            page.goto(f"{dagster.url}{path}", wait_until="networkidle", timeout=120_000)
            page.wait_for_timeout(3000)  # let the graph lay itself out
            page.screenshot(path=str(ARTIFACTS / f"{name}.png"))
            if name == "runs":
                page.wait_for_function("() => document.body.innerText.includes('run_stream_job')", timeout=60_000)
        browser.close()
