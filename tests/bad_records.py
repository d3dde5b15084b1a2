"""Bad candle records and the reason each must be quarantined with (shared by the silver and stream tests)."""

import json
from datetime import datetime

from hypothesis import Phase, given, settings
from hypothesis import strategies as st

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
    # Values that used to stop the stream (an ANSI cast failing in bronze) or reach silver.
    ("FILUSDT", variant(open_time="yesterday"), "wrong type: open_time"),
    ("FILUSDT", variant(open_time=[1, 2]), "wrong type: open_time"),
    ("FILUSDT", variant(open_time=1.5e30), "wrong type: open_time"),
    ("FILUSDT", variant(open_time=2**63 - 1), "times not a closed 1-minute candle"),
    ("FILUSDT", variant(open_time=-(2**63), close_time=2**63 - 1), "time before 2009 or in the future"),
    ("FILUSDT", variant(open_time=0, close_time=59_999), "time before 2009"),
    ("FILUSDT", variant(open_time=4102444800000, close_time=4102444859999), "in the future"),
    ("FILUSDT", variant(source="live"), "live candle not within"),
    ("FILUSDT", variant(source="x" * 100), "unreadable source"),
    ("FILUSDT", variant(volume=1.7e308), "implausible volume"),
    ("FILUSDT", variant(quote_volume=1e300), "implausible volume"),
    ("FILUSDT", variant(high=1e13, close=1e13), "implausible price"),
    ("FILUSDT", variant(low=1e-13, open=1e-13), "implausible price"),
    ("FILUSDT", variant(trades=10**10), "implausible trade count"),
    ("FILUSDT", variant(trades=10**30), "wrong type: trades"),
    ("FILUSDT", variant(taker_buy_volume=-5), "negative volume"),
    ("FILUSDT", variant(open={"nested": [1, 2]}), "wrong type: open"),
    ("FILUSDT", variant(low="1e400"), "NaN or infinite"),
    ("FILUSDT", '{"open_time": 1, "open_time": 2}', "malformed JSON"),
    ("FILUSDT", '{"a": ' * 3000 + "1" + "}" * 3000, "malformed JSON"),
    ("FILUSDT", '{"open_time": 1' + "0" * 5000 + "}", "malformed JSON"),  # over Jackson's number limit
    ("FILUSDT", "null", "malformed JSON"),
    ("FILUSDT", "", "malformed JSON"),
]


def kafka_rows(spark, records):
    """Static rows with the Kafka source schema: (key bytes, value bytes) as a producer could have sent them."""
    now = datetime(2026, 1, 1)
    rows = [(key, value, "t", 0, offset, now, 0) for offset, (key, value) in enumerate(records)]
    schema = "key binary, value binary, topic string, partition int, offset long, timestamp timestamp"
    return spark.createDataFrame(rows, schema + ", timestampType int")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=10,
)
# Odd numbers and numeric text: what a broken or hostile producer could put in a numeric field.
odd_values = json_values | st.sampled_from(
    ["yesterday", "", "NaN", "Infinity", "1e400", "-0", "1.5e30", 1.5e30, 1.7e308, -(2**63) - 1, 2**63, 2**200, 3.5]
)


@st.composite
def mutated_candles(draw) -> str:
    """GOOD with one field replaced by an arbitrary value, or removed."""
    name = draw(st.sampled_from(sorted(GOOD)))
    return variant(**{name: ... if draw(st.booleans()) else draw(odd_values)})


kafka_values = st.one_of(
    st.none(),
    st.binary(max_size=200),
    st.text(max_size=200).map(str.encode),
    json_values.map(json.dumps).map(str.encode),
    mutated_candles().map(str.encode),
    st.just(variant().encode()),
)
kafka_records = st.tuples(st.none() | st.just(b"FILUSDT") | st.binary(max_size=12), kafka_values)


def examples(strategy, count: int) -> list:
    """Up to `count` examples drawn by hypothesis, to be checked together (one Spark job instead of one each)."""
    drawn = []

    @settings(max_examples=count, database=None, deadline=None, phases=[Phase.generate])
    @given(strategy)
    def draw(example):
        drawn.append(example)

    draw()
    return drawn
