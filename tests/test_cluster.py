"""The stream on a real cluster's parts, on loopback: the lake (and checkpoints) on S3Proxy through s3a://, Spark on a
standalone master with two workers, Kafka on three KRaft nodes (replication factor 3, min.insync.replicas 2).
One Kafka node and one Spark worker (with its executor) are killed with -9 mid-replay: every candle still lands in
silver and gold exactly once.

The stream runs as `marketlake stream` in its own process, as users run it; the lake is prepared in a spawned process
too. This test never starts the shared local SparkSession: two Spark drivers at once are the most this machine takes.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import signal
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from lakehouse.services.cluster import LocalCluster
from lakehouse.services.kafka_broker import ensure_topic
from lakehouse.services.process import free_port_block, read_pid
from lakehouse.settings import Settings
from lakehouse.tables import GOLD_SCORES, SILVER_CANDLES, Table
from pipelines.ingestion.kafka_io import make_producer
from pipelines.ingestion.replay import replay
from pipelines.streaming.health import describe_lag, end_offsets
from tests.test_stream import crash_day, prepare
from tests.test_stream_recovery import start_stream_process, stop, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.cluster]
DAY = datetime(2025, 2, 3, tzinfo=UTC)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[LocalCluster, Settings]]:
    base = Settings.from_env(
        env={},
        home=str(tmp_path),
        cluster_s3_port=free_port_block(1),
        cluster_spark_port=free_port_block(3),
        cluster_kafka_port=free_port_block(6),
        spark_shuffle_partitions=2,
        alerts_kafka_topic="",
    )
    cluster = LocalCluster.from_settings(base)
    try:
        cluster.start()
        yield cluster, cluster.settings(base)
    finally:
        cluster.stop()


def prepare_lake(settings: Settings) -> None:
    """History and thresholds in the s3a lake (a spawned process: its own local Spark driver, gone when done)."""
    from lakehouse.spark import get_spark

    spark = get_spark(dataclasses.replace(settings, spark_master="local[1]"), "marketlake-cluster-prepare")
    prepare(spark, settings)
    spark.stop()


def keys(settings: Settings, table: Table) -> list[tuple[str, int]]:
    """The day's (symbol, open_time in ms) of a table, read from the object store with delta-rs (no Spark)."""
    from deltalake import DeltaTable

    rows = DeltaTable(table.location(settings), storage_options=settings.object_store_options()).to_pyarrow_table(
        columns=["symbol", "open_time"]
    )
    return sorted(
        (r["symbol"], int(r["open_time"].timestamp() * 1000)) for r in rows.to_pylist() if r["open_time"] >= DAY
    )


def data_leader(settings: Settings) -> int:
    """Index (in the cluster's list) of the Kafka node leading the partition that holds the most candles: losing
    it moves the leadership the producer and the stream are using."""
    from confluent_kafka.admin import AdminClient

    busiest = max(end_offsets(settings).items(), key=lambda item: item[1])[0]
    topic = AdminClient({"bootstrap.servers": settings.kafka_bootstrap_servers}).list_topics(settings.kafka_topic, 10)
    return topic.topics[settings.kafka_topic].partitions[busiest].leader - 1  # node ids count from 1


def kill_9(service) -> None:
    """The node is lost: its process group (a Spark worker's executors too) dies without a word."""
    os.killpg(read_pid(service.pid_file), signal.SIGKILL)


def test_stream_on_the_cluster_survives_a_lost_kafka_node_and_spark_worker(cluster, tmp_path):
    cluster, settings = cluster
    process = multiprocessing.get_context("spawn").Process(target=prepare_lake, args=(settings,))
    process.start()
    process.join(timeout=600)
    assert process.exitcode == 0
    ensure_topic(settings.kafka_bootstrap_servers, settings.kafka_topic, settings.kafka_topic_partitions)

    candles = crash_day(hours=2)
    expected = sorted({(c["symbol"], c["open_time"]) for c in candles})
    log = tmp_path / "stream.log"
    stream = start_stream_process(settings, log)
    try:
        producer = make_producer(settings)
        replay(candles[:60], producer, settings.kafka_topic, progress=False)
        wait_for(lambda: len(keys(settings, GOLD_SCORES)) == 60, 300, "the stream to be up", log)

        # The rest at 2 market minutes per second (speed is market time over wall time: 120); the Kafka node
        # leading the busiest partition and one Spark worker die under it.
        sent = []
        sender = threading.Thread(
            target=lambda: sent.append(replay(candles[60:], producer, settings.kafka_topic, 120.0, False))
        )
        sender.start()
        wait_for(lambda: len(keys(settings, GOLD_SCORES)) > 60, 300, "more gold rows", log)
        kill_9(cluster.kafka[data_leader(settings)])
        kill_9(cluster.spark[1])
        assert sender.is_alive()  # the kills landed mid-replay
        sender.join()
        producer.close()
        assert sent[0].sent == len(candles) - 60  # every write was acknowledged with a node down

        wait_for(lambda: len(keys(settings, GOLD_SCORES)) >= len(expected), 300, "gold to hold every candle", log)
        wait_for(lambda: len(keys(settings, SILVER_CANDLES)) >= len(expected), 120, "silver to hold every candle", log)
        assert keys(settings, GOLD_SCORES) == expected  # none lost, none doubled
        assert keys(settings, SILVER_CANDLES) == expected
        # Its checkpoint on the object store, read without Spark: the stream's lag in `marketlake cluster status`.
        # (The commit file follows the batch's last write.)
        wait_for(lambda: describe_lag(settings) == "lag 0 records", 60, "the checkpoint to commit the last batch", log)
        assert stream.poll() is None
    finally:
        stop(stream)
