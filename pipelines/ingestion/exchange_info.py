"""Binance's `GET /api/v3/exchangeInfo`, read as data: which symbols trade, and the REST weight budget.

Only the fields the producer needs are read: `symbols[].symbol/status/quoteAsset`, `rateLimits` and `serverTime`.
Anything else in the document is ignored, and a document without them is an error, not an empty market.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

EXCHANGE_INFO_PATH = "/api/v3/exchangeInfo"
EXCHANGE_INFO_WEIGHT = 20  # what Binance charges for the whole document
ALL_QUOTES = "*"
_INTERVAL_S = {"SECOND": 1, "MINUTE": 60, "HOUR": 3600, "DAY": 86400}


class ExchangeInfoError(ValueError):
    pass


@dataclass(frozen=True)
class WeightLimit:
    """The IP's REQUEST_WEIGHT budget: `limit` per window; `header` reports the weight used in the window."""

    limit: int = 6000
    window_s: float = 60.0
    header: str = "X-MBX-USED-WEIGHT-1M"


def trading_symbols(info: Any, quote: str) -> tuple[str, ...]:
    """The symbols with status TRADING whose quote asset is `quote` (ALL_QUOTES: every quote), sorted."""
    symbols = info.get("symbols") if isinstance(info, Mapping) else None
    if not isinstance(symbols, list):
        raise ExchangeInfoError("exchangeInfo has no symbols list")
    out = set()
    for entry in symbols:
        if not isinstance(entry, Mapping) or not isinstance(entry.get("symbol"), str):
            raise ExchangeInfoError(f"exchangeInfo symbol entry without a symbol: {str(entry)[:100]}")
        if entry.get("status") == "TRADING" and (quote == ALL_QUOTES or entry.get("quoteAsset") == quote.upper()):
            out.add(entry["symbol"].upper())
    return tuple(sorted(out))


def request_weight(info: Any) -> WeightLimit:
    """The REQUEST_WEIGHT entry of rateLimits; its header name is Binance's `X-MBX-USED-WEIGHT-<n><unit letter>`."""
    for entry in info.get("rateLimits", []) if isinstance(info, Mapping) else []:
        if isinstance(entry, Mapping) and entry.get("rateLimitType") == "REQUEST_WEIGHT":
            try:
                interval, number, limit = entry["interval"], int(entry["intervalNum"]), int(entry["limit"])
                window_s = _INTERVAL_S[interval] * number
            except (KeyError, TypeError, ValueError):
                raise ExchangeInfoError(f"unreadable REQUEST_WEIGHT rate limit: {entry}") from None
            return WeightLimit(limit, float(window_s), f"X-MBX-USED-WEIGHT-{number}{interval[0]}")
    return WeightLimit()


def server_time_ms(info: Any) -> int:
    value = info.get("serverTime") if isinstance(info, Mapping) else None
    if not isinstance(value, int) or isinstance(value, bool):
        raise ExchangeInfoError(f"exchangeInfo serverTime is {value!r}")
    return value
