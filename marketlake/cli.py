"""`marketlake` — the command line. Thin: it builds Settings once and calls lakehouse/ and pipelines/."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

from lakehouse.services.kafka_broker import KafkaBroker, ensure_topic
from lakehouse.settings import PROJECT_ROOT, Settings

app = typer.Typer(help="marketlake: real-time market anomaly detection on a Delta lakehouse.", no_args_is_help=True)
services = typer.Typer(help="Start, stop and inspect the local services (Kafka broker).", no_args_is_help=True)
app.add_typer(services, name="services")

SAMPLE = PROJECT_ROOT / "data" / "sample"


def _settings() -> Settings:
    return Settings.from_env()


@services.command("up")
def services_up() -> None:
    """Start the local Kafka broker (KRaft) and create the candle topic."""
    settings = _settings()
    broker = KafkaBroker.from_settings(settings)
    waited = broker.start()
    created = ensure_topic(broker.bootstrap_servers, settings.kafka_topic, settings.kafka_topic_partitions)
    typer.echo(f"kafka broker ready at {broker.bootstrap_servers} in {waited:.1f} s (data in {broker.data_dir})")
    typer.echo(f"topic {settings.kafka_topic}: {'created' if created else 'exists'}")


@services.command("down")
def services_down() -> None:
    """Stop the local services."""
    stopped = KafkaBroker.from_settings(_settings()).stop()
    typer.echo("kafka broker stopped" if stopped else "kafka broker was not running")


@services.command("status")
def services_status() -> None:
    """Say which local services run."""
    broker = KafkaBroker.from_settings(_settings())
    state = "ready" if broker.is_running() and broker.is_ready() else "running" if broker.is_running() else "stopped"
    typer.echo(f"kafka broker at {broker.bootstrap_servers}: {state}")


@app.command()
def demo(
    archives: list[Path] = typer.Option(
        None,
        "--archive",
        help="Kline archive files to push through (default: two days of the bundled sample).",
    ),
) -> None:
    """Run the main job on the embedded default: local broker, local Spark, Delta on the local disk."""
    from lakehouse.spark import ensure_tables, get_spark
    from pipelines.roundtrip import run_roundtrip

    settings = _settings()
    services_up()
    files = archives or sorted(SAMPLE.glob("futures-um/*-1m-2025-02-0[12].zip"))
    spark = get_spark(settings, "marketlake-demo")
    try:
        ensure_tables(spark, settings)
        run_roundtrip(spark, settings, files, say=typer.echo)
    finally:
        spark.stop()
    typer.echo("done; the broker keeps running (stop it with `make down` or `marketlake services down`)")


@app.command()
def backtest(
    candles: list[Path] = typer.Option(None, "--candles", help="Binance kline CSV/zip (headed or not); repeatable."),
    start: str = typer.Option(None, "--from", help="Instead of files: score silver from this date (YYYY-MM-DD)."),
    end: str = typer.Option(None, "--to", help="... up to this date, exclusive."),
    train_days: float = typer.Option(7.0, "--train-days", help="Days before the scored period to train on."),
    csv: Path = typer.Option(None, "--csv", help="Also write every scored candle to this CSV file."),
    delta: bool = typer.Option(True, "--delta/--no-delta", help="Append the scores to gold.backtest_scores."),
) -> None:
    """Run the detector over historical candles, trained on the period before the one it scores."""
    from datetime import datetime

    from pipelines.archives import read_frame
    from pipelines.backtest import run_backtest, silver_candles, summary, write_csv, write_delta
    from pipelines.training import detection_config

    settings = _settings()
    if bool(candles) == bool(start):
        raise typer.BadParameter("give either --candles PATH... or --from DATE --to DATE")
    spark = None
    if start:
        spark = _lakehouse_spark(settings, "marketlake-backtest")
        frame = silver_candles(spark, settings, datetime.fromisoformat(start), datetime.fromisoformat(end), train_days)
    else:
        frame = read_frame(list(candles))
    result = run_backtest(frame, detection_config(settings), train_days)
    typer.echo(summary(result).to_string(index=False))
    if csv:
        write_csv(result, str(csv))
        typer.echo(f"wrote {len(result.scores)} rows to {csv}")
    if delta:
        spark = spark or _lakehouse_spark(settings, "marketlake-backtest")
        rows = write_delta(spark, settings, result)
        typer.echo(f"appended {rows} rows to gold.backtest_scores (run_id {result.run_id})")


@app.command()
def evaluate(
    candles: list[Path] = typer.Option(
        None, "--candles", help="Kline files to evaluate on (default: every file in ../shared/data/binance)."
    ),
    train_days: float = typer.Option(7.0, "--train-days"),
) -> None:
    """Incidents per day, HIGH per day and the recall of planted 4/6/8-sigma shocks, per symbol and file."""
    import pandas as pd

    from pipelines.archives import ArchiveFile, read_frame
    from pipelines.evaluate import EvaluationConfig, evaluate_files
    from pipelines.training import detection_config

    files = candles or sorted((PROJECT_ROOT.parent / "shared" / "data" / "binance").rglob("*.csv"))
    if not files:
        raise typer.BadParameter("no kline files found; pass --candles PATH")
    table = evaluate_files(
        {f"{ArchiveFile.parse(f).symbol} {ArchiveFile.parse(f).period}": read_frame([f]) for f in files},
        detection_config(_settings()),
        EvaluationConfig(train_days=train_days),
    )
    with pd.option_context("display.width", 200):
        typer.echo(table.round(3).to_string(index=False))


def _lakehouse_spark(settings: Settings, app_name: str) -> SparkSession:
    from lakehouse.spark import ensure_tables, get_spark

    spark = get_spark(settings, app_name)
    ensure_tables(spark, settings)
    return spark


if __name__ == "__main__":
    app()
