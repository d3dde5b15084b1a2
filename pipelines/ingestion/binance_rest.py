"""A small client for Binance's public REST klines endpoint (`GET /api/v3/klines`).

Used by the live producer's gap fill and by the historical backfill. It pages 1000 klines per request, keeps under
the IP request-weight budget (header `X-MBX-USED-WEIGHT-1M`) and backs off on 429/418 for as long as `Retry-After`
says, as Binance asks clients to (repeated 429s escalate into an IP ban).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import requests

log = logging.getLogger(__name__)

KLINES_PATH = "/api/v3/klines"
PAGE_SIZE = 1000  # the endpoint's maximum `limit`
WEIGHT_HEADER = "X-MBX-USED-WEIGHT-1M"
_UNIT_MS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}


class BinanceRestError(RuntimeError):
    pass


def interval_ms(interval: str) -> int:
    """Length of a Binance kline interval ("1s", "1m", "15m", "1h", "1d", "1w"); "1M" has no fixed length."""
    number, unit = interval[:-1], interval[-1]
    if not number.isdecimal() or unit not in _UNIT_MS:
        raise ValueError(f"unsupported kline interval {interval!r}")
    return int(number) * _UNIT_MS[unit]


def kline_aligned(open_time: int, interval: str) -> bool:
    """Whether open_time can start a kline: klines start on multiples of their length from the epoch, except
    weekly ones, which start on Mondays (1970-01-05 was the first)."""
    origin = 4 * _UNIT_MS["d"] if interval.endswith("w") else 0
    return (open_time - origin) % interval_ms(interval) == 0


def backoff_delay(attempt: int, initial_s: float, maximum_s: float, rand: Callable[[], float] = random.random) -> float:
    """Exponential backoff with "equal jitter": half the capped delay is fixed, half random, so clients that lost
    the same server do not come back in lockstep, yet none retries at once."""
    capped = min(maximum_s, initial_s * 2**attempt)
    return capped / 2 + rand() * capped / 2


@dataclass(frozen=True)
class Backoff:
    """The delays between attempts: from initial_s, doubling, capped at max_s (see backoff_delay)."""

    initial_s: float = 1.0
    max_s: float = 30.0

    def delay(self, attempt: int) -> float:
        return backoff_delay(attempt, self.initial_s, self.max_s)


def next_cursor(page: list[Any], cursor: int) -> int:
    """The startTime of the page after a full one: past its last row's open time. A last row without a readable
    open time, or one that does not move forward, cannot be paged past (paging on would loop or skip)."""
    last = page[-1]
    try:
        opened = int(last[0]) if isinstance(last, list) and not isinstance(last[0], bool) else None
    except (ValueError, TypeError, OverflowError, IndexError):
        opened = None
    if opened is None or opened < cursor:
        raise BinanceRestError(f"{KLINES_PATH}: cannot page past a last row of {str(last)[:100]} (from {cursor})")
    return opened + 1


def weight_pause(used: int, limit: int, now_s: float, headroom: float = 0.1, window_s: float = 60.0) -> float:
    """Seconds to wait before the next request: none while the window's used weight is below the limit minus the
    headroom, else until the weight counter resets at the next window boundary (a minute on Binance)."""
    if used < limit * (1 - headroom):
        return 0.0
    return window_s - now_s % window_s + min(0.5, window_s / 10)


def pages_newest_first(start: int, end: int, step: int, page: int = PAGE_SIZE) -> list[tuple[int, int]]:
    """[start, end) cut into windows of at most `page` klines, the newest window first."""
    out = []
    while end > start:
        out.append((max(start, end - page * step), end))
        end = out[-1][0]
    return out


def retry_after_s(headers: Any) -> float | None:
    """Binance sends Retry-After as whole seconds."""
    value = headers.get("Retry-After")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


@dataclass
class BinanceRest:
    base_url: str
    session: requests.Session = field(default_factory=requests.Session)
    timeout_s: float = 10.0
    max_attempts: int = 6
    # Binance's default REQUEST_WEIGHT limit per minute for an IP, its window and the header reporting the weight
    # used in it (see rateLimits in /api/v3/exchangeInfo, pipelines.ingestion.exchange_info.request_weight).
    weight_limit: int = 6000
    weight_window_s: float = 60.0
    weight_header: str = WEIGHT_HEADER
    # A Retry-After longer than this (a 418 ban lasts minutes to days) is an error for the caller, not a sleep.
    max_wait_s: float = 300.0
    backoff: Backoff = Backoff()
    # Set by the owner to abandon waits (e.g. on SIGTERM).
    stop: threading.Event = field(default_factory=threading.Event)

    def klines(self, symbol: str, interval: str, start_ms: int, end_ms: int) -> Iterator[list[Any]]:
        """Kline rows (Binance's 12-field arrays) of one symbol with open_time in [start_ms, end_ms), in order,
        page by page (a caller can publish each page before the next is fetched)."""
        cursor = start_ms
        while cursor < end_ms:
            params = {
                "symbol": symbol.upper(),
                "interval": interval,
                "startTime": cursor,
                "endTime": end_ms - 1,  # Binance's endTime is inclusive
                "limit": PAGE_SIZE,
            }
            rows = self.get(KLINES_PATH, params)
            if not isinstance(rows, list):
                raise BinanceRestError(f"{KLINES_PATH} answered {type(rows).__name__}, expected a list")
            yield from rows
            if len(rows) < PAGE_SIZE:
                return
            cursor = next_cursor(rows, cursor)

    def get(self, path: str, params: dict[str, Any]) -> Any:
        """GET a JSON document, retrying rate limits (honouring Retry-After), server errors and network errors."""
        for attempt in range(self.max_attempts):
            try:
                response = self.session.get(self.base_url.rstrip("/") + path, params=params, timeout=self.timeout_s)
            except (requests.ConnectionError, requests.Timeout) as exc:
                self._wait(self.backoff.delay(attempt), f"{path}: {exc}")
                continue
            used = response.headers.get(self.weight_header)
            if response.status_code in (418, 429):
                wait = retry_after_s(response.headers)
                if wait is None:
                    wait = self.backoff.delay(attempt)
                if wait > self.max_wait_s:
                    raise BinanceRestError(f"{path}: HTTP {response.status_code}, Retry-After {wait:.0f} s")
                self._wait(wait, f"{path}: HTTP {response.status_code} (rate limited), Retry-After {wait:.0f} s")
                continue
            if response.status_code >= 500:
                self._wait(self.backoff.delay(attempt), f"HTTP {response.status_code}")
                continue
            if response.status_code != 200:
                raise BinanceRestError(f"{path} {params}: HTTP {response.status_code}: {response.text[:300]}")
            if used is not None and used.isdecimal():
                pause = weight_pause(int(used), self.weight_limit, time.time(), window_s=self.weight_window_s)
                if pause:
                    self._wait(pause, f"used weight {used} of {self.weight_limit} in {self.weight_window_s:.0f} s")
            try:
                return response.json()
            except (ValueError, RecursionError) as exc:  # not JSON (or nested deeper than Python's stack)
                raise BinanceRestError(f"{path} {params}: the answer is not JSON: {str(exc)[:200]}") from None
        raise BinanceRestError(f"{path} {params}: no answer after {self.max_attempts} attempts")

    def _wait(self, seconds: float, why: str) -> None:
        log.warning("binance rest: %s; waiting %.1f s", why, seconds)
        if self.stop.wait(seconds):
            raise BinanceRestError("stopped while waiting to retry")
