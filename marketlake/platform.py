"""The embedded platform on one machine: `marketlake up / status / down`.

`up` starts the Kafka broker, creates the lake's tables, starts Dagster (code server, webserver, daemon: its
sensors then start the stream and the producer as supervised runs) and Superset, each waited for. `status` asks
each component how it is, and the lake what it holds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import requests

from lakehouse.delta_io import newest_by_symbol
from lakehouse.services.dagster import HEARTBEAT_TAG, LONG_RUNNING_TAG, Dagster
from lakehouse.services.kafka_broker import KafkaBroker, ensure_topic
from lakehouse.services.superset import Superset
from lakehouse.settings import Settings
from lakehouse.tables import GOLD_SCORES, SILVER_CANDLES

Say = Callable[[str], None]


@contextmanager
def step(say: Say, what: str, timings: dict[str, float]) -> Iterator[None]:
    """Say what a long step does, then how long it took."""
    say(f"{what} ...")
    started = time.monotonic()
    yield
    timings[what] = time.monotonic() - started
    say(f"    done in {timings[what]:.1f} s")


def prepare(settings: Settings) -> None:
    """What Dagster's runs and Superset's catalog expect to exist: the candle topic on the configured broker and the
    lake's tables (both idempotent). `up` calls it once its broker runs; docker-compose runs `marketlake init`."""
    from lakehouse.spark import ensure_tables, get_spark

    ensure_topic(settings.kafka_bootstrap_servers, settings.kafka_topic, settings.kafka_topic_partitions)
    spark = get_spark(settings, "marketlake-init")
    try:
        ensure_tables(spark, settings)
    finally:
        spark.stop()


def up(settings: Settings, say: Say, superset: bool = True) -> dict[str, float]:
    timings: dict[str, float] = {}
    with step(say, f"Kafka broker on {settings.kafka_bootstrap_servers}", timings):
        KafkaBroker.from_settings(settings).start()
    with step(say, f"topic {settings.kafka_topic} and lake tables under {settings.lakehouse_root}", timings):
        prepare(settings)
    dagster = Dagster(settings)
    with step(say, f"Dagster (code server, webserver, daemon) on {dagster.url}", timings):
        dagster.start()
    if superset:
        service = Superset(settings)
        with step(say, f"Superset on {service.url}", timings):
            service.start()
    timings["all"] = sum(timings.values())
    producer = {"live": f"live {','.join(settings.symbols)}", "replay": f"replay of {settings.replay_day}"}
    say(
        f"up in {timings['all']:.0f} s. The daemon's sensors start the stream and the producer "
        f"({producer.get(settings.producer, 'off')}) within a minute; `marketlake status` shows them."
    )
    return timings


def down(settings: Settings, say: Say) -> None:
    """Stop every local service, readers first: Superset, the SQL endpoint, Dagster and its runs, the broker."""
    from lakehouse.sql_endpoint import SqlServer

    dagster = Dagster(settings).processes()[::-1]  # the daemon first: no new runs
    for service in (Superset(settings), SqlServer(settings), *dagster, KafkaBroker.from_settings(settings)):
        say(f"{service.name}: {'stopped' if service.stop() else 'was not running'}")


@dataclass(frozen=True)
class Component:
    name: str
    state: str
    where: str = ""


def latest_runs(dagster: Dagster, jobs: tuple[str, ...]) -> dict[str, tuple[str, str]]:
    """Per job, the newest run's status and the counters it reports in its tags (from Dagster's GraphQL API)."""
    states = {}
    for job in jobs:
        try:
            runs = dagster.runs(limit=1, pipelineName=job)
        except (requests.RequestException, RuntimeError, ValueError, KeyError, TypeError):
            states[job] = ("unknown (Dagster not answering)", "")
            continue
        if not runs:
            states[job] = ("no run yet", "")
            continue
        counters = [
            f"{t['key'].removeprefix('marketlake/')}={t['value']}"
            for t in runs[0]["tags"]
            if t["key"].startswith("marketlake/") and t["key"] not in {HEARTBEAT_TAG, LONG_RUNNING_TAG}
        ]
        states[job] = (f"{runs[0]['status'].lower()} (run {runs[0]['runId'][:8]})", " ".join(counters))
    return states


def components(settings: Settings) -> list[Component]:
    from pipelines.streaming.health import describe_lag

    dagster = Dagster(settings)
    services = [KafkaBroker.from_settings(settings), *dagster.processes(), Superset(settings)]
    found = [Component(service.name, service.state(), service.url) for service in services]
    runs = latest_runs(dagster, ("run_stream_job", "run_producer_job"))
    stream_state, counters = runs["run_stream_job"]
    found.append(Component("stream", stream_state, f"{describe_lag(settings)} {counters}".strip()))
    found.append(Component("producer", *runs["run_producer_job"]))
    return found


def newest_rows(settings: Settings) -> list[tuple[str, str, str, str]]:
    """(symbol, newest candle in silver, newest row in gold.scores, its thresholds version) per symbol."""
    silver = newest_by_symbol(settings, SILVER_CANDLES)
    gold = newest_by_symbol(settings, GOLD_SCORES, ["thresholds_version"])

    def minute(row: dict | None) -> str:
        return row["open_time"].strftime("%Y-%m-%d %H:%M") if row else "-"

    return [
        (
            symbol,
            minute(silver.get(symbol)),
            minute(gold.get(symbol)),
            str(gold.get(symbol, {}).get("thresholds_version")),
        )
        for symbol in sorted(silver.keys() | gold.keys())
    ]
