"""The stream's gold tables as assets. The long-running stream run writes them every minute, so Dagster never
materializes them: it shows them, their lineage and their checks (orchestration.streaming.checks)."""

import dagster as dg

from lakehouse.tables import GOLD_ALERTS, GOLD_INCIDENTS, GOLD_MARKET_INCIDENTS, GOLD_SCORES, Table
from orchestration.keys import SILVER_CANDLES_KEY, THRESHOLDS_KEY, key

SCORES_KEY, INCIDENTS_KEY, MARKET_INCIDENTS_KEY, ALERTS_KEY = map(
    key, (GOLD_SCORES, GOLD_INCIDENTS, GOLD_MARKET_INCIDENTS, GOLD_ALERTS)
)


def _written_by_the_stream(table: Table, deps: list[dg.AssetKey]) -> dg.AssetSpec:
    return dg.AssetSpec(
        key(table), deps=deps, description=table.description, group_name="streaming", kinds={"spark", "delta"}
    )


STREAM_TABLES = [
    _written_by_the_stream(GOLD_SCORES, [SILVER_CANDLES_KEY, THRESHOLDS_KEY]),
    _written_by_the_stream(GOLD_MARKET_INCIDENTS, [SCORES_KEY]),
    _written_by_the_stream(GOLD_INCIDENTS, [SCORES_KEY, MARKET_INCIDENTS_KEY]),
    _written_by_the_stream(GOLD_ALERTS, [INCIDENTS_KEY]),
]
