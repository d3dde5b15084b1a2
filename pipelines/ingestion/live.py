"""The live producer: Binance combined kline streams -> closed candles -> Kafka (key = symbol).

One blocking loop, no callbacks: connect, read frames, publish each closed candle once, and when the connection
ends (network loss, server close, silence, or the planned reconnect before Binance's 24-hour cut-off) connect
again after an exponential backoff with jitter. Missed minutes are fetched from REST before the stream resumes:
the first event of a symbol on any connection tells which minute is current, and every minute between the last
one published and that one comes from `/api/v3/klines` (source "gapfill").

Pings: `recv_data_frame` answers every ping with a pong carrying its payload (websocket-client does this for any
frame it reads), and the loop reads the socket at least every `recv_timeout_s`, so pongs are never late.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import requests
import websocket
from confluent_kafka import Producer
from websocket import ABNF, WebSocketException

from lakehouse.settings import Settings
from pipelines.ingestion.binance_rest import Backoff, BinanceRest, BinanceRestError, interval_ms, kline_aligned
from pipelines.ingestion.candles import BadCandle, from_kline_row, from_ws_kline, now_ms
from pipelines.ingestion.kafka_io import make_producer, publish

log = logging.getLogger(__name__)


class MalformedMessage(ValueError):
    pass


class ConnectionLost(RuntimeError):
    pass


RECONNECT_BACKOFF = Backoff(initial_s=1.0, max_s=60.0)


@dataclass(frozen=True)
class LiveOptions:
    # Binance closes every connection after 24 h; reconnect on our own terms before that.
    max_connection_age_s: float = 23.5 * 3600
    backoff: Backoff = RECONNECT_BACKOFF
    # Only a connection that stayed up this long resets the backoff, so a server that accepts and drops at once
    # is not hammered (Binance allows 300 connection attempts per 5 minutes per IP).
    healthy_after_s: float = 60.0
    # Binance pings every 20 s and a kline stream pushes every 2 s: this long without any frame means a dead link.
    stale_after_s: float = 90.0
    # How often the loop looks up from the socket (stop request, connection age, silence).
    recv_timeout_s: float = 1.0
    connect_timeout_s: float = 10.0
    stats_every_s: float = 60.0


@dataclass
class LiveStats:
    messages: int = 0  # data frames received
    published: int = 0  # closed candles from the stream sent to Kafka
    gap_filled: int = 0  # closed candles fetched from REST after a gap and sent to Kafka
    malformed: int = 0  # frames that are not a kline event: counted, logged and skipped (they never reach Kafka)
    rejected: int = 0  # REST gap-fill rows that are not a candle: counted, logged and skipped
    reconnects: int = 0  # connections opened after the first one
    duplicates: int = 0  # closed candles not sent again because that minute was already sent
    unfilled: int = 0  # minutes REST could not supply (left for the historical backfill)

    def line(self) -> str:
        return " ".join(f"{name}={value}" for name, value in asdict(self).items())


@dataclass(frozen=True)
class KlineEvent:
    candle: dict[str, Any]
    closed: bool


def stream_url(ws_url: str, symbols: tuple[str, ...], interval: str) -> str:
    """Binance's combined-stream URL for the kline streams of several symbols."""
    streams = "/".join(f"{s.lower()}@kline_{interval}" for s in symbols)
    return f"{ws_url.rstrip('/')}/stream?streams={streams}"


