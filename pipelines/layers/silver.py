"""bronze -> silver: parse the candle JSON, validate it, and split valid candles from quarantined records.

One implementation, in pandas, run two ways: the stream parses each micro-batch on the driver (`parse_records`: a
micro-batch is a few thousand records, for which planning the same rules as a Spark expression took longer than
the work), and the backfill on Spark's Python workers (`parse`). Nothing is dropped: a record that fails any rule
goes to silver.quarantine with every reason it failed, in words. No value can raise: every conversion falls back
to a reason. Besides the format, values must be plausible: magnitudes that keep every downstream statistic
(squares and sums of returns and volumes) finite, and times of this era (live candles: near now).
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import DateType, StringType, StructField, StructType

from lakehouse.tables import (
    BRONZE_CANDLES,
    CANDLE_SCHEMA,
    DOUBLE_COLUMNS,
    PRICE_COLUMNS,
    SILVER_CANDLES,
    SILVER_QUARANTINE,
    VOLUME_COLUMNS,
)
from pipelines.layers.bronze import MAX_RECORD_BYTES, MAX_TIMESTAMP_MS

DOUBLES = DOUBLE_COLUMNS
LONGS = ("open_time", "close_time", "trades")
REQUIRED = ("symbol", *LONGS, *DOUBLES)
OPTIONAL = ("interval", "event_time", "received_at", "source")
SYMBOL_PATTERN = re.compile(r"[A-Z0-9]{2,20}")
SOURCE_PATTERN = re.compile(r"[a-z][a-z0-9-]{0,31}")
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
# Numbers are read as JSON numbers or as numeric text (Binance sends prices as text), nothing else.
_BLANKS = " \t\n\r\f\v"
_DECIMAL_TEXT = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|[+-]?(?:inf|infinity|nan)", re.IGNORECASE)
_INTEGER_TEXT = re.compile(r"[+-]?\d+")
_LONG_RANGE = (-(2**63), 2**63 - 1)
_MAX_NUMBER_CHARS = 1000  # a number written longer than this is no candle's (and Jackson's limit too)

_CARRIED = ("value", "topic", "partition", "offset", "kafka_timestamp", "ingested_at")  # bronze's, as they are
PARSED_SCHEMA = StructType(
    [StructField(f.name, f.dataType) for f in CANDLE_SCHEMA.fields]
    + [StructField(name, StringType()) for name in ("source", "bronze_source", "key")]
    + [StructField(f.name, f.dataType) for f in BRONZE_CANDLES.schema.fields if f.name in _CARRIED]
    + [StructField("open_date", DateType()), StructField("reason", StringType())]
)


def parse(bronze: DataFrame) -> DataFrame:
    """bronze rows -> PARSED_SCHEMA rows: typed candle columns plus `reason` (null when the record is a valid
    candle), computed by `parse_records` on Spark's Python workers."""
    return bronze.mapInPandas(_parse_batches, PARSED_SCHEMA)


