"""Bad candle records and the reason each must be quarantined with (shared by the silver and stream tests)."""

import json

GOOD = {
    "symbol": "FILUSDT", "interval": "1m", "open_time": 1738540800000, "close_time": 1738540859999,
    "open": 3.1, "high": 3.2, "low": 3.0, "close": 3.15, "volume": 1000.0, "quote_volume": 3100.0,
    "trades": 42, "taker_buy_volume": 500.0, "taker_buy_quote_volume": 1550.0,
    "event_time": 1738540860000, "received_at": 1738540860100, "source": "replay",
}  # fmt: skip


def variant(**changes) -> str:
    record = {**GOOD, **changes}
    return json.dumps({k: v for k, v in record.items() if v is not ...})


# (kafka key, value, expected words in the reason)
BAD_RECORDS = [
    ("FILUSDT", '{"symbol": "FILUSDT", "open": 3.1', "malformed JSON"),
    ("FILUSDT", "[1, 2, 3]", "malformed JSON"),
    ("FILUSDT", variant(open_time=1738540920000, close_time=1738540979999, close=...), "missing field: close"),
    ("FILUSDT", variant(open_time=1738540980000, close_time=1738541039999, high="high"), "wrong type: high"),
    ("FILUSDT", variant(open_time=1738541040000, close_time=1738541099999, low="NaN"), "NaN or infinite"),
    ("FILUSDT", variant(open_time=1738541100000, close_time=1738541159999, open=-3.1), "non-positive price"),
    ("FILUSDT", variant(open_time=1738541160000, close_time=1738541219999, open=0), "non-positive price"),
    ("FILUSDT", variant(open_time=1738541220000, close_time=1738541279999, high=2.9), "high < low"),
    ("FILUSDT", variant(open_time=1738541280000, close_time=1738541339999, close=3.5), "open/close outside"),
    ("FILUSDT", variant(open_time=1738541340000, close_time=1738541399999, volume=-1), "negative volume"),
    ("BAD/SYM", variant(symbol="bad/sym"), "unknown symbol"),
    ("FILUSDT", variant(open_time=1738541400001), "times not a closed 1-minute candle"),
    ("FILUSDT", variant(open_time=1738541460000, close_time=1738541519999, pad="x" * 1_000_000), "oversized record"),
]
