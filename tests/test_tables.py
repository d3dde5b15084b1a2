import pytest
from pyspark.sql.types import DoubleType, StringType, TimestampType

from lakehouse.settings import Settings
from lakehouse.tables import REGISTRY, SILVER_CANDLES, by_name, schema


def test_schema_ddl_parses_types_and_nullability():
    s = schema("symbol string not null, open_time timestamp not null, close double")
    assert [(f.name, f.dataType, f.nullable) for f in s.fields] == [
        ("symbol", StringType(), False),
        ("open_time", TimestampType(), False),
        ("close", DoubleType(), True),
    ]


def test_every_table_has_a_unique_name_and_keys_and_partitions_that_exist():
    assert len({t.name for t in REGISTRY}) == len(REGISTRY)
    for table in REGISTRY:
        assert table.layer in {"bronze", "silver", "gold"}
        assert set(table.keys) <= set(table.columns), table.name
        assert set(table.partition_by) <= set(table.columns), table.name


def test_locations_follow_layer_and_entity(tmp_path):
    s = Settings.from_env(env={}, lakehouse_root=str(tmp_path))
    assert SILVER_CANDLES.location(s) == f"{tmp_path}/silver/candles"
    assert by_name("silver.candles") is SILVER_CANDLES
    with pytest.raises(KeyError, match="no table"):
        by_name("silver.nope")
