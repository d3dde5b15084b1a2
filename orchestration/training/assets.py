"""Per-symbol threshold training into gold.thresholds (a new version per run), with its contract as a check."""

import dagster as dg
from dagster_pyspark import LazyPySparkResource

from expectations.suites import thresholds_suite, validate
from lakehouse.delta_io import read_table
from lakehouse.services.dagster import SPARK_BATCH_TAG
from lakehouse.settings import Settings
from lakehouse.tables import GOLD_THRESHOLDS
from orchestration.ingestion.assets import SILVER_CANDLES_KEY
from orchestration.resources import lakehouse_session
from pipelines.detection.maths import DetectionConfig
from pipelines.detection.thresholds import train_thresholds

THRESHOLDS_KEY = dg.AssetKey(["gold", "thresholds"])


class TrainingConfig(dg.Config):
    train_days: float | None = None  # trailing days of silver per symbol; default: MARKETLAKE_TRAIN_DAYS
    symbols: list[str] | None = None  # default: every symbol in silver


def build_training_assets(settings: Settings) -> list:
    @dg.asset(
        key=THRESHOLDS_KEY,
        deps=[SILVER_CANDLES_KEY],
        group_name="training",
        description="Per-symbol detection thresholds; each run appends a new version and keeps the old ones.",
    )
    def thresholds(
        context: dg.AssetExecutionContext, config: TrainingConfig, pyspark: LazyPySparkResource
    ) -> dg.MaterializeResult:
        spark = lakehouse_session(pyspark, settings)
        result = train_thresholds(
            spark, settings, trained_by=f"dagster run {context.run_id}", days=config.train_days, symbols=config.symbols
        )
        for row in result.rejected.itertuples():
            context.log.warning(f"{row.symbol}: thresholds rejected ({row.reason}); it keeps its previous version")
        return dg.MaterializeResult(
            metadata={
                "version": result.version,
                "symbols": ", ".join(result.thresholds["symbol"]),
                "rejected": ", ".join(result.rejected["symbol"]) or "none",
                "train_rows": int(result.thresholds["train_rows"].sum()),
                "json": dg.MetadataValue.path(str(result.json_path)),
                "thresholds": dg.MetadataValue.md(result.thresholds.drop(columns=["trained_by"]).to_markdown()),
            }
        )

    @dg.asset_check(asset=THRESHOLDS_KEY, name="thresholds_not_degenerate", blocking=True)
    def thresholds_not_degenerate(pyspark: LazyPySparkResource) -> dg.AssetCheckResult:
        spark = lakehouse_session(pyspark, settings)
        table = read_table(spark, settings, GOLD_THRESHOLDS)
        latest = table.filter(table.version == table.agg({"version": "max"}).first()[0])
        result = validate(latest, thresholds_suite(DetectionConfig.from_settings(settings).min_train_rows))
        return dg.AssetCheckResult(passed=result.success, metadata={"failed": result.summary()})

    return [thresholds, thresholds_not_degenerate]


def build_training_jobs(settings: Settings) -> tuple[list, list]:
    train_thresholds_job = dg.define_asset_job(
        "train_thresholds_job",
        selection=dg.AssetSelection.keys(THRESHOLDS_KEY),
        description="Retrain every symbol's thresholds from the trailing period of silver candles.",
        tags={SPARK_BATCH_TAG: "batch"},  # the run queue runs one of these at a time (dagster.yaml)
    )
    nightly = dg.ScheduleDefinition(
        name="train_thresholds_job_schedule",
        job=train_thresholds_job,
        cron_schedule="0 2 * * *",
        execution_timezone="UTC",
        description="Nightly recalibration at 02:00 UTC.",
        default_status=dg.DefaultScheduleStatus.RUNNING,
    )
    return [train_thresholds_job], [nightly]
