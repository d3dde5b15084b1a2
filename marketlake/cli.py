"""`marketlake` — the command line. Thin: it builds Settings once and calls lakehouse/ and pipelines/."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

from lakehouse.services.base import Service
from lakehouse.services.kafka_broker import KafkaBroker, ensure_topic
from lakehouse.settings import PROJECT_ROOT, Settings

app = typer.Typer(
    help="marketlake: real-time market anomaly detection on a Delta lakehouse.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # locals can hold secrets (passwords, keys)
)

SAMPLE = PROJECT_ROOT / "data" / "sample"


def _settings() -> Settings:
    return Settings.from_env()


@app.command()
def up(
    live: str = typer.Option(None, "--live", help="Publish these symbols live from Binance (comma-separated)."),
    replay: str = typer.Option(None, "--replay", help="Instead: replay this day (YYYY-MM-DD) of the archive folder."),
    speed: float = typer.Option(None, "--speed", help="Replay speed: market minutes per wall minute (default 60)."),
    superset: bool = typer.Option(True, "--superset/--no-superset", help="Also start Superset."),
) -> None:
    """The whole platform on this machine: broker, Dagster (which runs the stream and the producer), Superset."""
    import dataclasses

    from marketlake.platform import up as platform_up

    if live and replay:
        raise typer.BadParameter("give --live SYMBOLS or --replay DAY, not both")
    overrides: dict[str, object] = {}
    if live:
        overrides |= {"producer": "live", "symbols": tuple(s.strip().upper() for s in live.split(",") if s.strip())}
    if replay:
        overrides |= {"producer": "replay", "replay_day": replay}
    if speed:
        overrides["replay_speed"] = speed
    platform_up(dataclasses.replace(_settings(), **overrides), typer.echo, superset)


@app.command()
def init() -> None:
    """Create the candle topic on the configured broker and the lake's missing tables (what `up` does before it
    starts Dagster; docker-compose's one-shot `init` service runs it)."""
    from marketlake.platform import prepare

    settings = _settings()
    prepare(settings)
    typer.echo(f"topic {settings.kafka_topic} on {settings.kafka_bootstrap_servers}: ready")
    typer.echo(f"tables under {settings.lakehouse_root}: ready")


@app.command()
def down() -> None:
    """Stop everything `marketlake up` started (the runs of the stream and producer stop with Dagster)."""
    from marketlake.platform import down as platform_down

    platform_down(_settings(), typer.echo)


@app.command()
def status(lake: bool = typer.Option(True, "--lake/--no-lake", help="Also read the newest rows of the lake.")) -> None:
    """Each component's state and URL, the stream's lag, and the newest candle and gold row per symbol."""
    from marketlake.platform import components, newest_rows

    settings = _settings()
    for c in components(settings):
        typer.echo(f"{c.name:<20} {c.state:<32} {c.where}")
    if lake:
        typer.echo(f"\n{'symbol':<12} {'newest silver candle':<22} {'newest gold row':<22} thresholds")
        for symbol, silver, gold, version in newest_rows(settings):
            typer.echo(f"{symbol:<12} {silver:<22} {gold:<22} v{version}")


@app.command()
def doctor() -> None:
    """Check Java, ports, disk, the jars, the virtualenvs and the lake's tables; say how to fix each problem."""
    from marketlake.doctor import diagnose

    findings = diagnose(_settings())
    for f in findings:
        typer.echo(f"{'ok ' if f.ok else 'FIX'} {f.what}" + (f"  ->  {f.fix}" if f.fix else ""))
    if not all(f.ok for f in findings):
        raise typer.Exit(1)


dagster_app = typer.Typer(help="Dagster's processes, as `marketlake up` and docker-compose run them.")
app.add_typer(dagster_app, name="dagster")


def _dagster_role(role: str, host: str) -> None:
    from lakehouse.services.dagster import exec_role

    exec_role(_settings(), role, host)


@dagster_app.command("code-server")
def dagster_code_server(host: str = typer.Option("127.0.0.1", help="Interface to listen on.")) -> None:
    """The code location's gRPC server (port from MARKETLAKE_DAGSTER_CODE_SERVER), in the foreground."""
    _dagster_role("code-server", host)


@dagster_app.command("webserver")
def dagster_webserver(host: str = typer.Option("127.0.0.1", help="Interface to listen on.")) -> None:
    """The UI and GraphQL API (port MARKETLAKE_DAGSTER_PORT), in the foreground."""
    _dagster_role("webserver", host)


