"""The candle message: what every producer (live, replay, backfill) publishes to Kafka, as JSON.

One record per closed 1-minute candle, key = symbol (UTF-8). Fields (times in epoch milliseconds, UTC):

    symbol, interval, open_time, close_time, open, high, low, close, volume, quote_volume, trades,
    taker_buy_volume, taker_buy_quote_volume, event_time, received_at, source

`event_time` is Binance's event time (the open_time of the next candle for archive rows), `received_at` when the
producer got it, `source` one of "live", "gapfill", "replay", "archive", "rest".
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pandas as pd

from lakehouse.tables import DOUBLE_COLUMNS, PRICE_COLUMNS

# Binance kline columns, in archive/REST order (the 12th, "ignore", is dropped).
KLINE_COLUMNS = (
    "open_time", "open", "high", "low", "close", "volume", "close_time",
    "quote_volume", "trades", "taker_buy_volume", "taker_buy_quote_volume",
)  # fmt: skip
PRICE_FIELDS = PRICE_COLUMNS
FLOAT_FIELDS = DOUBLE_COLUMNS
INT_FIELDS = ("open_time", "close_time", "trades")
MESSAGE_FIELDS = (
    "symbol", "interval", *KLINE_COLUMNS, "event_time", "received_at", "source",
)  # fmt: skip


def now_ms() -> int:
    return int(time.time() * 1000)


class BadCandle(ValueError):
    """A kline row or event that is not a candle message; the message says why. Parsers raise only this."""


def from_kline_row(symbol: str, row: Sequence[Any], source: str, interval: str = "1m") -> dict[str, Any]:
    """A Binance kline row (archive CSV line or REST array: the 11 kline columns and "ignore") -> candle message."""
    if not isinstance(row, list | tuple) or len(row) != len(KLINE_COLUMNS) + 1:
        raise BadCandle(f"a kline row has {len(KLINE_COLUMNS) + 1} fields, got {_sample(row)}")
    candle: dict[str, Any] = {"symbol": symbol.upper(), "interval": interval}
    for name, value in zip(KLINE_COLUMNS, row, strict=False):
        candle[name] = _field(name, value)
    candle["event_time"] = candle["close_time"] + 1
    candle["received_at"] = now_ms()
    candle["source"] = source
    return candle


# WebSocket kline fields -> message fields.
_WS_FIELDS = {
    "t": "open_time", "o": "open", "h": "high", "l": "low", "c": "close", "v": "volume", "T": "close_time",
    "q": "quote_volume", "n": "trades", "V": "taker_buy_volume", "Q": "taker_buy_quote_volume",
}  # fmt: skip


def from_ws_kline(event: Mapping[str, Any], received_at: int | None = None) -> dict[str, Any]:
    """A Binance WebSocket kline event (`{"e": "kline", "E": ..., "s": ..., "k": {...}}`) -> candle message."""
    try:
        k = event["k"]
        candle: dict[str, Any] = {"symbol": _text(k["s"]).upper(), "interval": _text(k["i"])}
        candle |= {name: _field(name, k[key]) for key, name in _WS_FIELDS.items()}
        candle["event_time"] = _field("event_time", event["E"])
    except (KeyError, TypeError) as exc:
        raise BadCandle(f"missing or misplaced field: {exc!r}") from None
    candle["received_at"] = received_at if received_at is not None else now_ms()
    candle["source"] = "live"
    return candle


def _field(name: str, value: Any) -> int | float:
    """A kline value (JSON number or numeric text) as the message's type: integers for times and counts (within
    a long, not rounded from a fraction), finite floats for prices and volumes."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise BadCandle(f"{name} is {_sample(value)}, not a number")
    try:
        if name in INT_FIELDS or name == "event_time":
            number: int | float = int(value) if not isinstance(value, float) or value.is_integer() else math.nan
            if isinstance(number, float) or not -(2**63) <= number < 2**63:
                raise ValueError
        else:
            number = float(value)
            if not math.isfinite(number):
                raise ValueError
    except (ValueError, OverflowError):  # int("2.5"), int(inf), float("abc"), more than 4300 digits
        raise BadCandle(f"{name} is {_sample(value)}") from None
    return number


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise BadCandle(f"expected text, got {_sample(value)}")
    return value


def _sample(value: Any) -> str:
    """A bounded description of a bad value for a log line."""
    return f"{type(value).__name__} {repr(value)[:80]}"


def encode(candle: Mapping[str, Any]) -> tuple[bytes, bytes]:
    """Kafka (key, value) for a candle message."""
    return str(candle["symbol"]).encode(), json.dumps(candle, separators=(",", ":")).encode()


def from_frame(frame: pd.DataFrame, source: str) -> Iterator[dict[str, Any]]:
    """Rows of a candle DataFrame (e.g. silver: datetimes for open/close time) -> candle messages, in row order."""
    for row in frame.to_dict("records"):
        candle: dict[str, Any] = {"symbol": row["symbol"], "interval": "1m"}
        for name in KLINE_COLUMNS:
            value = row[name]
            candle[name] = int(pd.Timestamp(value).value // 1_000_000) if name.endswith("_time") else value
        candle["trades"] = int(candle["trades"])
        candle["event_time"] = candle["close_time"] + 1
        candle["received_at"] = now_ms()
        candle["source"] = source
        yield candle
