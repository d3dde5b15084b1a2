"""Shared fixtures: one SparkSession and one Kafka broker for the whole run, each in a temporary home, each started
only when a test needs it; and the test layers (pure, spark, integration) that follow from them."""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from lakehouse.services.kafka_broker import KafkaBroker, ensure_topic
from lakehouse.services.process import free_port
from lakehouse.settings import PROJECT_ROOT, Settings

if TYPE_CHECKING:
    from lakehouse.services.superset import Superset

SAMPLE = PROJECT_ROOT / "data" / "sample"


@pytest.fixture(scope="session")
def session_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("marketlake")


@pytest.fixture(scope="session")
def base_settings(session_home: Path) -> Settings:
    """The session's settings: its own home, a one-thread Spark, no alert sink (a test that sends alerts turns its
    sinks on). No service is started for them."""
    return Settings.from_env(
        env={}, home=str(session_home), spark_master="local[1]", spark_shuffle_partitions=1, alerts_kafka_topic=""
    )


@pytest.fixture(scope="session")
def spark(base_settings: Settings):
    from lakehouse.spark import get_spark

    session = get_spark(base_settings, "marketlake-tests")
    yield session
    session.stop()


@pytest.fixture(scope="session")
def broker(session_home: Path) -> Iterator[KafkaBroker]:
    """A real KRaft broker on free ports, started once (by the first test that needs it) and stopped at the end."""
    settings = Settings.from_env(
        env={},
        home=str(session_home),
        kafka_bootstrap_servers=f"127.0.0.1:{free_port()}",
        kafka_controller_port=free_port(),
    )
    broker = KafkaBroker.from_settings(settings)
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def superset(spark, base_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Superset]:
    """One Superset on real gold tables (the bundled sample) in a home of its own, for the browser and the security
    tests alike: started once per run, not once per module (a start costs about a minute). A test that changes it
    puts it back (e.g. the admin password)."""
    from lakehouse.services.superset import VENV, Superset
    from lakehouse.spark import ensure_tables
    from marketlake.seed import gold_sample, write_tables

    if not (VENV / "bin" / "superset").exists():
        pytest.skip("no .venv-superset (make superset-venv)")
    home = tmp_path_factory.mktemp("superset-home")
    settings = Settings.from_env(
        env={}, home=str(home), superset_port=free_port(), spark_master=base_settings.spark_master
    )
    ensure_tables(spark, settings)
    write_tables(spark, settings, gold_sample(sorted(SAMPLE.rglob("*.zip"))))
    service = Superset(settings)
    service.start()
    yield service
    service.stop()


def on_lake(settings: Settings, root: Path) -> Settings:
    """The settings with another lakehouse root, and the stream checkpoint that goes with it (derived again)."""
    return dataclasses.replace(settings, lakehouse_root=str(root), checkpoint_root="")


@pytest.fixture
def settings(base_settings: Settings, tmp_path: Path) -> Settings:
    """Per-test lakehouse root (on the shared Spark session); no Kafka: see kafka_settings."""
    return on_lake(base_settings, tmp_path / "lakehouse")


@pytest.fixture
def kafka_settings(
    base_settings: Settings, broker: KafkaBroker, tmp_path: Path, request: pytest.FixtureRequest
) -> Settings:
    """`settings` plus a topic of this test's own on the shared broker. A module whose tests talk to Kafka says so
    by overriding `settings` with this fixture."""
    topic = "t-" + "".join(ch if ch.isalnum() else "-" for ch in request.node.name)[:200]
    s = dataclasses.replace(
        on_lake(base_settings, tmp_path / "lakehouse"),
        kafka_bootstrap_servers=broker.bootstrap_servers,
        kafka_controller_port=broker.controller_port,
        kafka_topic=topic,
    )
    ensure_topic(s.kafka_bootstrap_servers, s.kafka_topic, s.kafka_topic_partitions)
    return s


class Receiver(BaseHTTPRequestHandler):
    """A webhook receiver: keeps each POST's alert id and JSON body, and answers with the next of its server's
    `statuses` (200 once none is left)."""

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.received.append((self.headers["X-Marketlake-Alert-Id"], json.loads(body)))
        self.send_response(self.server.statuses.pop(0) if self.server.statuses else 200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[ThreadingHTTPServer]:
    """A real HTTP server on a free loopback port; its URL is `http://127.0.0.1:<server_address[1]>/...`."""
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Receiver)
    server.received, server.statuses = [], []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Each test's layer follows from what it uses: `integration` (the broker fixture, or services it starts
    itself, marked by hand), else `spark` (the shared session), else `pure` (`make test-fast` runs these)."""
    for item in items:
        uses = set(getattr(item, "fixturenames", ()))
        if "broker" in uses or item.get_closest_marker("integration"):
            item.add_marker(pytest.mark.integration)
        elif "spark" in uses:
            item.add_marker(pytest.mark.spark)
        else:
            item.add_marker(pytest.mark.pure)
