"""`marketlake` — the command line. Thin: it builds Settings once and calls lakehouse/ and pipelines/."""

from __future__ import annotations

from pathlib import Path

import typer

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


if __name__ == "__main__":
    app()
