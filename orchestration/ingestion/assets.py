"""Historical backfill: (day, symbol) partitions of bronze/silver candles, with the silver contract as checks."""

from datetime import date
from pathlib import Path

import dagster as dg
from dagster_pyspark import LazyPySparkResource

from expectations.suites import silver_candles_suite, validate
from lakehouse.settings import Settings
from orchestration.ingestion.partitions import candle_partitions
from orchestration.resources import lakehouse_session
from pipelines.backfill import (
    BinanceArchives,
    BinanceRestKlines,
    KlineSource,
    LocalArchives,
    backfill_day,
    silver_day,
)

SILVER_CANDLES_KEY = dg.AssetKey(["silver", "candles"])
BRONZE_CANDLES_KEY = dg.AssetKey(["bronze", "candles"])


class BackfillConfig(dg.Config):
    source: str = "local"  # local | binance-archive | rest
    market: str = "spot"  # for binance-archive: spot | futures/um


def kline_source(config: BackfillConfig, settings: Settings) -> KlineSource:
    if config.source == "local":
        return LocalArchives(Path(settings.archive_dir))
    if config.source == "binance-archive":
        return BinanceArchives(settings.binance_archive_url, Path(settings.home) / "archives", config.market)
    if config.source == "rest":
        return BinanceRestKlines(settings.binance_rest_url)
    raise dg.Failure(f"unknown backfill source {config.source!r}: use local, binance-archive or rest")


def build_ingestion_assets(settings: Settings) -> list:
    @dg.multi_asset(
        specs=[
            dg.AssetSpec(BRONZE_CANDLES_KEY, description="Raw candle records with where they came from."),
            dg.AssetSpec(SILVER_CANDLES_KEY, description="Validated candles, one per (symbol, open_time)."),
        ],
        check_specs=[
            dg.AssetCheckSpec("silver_candles_contract", asset=SILVER_CANDLES_KEY, blocking=True),
            dg.AssetCheckSpec("silver_candles_no_gaps", asset=SILVER_CANDLES_KEY),
        ],
        partitions_def=candle_partitions(settings),
        group_name="ingestion",
    )
    def backfill_candles(context: dg.AssetExecutionContext, config: BackfillConfig, pyspark: LazyPySparkResource):
        keys = context.partition_key.keys_by_dimension
        symbol, day = keys["symbol"], date.fromisoformat(keys["day"])
        spark = lakehouse_session(pyspark, settings)
        result = backfill_day(spark, settings, kline_source(config, settings), symbol, day)
        context.log.info(
            f"{symbol} {day}: {result.rows_read} rows read, {result.silver_rows} in silver, "
            f"{result.quarantined} quarantined, {result.gaps} missing minutes"
        )
        meta = {"rows_read": result.rows_read, "quarantined": result.quarantined, "source": result.source}
        yield dg.MaterializeResult(asset_key=BRONZE_CANDLES_KEY, metadata=meta)
        yield dg.MaterializeResult(
            asset_key=SILVER_CANDLES_KEY,
            metadata={**meta, "silver_rows": result.silver_rows, "missing_minutes": result.gaps},
        )
        contract = validate(silver_day(spark, settings, symbol, day), silver_candles_suite())
        yield dg.AssetCheckResult(
            check_name="silver_candles_contract",
            asset_key=SILVER_CANDLES_KEY,
            passed=contract.success,
            metadata={"failed": contract.summary(), "expectations": contract.evaluated},
        )
        yield dg.AssetCheckResult(
            check_name="silver_candles_no_gaps",
            asset_key=SILVER_CANDLES_KEY,
            passed=result.gaps == 0,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"missing_minutes": result.gaps, "first_missing": ", ".join(result.missing_minutes[:20])},
        )

    return [backfill_candles]
