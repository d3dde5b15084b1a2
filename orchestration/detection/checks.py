"""The contract of each new gold.thresholds version, as a blocking asset check."""

import dagster as dg
from dagster_pyspark import LazyPySparkResource

from expectations.suites import thresholds_suite, validate
from lakehouse.delta_io import read_table
from lakehouse.settings import Settings
from lakehouse.tables import GOLD_THRESHOLDS
from orchestration.keys import THRESHOLDS_KEY
from orchestration.resources import lakehouse_session
from pipelines.detection.maths import DetectionConfig


def build_checks(settings: Settings) -> list[dg.AssetChecksDefinition]:
    @dg.asset_check(asset=THRESHOLDS_KEY, name="thresholds_not_degenerate", blocking=True)
    def thresholds_not_degenerate(pyspark: LazyPySparkResource) -> dg.AssetCheckResult:
        spark = lakehouse_session(pyspark, settings)
        table = read_table(spark, settings, GOLD_THRESHOLDS)
        latest = table.filter(table.version == table.agg({"version": "max"}).first()[0])
        result = validate(latest, thresholds_suite(DetectionConfig.from_settings(settings).min_train_rows))
        return dg.AssetCheckResult(passed=result.success, metadata={"failed": result.summary()})

    return [thresholds_not_degenerate]