def parse_message(raw: str | bytes, interval: str, received_at: int) -> KlineEvent | None:
    """A combined-stream frame -> the kline event it carries; None for replies to control requests
    (`{"result": null, "id": 1}`). Anything else that is not a well-formed kline event raises MalformedMessage."""
    try:
        message = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # bytes that are not UTF-8; nesting deeper than Python's stack
        raise MalformedMessage(f"not JSON: {str(exc)[:200]}") from None
    if not isinstance(message, dict):
        raise MalformedMessage(f"not a JSON object: {type(message).__name__}")
    if "id" in message and "result" in message:
        return None
    data = message.get("data")
    if not isinstance(data, dict) or data.get("e") != "kline" or not isinstance(data.get("k"), dict):
        raise MalformedMessage("not a kline event")
    k = data["k"]
    if not isinstance(k.get("x"), bool):
        raise MalformedMessage(f"k.x is {k.get('x')!r}, expected a boolean")
    try:
        candle = from_ws_kline(data, received_at)
    except BadCandle as exc:
        raise MalformedMessage(f"bad kline field: {exc}") from None
    if candle["interval"] != interval or str(data.get("s", "")).upper() != candle["symbol"]:
        raise MalformedMessage(f"unexpected stream: symbol {data.get('s')!r}, interval {candle['interval']!r}")
    # A minute that is misaligned or in the future would make the gap fill skip real minutes.
    step = interval_ms(interval)
    open_time = candle["open_time"]
    if (
        not kline_aligned(open_time, interval)
        or candle["close_time"] != open_time + step - 1
        or open_time > received_at + step
    ):
        raise MalformedMessage(f"impossible kline times t={open_time} T={candle['close_time']}")
    return KlineEvent(candle, k["x"])


