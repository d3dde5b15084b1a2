"""Fuzzed input at the producers' entry points (WebSocket frames, REST rows, archive files): never an exception,
every input either a well-formed candle message or a counted rejection with a reason."""

from __future__ import annotations

import copy
import hashlib
import io
import json
import math
import tempfile
import threading
import zipfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lakehouse.settings import Settings
from marketlake.binance_server import kline_event, rest_row, sample_rows
from pipelines.ingestion.archives import ArchiveError, ArchiveFile, read_frame
from pipelines.ingestion.backfill import check_archive
from pipelines.ingestion.binance_rest import BinanceRestError, next_cursor
from pipelines.ingestion.candles import MESSAGE_FIELDS, BadCandle, encode, from_kline_row, now_ms
from pipelines.ingestion.live import LiveProducer, MalformedMessage, parse_message
from tests.bad_records import json_values, odd_values
from tests.conftest import SAMPLE

ROWS = sample_rows(("FILUSDT",), minutes=3)["FILUSDT"]
EVENT = kline_event("FILUSDT", ROWS[0], 1.0)
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def utf8(text: str) -> bytes:
    """Text as a file would hold it; lone surrogates (which Hypothesis draws) become the invalid bytes they are."""
    return text.encode("utf-8", "surrogatepass")


def assert_candle(candle: dict) -> None:
    """A well-formed message: every field, times and counts as longs, prices and volumes as finite floats."""
    assert set(MESSAGE_FIELDS) <= set(candle)
    for name in ("open_time", "close_time", "trades", "event_time", "received_at"):
        assert type(candle[name]) is int and -(2**63) <= candle[name] < 2**63, name
    for name in ("open", "high", "low", "close", "volume", "quote_volume", "taker_buy_volume"):
        assert type(candle[name]) is float and math.isfinite(candle[name]), name
    json.loads(encode(candle)[1])  # strict JSON: no NaN or Infinity


@st.composite
def mutated_events(draw) -> str:
    """A real closed kline event with one field replaced by an arbitrary value, or removed."""
    event = copy.deepcopy(EVENT)
    where = draw(st.sampled_from([event, event["data"], event["data"]["k"]]))
    key = draw(st.sampled_from(sorted(where)))
    if draw(st.booleans()):
        del where[key]
    else:
        where[key] = draw(odd_values)
    return json.dumps(event)


frames = st.one_of(
    st.binary(max_size=200), st.text(max_size=200), json_values.map(json.dumps), mutated_events()
)  # fmt: skip


@FUZZ
@given(frames)
def test_any_websocket_frame_is_a_candle_or_malformed(raw):
    try:
        event = parse_message(raw, "1m", received_at=now_ms())
    except MalformedMessage as exc:
        assert str(exc)
        return
    if event is not None:
        assert_candle(event.candle)


def test_frames_nested_deeper_than_pythons_stack_are_malformed():
    for raw in ("[" * 100_000, '{"a":' * 100_000):
        with pytest.raises(MalformedMessage):
            parse_message(raw, "1m", received_at=now_ms())


@st.composite
def mutated_rest_rows(draw) -> list:
    row = rest_row(ROWS[0], 1.0)
    index = draw(st.integers(0, len(row)))
    if index == len(row):
        return [*row, draw(odd_values)]  # an extra column
    row[index] = draw(odd_values)
    return row


rest_rows = st.one_of(json_values, st.lists(json_values, max_size=14), mutated_rest_rows())


@FUZZ
@given(rest_rows)
def test_any_rest_row_is_a_candle_or_rejected(row):
    try:
        candle = from_kline_row("FILUSDT", row, "gapfill")
    except BadCandle as exc:
        assert str(exc)
        return
    assert_candle(candle)


def producer_for(rows: list) -> tuple[LiveProducer, list[dict]]:
    """A live producer whose REST answers `rows` and whose Kafka sends are recorded."""
    sent: list[dict] = []

    class Rest:
        def klines(self, symbol, interval, start, end):
            yield from rows

    live = LiveProducer(Settings.from_env(env={}, symbols=("FILUSDT",)), None, Rest(), threading.Event())
    live._send = sent.extend
    return live, sent


def test_bad_frames_and_rest_rows_are_counted_and_skipped_and_the_producer_goes_on():
    live, sent = producer_for([rest_row(ROWS[0], 1.0), ["garbage"], {"a": 1}, rest_row(ROWS[1], 1.0)])
    garbage = [b"\xff\xfe", "[" * 100_000, "not json", json.dumps({"data": {"e": "kline", "k": {"t": math.inf}}})]
    for frame in garbage:
        live.handle(frame)
    assert live.stats.malformed == len(garbage)
    live.next_open["FILUSDT"] = int(ROWS[0][0])
    live.fill_gap("FILUSDT", int(ROWS[0][0]), int(ROWS[2][0]))
    assert [c["open_time"] for c in sent] == [int(ROWS[0][0]), int(ROWS[1][0])]
    assert (live.stats.rejected, live.stats.gap_filled, live.stats.unfilled) == (2, 2, 0)


