"""Great Expectations suites as code, one per table contract, and one way to run them on a Spark DataFrame."""

from __future__ import annotations

from dataclasses import dataclass

import great_expectations as gx
import great_expectations.expectations as gxe
from great_expectations.data_context.types.base import ProgressBarsConfig
from great_expectations.expectations.row_conditions import Column
from pyspark.sql import DataFrame

from lakehouse.tables import (
    GOLD_ALERTS,
    GOLD_INCIDENTS,
    GOLD_MARKET_INCIDENTS,
    GOLD_THRESHOLDS,
    SILVER_CANDLES,
    Table,
    positive_statistics,
)

# The values the writers use (pipelines.detection, pipelines.alerts; expectations do not import them: a test keeps
# these equal to theirs).
CONFIDENCES = ("LOW", "MEDIUM", "HIGH")
OPEN, CLOSED, OWN, MARKET, DELIVERED, DEAD_LETTER = "open", "closed", "own", "market", "delivered", "dead_letter"
INCIDENT_STATUSES, SCOPES, ALERT_STATUSES = (OPEN, CLOSED), (OWN, MARKET), (DELIVERED, DEAD_LETTER)


def _required(table: Table) -> list[gxe.Expectation]:
    return [gxe.ExpectColumnValuesToNotBeNull(column=f.name) for f in table.schema.fields if not f.nullable]


def silver_candles_suite() -> gx.ExpectationSuite:
    """Valid 1-minute candles: complete, unique on (symbol, open_time), OHLC consistent, volumes non-negative."""
    return gx.ExpectationSuite(
        name="silver_candles",
        expectations=[
            *_required(SILVER_CANDLES),
            gxe.ExpectCompoundColumnsToBeUnique(column_list=list(SILVER_CANDLES.keys)),
            gxe.ExpectColumnValuesToBeBetween(column="low", min_value=0, strict_min=True),
            gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A="high", column_B="low", or_equal=True),
            gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A="high", column_B="open", or_equal=True),
            gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A="high", column_B="close", or_equal=True),
            gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A="open", column_B="low", or_equal=True),
            gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A="close", column_B="low", or_equal=True),
            *[gxe.ExpectColumnValuesToBeBetween(column=c, min_value=0) for c in ("volume", "quote_volume", "trades")],
        ],
    )


def thresholds_suite(min_train_rows: int) -> gx.ExpectationSuite:
    """Usable thresholds: no zero or NaN statistic, enough training rows, one row per (version, symbol)."""
    return gx.ExpectationSuite(
        name="gold_thresholds",
        expectations=[
            *[gxe.ExpectColumnValuesToNotBeNull(column=c) for c in GOLD_THRESHOLDS.columns],
            # Spark orders NaN above every number: the upper bound is what rejects a NaN statistic.
            *[
                gxe.ExpectColumnValuesToBeBetween(column=c, min_value=0, strict_min=True, max_value=1e300)
                for c in positive_statistics(GOLD_THRESHOLDS.columns)
            ],
            gxe.ExpectColumnValuesToBeBetween(column="train_rows", min_value=min_train_rows),
            gxe.ExpectCompoundColumnsToBeUnique(column_list=list(GOLD_THRESHOLDS.keys)),
        ],
    )


def _spans(table: Table) -> list[gxe.Expectation]:
    """An incident's span, shared by a symbol's and the market's: unique id, start <= peak_time <= last_minute <=
    scored_through, at least one minute, a known status and peak confidence."""
    after = [("last_minute", "start"), ("peak_time", "start"), ("last_minute", "peak_time")]
    return [
        *_required(table),
        *[gxe.ExpectColumnValuesToBeUnique(column=c) for c in table.keys],
        *[gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A=a, column_B=b, or_equal=True) for a, b in after],
        gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A="scored_through", column_B="last_minute", or_equal=True),
        gxe.ExpectColumnValuesToBeBetween(column="minutes", min_value=1),
        gxe.ExpectColumnValuesToBeInSet(column="status", value_set=list(INCIDENT_STATUSES)),
        gxe.ExpectColumnValuesToBeInSet(column="peak_confidence", value_set=list(CONFIDENCES)),
    ]


def incidents_suite() -> gx.ExpectationSuite:
    """gold.incidents: valid spans, at most one open incident per symbol, a known scope, and a market incident for
    every 'market' one."""
    return gx.ExpectationSuite(
        name="gold_incidents",
        expectations=[
            *_spans(GOLD_INCIDENTS),
            gxe.ExpectColumnValuesToBeUnique(column="symbol", row_condition=Column("status") == OPEN),
            gxe.ExpectColumnValuesToBeInSet(column="scope", value_set=list(SCOPES)),
            gxe.ExpectColumnValuesToNotBeNull(column="market_incident_id", row_condition=Column("scope") == MARKET),
            *[
                gxe.ExpectColumnValuesToBeBetween(column=c, min_value=0, strict_min=True)
                for c in ("open_price", "close_price")
            ],
        ],
    )


def market_incidents_suite() -> gx.ExpectationSuite:
    """gold.market_incidents: valid spans of at least two symbols moving together."""
    return gx.ExpectationSuite(
        name="gold_market_incidents",
        expectations=[
            *_spans(GOLD_MARKET_INCIDENTS),
            gxe.ExpectColumnValuesToBeBetween(column="symbol_count", min_value=2),
        ],
    )


def alerts_suite() -> gx.ExpectationSuite:
    """gold.alerts: one row per (alert, sink), delivered or dead_letter after at least one attempt, and a dead
    letter says why."""
    return gx.ExpectationSuite(
        name="gold_alerts",
        expectations=[
            *_required(GOLD_ALERTS),
            gxe.ExpectCompoundColumnsToBeUnique(column_list=list(GOLD_ALERTS.keys)),
            gxe.ExpectColumnValuesToBeInSet(column="status", value_set=list(ALERT_STATUSES)),
            gxe.ExpectColumnValuesToBeInSet(column="confidence", value_set=list(CONFIDENCES)),
            gxe.ExpectColumnValuesToBeBetween(column="attempts", min_value=1),
            gxe.ExpectColumnValuesToNotBeNull(column="error", row_condition=Column("status") == DEAD_LETTER),
        ],
    )


@dataclass(frozen=True)
class Validation:
    success: bool
    failed: list[str]  # "<expectation> on <column(s)> [where <row condition>]: <unexpected count>", each failed one
    evaluated: int

    def summary(self) -> str:
        return "all passed" if self.success else "; ".join(self.failed)


def validate(frame: DataFrame, suite: gx.ExpectationSuite) -> Validation:
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    asset = context.data_sources.add_spark(name="spark").add_dataframe_asset(name=suite.name)
    batch = asset.add_batch_definition_whole_dataframe("all").get_batch(batch_parameters={"dataframe": frame})
    result = batch.validate(suite)
    failed = []
    for r in result.results:
        if not r.success:
            config = r.expectation_config
            where = (
                config.kwargs.get("column")
                or config.kwargs.get("column_list")
                or (f"{config.kwargs.get('column_A')} vs {config.kwargs.get('column_B')}")
            )
            if condition := config.kwargs.get("row_condition"):
                where = f"{where} where {condition}"
            failed.append(f"{config.type} on {where}: {r.result.get('unexpected_count', '?')} unexpected")
    return Validation(bool(result.success), failed, len(result.results))
