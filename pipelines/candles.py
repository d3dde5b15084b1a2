"""The candle message: what every producer (live, replay, backfill) publishes to Kafka, as JSON.

One record per closed 1-minute candle, key = symbol (UTF-8). Fields (times in epoch milliseconds, UTC):

    symbol, interval, open_time, close_time, open, high, low, close, volume, quote_volume, trades,
    taker_buy_volume, taker_buy_quote_volume, event_time, received_at, source

`event_time` is Binance's event time (the open_time of the next candle for archive rows), `received_at` when the
producer got it, `source` one of "live", "gapfill", "replay", "archive", "rest".
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pandas as pd

# Binance kline columns, in archive/REST order (the 12th, "ignore", is dropped).
KLINE_COLUMNS = (
    "open_time", "open", "high", "low", "close", "volume", "close_time",
    "quote_volume", "trades", "taker_buy_volume", "taker_buy_quote_volume",
)  # fmt: skip
PRICE_FIELDS = ("open", "high", "low", "close")
FLOAT_FIELDS = (*PRICE_FIELDS, "volume", "quote_volume", "taker_buy_volume", "taker_buy_quote_volume")
INT_FIELDS = ("open_time", "close_time", "trades")
MESSAGE_FIELDS = (
    "symbol", "interval", *KLINE_COLUMNS, "event_time", "received_at", "source",
)  # fmt: skip


def now_ms() -> int:
    return int(time.time() * 1000)


def from_kline_row(symbol: str, row: Sequence[Any], source: str, interval: str = "1m") -> dict[str, Any]:
    """A Binance kline row (archive CSV line or REST array) -> candle message."""
    candle: dict[str, Any] = {"symbol": symbol.upper(), "interval": interval}
    for name, value in zip(KLINE_COLUMNS, row, strict=False):
        candle[name] = int(value) if name in INT_FIELDS else float(value)
    candle["event_time"] = candle["close_time"] + 1
    candle["received_at"] = now_ms()
    candle["source"] = source
    return candle


def from_ws_kline(event: Mapping[str, Any], received_at: int | None = None) -> dict[str, Any]:
    """A Binance WebSocket kline event (`{"e": "kline", "E": ..., "s": ..., "k": {...}}`) -> candle message."""
    k = event["k"]
    return {
        "symbol": str(k["s"]).upper(),
        "interval": k["i"],
        "open_time": int(k["t"]),
        "open": float(k["o"]),
        "high": float(k["h"]),
        "low": float(k["l"]),
        "close": float(k["c"]),
        "volume": float(k["v"]),
        "close_time": int(k["T"]),
        "quote_volume": float(k["q"]),
        "trades": int(k["n"]),
        "taker_buy_volume": float(k["V"]),
        "taker_buy_quote_volume": float(k["Q"]),
        "event_time": int(event["E"]),
        "received_at": received_at if received_at is not None else now_ms(),
        "source": "live",
    }


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
