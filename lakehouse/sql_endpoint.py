"""The SQL endpoint: a Spark Thrift (HiveServer2) server over the Delta tables, run by the project.

One JVM: a PySpark driver with Hive support (Derby metastore under `<home>/sql-server`) registers every registry
table by name (`ensure_tables`), then starts HiveThriftServer2 inside the same session (`startWithContext`, the
class `spark-submit ... HiveThriftServer2 spark-internal` runs). Registration on every start means a table added
to the registry, or a lakehouse root that moved, is right after a restart. Tables are external Delta tables by
LOCATION and Delta re-reads the log on every query, so rows written after start-up are visible to the next query.

Analysts get read-only access (jvm/sql-endpoint, compiled with the JDK's javac at start): once the tables are
registered, a Spark SQL extension refuses every statement that is not a query on files under the lake root (or SHOW,
DESCRIBE, USE, EXPLAIN, reading a setting), `spark.sql.runSQLOnFiles` is off, the server listens on loopback by
default, and with `MARKETLAKE_SQL_PASSWORD` set it asks for that user/password (HiveServer2 CUSTOM authentication);
it refuses to listen on another interface without one. Writes stay with the platform's jobs and `marketlake sql`,
which run their own Spark sessions, not this endpoint.

`beeline` is the JDBC client bundled with pyspark: tests and scripts query the endpoint without extra packages.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import ipaddress
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from lakehouse.services import process
from lakehouse.services.base import Service
from lakehouse.settings import PROJECT_ROOT, Settings
from lakehouse.tables import VIEWS

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import SparkSession

LOOPBACK = "127.0.0.1"
GUARD_SOURCES = PROJECT_ROOT / "jvm" / "sql-endpoint"
# JVM system properties the guard reads (ReadOnlyExtension): set once the platform's own registration is done.
READ_ONLY, LAKE_ROOT = "marketlake.sql.readOnly", "marketlake.sql.lakeRoot"
AUTHENTICATOR = "hive.server2.custom.authentication.class"


def pyspark_jars() -> Path:
    import pyspark

    return Path(pyspark.__file__).parent / "jars"


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def compile_guard(settings: Settings, into: Path) -> Path:
    """The endpoint's Java classes (read-only extension, password check), compiled against pyspark's and the
    Delta jars once per version of their sources; returns the class folder."""
    from lakehouse.spark import spark_jars

    sources = sorted(GUARD_SOURCES.rglob("*.java"))
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in sources)).hexdigest()[:12]
    classes = into / f"classes-{digest}"
    if classes.is_dir():
        return classes
    javac = shutil.which("javac")
    if javac is None:
        raise process.ServiceError("the SQL endpoint needs a JDK's javac (apt-get install default-jdk-headless)")
    building = into / f"classes-{digest}.building"
    shutil.rmtree(building, ignore_errors=True)
    classpath = os.pathsep.join([str(pyspark_jars() / "*"), *spark_jars(settings)])
    cmd = [javac, "-nowarn", "-d", str(building), "-cp", classpath, *map(str, sources)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise process.ServiceError(f"compiling {GUARD_SOURCES} failed:\n{out.stderr[-3000:]}")
    building.rename(classes)
    return classes


def check_exposure(settings: Settings) -> None:
    """Off loopback the endpoint must ask for a password: there is no default one."""
    if not is_loopback(settings.sql_host) and not settings.sql_password:
        raise process.ServiceError(
            f"the SQL endpoint would listen on {settings.sql_host} without a password: set MARKETLAKE_SQL_PASSWORD"
        )


@dataclass(frozen=True)
class SqlServer(Service):
    name = "Spark SQL endpoint"
    start_timeout_s = 180.0
    stop_timeout_s = 30.0

    settings: Settings

    @property
    def home(self) -> Path:
        return Path(self.settings.home) / "sql-server"

    @property
    def port(self) -> int:
        return self.settings.sql_port

    @property
    def host(self) -> str:
        """Where clients on this machine reach it (a wildcard bind answers on loopback)."""
        return LOOPBACK if self.settings.sql_host in {"0.0.0.0", "::"} else self.settings.sql_host

    @property
    def url(self) -> str:
        return f"jdbc:hive2://{self.host}:{self.port}/default"

    def spark_conf(self) -> dict[str, str]:
        from lakehouse.spark import spark_conf, spark_jars

        metastore = self.home / "metastore_db"
        conf = spark_conf(self.settings, "marketlake-sql")
        guard = compile_guard(self.settings, self.home)
        return conf | {
            # Thrift sessions resolve the Delta catalog (and the guard's classes) with the JVM's own class loader.
            "spark.driver.extraClassPath": os.pathsep.join([*spark_jars(self.settings), str(guard)]),
            # The guard first: its rule must see Delta's statements before Delta's rules run them (RESTORE).
            "spark.sql.extensions": ",".join(["io.marketlake.sql.ReadOnlyExtension", conf["spark.sql.extensions"]]),
            "spark.sql.runSQLOnFiles": "false",
            "spark.sql.catalogImplementation": "hive",
            "spark.hadoop.javax.jdo.option.ConnectionURL": f"jdbc:derby:;databaseName={metastore};create=true",
            "spark.hadoop.hive.server2.thrift.bind.host": self.settings.sql_host,
            "spark.hadoop.hive.server2.thrift.port": str(self.port),
            "spark.hadoop.hive.server2.authentication": "CUSTOM" if self.settings.sql_password else "NONE",
            # derby.log next to the metastore, not in whatever directory the server was started from. The CUSTOM
            # authenticator's class is read by a fresh HiveConf, which sees JVM system properties, not Spark's conf.
            "spark.driver.extraJavaOptions": " ".join(
                [f"-Dderby.system.home={self.home}", f"-D{AUTHENTICATOR}=io.marketlake.sql.PasswordAuthenticator"]
            ),
        }

    def start(self, timeout_s: float | None = None) -> dict[str, float]:
        check_exposure(self.settings)
        return super().start(timeout_s)

    def command(self) -> list[str]:
        return [sys.executable, "-m", "lakehouse.sql_endpoint"]

    def env(self) -> dict[str, str]:
        return os.environ | self.settings.to_env() | {"HIVE_SERVER2_THRIFT_PORT": str(self.port)}


def register(spark, settings: Settings) -> None:
    """Every registry table by name (created empty where missing), plus the dashboard views."""
    from lakehouse.spark import ensure_tables

    ensure_tables(spark, settings)
    for view in VIEWS:
        spark.sql(f"CREATE OR REPLACE VIEW {view.name} AS {view.query}")


def run_sql(spark: SparkSession, settings: Settings, sql: str) -> pd.DataFrame:
    """One statement on the Delta tables in a local session (what `marketlake sql` runs), as a pandas frame."""
    register(spark, settings)
    return spark.sql(sql).toPandas()


def serve(settings: Settings) -> None:
    """The server process: register tables, start HiveThriftServer2 in this session, run until SIGTERM/SIGINT."""
    from pyspark.sql import SparkSession

    from lakehouse.spark import prepare_driver

    check_exposure(settings)
    prepare_driver()
    builder = SparkSession.builder
    for key, value in SqlServer(settings).spark_conf().items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    # Registration addresses tables by path (delta.`...`): files on for this session only, then read-only for all.
    spark.conf.set("spark.sql.runSQLOnFiles", "true")
    register(spark, settings)
    spark.conf.set("spark.sql.runSQLOnFiles", "false")
    system = spark._jvm.java.lang.System
    system.setProperty(LAKE_ROOT, settings.lakehouse_root)
    system.setProperty(READ_ONLY, "true")
    thrift = spark._jvm.org.apache.spark.sql.hive.thriftserver.HiveThriftServer2
    thrift.startWithContext(spark._jsparkSession.sqlContext())
    print(f"Spark SQL endpoint listening on {settings.sql_host}:{settings.sql_port}", flush=True)
    stopping = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.set())
    stopping.wait()
    # The JVM is in our process group and got the same signal: Spark's shutdown hook stops it.
    with contextlib.suppress(Exception):
        spark.stop()


def beeline(
    url: str, sql: str, timeout_s: float = 120.0, user: str = "marketlake", password: str = ""
) -> list[dict[str, str]]:
    """Run one statement through the JDBC client bundled with pyspark; rows as dicts of strings.

    Raises CalledProcessError (with beeline's message in stderr) when the statement fails.
    """
    classpath = os.pathsep.join([str(pyspark_jars() / "*")])
    cmd = ["java", "-cp", classpath, "org.apache.hive.beeline.BeeLine", "-u", url, "-n", user, "-p", password]
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
