from datetime import date

import pytest

from pipelines.ingestion.archives import ArchiveError, ArchiveFile, find_archives
from tests.conftest import SAMPLE


def test_spot_zip_without_header_and_futures_zip_with_header_read_the_same_way():
    spot = list(ArchiveFile.parse(SAMPLE / "spot" / "LUNAUSDT-1m-2022-05-09.zip").candles())
    futures = list(ArchiveFile.parse(SAMPLE / "futures-um" / "FILUSDT-1m-2025-02-03.zip").candles())
    assert len(spot) == 1440 and len(futures) == 1440
    first = futures[0]
    # First real row of the FILUSDT 2025-02-03 futures archive.
    assert first["symbol"] == "FILUSDT" and first["open_time"] == 1738540800000
    assert first["close_time"] == first["open_time"] + 59_999
    assert first["low"] <= min(first["open"], first["close"]) <= max(first["open"], first["close"]) <= first["high"]
    assert spot[0]["symbol"] == "LUNAUSDT" and spot[0]["open_time"] == 1652054400000
    assert isinstance(spot[0]["trades"], int)


def test_names_give_symbol_interval_and_days(tmp_path):
    monthly = ArchiveFile.parse("x/NEARUSDT-1m-2024-02.csv")
    assert (monthly.symbol, monthly.interval, monthly.days) == (
        "NEARUSDT",
        "1m",
        (date(2024, 2, 1), date(2024, 2, 29)),
    )
    with pytest.raises(ArchiveError, match="not a Binance kline archive name"):
        ArchiveFile.parse("x/prices.csv")


def test_find_archives_lists_the_bundled_sample():
    found = find_archives(SAMPLE)
    assert {a.symbol for a in found} == {"FILUSDT", "NEARUSDT", "LUNAUSDT"}
    assert len(found) == 29
