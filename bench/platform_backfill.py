"""A 7-day x 2-symbol backfill launched as the Dagster UI launches it, while the stream runs under Dagster.

Starts the platform (`marketlake up --replay ... --no-superset`) in a temporary home, lets the replay feed the stream
(one candle per symbol per second), launches the backfill of FILUSDT/NEARUSDT 2025-02-01..07 through the GraphQL API,
and prints: the time to all-healthy, the backfill's runs and time, and the stream's latency (Kafka timestamp ->
scored, from gold.scores) before and during the backfill. The replayed day (NEARUSDT 2023-09-04) is not among the
backfilled days. `python bench/platform_backfill.py`
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
from deltalake import DeltaTable

from lakehouse.services.dagster import Dagster
from lakehouse.services.process import free_port
from lakehouse.settings import Settings
from lakehouse.tables import GOLD_SCORES

MARKETLAKE = Path(sys.executable).parent / "marketlake"
DAYS = [f"2025-02-0{d}" for d in range(1, 8)]
SYMBOLS = ("FILUSDT", "NEARUSDT")


def wait(what: str, check, timeout_s: float) -> object:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(2)
    raise TimeoutError(what)


def latency(settings: Settings, start: float, end: float) -> str:
    gold = DeltaTable(GOLD_SCORES.location(settings)).to_pandas(columns=["kafka_timestamp", "detected_at"])
    detected = gold["detected_at"].map(pd.Timestamp.timestamp)
    window = gold[(detected >= start) & (detected <= end)]
    seconds = (window["detected_at"] - window["kafka_timestamp"]).dt.total_seconds()
    if seconds.empty:
        return "no rows"
    return f"p50 {seconds.quantile(0.5):.2f} s, p95 {seconds.quantile(0.95):.2f} s over {len(seconds)} candles"


def main() -> None:
    home = Path(tempfile.mkdtemp(prefix="marketlake-bench-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MARKETLAKE_", "DAGSTER_"))} | {
        "MARKETLAKE_HOME": str(home),
        "MARKETLAKE_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
        "MARKETLAKE_KAFKA_CONTROLLER_PORT": str(free_port()),
        "MARKETLAKE_DAGSTER_PORT": str(free_port()),
        "MARKETLAKE_DAGSTER_CODE_SERVER": f"127.0.0.1:{free_port()}",
        "MARKETLAKE_SYMBOLS": ",".join(SYMBOLS),
        "MARKETLAKE_BACKFILL_START": "2023-09-01",
    }
    settings = Settings.from_env(env)
    dagster = Dagster(settings)
    started = time.monotonic()
    subprocess.run(
        [str(MARKETLAKE), "up", "--no-superset", "--replay", "2023-09-04", "--speed", "60"], env=env, check=True
    )
    print(f"marketlake up (no Superset): {time.monotonic() - started:.1f} s to all healthy")
    try:
        wait(
            "the stream scoring",
            lambda: (
                Path(GOLD_SCORES.location(settings), "_delta_log").exists()
                and len(DeltaTable(GOLD_SCORES.location(settings)).to_pandas(columns=["symbol"])) > 120
            ),
            600,
        )
        before = time.time()
        time.sleep(60)
        launched = time.time()
        backfill = dagster.launch_backfill(
            [["bronze", "candles"], ["silver", "candles"]], [f"{day}|{symbol}" for day in DAYS for symbol in SYMBOLS]
        )
        runs = wait(
            "the backfill",
            lambda: (
                (found := dagster.runs(tags=[{"key": "dagster/backfill", "value": backfill}]))
                and all(r["status"] in {"SUCCESS", "FAILURE", "CANCELED"} for r in found)
                and found
            ),
            1800,
        )
        done = time.time()
        print(f"backfill of {len(DAYS)} days x {len(SYMBOLS)} symbols: {done - launched:.0f} s in {len(runs)} runs")
        for run in sorted(runs, key=lambda r: r["startTime"] or 0):
            print(f"    run {run['runId'][:8]}: {run['status']}, {run['endTime'] - run['startTime']:.0f} s")
        print(f"stream latency (Kafka -> scored) before the backfill: {latency(settings, before, launched)}")
        print(f"stream latency (Kafka -> scored) during the backfill: {latency(settings, launched, done)}")
    finally:
        subprocess.run([str(MARKETLAKE), "down"], env=env, check=False)


if __name__ == "__main__":
    main()
