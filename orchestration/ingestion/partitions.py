import dagster as dg

from lakehouse.settings import Settings


def candle_partitions(settings: Settings) -> dg.MultiPartitionsDefinition:
    """One partition per (day, symbol): a backfill of a date range for several symbols is a set of these."""
    return dg.MultiPartitionsDefinition(
        {
            "day": dg.DailyPartitionsDefinition(start_date=settings.backfill_start, timezone="UTC"),
            "symbol": dg.StaticPartitionsDefinition(list(settings.symbols)),
        }
    )
