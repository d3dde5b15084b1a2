"""The offline demo, end to end on the embedded default: backfill -> train -> stream <- replay -> anomalies.

History (2025-02-01..02, FILUSDT and NEARUSDT) is backfilled from the bundled sample and trains the thresholds;
the stream then runs while the crash day (2025-02-03) is replayed through Kafka, and the anomalies it found in
gold.scores are printed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import date, datetime
from pathlib import Path

import pandas as pd
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from lakehouse.delta_io import delete_where, read_table
from lakehouse.settings import Settings
from lakehouse.tables import GOLD_INCIDENTS, GOLD_MARKET_INCIDENTS, GOLD_SCORES
from pipelines.detection.thresholds import train_thresholds
from pipelines.ingestion.backfill import LocalArchives, backfill
from pipelines.ingestion.replay import replay_archives
from pipelines.streaming.health import committed_offsets, end_offsets, lag
from pipelines.streaming.query import checkpoint, start_stream

SYMBOLS = ("FILUSDT", "NEARUSDT")
HISTORY = (date(2025, 2, 1), date(2025, 2, 2))
REPLAY_DAY = date(2025, 2, 3)


def wait_for_catch_up(settings: Settings, timeout_s: float = 600.0) -> None:
    deadline = time.monotonic() + timeout_s
    while lag(committed_offsets(checkpoint(settings), settings), end_offsets(settings)) > 0:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the stream did not catch up with the topic in {timeout_s:.0f} s")
        time.sleep(1)


def forget_scores(spark: SparkSession, settings: Settings, day: date, symbols: tuple[str, ...]) -> int:
    """Deletes the gold.scores rows of `symbols` on `day`, and their incidents and the market's from that day on (the
    replay builds them again, with the same ids: their alerts, recorded, are not sent again); returns how many
    scores there were."""
    symbol = F.col("symbol").isin(list(symbols))
    since = F.col("last_minute") >= F.lit(datetime.combine(day, datetime.min.time()))
    delete_where(spark, settings, GOLD_INCIDENTS, symbol & since)
    delete_where(spark, settings, GOLD_MARKET_INCIDENTS, since)
    return delete_where(spark, settings, GOLD_SCORES, symbol & (F.col("open_date") == F.lit(day)))


def run_demo(spark: SparkSession, settings: Settings, sample: Path, say: Callable[[str], None] = print) -> pd.DataFrame:
    say(f"1/4 backfilling {', '.join(SYMBOLS)} {HISTORY[0]}..{HISTORY[-1]} from {sample} into bronze/silver")
    partitions = [(symbol, day) for symbol in SYMBOLS for day in HISTORY]
    for r in backfill(spark, settings, LocalArchives(sample), partitions):
        say(f"    {r.symbol} {r.day}: {r.silver_rows} candles, {r.quarantined} bad, {r.gaps} gaps")
    replay_start = datetime.combine(REPLAY_DAY, datetime.min.time())
    trained = train_thresholds(
        spark, settings, "marketlake demo", days=len(HISTORY), symbols=list(SYMBOLS), until=replay_start
    )
    say(
        f"2/4 trained thresholds v{trained.version} for {', '.join(trained.thresholds['symbol'])} ({trained.json_path})"
    )

    # A re-run scores the replay day again with these thresholds: the stream never re-scores a candle gold holds.
    rescored = forget_scores(spark, settings, REPLAY_DAY, SYMBOLS)
    if rescored:
        say(f"    re-scoring {REPLAY_DAY}: removed its {rescored} gold rows from an earlier run")
    query = start_stream(spark, settings)
    try:
        files = [sample / "futures-um" / f"{symbol}-1m-{REPLAY_DAY}.zip" for symbol in SYMBOLS]
        say(f"3/4 stream started; replaying {REPLAY_DAY} through Kafka topic {settings.kafka_topic}")
        replayed = replay_archives(settings, files, progress=False)
        say(f"    replayed {replayed.sent} candles in {replayed.seconds:.1f} s; waiting for the stream to catch up")
        wait_for_catch_up(settings)
    finally:
        query.stop()

    gold = read_table(spark, settings, GOLD_SCORES).filter(F.col("open_date") == F.lit(REPLAY_DAY)).toPandas()
    found = gold[gold["is_anomaly"]].sort_values(["open_time", "symbol"])
    say(f"4/4 gold.scores holds {len(gold)} scored candles of {REPLAY_DAY}; confirmed anomalies by confidence:")
    say(found.groupby(["symbol", "confidence"]).size().unstack(fill_value=0).to_string())
    high = found[found["confidence"] == "HIGH"][["symbol", "open_time", "close", "ret", "reasons"]]
    say(f"first HIGH anomalies ({len(high)} in all):")
    with pd.option_context("display.width", 200, "display.max_colwidth", 120):
        say(high.head(10).to_string(index=False))
        since = F.col("start") >= F.lit(replay_start)
        market = read_table(spark, settings, GOLD_MARKET_INCIDENTS).filter(since).toPandas().sort_values("start")
        incidents = read_table(spark, settings, GOLD_INCIDENTS).filter(since).toPandas()
        own = incidents[incidents["scope"] == "own"]
        say(
            f"incidents: {len(incidents)} of the symbols ({len(own)} on their own), {len(market)} of the market; "
            "market incidents:"
        )
        say(
            market[["market_incident_id", "symbols", "peak_confidence", "peak_time", "market_change"]].to_string(
                index=False
            )
        )
    return found
