"""Idempotent writes into registry tables."""

from __future__ import annotations

from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession

from lakehouse.settings import Settings
from lakehouse.tables import Table


def merge_into(spark: SparkSession, settings: Settings, table: Table, rows: DataFrame, update: bool = False) -> None:
    """MERGE rows on the table's key: new keys are inserted; existing keys are kept, or replaced if update.

    Null-safe equality (<=>), because some key columns are null for some sources (e.g. no Kafka offset for
    archive rows). Rows are first made unique on the key, so one batch can never insert a key twice.
    """
    condition = " AND ".join(f"t.`{k}` <=> s.`{k}`" for k in table.keys)
    target = DeltaTable.forPath(spark, table.location(settings)).alias("t")
    merge = target.merge(rows.select(*table.columns).dropDuplicates(list(table.keys)).alias("s"), condition)
    if update:
        merge = merge.whenMatchedUpdateAll()
    merge.whenNotMatchedInsertAll().execute()


def read_table(spark: SparkSession, settings: Settings, table: Table) -> DataFrame:
    return spark.read.format("delta").load(table.location(settings))


def log_version(spark: SparkSession, settings: Settings, table: Table) -> int:
    """The table's latest commit version, from a listing of its _delta_log (milliseconds, on any Hadoop file
    system), for callers that only need to know whether the table changed."""
    jvm = spark._jvm
    log = jvm.org.apache.hadoop.fs.Path(f"{table.location(settings)}/_delta_log")
    fs = log.getFileSystem(spark._jsc.hadoopConfiguration())
    names = [status.getPath().getName() for status in fs.listStatus(log)]
    return max(int(n.split(".")[0]) for n in names if n.endswith(".json"))