class LiveProducer:
    """Holds what must survive reconnects: per symbol, the open time of the next minute to publish."""

    def __init__(
        self,
        settings: Settings,
        producer: Producer,
        rest: BinanceRest,
        stop: threading.Event,
        options: LiveOptions | None = None,
        stats: LiveStats | None = None,
    ) -> None:
        self.settings = settings
        self.producer = producer
        self.rest = rest
        self.stop = stop
        self.options = options or LiveOptions()
        self.url = stream_url(settings.binance_ws_url, settings.symbols, settings.interval)
        self.step_ms = interval_ms(settings.interval)
        self.next_open: dict[str, int] = {}
        self.stats = stats or LiveStats()  # the caller's object, when it reports the counters while this runs
        self._stats_logged_at = time.monotonic()

    def run(self) -> LiveStats:
        """Stream until `stop` is set; then flush Kafka and return the counters."""
        log.info(
            "live: %s -> kafka topic %s at %s",
            self.url,
            self.settings.kafka_topic,
            self.settings.kafka_bootstrap_servers,
        )
        attempt, connections = 0, 0
        try:
            while not self.stop.is_set():
                try:
                    ws = websocket.create_connection(
                        self.url, timeout=self.options.connect_timeout_s, skip_utf8_validation=True
                    )
                    ws.settimeout(self.options.recv_timeout_s)
                except (WebSocketException, OSError) as exc:
                    # A refused handshake's message carries every response header; the status says enough.
                    status = getattr(exc, "status_code", None)
                    self._pause(attempt, f"connect failed: {f'HTTP {status}' if status else exc}")
                    attempt += 1
                    continue
                connections += 1
                self.stats.reconnects = connections - 1
                log.info("live: connected (connection %d)", connections)
                opened = time.monotonic()
                try:
                    planned = self._session(ws)
                except (WebSocketException, OSError, ConnectionLost) as exc:
                    planned = False
                    log.warning("live: connection lost: %s", exc or type(exc).__name__)
                finally:
                    ws.close(timeout=1)
                if time.monotonic() - opened >= self.options.healthy_after_s:
                    attempt = 0
                if not planned and not self.stop.is_set():
                    self._pause(attempt, "reconnecting")
                    attempt += 1
        finally:
            self.producer.flush(timeout=30)
            log.info("live: stopped; %s", self.stats.line())
        return self.stats

    def _pause(self, attempt: int, why: str) -> None:
        delay = self.options.backoff.delay(attempt)
        log.warning("live: %s; next attempt in %.2f s", why, delay)
        self.stop.wait(delay)

    def _session(self, ws: websocket.WebSocket) -> bool:
        """Read one connection until stop (False) or the planned reconnect (True); raises when the link fails."""
        opened = last_frame = time.monotonic()
        while not self.stop.is_set():
            now = time.monotonic()
            self._maybe_log_stats(now)
            if now - opened > self.options.max_connection_age_s:
                log.info("live: connection is %.0f s old; planned reconnect", now - opened)
                return True
            try:
                opcode, frame = ws.recv_data_frame(True)
            except websocket.WebSocketTimeoutException:
                if time.monotonic() - last_frame > self.options.stale_after_s:
                    raise ConnectionLost(f"no frame for {self.options.stale_after_s:.0f} s") from None
                continue
            last_frame = time.monotonic()
            if opcode == ABNF.OPCODE_CLOSE:
                raise ConnectionLost(f"server closed the connection: {frame.data[2:]!r}")
            if opcode in (ABNF.OPCODE_TEXT, ABNF.OPCODE_BINARY):
                self.handle(frame.data)
        return False

    def handle(self, raw: str | bytes) -> None:
        """One stream message: fill any gap before its minute, then publish it if it is a new closed candle."""
        self.stats.messages += 1
        try:
            event = parse_message(raw, self.settings.interval, now_ms())
            if event is not None and event.candle["symbol"] not in self.settings.symbols:
                raise MalformedMessage(f"symbol {event.candle['symbol']} was not subscribed")
        except MalformedMessage as exc:
            self.stats.malformed += 1
            log.warning("live: malformed message (%s): %.200r", exc, raw)
            return
        if event is None:
            return
        symbol, open_time = event.candle["symbol"], event.candle["open_time"]
        # The first minute seen for a symbol is where this producer's responsibility starts.
        expected = self.next_open.setdefault(symbol, open_time)
        if expected < open_time:
            self._fill_gap(symbol, expected, open_time)
        if not event.closed:
            return
        if open_time < self.next_open[symbol]:
            self.stats.duplicates += 1
            return
        self._send(event.candle)
        self.stats.published += 1

    def _send(self, candle: Mapping[str, Any]) -> None:
        publish(self.producer, self.settings.kafka_topic, [candle])
        self.next_open[candle["symbol"]] = candle["open_time"] + self.step_ms

    def _fill_gap(self, symbol: str, start: int, end: int) -> None:
        """Publish the closed candles of [start, end) from REST. Every minute before `end` is closed, since the
        stream has moved on to `end`. Whatever REST cannot give is logged and left to the historical backfill."""
        missing = (end - start) // self.step_ms
        log.info("live: %s missed %d minute(s) from %d; filling from REST", symbol, missing, start)
        filled = 0
        try:
            for row in self.rest.klines(symbol, self.settings.interval, start, end):
                try:
                    candle = from_kline_row(symbol, row, "gapfill", self.settings.interval)
                except BadCandle as exc:  # one bad row costs its minute, not the rest of the gap
                    self.stats.rejected += 1
                    log.warning("live: REST row of %s is not a candle (%s); skipped", symbol, exc)
                    continue
                if self.next_open[symbol] <= candle["open_time"] < end:
                    self._send(candle)
                    filled += 1
        except (BinanceRestError, requests.RequestException) as exc:
            log.error("live: gap fill of %s stopped: %s", symbol, exc)
        self.stats.gap_filled += filled
        if filled < missing:
            self.stats.unfilled += missing - filled
            log.error(
                "live: %s: %d minute(s) in [%d, %d) not filled; run the backfill for them",
                symbol,
                missing - filled,
                start,
                end,
            )
        self.next_open[symbol] = max(self.next_open[symbol], end)

    def _maybe_log_stats(self, now: float) -> None:
        if now - self._stats_logged_at >= self.options.stats_every_s:
            self._stats_logged_at = now
            log.info("live: %s", self.stats.line())


def produce_live(
    settings: Settings, stop: threading.Event, options: LiveOptions | None = None, stats: LiveStats | None = None
) -> LiveStats:
    """Run the live producer with its own Kafka producer and REST client until `stop` is set."""
    producer = make_producer(settings)
    try:
        rest = BinanceRest(settings.binance_rest_url, stop=stop)
        return LiveProducer(settings, producer, rest, stop, options, stats).run()
    finally:
        producer.close(timeout=10)
