"""Per-symbol threshold training into gold.thresholds (a new version per run), with its contract as a check."""

import dagster as dg
from dagster_pyspark import LazyPySparkResource

from lakehouse.settings import Settings
from orchestration.keys import SILVER_CANDLES_KEY, THRESHOLDS_KEY
from orchestration.resources import lakehouse_session
from pipelines.detection.thresholds import train_thresholds


class TrainingConfig(dg.Config):
    train_days: float | None = None  # trailing days of silver per symbol; default: MARKETLAKE_TRAIN_DAYS
    symbols: list[str] | None = None  # default: every symbol in silver


def build_assets(settings: Settings) -> list[dg.AssetsDefinition]:
    @dg.asset(
        key=THRESHOLDS_KEY,
        deps=[SILVER_CANDLES_KEY],
        group_name="detection",
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

    return [thresholds]
