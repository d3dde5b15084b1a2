"""Spreading many kline streams over several WebSocket connections within Binance's documented limits:

- at most 1024 streams per connection (the shard size is a setting, well below);
- at most 5 incoming messages per second per connection, where a SUBSCRIBE, an UNSUBSCRIBE and a pong each count:
  control messages are paced at MESSAGES_PER_S, leaving room for pongs;
- at most 300 connection attempts per 5 minutes per IP: one limiter shared by every connection of the process.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any

MAX_STREAMS_PER_CONNECTION = 1024
MESSAGES_PER_S = 3
CONNECTS_PER_WINDOW, CONNECT_WINDOW_S = 300, 300.0
PARAMS_PER_MESSAGE = 200  # streams per SUBSCRIBE/UNSUBSCRIBE message: a message stays a few kB


def kline_stream(symbol: str, interval: str) -> str:
    return f"{symbol.lower()}@kline_{interval}"


def symbol_of(stream: str) -> str:
    return stream.partition("@")[0].upper()


def split(symbols: Sequence[str], size: int) -> list[list[str]]:
    """Consecutive groups of at most `size` symbols."""
    if not 1 <= size <= MAX_STREAMS_PER_CONNECTION:
        raise ValueError(f"shard size {size}: Binance allows 1 to {MAX_STREAMS_PER_CONNECTION} streams a connection")
    return [list(symbols[i : i + size]) for i in range(0, len(symbols), size)]


def place(loads: Sequence[int], new: int, size: int) -> list[int]:
    """How many of `new` symbols each shard takes, given each shard's current load: shards with room are filled
    first, in order; the counts after len(loads) are new shards."""
    out = []
    for load in loads:
        take = min(max(0, size - load), new)
        out.append(take)
        new -= take
    while new > 0:
        out.append(min(size, new))
        new -= out[-1]
    return out


def control_messages(method: str, streams: Sequence[str], first_id: int) -> list[dict[str, Any]]:
    """SUBSCRIBE/UNSUBSCRIBE requests for `streams`, PARAMS_PER_MESSAGE a message, with ids from first_id."""
    return [
        {"method": method, "params": list(streams[i : i + PARAMS_PER_MESSAGE]), "id": first_id + n}
        for n, i in enumerate(range(0, len(streams), PARAMS_PER_MESSAGE))
    ]


def limiter_wait_s(times: Iterable[float], now: float, limit: int, window_s: float) -> float:
    """Seconds until one more event fits: at most `limit` events in any `window_s` (`times`: past events, oldest
    first)."""
    recent = [t for t in times if t > now - window_s]
    return 0.0 if len(recent) < limit else recent[-limit] + window_s - now


class RateLimiter:
    """At most `limit` events in any `window_s` seconds, for the threads that share it."""

    def __init__(self, limit: int, window_s: float) -> None:
        self.limit, self.window_s = limit, window_s
        self._times: deque[float] = deque(maxlen=limit)
        self._lock = threading.Lock()

    def acquire(self, stop: threading.Event) -> bool:
        """Wait for room and take it; False if `stop` was set meanwhile."""
        while True:
            with self._lock:
                now = time.monotonic()
                wait = limiter_wait_s(self._times, now, self.limit, self.window_s)
                if wait <= 0:
                    self._times.append(now)
                    return True
            if stop.wait(wait):
                return False
