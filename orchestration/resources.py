"""Resources shared by every domain, built from the one Settings object."""

from __future__ import annotations

from dagster_pyspark import LazyPySparkResource
from pyspark.sql import SparkSession

from lakehouse.settings import Settings
from lakehouse.spark import ensure_tables, prepare_driver, spark_conf


def build_resources(settings: Settings) -> dict[str, object]:
    """Assets get Settings from the definitions factory that builds them; Spark comes through this resource."""
    return {
        # Same configuration as every other SparkSession of the project (lakehouse.spark.spark_conf).
        # Lazy: runs that never touch Spark (e.g. the stream supervisor) start no JVM.
        "pyspark": LazyPySparkResource(spark_config=spark_conf(settings, "marketlake-dagster")),
    }


def lakehouse_session(pyspark: LazyPySparkResource, settings: Settings) -> SparkSession:
    prepare_driver()
    spark = pyspark.spark_session
    ensure_tables(spark, settings)
    return spark
