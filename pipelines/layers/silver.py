"""bronze -> silver: parse the candle JSON, validate it, and split valid candles from quarantined records.

Used by the stream and by the backfill alike. Nothing is dropped: a record that fails any rule goes to
silver.quarantine with every reason it failed, in words. Every expression is total (try-casts, try-arithmetic,
guarded timestamps): no value can make the query fail. Besides the format, values must be plausible: magnitudes
that keep every downstream statistic (squares and sums of returns and volumes) finite, and times of this era
(live candles: near now).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import StringType, StructField, StructType

from lakehouse.tables import (
    CANDLE_COLUMNS,
    DOUBLE_COLUMNS,
    PRICE_COLUMNS,
    SILVER_CANDLES,
    SILVER_QUARANTINE,
    VOLUME_COLUMNS,
)
from pipelines.layers.bronze import MAX_RECORD_BYTES, timestamp_or_null

DOUBLES = DOUBLE_COLUMNS
LONGS = ("open_time", "close_time", "trades")
REQUIRED = ("symbol", *LONGS, *DOUBLES)
OPTIONAL = ("interval", "event_time", "received_at", "source")
# Every field is read as text first, so a wrong type is reported as such instead of silently becoming null.
_AS_TEXT = StructType([StructField(name, StringType()) for name in (*REQUIRED, *OPTIONAL)])
SYMBOL_PATTERN = r"^[A-Z0-9]{2,20}$"
SOURCE_PATTERN = r"^[a-z][a-z0-9-]{0,31}$"
# Plausible magnitudes. Prices from 1e-12 (sub-satoshi quotes) to 1e12 (BTC in IDR is ~1e9) keep returns and
# ranges below 1e24; volumes (base or quote, one minute) up to 1e18 keep their squares and sums far from the
# double's 1.8e308. Anything outside is a corrupted record, not a market.
PRICE_RANGE = (1e-12, 1e12)
MAX_VOLUME = 1e18
MAX_TRADES = 1_000_000_000
EARLIEST_MS = 1_230_940_800_000  # 2009-01-03, Bitcoin's first block: no crypto candle is older
LIVE_SOURCES = ("live", "gapfill")
# Times are judged against the record's ingestion time (bronze's ingested_at, this machine's clock). A live candle
# is at most 8 days old (Kafka's default retention is 7) and closes at most 5 minutes ahead (the producer's clock
# may run ahead); no candle closes more than a day ahead.
MINUTE_MS, DAY_MS = 60_000, 86_400_000
LIVE_MAX_AGE_MS, LIVE_MAX_AHEAD_MS, MAX_AHEAD_MS = 8 * DAY_MS, 5 * MINUTE_MS, DAY_MS


def parse(bronze: DataFrame) -> DataFrame:
    """bronze rows -> typed candle columns plus `reason` (null when the record is a valid candle)."""
    text, typed, columns = _parse_columns()
    return bronze.select("*", text).select("*", *typed).select(*columns)


@functools.cache
def _parse_columns() -> tuple[Column, list[Column], list[Column | str]]:
    """The parsing expressions, built once: building them is thousands of calls into the JVM (~1 s), which every
    micro-batch of the stream would pay again. They refer to columns by name only, so any bronze frame can use them.
    """
    small = F.octet_length("value") <= MAX_RECORD_BYTES
    # bronze replaced undecodable bytes by U+FFFD; a candle has no reason to carry that character.
    utf8 = F.instr("value", "\ufffd") == 0
    is_object = small & utf8 & F.expr("try_parse_json(value)").isNotNull() & F.col("value").rlike(r"^\s*\{")
    text = F.when(is_object, F.from_json("value", _AS_TEXT)).alias("j")

    # Each value is cast once, in a projection of its own: the rules refer to it many times, and Spark does not
    # inline a cast referenced more than once (each reference would parse the text again).
    casts = {name: F.col(f"j.{name}").try_cast("double") for name in DOUBLES}
    casts |= {name: F.col(f"j.{name}").try_cast("long") for name in LONGS}
    typed = {name: F.col(f"_{name}") for name in casts}
    typed["symbol"] = F.col("j.symbol")

    def missing(name: str) -> Column:
        return F.col(f"j.{name}").isNull()

    def wrong_type(name: str) -> Column:
        return ~missing(name) & typed[name].isNull()

    price = [typed[c] for c in PRICE_COLUMNS]
    volumes = [typed[c] for c in VOLUME_COLUMNS]
    open_ms, close_ms = typed["open_time"], typed["close_time"]
    # A column, not current_timestamp(): comparing with it costs no more than the other rules (measured).
    ingested_ms = F.unix_millis("ingested_at")
    source = F.coalesce(F.col("j.source"), F.col("source"))
    live = source.isin(*LIVE_SOURCES)
    rules: list[tuple[Column, Column | str]] = [
        (~small, F.format_string("oversized record (%d bytes)", F.octet_length("value"))),
        (small & ~utf8, "not valid UTF-8"),
        (small & utf8 & ~is_object, "malformed JSON"),
        (is_object & _any(missing(n) for n in REQUIRED), _names("missing field", REQUIRED, missing)),
        (_any(wrong_type(n) for n in (*DOUBLES, *LONGS)), _names("wrong type", (*DOUBLES, *LONGS), wrong_type)),
        (_any(F.isnan(typed[n]) | F.abs(typed[n]).isin(float("inf")) for n in DOUBLES), "NaN or infinite number"),
        (_any(p <= 0 for p in price), "non-positive price"),
        (typed["high"] < typed["low"], "high < low"),
        (
            (typed["high"] >= typed["low"])
            & (
                (F.least(typed["open"], typed["close"]) < typed["low"])
                | (F.greatest(typed["open"], typed["close"]) > typed["high"])
            ),
            "open/close outside low..high",
        ),
        (_any(n < 0 for n in (*volumes, typed["trades"])), "negative volume or trades"),
        (_any((p > 0) & ~p.between(*PRICE_RANGE) for p in price), "implausible price (outside 1e-12..1e12)"),
        (_any(v > MAX_VOLUME for v in volumes), "implausible volume (above 1e18)"),
        (typed["trades"] > MAX_TRADES, "implausible trade count (above 1e9)"),
        (~missing("symbol") & ~typed["symbol"].rlike(SYMBOL_PATTERN), "unknown symbol"),
        (F.col("symbol").isNotNull() & ~missing("symbol") & (F.col("symbol") != typed["symbol"]), "key != symbol"),
        (F.col("j.interval").isNotNull() & (F.col("j.interval") != "1m"), "interval is not 1m"),
        (~missing("source") & ~F.col("j.source").rlike(SOURCE_PATTERN), "unreadable source"),
        (
            (open_ms % MINUTE_MS != 0) | (close_ms != F.try_add(open_ms, F.lit(MINUTE_MS - 1))),
            "times not a closed 1-minute candle",
        ),
        ((open_ms < EARLIEST_MS) | (close_ms > ingested_ms + MAX_AHEAD_MS), "time before 2009 or in the future"),
        (
            live & ((open_ms < ingested_ms - LIVE_MAX_AGE_MS) | (close_ms > ingested_ms + LIVE_MAX_AHEAD_MS)),
            "live candle not within 8 days before its ingestion .. 5 minutes after",
        ),
    ]
    reason = F.concat_ws("; ", *[F.when(cond, r if isinstance(r, Column) else F.lit(r)) for cond, r in rules])

    ts = timestamp_or_null
    return (
        text,
        [cast.alias(f"_{name}") for name, cast in casts.items()],
        [
            *[(ts(typed[n]) if n.endswith("_time") else typed[n]).alias(n) for n in CANDLE_COLUMNS],
            source.alias("source"),
            F.col("source").alias("bronze_source"),
            F.col("symbol").alias("key"),
            "value",
            "topic",
            "partition",
            "offset",
            "kafka_timestamp",
            "ingested_at",
            F.to_date(ts(typed["open_time"])).alias("open_date"),
            F.when(reason != "", reason).alias("reason"),
        ],
    )


def valid_candles(parsed: DataFrame) -> DataFrame:
    return parsed.filter(F.col("reason").isNull()).select(*SILVER_CANDLES.columns)


def quarantined(parsed: DataFrame) -> DataFrame:
    return (
        parsed.filter(F.col("reason").isNotNull())
        .select(
            F.col("bronze_source").alias("source"),
            F.coalesce("symbol", "key").alias("symbol"),
            "open_time",
            "value",
            "reason",
            "topic",
            "partition",
            "offset",
            F.current_timestamp().alias("quarantined_at"),
        )
        .select(*SILVER_QUARANTINE.columns)
    )


def _any(conditions: Iterable[Column]) -> Column:
    result = F.lit(False)
    for condition in conditions:
        result = result | F.coalesce(condition, F.lit(False))
    return result


def _names(label: str, names: tuple[str, ...], test: Callable[[str], Column]) -> Column:
    listed = F.concat_ws(", ", *[F.when(test(n), F.lit(n)) for n in names])
    return F.concat(F.lit(f"{label}: "), listed)