@dagster_app.command("daemon")
def dagster_daemon() -> None:
    """Sensors, schedules, backfills, the run queue and run monitoring, in the foreground."""
    _dagster_role("daemon", "127.0.0.1")


alerts_app = typer.Typer(help="Alerts of incidents: follow the alert topic, test the configured sinks.")
app.add_typer(alerts_app, name="alerts")


@alerts_app.command("tail")
def alerts_tail(
    from_beginning: bool = typer.Option(False, "--from-beginning", help="Start with the oldest alert on the topic."),
) -> None:
    """Follow the alert topic (MARKETLAKE_ALERTS_KAFKA_TOPIC), one line per alert, until Ctrl-C."""
    from lakehouse.services.process import stop_on_signals
    from pipelines.alerts.tail import follow

    settings = _settings()
    if not settings.alerts_kafka_topic:
        raise typer.BadParameter("MARKETLAKE_ALERTS_KAFKA_TOPIC is empty: the Kafka sink is off")
    typer.echo(f"following {settings.alerts_kafka_topic} at {settings.kafka_bootstrap_servers}")
    for line in follow(settings, stop_on_signals(), from_beginning):
        typer.echo(line)


@alerts_app.command("test")
def alerts_test() -> None:
    """Send one test alert to each configured sink (not recorded in gold.alerts); exit 1 if any failed."""
    from datetime import UTC, datetime

    from pipelines.alerts.sinks import DELIVERED, send_test_alert

    outcomes = send_test_alert(_settings(), datetime.now(UTC))
    if not outcomes:
        raise typer.BadParameter("no alert sink is configured (MARKETLAKE_ALERTS_KAFKA_TOPIC, ..._WEBHOOK_URL)")
    for outcome in outcomes:
        said = f"{outcome.sink}: {outcome.status} after {outcome.attempts} attempt(s)"
        typer.echo(f"{said}: {outcome.error}" if outcome.error else said)
    if any(outcome.status != DELIVERED for outcome in outcomes):
        raise typer.Exit(1)


@app.command()
def demo() -> None:
    """The main job on the embedded default: local broker, backfill, training, the stream, a replay, anomalies."""
    from marketlake.demo import run_demo

    settings = _settings()
    KafkaBroker.from_settings(settings).start()
    typer.echo(_candle_topic(settings, KafkaBroker.from_settings(settings)))
    spark = _lakehouse_spark(settings, "marketlake-demo")
    try:
        run_demo(spark, settings, SAMPLE, say=typer.echo)
    finally:
        spark.stop()
    typer.echo("done; the broker keeps running (stop it with `make down` or `marketlake broker down`)")