def _parse_batches(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    for batch in batches:
        yield parse_records(batch)


def parse_records(bronze: pd.DataFrame) -> pd.DataFrame:
    """bronze rows (pandas) -> PARSED_SCHEMA's columns (`trades` a nullable Int64, unknown times NaT)."""
    bronze = bronze.reset_index(drop=True)
    read = [_read(value) for value in bronze["value"]]
    is_object = np.array([isinstance(r, dict) for r in read], dtype=bool)
    raw = {name: [r.get(name) if isinstance(r, dict) else None for r in read] for name in (*REQUIRED, *OPTIONAL)}
    given = {name: np.array([v is not None for v in values], dtype=bool) for name, values in raw.items()}
    text = {name: np.array([_text(v) for v in raw[name]], dtype=object) for name in ("symbol", "interval", "source")}
    numbers = {name: _numbers(raw[name], _double, np.float64) for name in DOUBLES}
    numbers |= {name: _numbers(raw[name], _long, np.int64) for name in LONGS}
    value = {name: values for name, (values, _) in numbers.items()}
    known = {name: ok for name, (_, ok) in numbers.items()}

    def any_of(names: tuple[str, ...], test: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        """Whether, for any of `names` with a value, test(value) holds."""
        return np.any([known[n] & test(value[n]) for n in names], axis=0)

    prices = {n: value[n] for n in PRICE_COLUMNS}
    high_low = known["high"] & known["low"]
    lowest, highest = np.fmin(prices["open"], prices["close"]), np.fmax(prices["open"], prices["close"])
    open_ms, close_ms = value["open_time"], value["close_time"]
    ingested_ms = bronze["ingested_at"].to_numpy("datetime64[ms]").astype(np.int64)
    key = bronze["symbol"].to_numpy(object)
    source = np.where(given["source"], text["source"], bronze["source"].to_numpy(object))
    times = ("open_time", "close_time")
    wrong_type = {name: given[name] & ~known[name] for name in (*DOUBLES, *LONGS)}
    with np.errstate(invalid="ignore", over="ignore"):  # NaN compares false; int64 sums of absurd times may wrap
        rules: list[tuple[np.ndarray, str | np.ndarray]] = [
            (
                is_object & ~np.all([given[n] for n in REQUIRED], axis=0),
                _listed("missing field", {n: ~given[n] for n in REQUIRED}),
            ),
            (np.any(list(wrong_type.values()), axis=0), _listed("wrong type", wrong_type)),
            (any_of(DOUBLES, lambda v: ~np.isfinite(v)), "NaN or infinite number"),
            (any_of(PRICE_COLUMNS, lambda p: p <= 0), "non-positive price"),
            (high_low & (prices["high"] < prices["low"]), "high < low"),
            (
                high_low & (prices["high"] >= prices["low"]) & ((lowest < prices["low"]) | (highest > prices["high"])),
                "open/close outside low..high",
            ),
            (any_of((*VOLUME_COLUMNS, "trades"), lambda v: v < 0), "negative volume or trades"),
            (
                any_of(PRICE_COLUMNS, lambda p: (p > 0) & ((p < PRICE_RANGE[0]) | (p > PRICE_RANGE[1]))),
                "implausible price (outside 1e-12..1e12)",
            ),
            (any_of(VOLUME_COLUMNS, lambda v: v > MAX_VOLUME), "implausible volume (above 1e18)"),
            (known["trades"] & (value["trades"] > MAX_TRADES), "implausible trade count (above 1e9)"),
            (given["symbol"] & ~_matches(SYMBOL_PATTERN, text["symbol"]), "unknown symbol"),
            (given["symbol"] & pd.notna(key) & (key != text["symbol"]), "key != symbol"),
            (given["interval"] & (text["interval"] != "1m"), "interval is not 1m"),
            (given["source"] & ~_matches(SOURCE_PATTERN, text["source"]), "unreadable source"),
            (
                (known["open_time"] & (open_ms % MINUTE_MS != 0))
                | (known["open_time"] & known["close_time"] & (close_ms - open_ms != MINUTE_MS - 1)),
                "times not a closed 1-minute candle",
            ),
            (
                any_of(times, lambda ms: (ms < EARLIEST_MS) | (ms > ingested_ms + MAX_AHEAD_MS)),
                "time before 2009 or in the future",
            ),
            (
                np.isin(source, LIVE_SOURCES)
                & (
                    (known["open_time"] & (open_ms < ingested_ms - LIVE_MAX_AGE_MS))
                    | (known["close_time"] & (close_ms > ingested_ms + LIVE_MAX_AHEAD_MS))
                ),
                "live candle not within 8 days before its ingestion .. 5 minutes after",
            ),
        ]
    reasons = [r if isinstance(r, str) else None for r in read]
    for mask, words in rules:
        for i in np.flatnonzero(mask):
            said = words if isinstance(words, str) else words[i]
            reasons[i] = said if reasons[i] is None else f"{reasons[i]}; {said}"
    open_time = _timestamps(open_ms, known["open_time"])
    parsed = pd.DataFrame(
        {
            "symbol": text["symbol"],
            "open_time": open_time,
            "close_time": _timestamps(close_ms, known["close_time"]),
            **{n: np.where(known[n], value[n], np.nan) for n in DOUBLES},
            "trades": pd.arrays.IntegerArray(value["trades"], ~known["trades"]),
            "source": source,
            "bronze_source": bronze["source"],
            "key": key,
            **{name: bronze[name] for name in _CARRIED},
            "open_date": open_time.dt.date.astype(object).where(open_time.notna(), None),
            "reason": pd.Series(reasons, dtype=object),
        }
    )
    return parsed[PARSED_SCHEMA.fieldNames()]


def _read(value: str) -> dict[str, Any] | str:
    """A record's JSON object, or why it has none. Strict JSON: no NaN literals, no duplicate keys, no lone
    surrogates, numbers of at most _MAX_NUMBER_CHARS characters; nesting deeper than Python's stack is malformed."""
    size = len(value.encode())
    if size > MAX_RECORD_BYTES:
        return f"oversized record ({size} bytes)"
    if "\ufffd" in value:  # bronze replaced undecodable bytes by U+FFFD; a candle has no reason to carry it
        return "not valid UTF-8"
    try:
        parsed = json.loads(
            value,
            object_pairs_hook=_unique_keys,
            parse_constant=_refused,
            parse_int=functools.partial(_number, int),
            parse_float=functools.partial(_number, float),
        )
        if "\\u" in value:  # an escaped lone surrogate would not encode (nor reach Arrow or Delta)
            json.dumps(parsed, ensure_ascii=False).encode()
    except (ValueError, RecursionError):
        return "malformed JSON"
    return parsed if isinstance(parsed, dict) else "malformed JSON"


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    if len({k for k, _ in pairs}) != len(pairs):
        raise ValueError("duplicate key")
    return dict(pairs)


def _refused(constant: str) -> None:
    raise ValueError(f"{constant} is not JSON")


def _number(convert: Callable[[str], Any], written: str) -> Any:
    if len(written) > _MAX_NUMBER_CHARS:
        raise ValueError("number too long")
    return convert(written)


def _text(value: Any) -> str | None:
    """A field as text: strings as they are, other JSON values as written (null stays None)."""
    return value if isinstance(value, str) or value is None else json.dumps(value)


def _double(value: Any) -> float | None:
    """A JSON number or numeric text as a double (huge ones become infinite); None for anything else."""
    if isinstance(value, str):
        written = value.strip(_BLANKS)
        return float(written) if _DECIMAL_TEXT.fullmatch(written) else None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        return float(value)
    except OverflowError:
        return math.copysign(math.inf, value)


def _long(value: Any) -> int | None:
    """A JSON integer (or integral number, or integer text) within a long's range; None for anything else."""
    if isinstance(value, str) and _INTEGER_TEXT.fullmatch(written := value.strip(_BLANKS)):
        value = int(written)
    elif isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value if _LONG_RANGE[0] <= value <= _LONG_RANGE[1] else None


def _numbers(raw: list[Any], convert: Callable[[Any], Any], dtype: type) -> tuple[np.ndarray, np.ndarray]:
    """(values, known): the converted values (0 where unknown) and where conversion succeeded."""
    converted = [convert(v) for v in raw]
    known = np.array([c is not None for c in converted], dtype=bool)
    return np.array([0 if c is None else c for c in converted], dtype=dtype), known


def _matches(pattern: re.Pattern[str], texts: np.ndarray) -> np.ndarray:
    return np.array([isinstance(t, str) and pattern.fullmatch(t) is not None for t in texts], dtype=bool)


def _listed(label: str, hits: dict[str, np.ndarray]) -> np.ndarray:
    """Per row, "label: a, b" naming the fields whose hit is set (None where none is)."""
    table = np.column_stack(list(hits.values()))
    said = np.full(len(table), None, dtype=object)
    for i in np.flatnonzero(table.any(axis=1)):
        said[i] = f"{label}: {', '.join(n for n, hit in zip(hits, table[i], strict=True) if hit)}"
    return said


def _timestamps(ms: np.ndarray, known: np.ndarray) -> pd.Series:
    """Epoch milliseconds -> datetime64[ns], NaT where unknown or outside 1970..2200 (see bronze)."""
    ok = known & (ms >= 0) & (ms <= MAX_TIMESTAMP_MS)
    stamps = np.where(ok, ms, 0).astype("datetime64[ms]").astype("datetime64[ns]")
    stamps[~ok] = np.datetime64("NaT")
    return pd.Series(stamps)


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
