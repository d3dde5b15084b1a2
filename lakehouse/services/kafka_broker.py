"""Apache Kafka in KRaft mode, run from the Maven jars: one node (broker + controller in one JVM) or several such
nodes that form one cluster (`kafka_cluster`: a quorum of every node's controller, replication factor 3).

The same main classes Kafka's own scripts call: `kafka.tools.StorageTool format` once, then `kafka.Kafka`.
Data, config, log and pid file live under `<home>/kafka` (one node) or `<home>/kafka-cluster/node-<id>`.
"""

from __future__ import annotations

import base64
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from lakehouse.services import process
from lakehouse.services.base import Service
from lakehouse.settings import Settings


@dataclass(frozen=True)
class KafkaBroker(Service):
    name = "Kafka broker"
    file_stem = "broker"

    home: Path
    port: int
    controller_port: int
    jars_dir: Path
    heap: str = "512m"
    node_id: int = 1
    # Every node of the cluster as (node id, controller port); empty: this node alone.
    quorum: tuple[tuple[int, int], ...] = ()
    # The cluster's id, the same on every node (formatted into each one's storage); "": a new random one.
    cluster_id: str = ""

    @classmethod
    def from_settings(cls, settings: Settings) -> KafkaBroker:
        return cls(
            home=Path(settings.home) / "kafka",
            port=settings.kafka_port,
            controller_port=settings.kafka_controller_port,
            jars_dir=Path(settings.jars_dir) / "kafka",
        )

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def config_file(self) -> Path:
        return self.home / "server.properties"

    @property
    def voters(self) -> tuple[tuple[int, int], ...]:
        return self.quorum or ((self.node_id, self.controller_port),)

    def server_properties(self) -> str:
        nodes = len(self.voters)
        # Internal topics: 3 copies, writes acknowledged by 2, once there are 3 nodes; one copy on one node.
        replicas, min_isr = min(nodes, 3), min(nodes, 2)
        return "\n".join(
            [
                "process.roles=broker,controller",
                f"node.id={self.node_id}",
                "controller.quorum.voters=" + ",".join(f"{n}@127.0.0.1:{port}" for n, port in self.voters),
                f"listeners=PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
                f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}",
                "controller.listener.names=CONTROLLER",
                "inter.broker.listener.name=PLAINTEXT",
                "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
                f"log.dirs={self.data_dir}",
                "num.partitions=3",
                f"default.replication.factor={replicas}",
                f"min.insync.replicas={min_isr}",
                f"offsets.topic.replication.factor={replicas}",
                f"transaction.state.log.replication.factor={replicas}",
                f"transaction.state.log.min.isr={min_isr}",
                f"share.coordinator.state.topic.replication.factor={replicas}",
                f"share.coordinator.state.topic.min.isr={min_isr}",
                "group.initial.rebalance.delay.ms=0",
                # Room for a bad 1 MB record to reach the stream and be quarantined, not refused.
                "message.max.bytes=2097152",
                "log.retention.hours=168",
                "",
            ]
        )

    def _java(self, main_class: str, *args: str) -> list[str]:
        if not self.jars_dir.is_dir() or not any(self.jars_dir.glob("kafka_2.13-*.jar")):
            raise process.ServiceError(
                f"Kafka broker jars not found in {self.jars_dir}; resolve them once with `make jars`."
            )
        java = shutil.which("java")
        if java is None:
            raise process.ServiceError("java not found on PATH; the Kafka broker and Spark need a JDK 17+.")
        log4j = self.home / "log4j2.properties"
        return [
            java,
            f"-Xmx{self.heap}",
            f"-Xms{self.heap}",
            f"-Dlog4j2.configurationFile={log4j}",
            f"-Dkafka.logs.dir={self.home / 'logs'}",
            "-cp",
            f"{self.jars_dir}/*",
            main_class,
            *args,
        ]

    def prepare(self) -> None:
        """Its configuration, and its storage formatted on the first start."""
        self.config_file.write_text(self.server_properties())
        (self.home / "log4j2.properties").write_text(
            "rootLogger.level=INFO\nrootLogger.appenderRef.stdout.ref=STDOUT\n"
            "appender.stdout.type=Console\nappender.stdout.name=STDOUT\n"
            "appender.stdout.layout.type=PatternLayout\nappender.stdout.layout.pattern=[%d] %p %m (%c)%n\n"
        )
        self._format_storage()

    def _format_storage(self) -> None:
        if (self.data_dir / "meta.properties").exists():
            return
        cluster_id = self.cluster_id or new_cluster_id()
        result = subprocess.run(
            self._java("kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(self.config_file)),
            capture_output=True,
            text=True,
            timeout=120,
        )
        if result.returncode != 0:
            raise process.ServiceError(f"formatting Kafka storage failed:\n{result.stdout}\n{result.stderr}")

    def command(self) -> list[str]:
        return self._java("kafka.Kafka", str(self.config_file))

    def is_ready(self) -> bool:
        """The port opens before the broker has registered with its controller: wait for metadata too."""
        if not process.port_open(self.host, self.port):
            return False
        from kafka import KafkaAdminClient
        from kafka.errors import KafkaError

        try:
            admin = KafkaAdminClient(bootstrap_servers=self.bootstrap_servers, request_timeout_ms=3000)
        except (KafkaError, OSError):
            return False
        try:
            return bool(admin.describe_cluster().get("brokers"))
        except (KafkaError, OSError):
            return False
        finally:
            admin.close()


def new_cluster_id() -> str:
    # Kafka's own random-uuid never starts with "-" (StorageTool would read it as an option); nor does ours.
    cluster_id = "-"
    while cluster_id.startswith("-"):
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
    return cluster_id


def kafka_cluster(home: Path, jars_dir: Path, ports: list[tuple[int, int]]) -> list[KafkaBroker]:
    """One node per (broker port, controller port), all voters of one KRaft quorum; the cluster's id is kept in
    <home>/kafka-cluster/cluster_id so that a restart formats (and finds) the same cluster."""
    root = home / "kafka-cluster"
    id_file = root / "cluster_id"
    if not id_file.exists():
        root.mkdir(parents=True, exist_ok=True)
        id_file.write_text(new_cluster_id())
    quorum = tuple((n, controller) for n, (_, controller) in enumerate(ports, start=1))
    return [
        KafkaBroker(
            home=root / f"node-{n}",
            port=port,
            controller_port=controller,
            jars_dir=jars_dir,
            node_id=n,
            quorum=quorum,
            cluster_id=id_file.read_text().strip(),
        )
        for n, (port, controller) in enumerate(ports, start=1)
    ]


def ensure_topic(bootstrap_servers: str, topic: str, partitions: int) -> bool:
    """Create the topic if missing; returns whether it was created. Three copies of each partition, two of them
    acknowledging every write (with the producers' acks=all), when the cluster has three brokers or more: one
    broker can then fail without losing or refusing a write. On fewer brokers, as many copies as brokers."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = KafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=10000)
    try:
        if topic in admin.list_topics():
            return False
        brokers = len(admin.describe_cluster()["brokers"])
        replicas = min(brokers, 3)
        configs = {"min.insync.replicas": str(min(replicas, 2))}
        admin.create_topics([NewTopic(topic, partitions, replicas, topic_configs=configs)])
        return True
    except TopicAlreadyExistsError:
        return False
    finally:
        admin.close()


@contextmanager
def broker_of_its_own(home: str, **overrides: object) -> Iterator[Settings]:
    """Settings for a Kafka broker of its own on free ports (its data under `home`), started with the settings'
    topic created, and stopped on leaving (what the benches that need only a broker do)."""
    settings = Settings.from_env(
        env={},
        home=home,
        kafka_bootstrap_servers=f"127.0.0.1:{process.free_port()}",
        kafka_controller_port=process.free_port(),
        **overrides,
    )
    broker = KafkaBroker.from_settings(settings)
    broker.start()
    try:
        ensure_topic(settings.kafka_bootstrap_servers, settings.kafka_topic, settings.kafka_topic_partitions)
        yield settings
    finally:
        broker.stop()