@app.command()
def backtest(
    candles: list[Path] = typer.Option(None, "--candles", help="Binance kline CSV/zip (headed or not); repeatable."),
    start: str = typer.Option(None, "--from", help="Instead of files: score silver from this date (YYYY-MM-DD)."),
    end: str = typer.Option(None, "--to", help="... up to this date, exclusive."),
    train_days: float = typer.Option(7.0, "--train-days", help="Days before each scored day to train on."),
    recalibrate_days: int = typer.Option(
        1, "--recalibrate-days", help="Retrain every N days, as the nightly schedule (0: train once, before)."
    ),
    csv: Path = typer.Option(None, "--csv", help="Also write every scored candle to this CSV file."),
    delta: bool = typer.Option(True, "--delta/--no-delta", help="Append the scores to gold.backtest_scores."),
) -> None:
    """Run the detector over historical candles, trained on the period before the one it scores."""
    from datetime import datetime

    from pipelines.detection.backtest import run_backtest, silver_candles, summary, write_csv, write_delta
    from pipelines.detection.maths import DetectionConfig
    from pipelines.ingestion.archives import read_frame

    settings = _settings()
    if bool(candles) == bool(start):
        raise typer.BadParameter("give either --candles PATH... or --from DATE --to DATE")
    spark = None
    if start:
        spark = _lakehouse_spark(settings, "marketlake-backtest")
        frame = silver_candles(spark, settings, datetime.fromisoformat(start), datetime.fromisoformat(end), train_days)
    else:
        frame = read_frame(list(candles))
    result = run_backtest(frame, DetectionConfig.from_settings(settings), train_days, recalibrate_days)
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
    candles: list[Path] = typer.Argument(
        ..., help="Kline files (Binance's CSV or zip) or folders of them; e.g. ../shared/data/binance."
    ),
    train_days: float = typer.Option(7.0, "--train-days"),
    recalibrate_days: int = typer.Option(1, "--recalibrate-days", help="Retrain every N days (0: train once)."),
    calm: list[str] = typer.Option(
        None,
        "--calm",
        help='A calm file, e.g. "BTCUSDT 2023-02": its incidents count in the choices (default: every file).',
    ),
    leave_one_out: bool = typer.Option(
        True, "--leave-one-out/--no-leave-one-out", help="Also score each file with a setting chosen without it."
    ),
) -> None:
    """Incidents per day, HIGH per day and the recall of planted 4/6/8-sigma shocks, for every file and symbol;
    then each file with the setting (of evaluate.setting_grid) chosen on the other files only."""
    import time

    import pandas as pd

    from pipelines.detection import evaluate as harness
    from pipelines.detection.market import MarketConfig
    from pipelines.detection.maths import DetectionConfig
    from pipelines.ingestion.archives import ArchiveFile, read_frame

    files = sorted(f for path in candles for f in ([path] if path.is_file() else path.rglob("*-1m-*.*")))
    if not files:
        raise typer.BadParameter(f"no kline files in {', '.join(map(str, candles))}")
    frames = {f"{ArchiveFile.parse(f).symbol} {ArchiveFile.parse(f).period}": read_frame([f]) for f in files}
    if unknown := set(calm or ()) - set(frames):
        raise typer.BadParameter(f"--calm {', '.join(sorted(unknown))}: not among the files ({', '.join(frames)})")
    config = harness.EvaluationConfig(train_days=train_days, recalibrate_days=recalibrate_days)
    detection = DetectionConfig.from_settings(_settings())
    started = time.process_time()
    settings = harness.setting_grid(detection) if leave_one_out else {"default": detection}
    tables = {name: harness.evaluate_files(frames, setting, config) for name, setting in settings.items()}
    with pd.option_context("display.width", 200):
        typer.echo(tables["default"].round(3).to_string(index=False))
        if leave_one_out:
            chosen = harness.leave_one_out(tables, set(calm or frames))
            typer.echo("\nleave one file out (each file scored with the setting chosen on the others):")
            typer.echo(chosen.round(3).to_string(index=False))
        market = harness.evaluate_market(frames, detection, config, MarketConfig.from_settings(_settings()))
        if len(market):
            typer.echo("\nfiles of the same period together, and the day of each one's largest market move:")
            typer.echo(market.round(3).to_string(index=False))
    typer.echo(f"\n{len(settings)} setting(s) x {len(frames)} file(s) in {time.process_time() - started:.0f} s of CPU")


@app.command()
def stream(
    available_now: bool = typer.Option(
        False, "--available-now", help="Process what is in the topic, then stop (instead of running forever)."
    ),
) -> None:
    """Run the streaming job: Kafka -> bronze -> silver/quarantine -> gold.scores, until SIGTERM/SIGINT."""
    import logging

    from lakehouse.services.process import stop_on_signals
    from pipelines.streaming.query import run_supervised, start_stream

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = _settings()
    spark = _lakehouse_spark(settings, "marketlake-stream")
    typer.echo(
        f"streaming {settings.kafka_topic} -> {settings.lakehouse_root} (checkpoints in {settings.checkpoint_root})"
    )
    if available_now:
        start_stream(spark, settings, available_now=True).awaitTermination()
    else:
        run_supervised(spark, settings, stop_on_signals())
    spark.stop()


def _lakehouse_spark(settings: Settings, app_name: str) -> SparkSession:
    from lakehouse.spark import ensure_tables, get_spark

    spark = get_spark(settings, app_name)
    ensure_tables(spark, settings)
    return spark


