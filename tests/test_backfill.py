"""Backfill of (symbol, day) partitions into bronze/silver from local and (loopback-served) Binance archives."""

import hashlib
import http.server
import json
import shutil
import threading
import urllib.parse
import zipfile
from datetime import date
from functools import partial

import pytest

from lakehouse.delta_io import read_table
from lakehouse.spark import ensure_tables
from lakehouse.tables import BRONZE_CANDLES, SILVER_CANDLES, SILVER_QUARANTINE
from pipelines.ingestion.archives import ArchiveFile
from pipelines.ingestion.backfill import BinanceArchives, BinanceRestKlines, LocalArchives, backfill_day
from tests.conftest import SAMPLE

CRASH_DAY = date(2025, 2, 3)


def test_local_backfill_is_idempotent_and_complete(spark, settings):
    ensure_tables(spark, settings)
    source = LocalArchives(SAMPLE)
    first = backfill_day(spark, settings, source, "FILUSDT", CRASH_DAY)
    again = backfill_day(spark, settings, source, "FILUSDT", CRASH_DAY)
    assert (first.rows_read, first.silver_rows, first.quarantined, first.gaps) == (1440, 1440, 0, 0)
    assert again.silver_rows == 1440
    silver = read_table(spark, settings, SILVER_CANDLES)
    assert silver.count() == 1440
    assert silver.select("symbol", "open_time").distinct().count() == 1440
    assert read_table(spark, settings, BRONZE_CANDLES).count() == 1440


def test_bad_rows_are_quarantined_and_gaps_reported(spark, settings, tmp_path):
    ensure_tables(spark, settings)
    with zipfile.ZipFile(SAMPLE / "futures-um" / "NEARUSDT-1m-2025-02-03.zip") as z:
        lines = z.read("NEARUSDT-1m-2025-02-03.csv").decode().splitlines()
    header, rows = lines[0], lines[1:]
    fields = rows[10].split(",")
    fields[2], fields[3] = fields[3], str(float(fields[2]) + 1)  # high below low
    rows[10] = ",".join(fields)
    del rows[100:105]  # five missing minutes: 01:30 .. 01:34
    (tmp_path / "NEARUSDT-1m-2025-02-03.csv").write_text("\n".join([header, *rows]) + "\n")

    result = backfill_day(spark, settings, LocalArchives(tmp_path), "NEARUSDT", CRASH_DAY)
    assert (result.rows_read, result.silver_rows, result.quarantined) == (1435, 1434, 1)
    assert result.missing_minutes == ["00:10", "01:40", "01:41", "01:42", "01:43", "01:44"]
    (bad,) = read_table(spark, settings, SILVER_QUARANTINE).collect()
    assert "high < low" in bad.reason and bad.source == "archive:NEARUSDT-1m-2025-02-03.csv"


@pytest.fixture
def binance_archive_server(tmp_path):
    """Serves the sample like Binance's public archive host: daily zips plus .CHECKSUM files."""
    root = tmp_path / "www"
    folder = root / "data" / "futures" / "um" / "daily" / "klines" / "FILUSDT" / "1m"
    folder.mkdir(parents=True)
    for day in ("2025-02-03", "2025-02-04"):
        name = f"FILUSDT-1m-{day}.zip"
        shutil.copy(SAMPLE / "futures-um" / name, folder / name)
        digest = hashlib.sha256((folder / name).read_bytes()).hexdigest()
        checksum = digest if day == "2025-02-03" else "0" * 64  # the 4th is corrupt in transit
        (folder / f"{name}.CHECKSUM").write_text(f"{checksum}  {name}\n")
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_binance_archives_are_checksummed(spark, settings, tmp_path, binance_archive_server):
    ensure_tables(spark, settings)
    source = BinanceArchives(binance_archive_server, tmp_path / "cache", market="futures/um")
    result = backfill_day(spark, settings, source, "FILUSDT", CRASH_DAY)
    assert (result.rows_read, result.silver_rows, result.gaps) == (1440, 1440, 0)
    with pytest.raises(ValueError, match="checksum mismatch"):
        backfill_day(spark, settings, source, "FILUSDT", date(2025, 2, 4))
    # A day the archive does not have (neither daily nor monthly zip) backfills nothing and reports the gap.
    missing = backfill_day(spark, settings, source, "FILUSDT", date(2025, 3, 1))
    assert (missing.rows_read, missing.gaps) == (0, 1440)


@pytest.fixture
def binance_rest_server():
    """Serves /api/v3/klines like Binance: startTime/endTime (inclusive)/limit, 12-field arrays, at most 1000 rows."""
    rows = list(ArchiveFile.parse(SAMPLE / "futures-um" / "NEARUSDT-1m-2025-02-03.zip").rows())
    requests = []

    class Klines(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            query = {k: v[0] for k, v in urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query).items()}
            requests.append(query)
            start, end, limit = int(query["startTime"]), int(query["endTime"]), int(query["limit"])
            page = [r for r in rows if start <= int(r[0]) <= end and query["symbol"] == "NEARUSDT"][: min(limit, 1000)]
            body = json.dumps([[int(r[0]), *r[1:6], int(r[6]), r[7], int(r[8]), *r[9:12]] for r in page]).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("X-MBX-USED-WEIGHT-1M", str(2 * len(requests)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Klines)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", requests
    server.shutdown()


def test_rest_backfill_pages_through_the_day(spark, settings, binance_rest_server):
    ensure_tables(spark, settings)
    url, requests = binance_rest_server
    result = backfill_day(spark, settings, BinanceRestKlines(url), "NEARUSDT", CRASH_DAY)
    assert (result.rows_read, result.silver_rows, result.quarantined, result.gaps) == (1440, 1440, 0, 0)
    assert len(requests) == 2 and requests[0]["limit"] == "1000"  # 1000 + 440
    sources = {r.source for r in read_table(spark, settings, BRONZE_CANDLES).select("source").distinct().collect()}
    assert sources == {"rest"}


def test_silver_rows_replay_into_kafka_in_event_time_order(spark, kafka_settings):
    from datetime import datetime

    from marketlake.binance_server import read_topic
    from pipelines.detection.backtest import silver_candles
    from pipelines.ingestion.replay import replay_silver

    settings = kafka_settings
    ensure_tables(spark, settings)
    for symbol in ("FILUSDT", "NEARUSDT"):
        backfill_day(spark, settings, LocalArchives(SAMPLE), symbol, CRASH_DAY)
    frame = silver_candles(spark, settings, datetime(2025, 2, 3), datetime(2025, 2, 3, 1), 0)
    result = replay_silver(settings, frame, progress=False)
    assert result.sent == 120 and result.per_symbol == {"FILUSDT": 60, "NEARUSDT": 60}
    received = [c for part in read_topic(settings.kafka_bootstrap_servers, settings.kafka_topic).values() for c in part]
    assert len(received) == 120 and {c["source"] for c in received} == {"replay"}
    first = min(received, key=lambda c: (c["open_time"], c["symbol"]))
    assert (first["symbol"], first["open_time"], first["close_time"]) == ("FILUSDT", 1738540800000, 1738540859999)
    assert first["close"] == frame.loc[0, "close"] and isinstance(first["trades"], int)
