"""Benchmark: `marketlake backtest` over one symbol-month of real candles (target: under 60 s on 2 cores).

    .venv/bin/python bench/backtest_month.py PATH.csv   # e.g. ../shared/data/binance/futures-um/NEARUSDT-1m-2023-09.csv

Times the pure detection (train + score) and the whole command (reading the file, Spark start, Delta + CSV writes).
"""

import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pipelines.detection.backtest import run_backtest
from pipelines.detection.maths import DetectionConfig
from pipelines.ingestion.archives import read_frame

if len(sys.argv) < 2:
    sys.exit(__doc__)
path = Path(sys.argv[1])

started = time.perf_counter()
frame = read_frame([path])
read_s = time.perf_counter() - started
started = time.perf_counter()
result = run_backtest(frame, DetectionConfig(), train_days=7)
detect_s = time.perf_counter() - started
print(f"{path.name}: {len(frame)} candles read in {read_s:.2f} s; train+score {len(result.scores)} in {detect_s:.2f} s")

with tempfile.TemporaryDirectory() as home:
    command = [str(Path(sys.executable).parent / "marketlake"), "backtest", "--candles", str(path), "--train-days", "7"]
    command += ["--csv", f"{home}/scores.csv"]
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, env={"MARKETLAKE_HOME": home, "PATH": "/usr/bin:/bin"})
    print(f"marketlake backtest (CSV + Delta, Spark start included): {time.perf_counter() - started:.1f} s")
