"""Asset keys named by more than one domain (a key is the table's registry name)."""

import dagster as dg

from lakehouse.tables import BRONZE_CANDLES, GOLD_THRESHOLDS, SILVER_CANDLES, Table


def key(table: Table) -> dg.AssetKey:
    return dg.AssetKey([table.layer, table.entity])


BRONZE_CANDLES_KEY = key(BRONZE_CANDLES)
SILVER_CANDLES_KEY = key(SILVER_CANDLES)
THRESHOLDS_KEY = key(GOLD_THRESHOLDS)
