"""A Spark standalone cluster (a master and its workers), started from the pyspark wheel's own `bin/spark-class`.

Jobs reach it with `MARKETLAKE_SPARK_MASTER=spark://host:port`; the driver ships the project's jars (spark.jars) to
the executors itself. Each worker's work folder (executor logs), log and pid file live under
`<home>/spark-cluster/<master|worker-N>`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pyspark

from lakehouse.services.base import Service

SPARK_HOME = Path(pyspark.__file__).parent


def _spark_class(main_class: str, *args: str) -> list[str]:
    return [str(SPARK_HOME / "bin" / "spark-class"), main_class, *args]


def _env(home: Path) -> dict[str, str]:
    # The executors a worker launches inherit its environment: the same Python (PYTHONPATH, virtualenv) as ours.
    return {**os.environ, "SPARK_HOME": str(SPARK_HOME), "SPARK_LOG_DIR": str(home), "SPARK_LOCAL_IP": "127.0.0.1"}


@dataclass(frozen=True)
class SparkMaster(Service):
    name = "Spark master"
    file_stem = "master"

    home: Path
    port: int

    @property
    def url(self) -> str:
        return f"spark://{self.host}:{self.port}"

    def command(self) -> list[str]:
        # Web UI on any free port: the cluster is reached through its RPC port only.
        return _spark_class(
            "org.apache.spark.deploy.master.Master", "--host", self.host, "--port", str(self.port), "--webui-port", "0"
        )

    def env(self) -> dict[str, str]:
        return _env(self.home)


@dataclass(frozen=True)
class SparkWorker(Service):
    name = "Spark worker"
    file_stem = "worker"

    home: Path
    port: int
    master_url: str
    cores: int = 1
    memory: str = "1g"

    def command(self) -> list[str]:
        return _spark_class(
            "org.apache.spark.deploy.worker.Worker",
            self.master_url,
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--webui-port",
            "0",
            "--cores",
            str(self.cores),
            "--memory",
            self.memory,
            "--work-dir",
            str(self.home / "work"),
        )

    def env(self) -> dict[str, str]:
        return _env(self.home)

    def prepare(self) -> None:
        self.log_file.unlink(missing_ok=True)  # is_ready reads this start's log, not an earlier one's

    def is_ready(self) -> bool:
        """Registered with its master (the RPC port opens before that)."""
        try:
            return "Successfully registered with master" in self.log_file.read_text(errors="replace")
        except FileNotFoundError:
            return False


def spark_cluster(home: Path, master_port: int, worker_ports: list[int], cores: int, memory: str) -> list[Service]:
    """The master, then one worker per port (each with `cores` cores and `memory` for its executors)."""
    root = home / "spark-cluster"
    master = SparkMaster(home=root / "master", port=master_port)
    workers = [
        SparkWorker(home=root / f"worker-{n}", port=port, master_url=master.url, cores=cores, memory=memory)
        for n, port in enumerate(worker_ports, start=1)
    ]
    return [master, *workers]
