"""A real cluster's parts on loopback: the lake on S3Proxy, a Spark standalone master with its workers, and a
three-node Kafka cluster. `marketlake cluster up` starts them; `settings()` says how a job reaches them (the same
settings that point it at real clusters, docs/scaling.md).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from lakehouse.services.base import Service
from lakehouse.services.kafka_broker import KafkaBroker, kafka_cluster
from lakehouse.services.s3proxy import S3Proxy
from lakehouse.services.spark_standalone import SparkMaster, spark_cluster
from lakehouse.settings import Settings

BUCKET = "marketlake"


@dataclass(frozen=True)
class LocalCluster:
    s3: S3Proxy
    spark: list[Service]  # the master, then its workers
    kafka: list[KafkaBroker]

    @classmethod
    def from_settings(cls, settings: Settings) -> LocalCluster:
        home, jars = Path(settings.home), Path(settings.jars_dir)
        first_worker = settings.cluster_spark_port + 1
        kafka_ports = [(settings.cluster_kafka_port + 2 * n, settings.cluster_kafka_port + 2 * n + 1) for n in range(3)]
        return cls(
            s3=S3Proxy(
                home=home / "s3proxy",
                port=settings.cluster_s3_port,
                jars_dir=jars / "s3proxy",
                buckets=(BUCKET,),
                access_key=settings.s3_access_key or "marketlake",
                secret_key=settings.s3_secret_key,
            ),
            spark=spark_cluster(
                home,
                settings.cluster_spark_port,
                [first_worker + n for n in range(settings.cluster_spark_workers)],
                settings.cluster_worker_cores,
                settings.cluster_worker_memory,
            ),
            kafka=kafka_cluster(
                home,
                jars / "kafka",
                kafka_ports,
            ),
        )

    @property
    def services(self) -> list[Service]:
        return [self.s3, *self.spark, *self.kafka]

    @property
    def master(self) -> SparkMaster:
        return self.spark[0]  # type: ignore[return-value]

    def settings(self, settings: Settings) -> Settings:
        """`settings` pointed at this cluster: Spark master, Kafka bootstrap servers, the lake (and its stream
        checkpoints) in the S3Proxy bucket."""
        return dataclasses.replace(
            settings,
            spark_master=self.master.url,
            kafka_bootstrap_servers=",".join(node.bootstrap_servers for node in self.kafka),
            lakehouse_root=f"s3a://{BUCKET}/lake",
            checkpoint_root="",
            s3_endpoint=self.s3.endpoint,
            s3_access_key=self.s3.access_key,
            s3_secret_key=self.s3.secret,
            s3_path_style=True,
            spark_executor_memory=settings.cluster_worker_memory,
        )

    def start(self) -> dict[str, float]:
        """Every service, ready; seconds per part. Kafka's nodes start together (a quorum needs two of three
        voters); the workers after their master."""
        try:
            seconds = {"s3proxy": self.s3.start()["start"]}
            for node in self.kafka:
                node.launch()
            seconds["spark"] = sum(service.start()["start"] for service in self.spark)
            seconds["kafka"] = sum(node.wait_ready() for node in self.kafka)
        except Exception:
            self.stop()  # nothing half-started lingers
            raise
        return seconds

    def stop(self) -> list[str]:
        """Stop every service (workers before their master); the names of those that were running."""
        return [f"{s.name} at {s.url}" for s in reversed(self.services) if s.stop()]
