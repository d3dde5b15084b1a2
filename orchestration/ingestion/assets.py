"""Historical backfill: (day, symbol) partitions of bronze/silver candles, with the silver contract as checks."""

from datetime import date
from pathlib import Path

import dagster as dg
from dagster_pyspark import LazyPySparkResource

from expectations.suites import silver_candles_suite, validate
from lakehouse.settings import Settings
from orchestration.ingestion.partitions import candle_partitions
from orchestration.keys import BRONZE_CANDLES_KEY, SILVER_CANDLES_KEY
from orchestration.resources import lakehouse_session
from pipelines.ingestion.backfill import (
    BinanceArchives,
    BinanceRestKlines,
    KlineSource,
    LocalArchives,
    backfill,
    silver_days,
)


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


def build_assets(settings: Settings) -> list[dg.AssetsDefinition]:
    partitions_def = candle_partitions(settings)

    @dg.multi_asset(
        specs=[
            dg.AssetSpec(BRONZE_CANDLES_KEY, description="Raw candle records with where they came from."),
            dg.AssetSpec(SILVER_CANDLES_KEY, description="Validated candles, one per (symbol, open_time)."),
        ],
        check_specs=[
            dg.AssetCheckSpec("silver_candles_contract", asset=SILVER_CANDLES_KEY, blocking=True),
            dg.AssetCheckSpec("silver_candles_no_gaps", asset=SILVER_CANDLES_KEY),
        ],
        partitions_def=partitions_def,
        # A backfill of a date range x symbols runs as one run per range (Dagster groups the keys by one
        # dimension), one Spark session for all its partitions, instead of one run and one JVM per partition.
        backfill_policy=dg.BackfillPolicy.single_run(),
        group_name="ingestion",
    )
    def backfill_candles(context: dg.AssetExecutionContext, config: BackfillConfig, pyspark: LazyPySparkResource):
        partitions = sorted(
            (key.keys_by_dimension["symbol"], date.fromisoformat(key.keys_by_dimension["day"]))
            for key in map(partitions_def.get_partition_key_from_str, context.partition_keys)
        )
        spark = lakehouse_session(pyspark, settings)
        results = backfill(spark, settings, kline_source(config, settings), partitions)
        for r in results:
            context.log.info(
                f"{r.symbol} {r.day}: {r.rows_read} rows read, {r.silver_rows} in silver, "
                f"{r.quarantined} quarantined, {r.gaps} missing minutes"
            )
        meta = {
            "partitions": len(results),
            "rows_read": sum(r.rows_read for r in results),
            "quarantined": sum(r.quarantined for r in results),
            "source": kline_source(config, settings).name,
        }
        yield dg.MaterializeResult(asset_key=BRONZE_CANDLES_KEY, metadata=meta)
        gaps = {f"{r.day} {r.symbol}": r.missing_minutes for r in results if r.gaps}
        yield dg.MaterializeResult(
            asset_key=SILVER_CANDLES_KEY,
            metadata={
                **meta,
                "silver_rows": sum(r.silver_rows for r in results),
                "missing_minutes": sum(map(len, gaps.values())),
            },
        )
        symbols, days = sorted({s for s, _ in partitions}), sorted({d for _, d in partitions})
        contract = validate(silver_days(spark, settings, symbols, days), silver_candles_suite())
        yield dg.AssetCheckResult(
            check_name="silver_candles_contract",
            asset_key=SILVER_CANDLES_KEY,
            passed=contract.success,
            metadata={"failed": contract.summary(), "expectations": contract.evaluated},
        )
        yield dg.AssetCheckResult(
            check_name="silver_candles_no_gaps",
            asset_key=SILVER_CANDLES_KEY,
            passed=not gaps,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={
                "missing_minutes": sum(map(len, gaps.values())),
                "first_missing": "; ".join(f"{p}: {', '.join(m[:10])}" for p, m in list(gaps.items())[:10]),
            },
        )

    return [backfill_candles]
