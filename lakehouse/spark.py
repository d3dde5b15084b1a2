"""The Spark session factory: classic Spark with Delta Lake and the Kafka connector from the local jar folder.

`spark_conf` is the single source of configuration; `get_spark` (jobs, CLI, tests) and Dagster's
PySparkResource both take it, so every SparkSession in the project is configured the same way.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession

from lakehouse.settings import PROJECT_ROOT, Settings
from lakehouse.tables import REGISTRY, Table

LOG_CONFIG = Path(__file__).with_name("log4j2.properties")


class JarsMissingError(RuntimeError):
    pass


def spark_jars(settings: Settings) -> list[str]:
    folder = Path(settings.jars_dir) / "spark"
    jars = sorted(str(p) for p in folder.glob("*.jar"))
    if not any("delta-spark" in j for j in jars) or not any("spark-sql-kafka" in j for j in jars):
        raise JarsMissingError(
            f"Delta/Kafka jars not found in {folder}. Resolve them once with `make jars` "
            "(mvn -f jvm/pom.xml dependency:copy-dependencies)."
        )
    if settings.on_s3:
        s3a = sorted(str(p) for p in (Path(settings.jars_dir) / "s3a").glob("*.jar"))
        if not any("hadoop-aws" in j for j in s3a):
            raise JarsMissingError(f"hadoop-aws not found in {Path(settings.jars_dir) / 's3a'}: run `make jars`.")
        jars += s3a
    return jars


def s3a_conf(settings: Settings) -> dict[str, str]:
    """Hadoop's s3a file system for a lake on S3 or an S3-compatible endpoint. Delta's default LogStore for s3a
    (S3SingleDriverLogStore) is safe for one writing driver at a time: see docs/scaling.md for several."""
    if not settings.on_s3:
        return {}
    conf = {
        "spark.hadoop.fs.s3a.impl": "org.apache.hadoop.fs.s3a.S3AFileSystem",
        "spark.hadoop.fs.s3a.endpoint.region": settings.s3_region,
        "spark.hadoop.fs.s3a.path.style.access": str(settings.s3_path_style).lower(),
    }
    if settings.s3_endpoint:
        conf["spark.hadoop.fs.s3a.endpoint"] = settings.s3_endpoint
        conf["spark.hadoop.fs.s3a.connection.ssl.enabled"] = str(settings.s3_endpoint.startswith("https:")).lower()
    if settings.s3_access_key:
        conf["spark.hadoop.fs.s3a.aws.credentials.provider"] = "org.apache.hadoop.fs.s3a.SimpleAWSCredentialsProvider"
        conf["spark.hadoop.fs.s3a.access.key"] = settings.s3_access_key
        conf["spark.hadoop.fs.s3a.secret.key"] = settings.s3_secret_key
    return conf


def cluster_conf(settings: Settings) -> dict[str, str]:
    """On a cluster manager the executors are JVMs (and Python workers) of their own: give them this Python and
    the project's code, and their heap."""
    if settings.spark_master.startswith("local"):
        return {}
    return {
        "spark.pyspark.python": sys.executable,
        "spark.executorEnv.PYTHONPATH": str(PROJECT_ROOT),
        "spark.executor.memory": settings.spark_executor_memory,
    }


def spark_conf(settings: Settings, app_name: str = "marketlake") -> dict[str, str]:
    return {
        "spark.master": settings.spark_master,
        "spark.app.name": app_name,
        "spark.jars": ",".join(spark_jars(settings)),
        "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
        "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.shuffle.partitions": str(settings.spark_shuffle_partitions),
        "spark.driver.memory": settings.spark_driver_memory,
        "spark.ui.enabled": str(settings.spark_ui).lower(),
        "spark.ui.showConsoleProgress": "false",
        # Keep Spark's own scratch files in the project's state folder, not in the working directory.
        "spark.sql.warehouse.dir": str(Path(settings.home) / "spark-warehouse"),
        "spark.databricks.delta.schema.autoMerge.enabled": "false",
        # Delta rebuilds a table's state with 50 tasks by default: seconds of overhead per query on small tables.
        "spark.databricks.delta.snapshotPartitions": str(settings.spark_shuffle_partitions),
        "spark.sql.streaming.forceDeleteTempCheckpointLocation": "true",
        # The JVM's log lines go to <home>/logs/spark.log instead of flooding every command's terminal.
        "spark.driver.extraJavaOptions": f"-Dlog4j2.configurationFile={LOG_CONFIG} "
        f"-Dmarketlake.log.dir={Path(settings.home) / 'logs'}",
        **s3a_conf(settings),
        **cluster_conf(settings),
    }


def prepare_driver() -> None:
    """What the driver's process must set before Spark starts. PySpark turns timestamps into Python datetimes in
    the process's local zone: make that UTC, like Spark's. Python workers run the detection maths (grouped pandas
    functions) with PYSPARK_PYTHON, else `python3` from PATH: make it this interpreter, which has the packages."""
    os.environ["TZ"] = "UTC"
    time.tzset()
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)


def get_spark(settings: Settings, app_name: str = "marketlake") -> SparkSession:
    prepare_driver()
    builder = SparkSession.builder
    for key, value in spark_conf(settings, app_name).items():
        builder = builder.config(key, value)
    return builder.getOrCreate()


def empty_frame(spark: SparkSession, table: Table) -> DataFrame:
    return spark.createDataFrame([], table.schema)


def ensure_tables(spark: SparkSession, settings: Settings, tables: tuple[Table, ...] = REGISTRY) -> None:
    """Create any missing table (empty, with its schema and partitioning) and register every table by name.

    Idempotent; the catalog is per session (no metastore), so each entry point calls this once.
    """
    from delta.tables import DeltaTable

    for table in tables:
        location = table.location(settings)
        if not DeltaTable.isDeltaTable(spark, location):
            writer = empty_frame(spark, table).write.format("delta").mode("ignore")
            if table.partition_by:
                writer = writer.partitionBy(*table.partition_by)
            writer.save(location)
            if table.properties:
                pairs = ", ".join(f"'{key}' = '{value}'" for key, value in table.properties.items())
                spark.sql(f"ALTER TABLE delta.`{location}` SET TBLPROPERTIES ({pairs})")
        spark.sql(f"CREATE SCHEMA IF NOT EXISTS {table.layer}")
        if spark.catalog.tableExists(table.name):
            if _registered_location(spark, table.name) == location:
                continue
            # Registered for another lakehouse root (e.g. settings changed in this session): re-point it.
            # The tables are external (explicit LOCATION), so dropping the name leaves the data alone.
            spark.sql(f"DROP TABLE {table.name}")
        spark.sql(f"CREATE TABLE {table.name} USING DELTA LOCATION '{location}'")


def _registered_location(spark: SparkSession, name: str) -> str:
    rows = spark.sql(f"DESCRIBE TABLE EXTENDED {name}").collect()  # catalog only; DESCRIBE DETAIL reads the log
    location = next(r.data_type for r in rows if r.col_name == "Location")
    return location.removeprefix("file:")
