"""The Spark session factory and Delta tables on a real local session."""

from datetime import datetime

import pytest
from delta.tables import DeltaTable

from lakehouse.delta_io import merge_into, read_table
from lakehouse.settings import Settings
from lakehouse.spark import JarsMissingError, ensure_tables, spark_conf
from lakehouse.tables import REGISTRY, SILVER_QUARANTINE


def test_ensure_tables_creates_every_registry_table_with_its_schema_and_partitioning(spark, settings):
    ensure_tables(spark, settings)
    ensure_tables(spark, settings)  # idempotent
    for table in REGISTRY:
        location = table.location(settings)
        assert DeltaTable.isDeltaTable(spark, location), table.name
        detail = spark.sql(f"DESCRIBE DETAIL delta.`{location}`").first()
        assert tuple(detail.partitionColumns) == table.partition_by
        assert spark.table(table.name).schema.fieldNames() == table.columns
        assert table.properties.items() <= dict(detail.properties).items(), table.name


def test_delta_write_read_round_trip_and_merge_is_idempotent(spark, settings):
    ensure_tables(spark, settings)
    now = datetime(2025, 2, 3, 12, 0)
    rows = [
        ("archive", "FILUSDT", now, "1,2,3", "low > high", None, None, None, now),
        ("archive", "FILUSDT", now, "1,2,3", "low > high", None, None, None, now),  # same key twice
        ("kafka", None, None, "{", "malformed JSON", "t", 0, 7, now),
    ]
    batch = spark.createDataFrame(rows, SILVER_QUARANTINE.schema)
    merge_into(spark, settings, SILVER_QUARANTINE, batch)
    merge_into(spark, settings, SILVER_QUARANTINE, batch)
    stored = read_table(spark, settings, SILVER_QUARANTINE)
    assert stored.count() == 2
    assert sorted(r.reason for r in stored.collect()) == ["low > high", "malformed JSON"]
    assert spark.table("silver.quarantine").count() == 2


def test_tables_are_re_pointed_when_the_lakehouse_root_changes_and_old_data_stays(spark, settings, tmp_path):
    ensure_tables(spark, settings)
    now = datetime(2025, 2, 3, 12, 0)
    row = spark.createDataFrame(
        [("kafka", None, None, "{", "malformed JSON", "t", 0, 1, now)], SILVER_QUARANTINE.schema
    )
    merge_into(spark, settings, SILVER_QUARANTINE, row)
    other = Settings.from_env(env={}, home=settings.home, lakehouse_root=str(tmp_path / "other"))
    ensure_tables(spark, other)
    assert spark.table("silver.quarantine").count() == 0
    assert read_table(spark, settings, SILVER_QUARANTINE).count() == 1


def test_missing_jars_give_a_clear_error(tmp_path):
    s = Settings.from_env(env={}, home=str(tmp_path), jars_dir=str(tmp_path / "nojars"))
    with pytest.raises(JarsMissingError, match="make jars"):
        spark_conf(s)
