"""The live producer: Binance combined kline streams -> closed candles -> Kafka (key = symbol).

One blocking loop, no callbacks: connect, read frames, publish each closed candle once, and when the connection
ends (network loss, server close, silence, or the planned reconnect before Binance's 24-hour cut-off) connect
again after an exponential backoff with jitter. Missed minutes are fetched from REST: the first event of a symbol
on any connection tells which minute is current, and every minute between the last one published and that one
comes from `/api/v3/klines` (source "gapfill"), newest page first.

Two ways to connect: a fixed symbol list in a combined-stream URL (`/stream?streams=...`), filled before the
stream resumes; or, as one shard of the whole market (pipelines.ingestion.whole_market), the base `/stream`
endpoint with paced SUBSCRIBE/UNSUBSCRIBE requests, symbols added and removed while it runs, and gaps handed to
a shared GapFiller so the stream never waits for REST.

Pings: `recv_data_frame` answers every ping with a pong carrying its payload (websocket-client does this for any
frame it reads), and the loop reads the socket at least every `recv_timeout_s`, so pongs are never late.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

import requests
import websocket
from confluent_kafka import Producer
from websocket import ABNF, WebSocketException

from lakehouse.settings import Settings
from pipelines.ingestion.binance_rest import (
    Backoff,
    BinanceRest,
    BinanceRestError,
    interval_ms,
    kline_aligned,
    pages_newest_first,
)
from pipelines.ingestion.candles import BadCandle, from_kline_row, from_ws_kline, now_ms
from pipelines.ingestion.kafka_io import make_producer, publish
from pipelines.ingestion.shards import MESSAGES_PER_S, RateLimiter, control_messages, kline_stream

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
    # Closed candles arrive in bursts (every symbol closes at the minute): a closed candle waits up to batch_s for
    # the rest of its burst, so one Kafka publish (which waits for the broker's acknowledgement) carries many.
    batch_s: float = 0.05
    batch_max: int = 1000


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
    if "id" in message and "error" in message:
        raise MalformedMessage(f"request {message['id']!r} refused: {str(message['error'])[:200]}")
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


# Fills the closed minutes [start, end) of a symbol; `listing`: the symbol is new, nothing before its first kline.
GapFill = Callable[["LiveProducer", str, int, int, bool], None]


class LiveProducer:
    """Holds what must survive reconnects: per symbol, the open time of the next minute to publish.

    With `symbols`, it is a shard: it connects to the base `/stream` endpoint and SUBSCRIBEs, `add`/`remove`
    change its symbols while it runs, and `fill` (e.g. GapFiller.submit) takes its gaps off the reading thread."""

    def __init__(
        self,
        settings: Settings,
        producer: Producer,
        rest: BinanceRest,
        stop: threading.Event,
        options: LiveOptions | None = None,
        stats: LiveStats | None = None,
        *,
        symbols: Iterable[str] | None = None,
        connections: RateLimiter | None = None,
        fill: GapFill | None = None,
        name: str = "live",
    ) -> None:
        self.settings = settings
        self.producer = producer
        self.rest = rest
        self.stop = stop
        self.options = options or LiveOptions()
        self.subscribing = symbols is not None
        self.symbols: set[str] = set(settings.symbols if symbols is None else symbols)
        base = settings.binance_ws_url.rstrip("/")
        self.url = f"{base}/stream" if self.subscribing else stream_url(base, settings.symbols, settings.interval)
        self.connections = connections
        self.fill: GapFill = fill or LiveProducer.fill_gap
        self.name = name
        self.step_ms = interval_ms(settings.interval)
        self.next_open: dict[str, int] = {}
        self.stats = stats or LiveStats()  # the caller's object, when it reports the counters while this runs
        self._stats_logged_at = time.monotonic()
        self._changes: list[tuple[str, str]] = []  # (SUBSCRIBE or UNSUBSCRIBE, symbol) not sent yet
        self._dropped: set[str] = set()  # unsubscribed: closes still in flight are real candles
        self._listing: set[str] = set()  # added with a `since`, first event not seen yet
        self._lock = threading.Lock()  # symbols and pending changes (other threads add/remove); fill counters
        self._request_id = 0
        self._outbox: list[dict[str, Any]] = []  # closed candles from the stream, not published yet
        self._outbox_since = 0.0

    def add(self, symbols: Iterable[str], since: dict[str, int] | None = None) -> None:
        """Subscribe to more symbols (from another thread); `since`: a listing's first possible minute per symbol,
        so the minutes between it and the first event are filled from REST."""
        with self._lock:
            for symbol in symbols:
                self.symbols.add(symbol)
                if symbol in self._dropped:  # listed again: the minutes of its break are not a gap
                    self._dropped.discard(symbol)
                    self.next_open.pop(symbol, None)
                if since and symbol in since:
                    self.next_open[symbol] = since[symbol]
                    self._listing.add(symbol)
                self._changes.append(("SUBSCRIBE", symbol))

    def remove(self, symbols: Iterable[str]) -> None:
        """Unsubscribe from symbols (from another thread). Their next minute is kept: a close the server sent before
        our UNSUBSCRIBE reached it is still a real candle, and is published once."""
        with self._lock:
            for symbol in symbols:
                self.symbols.discard(symbol)
                self._dropped.add(symbol)
                self._changes.append(("UNSUBSCRIBE", symbol))

    def run(self) -> LiveStats:
        """Stream until `stop` is set; then flush Kafka and return the counters."""
        log.info(
            "%s: %s (%d symbols) -> kafka topic %s at %s",
            self.name,
            self.url,
            len(self.symbols),
            self.settings.kafka_topic,
            self.settings.kafka_bootstrap_servers,
        )
        attempt, connections = 0, 0
        try:
            while not self.stop.is_set():
                if self.connections is not None and not self.connections.acquire(self.stop):
                    break
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
                log.info("%s: connected (connection %d)", self.name, connections)
                opened = time.monotonic()
                try:
                    planned = self._session(ws)
                except (WebSocketException, OSError, ConnectionLost) as exc:
                    planned = False
                    log.warning("%s: connection lost: %s", self.name, exc or type(exc).__name__)
                finally:
                    ws.close(timeout=1)
                    self._publish_outbox()
                if time.monotonic() - opened >= self.options.healthy_after_s:
                    attempt = 0
                if not planned and not self.stop.is_set():
                    self._pause(attempt, "reconnecting")
                    attempt += 1
        finally:
            self.producer.flush(timeout=30)
            log.info("%s: stopped; %s", self.name, self.stats.line())
        return self.stats

    def _pause(self, attempt: int, why: str) -> None:
        delay = self.options.backoff.delay(attempt)
        log.warning("%s: %s; next attempt in %.2f s", self.name, why, delay)
        self.stop.wait(delay)

    def _session(self, ws: websocket.WebSocket) -> bool:
        """Read one connection until stop (False) or the planned reconnect (True); raises when the link fails."""
        opened = last_frame = time.monotonic()
        # Binance counts incoming messages per connection: a new connection starts a new budget.
        pacer = RateLimiter(MESSAGES_PER_S, 1.0)
        if self.subscribing:
            with self._lock:
                self._changes = [("SUBSCRIBE", s) for s in sorted(self.symbols)]
        while not self.stop.is_set():
            now = time.monotonic()
            self._maybe_log_stats(now)
            if now - opened > self.options.max_connection_age_s:
                log.info("%s: connection is %.0f s old; planned reconnect", self.name, now - opened)
                return True
            if self._changes:
                self._send_changes(ws, pacer)
            due = self._outbox_since + self.options.batch_s - now
            if self._outbox and (due <= 0 or len(self._outbox) >= self.options.batch_max):
                self._publish_outbox()
            ws.settimeout(min(self.options.recv_timeout_s, due) if self._outbox else self.options.recv_timeout_s)
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

    def _publish_outbox(self) -> None:
        if self._outbox:
            batch, self._outbox = self._outbox, []
            self._send(batch)
            self.stats.published += len(batch)

    def _send_changes(self, ws: websocket.WebSocket, pacer: RateLimiter) -> None:
        """Send the pending SUBSCRIBE/UNSUBSCRIBE requests, in order, paced under Binance's message limit."""
        with self._lock:
            changes, self._changes = self._changes, []
        for method in ("UNSUBSCRIBE", "SUBSCRIBE"):
            streams = [kline_stream(s, self.settings.interval) for m, s in changes if m == method]
            for message in control_messages(method, streams, self._request_id + 1):
                if not pacer.acquire(self.stop):
                    return
                self._request_id = message["id"]
                ws.send(json.dumps(message))
                log.info("%s: %s %d stream(s) (request %d)", self.name, method, len(message["params"]), message["id"])

    def handle(self, raw: str | bytes) -> None:
        """One stream message: hand any gap before its minute to `fill`, then publish it if it is a new closed
        candle."""
        self.stats.messages += 1
        try:
            event = parse_message(raw, self.settings.interval, now_ms())
            symbol = None if event is None else event.candle["symbol"]
            if symbol is not None and symbol not in self.symbols and symbol not in self._dropped:
                raise MalformedMessage(f"symbol {symbol} was not subscribed")
        except MalformedMessage as exc:
            self.stats.malformed += 1
            log.warning("%s: malformed message (%s): %.200r", self.name, exc, raw)
            return
        if event is None:
            return
        symbol, open_time = event.candle["symbol"], event.candle["open_time"]
        # The first minute seen for a symbol is where this producer's responsibility starts (unless `add` said).
        expected = self.next_open.setdefault(symbol, open_time)
        listing = symbol in self._listing
        self._listing.discard(symbol)
        if expected < open_time:
            # The gap's minutes now belong to the fill, the stream's to the stream: none is sent twice.
            self.next_open[symbol] = open_time
            self.fill(self, symbol, expected, open_time, listing)
            expected = open_time
        if not event.closed:
            return
        if open_time < expected:
            self.stats.duplicates += 1
            return
        if not self._outbox:
            self._outbox_since = time.monotonic()
        self._outbox.append(event.candle)
        self.next_open[symbol] = open_time + self.step_ms

    def _send(self, candles: list[dict[str, Any]]) -> None:
        publish(self.producer, self.settings.kafka_topic, candles)

    def fill_gap(
        self, symbol: str, start: int, end: int, listing: bool = False, rest: BinanceRest | None = None
    ) -> None:
        """Publish the closed candles of [start, end) from REST, newest page first (each page in time order).
        Every minute before `end` is closed, since the stream has moved on to `end`. Whatever REST cannot give is
        logged and left to the historical backfill; for a `listing`, minutes before its first kline never existed."""
        rest = rest or self.rest
        missing = (end - start) // self.step_ms
        log.info("%s: %s missed %d minute(s) from %d; filling from REST", self.name, symbol, missing, start)
        filled, rejected, first = 0, 0, end
        try:
            for page_start, page_end in pages_newest_first(start, end, self.step_ms):
                cursor = page_start  # REST answers in time order: never send a minute twice
                page: list[dict[str, Any]] = []
                for row in rest.klines(symbol, self.settings.interval, page_start, page_end):
                    try:
                        candle = from_kline_row(symbol, row, "gapfill", self.settings.interval)
                    except BadCandle as exc:  # one bad row costs its minute, not the rest of the gap
                        rejected += 1
                        log.warning("%s: REST row of %s is not a candle (%s); skipped", self.name, symbol, exc)
                        continue
                    if cursor <= candle["open_time"] < page_end:
                        page.append(candle)
                        cursor = candle["open_time"] + self.step_ms
                if page:
                    self._send(page)
                    first = min(first, page[0]["open_time"])
                    filled += len(page)
        except (BinanceRestError, requests.RequestException) as exc:
            log.error("%s: gap fill of %s stopped: %s", self.name, symbol, exc)
        if listing:
            missing = (end - first) // self.step_ms
        with self._lock:  # several fill workers may count for one shard
            self.stats.gap_filled += filled
            self.stats.rejected += rejected
            self.stats.unfilled += missing - filled
        if filled < missing:
            log.error(
                "%s: %s: %d minute(s) in [%d, %d) not filled; run the backfill for them",
                self.name,
                symbol,
                missing - filled,
                start,
                end,
            )

    def _maybe_log_stats(self, now: float) -> None:
        if now - self._stats_logged_at >= self.options.stats_every_s:
            self._stats_logged_at = now
            log.info("%s: %s", self.name, self.stats.line())


def produce_live(
    settings: Settings, stop: threading.Event, options: LiveOptions | None = None, stats: LiveStats | None = None
) -> LiveStats:
    """Run the live producer with its own Kafka producer and REST client until `stop` is set: the whole market of
    `settings.live_quote` when it is set, else `settings.symbols` on one combined-stream connection."""
    if settings.live_quote:
        from pipelines.ingestion.whole_market import produce_whole_market  # it builds on this module

        return produce_whole_market(settings, stop, options, stats)
    producer = make_producer(settings)
    try:
        rest = BinanceRest(settings.binance_rest_url, stop=stop)
        return LiveProducer(settings, producer, rest, stop, options, stats).run()
    finally:
        producer.close(timeout=10)
