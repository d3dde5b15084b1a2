"""The SQL endpoint: a Spark Thrift (HiveServer2) server over the Delta tables, run by the project.

One JVM: a PySpark driver with Hive support (Derby metastore under `<home>/sql-server`) registers every registry
table by name (`ensure_tables`), then starts HiveThriftServer2 inside the same session (`startWithContext`, the
class `spark-submit ... HiveThriftServer2 spark-internal` runs). Registration on every start means a table added
to the registry, or a lakehouse root that moved, is right after a restart. Tables are external Delta tables by
LOCATION and Delta re-reads the log on every query, so rows written after start-up are visible to the next query.

`beeline` is the JDBC client bundled with pyspark: tests and scripts query the endpoint without extra packages.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import re
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING

from lakehouse.services import process
from lakehouse.settings import Settings

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import SparkSession

HOST = "127.0.0.1"
# A view for dashboards and SQL users: scored candles with at least one vote.
VIEWS = {"gold.anomalies": "SELECT * FROM gold.scores WHERE votes >= 1"}


def settings_env(settings: Settings) -> dict[str, str]:
    """Settings as MARKETLAKE_* variables, so a child process rebuilds exactly these with Settings.from_env."""
    env = {}
    for f in fields(settings):
        value = getattr(settings, f.name)
        if value is not None:
            env[f"MARKETLAKE_{f.name.upper()}"] = ",".join(value) if isinstance(value, tuple) else str(value)
    return env


def pyspark_jars() -> Path:
    import pyspark

    return Path(pyspark.__file__).parent / "jars"


@dataclass(frozen=True)
class SqlServer:
    settings: Settings

    @property
    def home(self) -> Path:
        return Path(self.settings.home) / "sql-server"

    @property
    def port(self) -> int:
        return self.settings.sql_port

    @property
    def url(self) -> str:
        return f"jdbc:hive2://{HOST}:{self.port}/default"

    @property
    def pid_file(self) -> Path:
        return self.home / "server.pid"

    @property
    def log_file(self) -> Path:
        return self.home / "server.log"

    def spark_conf(self) -> dict[str, str]:
        from lakehouse.spark import spark_conf, spark_jars

        metastore = self.home / "metastore_db"
        return spark_conf(self.settings, "marketlake-sql") | {
            # Thrift sessions resolve the Delta catalog with the JVM's own class loader, not spark.jars' one.
            "spark.driver.extraClassPath": os.pathsep.join(spark_jars(self.settings)),
            "spark.sql.catalogImplementation": "hive",
            "spark.hadoop.javax.jdo.option.ConnectionURL": f"jdbc:derby:;databaseName={metastore};create=true",
            "spark.hadoop.hive.server2.thrift.bind.host": HOST,
            "spark.hadoop.hive.server2.thrift.port": str(self.port),
            # derby.log next to the metastore, not in whatever directory the server was started from.
            "spark.driver.extraJavaOptions": f"-Dderby.system.home={self.home}",
        }

    def is_running(self) -> bool:
        return process.read_pid(self.pid_file) is not None

    def is_ready(self) -> bool:
        return process.port_open(HOST, self.port)

    def start(self, timeout_s: float = 180.0) -> float:
        """Start the server (unless running) and wait for its port; returns the seconds waited."""
        if self.is_running():
            return 0.0
        if self.is_ready():
            raise process.ServiceError(f"port {self.port} is taken by another process (set MARKETLAKE_SQL_PORT)")
        self.home.mkdir(parents=True, exist_ok=True)
        env = os.environ | settings_env(self.settings) | {"HIVE_SERVER2_THRIFT_PORT": str(self.port)}
        process.start([sys.executable, "-m", "lakehouse.sql_endpoint"], self.pid_file, self.log_file, env=env)
        return process.wait_ready(self.is_ready, timeout_s, self.pid_file, "Spark SQL endpoint", self.log_file)

    def stop(self) -> bool:
        return process.stop(self.pid_file, timeout_s=30.0)


def register(spark, settings: Settings) -> None:
    """Every registry table by name (created empty where missing), plus the dashboard views."""
    from lakehouse.spark import ensure_tables

    ensure_tables(spark, settings)
    for name, query in VIEWS.items():
        spark.sql(f"CREATE OR REPLACE VIEW {name} AS {query}")


def run_sql(spark: SparkSession, settings: Settings, sql: str) -> pd.DataFrame:
    """One statement on the Delta tables in a local session (what `marketlake sql` runs), as a pandas frame."""
    register(spark, settings)
    return spark.sql(sql).toPandas()


def serve(settings: Settings) -> None:
    """The server process: register tables, start HiveThriftServer2 in this session, run until SIGTERM/SIGINT."""
    from pyspark.sql import SparkSession

    from lakehouse.spark import use_utc

    use_utc()
    builder = SparkSession.builder
    for key, value in SqlServer(settings).spark_conf().items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    register(spark, settings)
    thrift = spark._jvm.org.apache.spark.sql.hive.thriftserver.HiveThriftServer2
    thrift.startWithContext(spark._jsparkSession.sqlContext())
    print(f"Spark SQL endpoint listening on {HOST}:{settings.sql_port}", flush=True)
    stopping = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.set())
    stopping.wait()
    # The JVM is in our process group and got the same signal: Spark's shutdown hook stops it.
    with contextlib.suppress(Exception):
        spark.stop()


def beeline(url: str, sql: str, timeout_s: float = 120.0) -> list[dict[str, str]]:
    """Run one statement through the JDBC client bundled with pyspark; rows as dicts of strings.

    Raises CalledProcessError (with beeline's message in stderr) when the statement fails.
    """
    classpath = os.pathsep.join([str(pyspark_jars() / "*")])
    cmd = ["java", "-cp", classpath, "org.apache.hive.beeline.BeeLine", "-u", url, "-n", "marketlake"]
    cmd += ["--silent=true", "--showHeader=true", "--outputformat=csv2", "--fastConnect=true", "-e", sql]
    out = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout_s, check=False)
    # beeline exits 0 even when a statement fails: its error goes to stderr.
    if out.returncode != 0 or "Error:" in out.stderr:
        raise subprocess.CalledProcessError(out.returncode or 1, cmd, out.stdout, out.stderr)
    # Without a terminal beeline echoes its prompt before the header line.
    text = re.sub(r"^\d+: jdbc:\S+> ", "", out.stdout.strip())
    return list(csv.DictReader(io.StringIO(text)))


if __name__ == "__main__":
    serve(Settings.from_env())
