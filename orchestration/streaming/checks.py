"""Checks of the stream's gold tables: each one's contract (Great Expectations), and the alerts' delivery (no alert
owed to a sink for more than 5 minutes without a gold.alerts row; dead letters as a warning)."""

from collections.abc import Callable
from datetime import UTC, datetime

import dagster as dg
import great_expectations as gx
import pandas as pd
from dagster_pyspark import LazyPySparkResource

from expectations.suites import alerts_suite, incidents_suite, market_incidents_suite, validate
from lakehouse.delta_io import read_table
from lakehouse.settings import Settings
from lakehouse.tables import GOLD_ALERTS, GOLD_INCIDENTS, GOLD_MARKET_INCIDENTS, Table
from orchestration.resources import lakehouse_session
from orchestration.streaming.assets import ALERTS_KEY, INCIDENTS_KEY, MARKET_INCIDENTS_KEY
from pipelines.alerts.audit import GRACE, LOOKBACK, audit

LISTED = 20  # alerts named in a check's metadata; the table in it has them all


def build_checks(settings: Settings) -> list[dg.AssetChecksDefinition]:
    contracts = [
        (INCIDENTS_KEY, GOLD_INCIDENTS, incidents_suite),
        (MARKET_INCIDENTS_KEY, GOLD_MARKET_INCIDENTS, market_incidents_suite),
        (ALERTS_KEY, GOLD_ALERTS, alerts_suite),
    ]
    return [*(_contract(settings, *c) for c in contracts), _delivery(settings)]


def _contract(
    settings: Settings, asset: dg.AssetKey, table: Table, suite: Callable[[], gx.ExpectationSuite]
) -> dg.AssetChecksDefinition:
    @dg.asset_check(asset=asset, name=f"{table.entity}_contract", description=suite.__doc__)
    def contract(pyspark: LazyPySparkResource) -> dg.AssetCheckResult:
        spark = lakehouse_session(pyspark, settings)
        result = validate(read_table(spark, settings, table), suite())
        return dg.AssetCheckResult(
            passed=result.success, metadata={"failed": result.summary(), "expectations": result.evaluated}
        )

    return contract


def _delivery(settings: Settings) -> dg.AssetChecksDefinition:
    @dg.multi_asset_check(
        specs=[
            dg.AssetCheckSpec(
                "alerts_not_overdue",
                asset=ALERTS_KEY,
                description=f"Every alert a sink is owed has a gold.alerts row {GRACE} after its incident's row was "
                f"written, for the rows written in the last {LOOKBACK} (pipelines.alerts.audit).",
            ),
            dg.AssetCheckSpec(
                "alerts_no_dead_letters",
                asset=ALERTS_KEY,
                description="No alert was dead-lettered (every attempt failed; the stream does not retry it).",
            ),
        ]
    )
    def alerts_delivery(pyspark: LazyPySparkResource):
        found = audit(lakehouse_session(pyspark, settings), settings, datetime.now(UTC).replace(tzinfo=None))
        yield dg.AssetCheckResult(
            check_name="alerts_not_overdue", passed=found.overdue.empty, metadata=_listing(found.overdue)
        )
        yield dg.AssetCheckResult(
            check_name="alerts_no_dead_letters",
            passed=found.dead_letters.empty,
            severity=dg.AssetCheckSeverity.WARN,  # recorded, so not lost: someone should look, the stream goes on
            metadata=_listing(found.dead_letters),
        )

    return alerts_delivery


def _listing(alerts: pd.DataFrame) -> dict[str, object]:
    """How many, the first LISTED as `alert_id -> sink`, and all of them as a table."""
    named = [f"{a} -> {s}" for a, s in zip(alerts["alert_id"], alerts["sink"], strict=True)]
    return {
        "count": len(alerts),
        "alerts": "; ".join(named[:LISTED]) or "none",
        "table": dg.MetadataValue.md(alerts.to_markdown(index=False) if len(alerts) else "none"),
    }
