"""The stream on the real broker, Spark and Delta: same answers as the batch detector, exactly once, bad input
quarantined."""

import dataclasses
import shutil
from datetime import date
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import strategies as st

from lakehouse.delta_io import read_table
from lakehouse.spark import ensure_tables
from lakehouse.tables import BRONZE_CANDLES, GOLD_SCORES, SILVER_CANDLES, SILVER_QUARANTINE
from marketlake.demo import wait_for_catch_up
from pipelines.detection.maths import DetectionConfig, score
from pipelines.detection.thresholds import TrainingResult, latest_thresholds, train_thresholds
from pipelines.ingestion.archives import ArchiveFile
from pipelines.ingestion.backfill import LocalArchives, backfill_day
from pipelines.ingestion.kafka_io import make_producer, publish
from pipelines.layers.bronze import read_topic
from pipelines.layers.silver import REQUIRED
from pipelines.streaming.batch import QueryState, process_batch
from pipelines.streaming.query import start_stream
from tests.bad_records import BAD_RECORDS, examples, variant
from tests.conftest import SAMPLE, on_lake


@pytest.fixture
def settings(kafka_settings):
    """Every test here talks to Kafka: a topic of its own on the shared broker."""
    return kafka_settings


SYMBOLS = ("FILUSDT", "NEARUSDT")


# The settings but for the lake and what the tests vary (topics, alert sinks) -> a lake prepared once per run, and
# its training's result.
PREPARED: dict[str, tuple[Path, TrainingResult]] = {}
PER_TEST = ("lakehouse_root", "checkpoint_root", "kafka_topic", "alerts_")


def prepare(spark, settings) -> TrainingResult:
    """Two days of history in silver and thresholds trained on them (what backfill + training leave behind).

    A local lake gets a copy of one prepared once per run: the same Delta files, without the backfill and training
    each time (backfill and training are tested on their own)."""
    if settings.on_s3:
        return backfill_and_train(spark, settings)
    key = repr(
        {f.name: getattr(settings, f.name) for f in dataclasses.fields(settings) if not f.name.startswith(PER_TEST)}
    )
    if key not in PREPARED:
        template = Path(settings.home) / "prepared" / str(len(PREPARED))
        PREPARED[key] = template, backfill_and_train(spark, on_lake(settings, template))
    template, trained = PREPARED[key]
    shutil.copytree(template, settings.lakehouse_root)
    ensure_tables(spark, settings)  # the names now point at this test's lake
    return dataclasses.replace(trained, thresholds=trained.thresholds.copy(), rejected=trained.rejected.copy())


def backfill_and_train(spark, settings) -> TrainingResult:
    ensure_tables(spark, settings)
    for symbol in SYMBOLS:
        for day in (date(2025, 2, 1), date(2025, 2, 2)):
            backfill_day(spark, settings, LocalArchives(SAMPLE), symbol, day)
    return train_thresholds(spark, settings, trained_by="test", days=2)


def send(settings, candles=(), raw=()):
    producer = make_producer(settings)
    publish(producer, settings.kafka_topic, candles)
    send_raw(producer, settings.kafka_topic, [(key.encode(), value.encode()) for key, value in raw])
    producer.close()


def send_raw(producer, topic, records) -> set[tuple[int, int]]:
    """Records as they are (bad ones too: no key, no value, not JSON), acknowledged; their (partition, offset)."""
    acks = []

    def acked(error, message):
        acks.append((error, message.partition(), message.offset()))

    for key, value in records:
        producer.produce(topic, value, key, on_delivery=acked)
    assert producer.flush(30) == 0
    assert [error for error, _, _ in acks if error is not None] == []
    return {(partition, offset) for _, partition, offset in acks}


def crash_day(hours: int):
    candles = [
        c
        for s in SYMBOLS
        for c in ArchiveFile.parse(SAMPLE / "futures-um" / f"{s}-1m-2025-02-03.zip").candles("replay")
    ]
    return sorted(
        (c for c in candles if c["open_time"] < 1738540800000 + hours * 3_600_000), key=lambda c: c["open_time"]
    )