@app.command()
def produce(
    symbols: str = typer.Option(None, help="Comma-separated symbols (default: MARKETLAKE_SYMBOLS)."),
    ws_url: str = typer.Option(
        None, "--ws-url", help="Binance WebSocket base URL (default: MARKETLAKE_BINANCE_WS_URL)."
    ),
    rest_url: str = typer.Option(
        None, "--rest-url", help="Binance REST base URL, for gap fills (default: MARKETLAKE_BINANCE_REST_URL)."
    ),
    quote: str = typer.Option(
        None, help="Every TRADING symbol quoted in this asset, e.g. USDT (default: MARKETLAKE_LIVE_QUOTE)."
    ),
    every_quote: bool = typer.Option(False, "--all", help="Every TRADING symbol, whatever its quote asset."),
) -> None:
    """Publish Binance's live closed candles to Kafka until SIGTERM/SIGINT (reconnects; fills gaps from REST).
    With --quote or --all: the whole market from exchangeInfo, sharded over connections, listings followed."""
    import dataclasses
    import logging

    from lakehouse.services.process import stop_on_signals
    from pipelines.ingestion.exchange_info import ALL_QUOTES
    from pipelines.ingestion.live import produce_live, stream_url

    if sum(map(bool, (symbols, quote, every_quote))) > 1:
        raise typer.BadParameter("give --symbols, --quote or --all, not several")
    overrides: dict[str, object] = {"binance_ws_url": ws_url, "binance_rest_url": rest_url}
    if symbols:
        overrides |= {"symbols": tuple(s.strip().upper() for s in symbols.split(",") if s.strip()), "live_quote": ""}
    if quote or every_quote:
        overrides["live_quote"] = quote.upper() if quote else ALL_QUOTES
    settings = dataclasses.replace(_settings(), **{k: v for k, v in overrides.items() if v or k == "live_quote"})
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ensure_topic(settings.kafka_bootstrap_servers, settings.kafka_topic, settings.kafka_topic_partitions)
    if settings.live_quote:
        source = (
            f"every TRADING {settings.live_quote} symbol of {settings.binance_rest_url}/api/v3/exchangeInfo "
            f"from {settings.binance_ws_url}/stream ({settings.live_shard_size} streams a connection)"
        )
    else:
        source = (
            f"{','.join(settings.symbols)} "
            f"from {stream_url(settings.binance_ws_url, settings.symbols, settings.interval)}"
        )
    typer.echo(
        f"publishing closed {settings.interval} candles of {source} "
        f"(gap fills from {settings.binance_rest_url}) "
        f"to topic {settings.kafka_topic} at {settings.kafka_bootstrap_servers}"
    )
    stats = produce_live(settings, stop_on_signals())
    typer.echo(f"stopped: {stats.line()}")