def test_rest_pages_past_a_garbage_or_backwards_last_row_are_refused():
    assert next_cursor([[1000, "1"]], 500) == 1001
    for page in ([["soon"]], [{"t": 1}], [[]], [[400]]):
        with pytest.raises(BinanceRestError, match="cannot page"):
            next_cursor(page, 500)


# -- archives ---------------------------------------------------------------------------------------------------

GOOD_LINE = ",".join(ROWS[0])
lines = st.one_of(
    st.text(max_size=120).map(utf8),
    st.lists(st.text(st.characters(blacklist_characters=","), max_size=20), max_size=14).map(",".join).map(utf8),
    st.binary(max_size=60),  # not UTF-8
    st.just(GOOD_LINE.encode()),
).map(lambda line: line.replace(b"\n", b""))


@settings(max_examples=100, deadline=None)
@given(st.lists(lines, max_size=30))
def test_any_archive_bytes_give_candles_and_reasons_never_an_exception(content):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "FILUSDT-1m-2025-02-03.csv"
        path.write_bytes(b"\n".join(content))
        rejected: list[str] = []
        candles = list(ArchiveFile.parse(path).candles(rejected=rejected))
    for candle in candles:
        assert_candle(candle)
    data_lines = [line for line in content if line.rstrip(b"\r") and not line.startswith(b"open_time")]
    assert len(candles) + len(rejected) == len(data_lines)


SAMPLE_CSV = SAMPLE / "futures-um" / "FILUSDT-1m-2025-02-03.zip"


def write_zip(path: Path, text: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(path.stem + ".csv", text)
    path.write_bytes(buffer.getvalue())
    return buffer.getvalue()


def test_a_truncated_or_corrupted_zip_is_an_archive_error_and_its_readable_rows_are_kept(tmp_path):
    payload = SAMPLE_CSV.read_bytes()
    truncated = tmp_path / "FILUSDT-1m-2025-02-03.zip"
    truncated.write_bytes(payload[: len(payload) // 2])
    with pytest.raises(ArchiveError, match="unreadable"):
        list(ArchiveFile.parse(truncated).rows())
    rejected: list[str] = []
    assert list(ArchiveFile.parse(truncated).candles(rejected=rejected)) == [] and "unreadable" in rejected[0]

    corrupted = tmp_path / "NEARUSDT-1m-2025-02-03.zip"
    data = bytearray(write_zip(corrupted, "\n".join([GOOD_LINE] * 2000)))
    data[len(data) // 2] ^= 0xFF  # one flipped bit in the compressed stream
    corrupted.write_bytes(bytes(data))
    rejected = []
    candles = list(ArchiveFile.parse(corrupted).candles(rejected=rejected))
    assert len(candles) < 2000 and len(rejected) == 1 and "unreadable" in rejected[0]


def test_a_wrong_checksum_or_a_bad_crc_is_refused_before_anything_is_cached():
    payload = SAMPLE_CSV.read_bytes()
    check_archive("u", payload, hashlib.sha256(payload).hexdigest().upper())
    with pytest.raises(ArchiveError, match="checksum mismatch"):
        check_archive("u", payload, "0" * 64)
    with pytest.raises(ArchiveError, match="checksum mismatch"):
        check_archive("u", payload, "(empty)")
    broken = bytearray(payload)
    broken[len(broken) // 2] ^= 0xFF
    with pytest.raises(ArchiveError):
        check_archive("u", bytes(broken), hashlib.sha256(bytes(broken)).hexdigest())


def test_extra_columns_a_header_in_the_middle_and_microsecond_times(tmp_path):
    header = "open_time,open,high,low,close,volume,close_time,quote_volume,count,taker_buy_volume,x,ignore"
    micro = ROWS[1].copy()
    micro[0], micro[6] = micro[0] + "000", micro[6] + "999"  # spot archives from 2025 on
    text = "\n".join([header, GOOD_LINE, GOOD_LINE + ",extra", header, ",".join(micro), "1,2\xff,3", ""])
    path = tmp_path / "FILUSDT-1m-2025-02-03.zip"
    write_zip(path, text)
    rejected: list[str] = []
    candles = list(ArchiveFile.parse(path).candles(rejected=rejected))
    assert [(c["open_time"], c["close_time"]) for c in candles] == [
        (int(ROWS[0][0]), int(ROWS[0][6])),
        (int(ROWS[1][0]), int(ROWS[1][6])),
    ]
    assert len(rejected) == 2 and "row 2: a kline row has 12 fields, got list" in rejected[0]
    frame = read_frame([path])  # the backtest's reader skips the same rows
    assert frame["open_time"].astype("int64").tolist() == [int(ROWS[0][0]) * 10**6, int(ROWS[1][0]) * 10**6]
