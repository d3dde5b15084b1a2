"""Great Expectations suites as code, one per table contract, and one way to run them on a Spark DataFrame."""

from __future__ import annotations

from dataclasses import dataclass

import great_expectations as gx
import great_expectations.expectations as gxe
from great_expectations.data_context.types.base import ProgressBarsConfig
from pyspark.sql import DataFrame

from lakehouse.tables import GOLD_THRESHOLDS, SILVER_CANDLES, positive_statistics


def silver_candles_suite() -> gx.ExpectationSuite:
    """Valid 1-minute candles: complete, unique on (symbol, open_time), OHLC consistent, volumes non-negative."""
    required = [f.name for f in SILVER_CANDLES.schema.fields if not f.nullable]
    return gx.ExpectationSuite(
        name="silver_candles",
        expectations=[
            *[gxe.ExpectColumnValuesToNotBeNull(column=c) for c in required],
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


@dataclass(frozen=True)
class Validation:
    success: bool
    failed: list[str]  # "<expectation> on <column(s)>: <unexpected count>" for each failed expectation
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
            failed.append(f"{config.type} on {where}: {r.result.get('unexpected_count', '?')} unexpected")
    return Validation(bool(result.success), failed, len(result.results))