@app.command("replay")
def replay_command(
    paths: list[Path] = typer.Argument(None, help="Binance kline archives (.zip/.csv, spot or futures) or folders."),
    start: str = typer.Option(None, "--from", help="Instead of files: silver candles from this date (YYYY-MM-DD)..."),
    end: str = typer.Option(None, "--to", help="... up to this date, exclusive."),
    speed: float = typer.Option(0.0, help="Market time per wall time: 60 = one minute per second; 0 = flat out."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Replay historical candles into Kafka in event-time order across symbols (source "replay")."""
    from datetime import datetime

    from lakehouse.services.process import stop_on_signals
    from pipelines.detection.backtest import silver_candles
    from pipelines.ingestion.replay import replay_archives, replay_silver

    settings = _settings()
    if bool(paths) == bool(start):
        raise typer.BadParameter("give either archive PATHs or --from DATE --to DATE (silver)")
    ensure_topic(settings.kafka_bootstrap_servers, settings.kafka_topic, settings.kafka_topic_partitions)
    typer.echo(f"replaying into topic {settings.kafka_topic} at {settings.kafka_bootstrap_servers}")
    if paths:
        result = replay_archives(settings, paths, speed or None, progress, stop_on_signals())
    else:
        spark = _lakehouse_spark(settings, "marketlake-replay")
        frame = silver_candles(spark, settings, datetime.fromisoformat(start), datetime.fromisoformat(end), 0)
        result = replay_silver(settings, frame, speed or None, progress, stop_on_signals())
    symbols = ", ".join(f"{symbol} {count}" for symbol, count in sorted(result.per_symbol.items()))
    typer.echo(
        f"replayed {result.sent} candles ({symbols}) in {result.seconds:.1f} s ({result.candles_per_s:,.0f} candles/s)"
    )


@app.command("sql")
def sql_command(
    query: str = typer.Argument(..., help='SQL on the lakehouse tables, e.g. "SELECT * FROM gold.anomalies LIMIT 5".'),
    csv: bool = typer.Option(False, "--csv", help="Print CSV instead of a table."),
) -> None:
    """Run SQL on the Delta tables (a local Spark session with every registry table by name) and print the result."""
    import pandas as pd

    from lakehouse.spark import get_spark
    from lakehouse.sql_endpoint import run_sql

    settings = _settings()
    spark = get_spark(settings, "marketlake-sql-cli")
    try:
        result = run_sql(spark, settings, query)
    finally:
        spark.stop()
    if csv:
        typer.echo(result.to_csv(index=False), nl=False)
    else:
        with pd.option_context("display.width", 250, "display.max_columns", 50, "display.max_rows", 500):
            typer.echo(result.to_string(index=False))


def service_commands(
    name: str,
    help_text: str,
    make: Callable[[Settings], Service],
    after_up: Callable[[Settings, Service], str] = lambda settings, service: "",
) -> None:
    """`marketlake <name> up|down|status` for a local service; `after_up` runs once it is up and says what it did."""
    group = typer.Typer(help=help_text, no_args_is_help=True)
    app.add_typer(group, name=name)

    @group.command("up")
    def service_up() -> None:
        """Start it (unless it runs) and wait until it is ready."""
        settings = _settings()
        service = make(settings)
        steps = ", ".join(f"{step} {seconds:.1f} s" for step, seconds in service.start().items())
        typer.echo(f"{service.name} ready at {service.url} ({steps}; log: {service.log_file})")
        if said := after_up(settings, service):
            typer.echo(said)

    @group.command("down")
    def service_down() -> None:
        """Stop it."""
        service = make(_settings())
        typer.echo(f"{service.name} {'stopped' if service.stop() else 'was not running'}")

    @group.command("status")
    def service_status() -> None:
        """Say whether it runs and is ready."""
        service = make(_settings())
        typer.echo(f"{service.name} at {service.url}: {service.state()}")


def _candle_topic(settings: Settings, broker: Service) -> str:
    created = ensure_topic(settings.kafka_bootstrap_servers, settings.kafka_topic, settings.kafka_topic_partitions)
    return f"topic {settings.kafka_topic}: {'created' if created else 'exists'}"


def _sql_server(settings: Settings) -> Service:
    from lakehouse.sql_endpoint import SqlServer

    return SqlServer(settings)


def _superset(settings: Settings) -> Service:
    from lakehouse.services.superset import Superset

    return Superset(settings)


service_commands(
    "broker", "The local Kafka broker (KRaft) and the candle topic.", KafkaBroker.from_settings, _candle_topic
)
service_commands("sql-server", "The Spark SQL (Thrift/HiveServer2) endpoint over the Delta tables.", _sql_server)
service_commands(
    "superset",
    "Superset on the gold tables, dashboards provisioned as code.",
    _superset,
    lambda settings, service: f"log in as admin; password in $SUPERSET_ADMIN_PASSWORD or {service.home}/admin_password",
)

cluster_app = typer.Typer(
    help="A cluster on this machine: S3Proxy (the lake), a Spark master and workers, three Kafka nodes.",
    no_args_is_help=True,
)
app.add_typer(cluster_app, name="cluster")


@cluster_app.command("up")
def cluster_up() -> None:
    """Start every part (unless it runs), wait until all are ready, and print the settings that use them."""
    from lakehouse.services.cluster import LocalCluster

    settings = _settings()
    cluster = LocalCluster.from_settings(settings)
    steps = ", ".join(f"{part} {seconds:.1f} s" for part, seconds in cluster.start().items())
    typer.echo(f"cluster ready ({steps}). Point the platform at it:")
    used = cluster.settings(settings).to_env()
    for name in ("spark_master", "kafka_bootstrap_servers", "lakehouse_root", "s3_endpoint", "s3_access_key"):
        typer.echo(f"export MARKETLAKE_{name.upper()}={used[f'MARKETLAKE_{name.upper()}']}")
    # The secret stays out of the terminal: the configured one, or the file S3Proxy's was generated into.
    secret = "" if settings.s3_secret_key else f" MARKETLAKE_S3_SECRET_KEY=$(cat {cluster.s3.home}/secret_key)"
    typer.echo(f"export MARKETLAKE_S3_PATH_STYLE=true{secret}")


@cluster_app.command("down")
def cluster_down() -> None:
    """Stop every part."""
    from lakehouse.services.cluster import LocalCluster

    stopped = LocalCluster.from_settings(_settings()).stop()
    typer.echo("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))


@cluster_app.command("status")
def cluster_status() -> None:
    """Say whether each part runs and is ready."""
    from lakehouse.services.cluster import LocalCluster

    for service in LocalCluster.from_settings(_settings()).services:
        typer.echo(f"{service.name:<14} {service.url:<28} {service.state()}")


if __name__ == "__main__":
    app()