def test_stream_gold_equals_the_batch_detector_on_the_same_candles(spark, settings):
    trained = prepare(spark, settings)
    replayed = crash_day(hours=6)
    send(settings, replayed)
    # Several micro-batches, so that later ones take their context from the stream's memory, not from silver.
    start_stream(spark, settings, available_now=True, max_offsets_per_trigger=250).awaitTermination()

    gold = (
        read_table(spark, settings, GOLD_SCORES).toPandas().sort_values(["symbol", "open_time"]).reset_index(drop=True)
    )
    assert len(gold) == len(replayed) == 2 * 360
    assert gold[["symbol", "open_time"]].duplicated().sum() == 0
    assert (gold["thresholds_version"] == trained.version).all()
    assert gold["kafka_timestamp"].notna().all() and (gold["detected_at"] >= gold["kafka_timestamp"]).all()

    # The batch detector over silver (history + the same candles) with the same thresholds.
    silver = read_table(spark, settings, SILVER_CANDLES).toPandas()
    expected = score(
        silver.sort_values(["symbol", "open_time"]),
        latest_thresholds(spark, settings),
        DetectionConfig.from_settings(settings),
    )
    expected = expected[expected["open_time"] >= pd.Timestamp("2025-02-03")].reset_index(drop=True)
    for column in ("votes", "confidence", "is_anomaly", "flag_price", "flag_range", "flag_window", "reasons"):
        assert gold[column].tolist() == expected[column].tolist(), column
    assert (gold["z_ret"] - expected["z_ret"]).abs().max() < 1e-9
    assert (gold["confidence"] == "HIGH").any()  # the crash's first hours


def test_a_replayed_batch_and_duplicate_candles_are_not_doubled(spark, settings):
    prepare(spark, settings)
    replayed = crash_day(hours=1)
    send(settings, replayed)
    send(settings, replayed[:30])  # the same candles again, e.g. a replay overlapping live data
    records = read_topic(spark, settings).cache()
    first = process_batch(spark, settings, records, batch_id=0)
    again = process_batch(spark, settings, records, batch_id=0)  # a crash before the offsets were committed
    later = process_batch(spark, settings, records, batch_id=1)  # the same records in a later batch
    assert (first.records, first.new_candles, first.scored) == (150, 120, 120)
    assert (again.new_candles, again.scored, later.new_candles, later.scored) == (0, 0, 0, 0)
    # Bronze keeps every record received, once per batch that carried it.
    assert read_table(spark, settings, BRONZE_CANDLES).filter("source = 'kafka'").count() == 300
    assert read_table(spark, settings, GOLD_SCORES).count() == 120
    assert read_table(spark, settings, SILVER_CANDLES).filter("open_date = '2025-02-03'").count() == 120


def test_bad_records_are_quarantined_and_the_stream_keeps_going(spark, settings):
    prepare(spark, settings)
    good = crash_day(hours=1)
    send(settings, good[:60], raw=[(key, value) for key, value, _ in BAD_RECORDS])
    send(settings, good[60:])
    start_stream(spark, settings, available_now=True).awaitTermination()
    quarantine = read_table(spark, settings, SILVER_QUARANTINE).toPandas()
    assert len(quarantine) == len(BAD_RECORDS)
    for _, value, words in BAD_RECORDS:
        (row,) = quarantine[quarantine["value"] == value].itertuples()
        assert words in row.reason and row.topic == settings.kafka_topic and row.offset >= 0
    assert read_table(spark, settings, GOLD_SCORES).count() == len(good)


def test_a_recalibration_applies_from_the_next_batch_without_a_restart(spark, settings):
    first = prepare(spark, settings)
    replayed = crash_day(hours=1)
    send(settings, replayed[:60])
    batch0 = process_batch(spark, settings, read_topic(spark, settings), batch_id=0)
    second = train_thresholds(spark, settings, trained_by="recalibration", days=2)
    send(settings, replayed[60:])
    batch1 = process_batch(spark, settings, read_topic(spark, settings), batch_id=1)
    assert (first.version, second.version) == (1, 2)
    assert (batch0.scored, batch0.thresholds_versions) == (60, (1,))
    assert (batch1.scored, batch1.thresholds_versions) == (60, (2,))


