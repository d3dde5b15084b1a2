"""A micro-batch that fails: on its data it is retried once, then its records are quarantined; on infrastructure
the failure is raised so the query restarts from its checkpoint."""

import pytest
from pyspark.sql import functions as F

from lakehouse.delta_io import read_table
from lakehouse.spark import ensure_tables
from lakehouse.tables import BRONZE_CANDLES, SILVER_QUARANTINE
from pipelines.streaming.batch import BatchResult, QueryState, run_batch
from pipelines.streaming.failures import FailureKind, failure_kind
from tests.bad_records import kafka_rows, variant


def raised(error: BaseException, cause: BaseException | None = None) -> BaseException:
    try:
        try:
            if cause:
                raise cause
        except BaseException as inner:
            raise error from inner
        raise error
    except BaseException as caught:
        return caught


DATA = [
    ValueError("could not convert string to float: 'abc'"),
    TypeError("unsupported operand"),
    OverflowError("int too large to convert"),
    ZeroDivisionError("division by zero"),
    KeyError("close"),
    UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"),
    RuntimeError("[CAST_INVALID_INPUT] The value 'yesterday' of the type \"STRING\" cannot be cast. SQLSTATE: 22018"),
    RuntimeError("[ARITHMETIC_OVERFLOW] long overflow. SQLSTATE: 22003"),
    raised(RuntimeError("batch failed"), ValueError("bad value")),
    ValueError("could not convert 'java.io.IOException: Connection refused' to float"),  # a record's text
]
INFRASTRUCTURE = [
    ConnectionRefusedError("[Errno 111] Connection refused"),
    OSError(28, "No space left on device"),
    TimeoutError("timed out"),
    MemoryError(),
    RuntimeError("org.apache.kafka.common.errors.TimeoutException: Timeout of 60000ms expired"),
    RuntimeError("io.delta.exceptions.ConcurrentAppendException: Files were added to partition [ingest_date=...]"),
    RuntimeError("java.io.IOException: Stream closed"),
    RuntimeError("Cannot call methods on a stopped SparkContext. SparkContext was shut down"),
    RuntimeError("something nobody has seen before"),  # unknown: stop rather than skip
    raised(ValueError("while writing"), ConnectionResetError("reset by peer")),  # the cause is infrastructure
]


@pytest.mark.parametrize("error", DATA, ids=repr)
def test_errors_a_value_can_cause_are_data_failures(error):
    assert failure_kind(error) is FailureKind.DATA


@pytest.mark.parametrize("error", INFRASTRUCTURE, ids=repr)
def test_errors_of_the_environment_and_unknown_errors_are_infrastructure(error):
    assert failure_kind(error) is FailureKind.INFRASTRUCTURE


def test_a_real_spark_cast_error_is_a_data_failure(spark):
    frame = spark.createDataFrame([("yesterday",)], "v string")
    with pytest.raises(Exception) as caught:
        frame.select(F.col("v").cast("long")).collect()
    assert failure_kind(caught.value) is FailureKind.DATA


class Flaky:
    """A batch body that raises the given errors in turn, then succeeds."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors, self.calls = list(errors), 0

    def __call__(self, spark, settings, records, batch_id, app_id, state) -> BatchResult:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return BatchResult(batch_id, records.count(), 0, 0, 0, 0, ())


RECORDS = [(b"FILUSDT", variant().encode()), (b"FILUSDT", b"\xff garbage"), (None, None)]


def test_a_data_failure_is_retried_once(spark, settings):
    body = Flaky(ValueError("boom"))
    state = QueryState(settings)
    result = run_batch(spark, settings, kafka_rows(spark, RECORDS), 7, "app", state, process=body)
    assert (body.calls, result.records, result.data_failures, result.isolated) == (2, 3, 1, 0)


def test_a_batch_failing_twice_on_its_data_is_quarantined_record_by_record_and_once(spark, settings):
    ensure_tables(spark, settings)
    state = QueryState(settings)
    records = kafka_rows(spark, RECORDS)
    body = Flaky(ValueError("boom"), ValueError("boom again"))
    result = run_batch(spark, settings, records, 7, "app", state, process=body)
    assert (body.calls, result.records, result.quarantined, result.isolated, result.data_failures) == (2, 3, 3, 3, 2)
    again = Flaky(ValueError("boom"), ValueError("boom again"))  # the same batch after a crash: written once
    run_batch(spark, settings, records, 7, "app", state, process=again)
    quarantine = read_table(spark, settings, SILVER_QUARANTINE).toPandas().sort_values("offset")
    assert quarantine["offset"].tolist() == [0, 1, 2] and quarantine["topic"].eq("t").all()
    assert quarantine["reason"].str.contains("micro-batch 7 failed twice on its data: ValueError: boom again").all()
    assert read_table(spark, settings, BRONZE_CANDLES).count() == 3


def test_an_infrastructure_failure_is_raised_without_a_retry(spark, settings):
    body = Flaky(ConnectionRefusedError("broker gone"))
    state = QueryState(settings)
    with pytest.raises(ConnectionRefusedError):
        run_batch(spark, settings, kafka_rows(spark, RECORDS), 7, "app", state, process=body)
    assert body.calls == 1
