"""Why a micro-batch failed, and so what the stream does next. No record can stop the stream.

Bronze and silver are total (any bytes become a bronze row and a silver candle or a quarantine row with a
reason). Should a batch still fail, `failure_kind` decides what the failure is tied to:
- data (an error a value in a record can cause: Spark's SQLSTATE class 22 "data exception", e.g.
  CAST_INVALID_INPUT, ARITHMETIC_OVERFLOW, DIVIDE_BY_ZERO; Python's ValueError, TypeError, ArithmeticError,
  LookupError, e.g. from pandas or Arrow): the batch is retried once, then every record of it goes to bronze and
  to quarantine with the error as its reason, and the stream moves on;
- infrastructure (anything else: Kafka, disk and network I/O, Delta's concurrent-commit conflicts, memory, a
  stopped Spark context, or an error not known to be about data): raised, so the query stops and restarts from
  its checkpoint without skipping anything.
"""

from __future__ import annotations

import re
from enum import StrEnum


class FailureKind(StrEnum):
    DATA = "data"
    INFRASTRUCTURE = "infrastructure"


# Raised by the environment, whatever the records hold. Errors of Kafka, Delta (concurrent commits), the JVM or
# Spark arrive as other exception types and, not being known as data errors, count as infrastructure too.
_INFRASTRUCTURE_TYPES: tuple[type[BaseException], ...] = (OSError, MemoryError)
# What a value in a record can raise: Python's value errors (pandas, Arrow, conversions) and SQLSTATE class 22,
# "data exception", which Spark gives CAST_INVALID_INPUT, ARITHMETIC_OVERFLOW, DIVIDE_BY_ZERO, DATETIME_OVERFLOW...
_DATA_TYPES: tuple[type[BaseException], ...] = (ValueError, TypeError, ArithmeticError, LookupError)
_DATA_SQLSTATE = re.compile(r"SQLSTATE: 22[0-9A-Z]{3}")


def failure_kind(error: BaseException) -> FailureKind:
    """Whether a failed micro-batch failed on its data (retry, then quarantine its records) or on infrastructure
    (stop; restart from the checkpoint). Unknown errors count as infrastructure: stopping skips nothing.
    Structured signs (SQLSTATE, exception types) are read before message text, which may quote a record: a value
    such as "java.io.IOException" in a record cannot make its data error pass for infrastructure."""
    chain = _chain(error)
    if any(str(_sqlstate(e)).startswith("22") for e in chain):
        return FailureKind.DATA
    if any(isinstance(e, _INFRASTRUCTURE_TYPES) for e in chain):
        return FailureKind.INFRASTRUCTURE
    if any(isinstance(e, _DATA_TYPES) for e in chain):
        return FailureKind.DATA
    text = "\n".join(f"{type(e).__name__}: {e}" for e in chain)  # e.g. a Py4JJavaError's Java exception
    if _DATA_SQLSTATE.search(text):
        return FailureKind.DATA
    return FailureKind.INFRASTRUCTURE


def _chain(error: BaseException) -> list[BaseException]:
    """The error and its causes (explicit or implicit), each once."""
    chain: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def _sqlstate(error: BaseException) -> str | None:
    getter = getattr(error, "getSqlState", None)
    try:
        return getter() if callable(getter) else None
    except Exception:  # a JVM that is gone cannot be asked
        return None


def first_line(error: BaseException) -> str:
    return f"{type(error).__name__}: {(str(error).strip().splitlines() or [''])[0][:300]}"
