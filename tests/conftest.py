"""Shared fixtures: one SparkSession and one Kafka broker for the whole run, each in a temporary home."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from lakehouse.services.kafka_broker import KafkaBroker, ensure_topic
from lakehouse.services.process import free_port
from lakehouse.settings import PROJECT_ROOT, Settings

SAMPLE = PROJECT_ROOT / "data" / "sample"


@pytest.fixture(scope="session")
def session_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("marketlake")


@pytest.fixture(scope="session")
def broker(session_home: Path) -> Iterator[KafkaBroker]:
    """A real KRaft broker on free ports, started once and stopped at the end of the run."""
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
def base_settings(session_home: Path, broker: KafkaBroker) -> Settings:
    return Settings.from_env(
        env={},
        home=str(session_home),
        kafka_bootstrap_servers=broker.bootstrap_servers,
        kafka_controller_port=broker.controller_port,
        spark_master="local[1]",
        spark_shuffle_partitions=1,
    )


@pytest.fixture(scope="session")
def spark(base_settings: Settings):
    from lakehouse.spark import get_spark

    session = get_spark(base_settings, "marketlake-tests")
    yield session
    session.stop()


@pytest.fixture
def settings(base_settings: Settings, tmp_path: Path, request: pytest.FixtureRequest) -> Settings:
    """Per-test lakehouse root and topic, on the shared broker and Spark session."""
    topic = "t-" + "".join(ch if ch.isalnum() else "-" for ch in request.node.name)[:200]
    s = Settings.from_env(
        env={},
        home=base_settings.home,
        lakehouse_root=str(tmp_path / "lakehouse"),
        kafka_bootstrap_servers=base_settings.kafka_bootstrap_servers,
        kafka_controller_port=base_settings.kafka_controller_port,
        kafka_topic=topic,
        spark_master=base_settings.spark_master,
        spark_shuffle_partitions=base_settings.spark_shuffle_partitions,
    )
    ensure_topic(s.kafka_bootstrap_servers, s.kafka_topic, s.kafka_topic_partitions)
    return s