def test_silver_written_by_someone_else_between_batches_is_seen(spark, settings):
    prepare(spark, settings)
    replayed = crash_day(hours=1)
    state = QueryState(settings)  # one query's memory across its batches
    send(settings, replayed[:40])
    first = process_batch(spark, settings, read_topic(spark, settings), 0, state=state)
    for symbol in SYMBOLS:  # a backfill of the whole day commits to silver while the stream runs
        backfill_day(spark, settings, LocalArchives(SAMPLE), symbol, date(2025, 2, 3))
    send(settings, replayed[40:])
    second = process_batch(spark, settings, read_topic(spark, settings), 1, state=state)
    assert (first.new_candles, first.scored) == (40, 40)
    assert (second.new_candles, second.scored) == (0, 80)  # already in silver, not yet in gold
    silver = read_table(spark, settings, SILVER_CANDLES).filter("open_date = '2025-02-03'").toPandas()
    assert len(silver) == 2 * 1440 and not silver[["symbol", "open_time"]].duplicated().any()
    gold = read_table(spark, settings, GOLD_SCORES).toPandas()
    assert len(gold) == 120 and not gold[["symbol", "open_time"]].duplicated().any()


def poison_records() -> list[tuple[bytes | None, bytes | None]]:
    """A few hundred records that are certainly not candles, as a broken or hostile producer could send them."""
    odd = ["yesterday", [1, 2], {"a": 1}, None, True, "NaN", "", 1.5e30, -1e308, 1.7e308, 2**64]
    records = [(b"FILUSDT", variant(**{name: value}).encode()) for name in REQUIRED for value in odd]
    records += [(key.encode(), value.encode()) for key, value, _ in BAD_RECORDS]
    records += [(b"FILUSDT", b"\xff" + garbage) for garbage in examples(st.binary(max_size=100), 50)]  # not UTF-8
    records += [(b"FILUSDT", None), (None, b""), (b"FILUSDT", b"{" * 900_000), (b"\xff\xfe", variant().encode())]
    return records


def test_no_record_stops_the_stream(spark, settings):
    """Poison pills between good candles through the real broker: the query keeps running, silver holds exactly
    the good candles once, quarantine holds every bad record at its Kafka coordinates."""
    ensure_tables(spark, settings)
    good, bad = crash_day(hours=1), poison_records()
    producer = make_producer(settings)
    sent_bad = set()
    for part in range(4):
        publish(producer, settings.kafka_topic, good[part::4])
        sent_bad |= send_raw(producer, settings.kafka_topic, bad[part::4])
    producer.close()

    batches = []
    query = start_stream(spark, settings, on_batch=batches.append, max_offsets_per_trigger=150)
    try:
        wait_for_catch_up(settings, timeout_s=600)
        assert query.isActive and query.exception() is None
    finally:
        query.stop()

    assert len(bad) > 200 and len(batches) > 1
    assert sum(b.data_failures for b in batches) == 0  # bronze and silver handled every record themselves
    silver = read_table(spark, settings, SILVER_CANDLES).toPandas()
    keys = [(r.symbol, int(r.open_time.timestamp() * 1000)) for r in silver.itertuples()]
    assert sorted(keys) == sorted((c["symbol"], c["open_time"]) for c in good)
    quarantine = read_table(spark, settings, SILVER_QUARANTINE).toPandas()
    assert set(zip(quarantine["partition"], quarantine["offset"], strict=True)) == sent_bad
    assert len(quarantine) == len(sent_bad) and quarantine["reason"].str.len().gt(0).all()
    assert (quarantine["topic"] == settings.kafka_topic).all()
    assert read_table(spark, settings, GOLD_SCORES).count() == len(good)
