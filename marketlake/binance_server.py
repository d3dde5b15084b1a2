"""A loopback server that speaks Binance's market-data formats, fed with real candles from the bundled sample.

- WebSocket: combined streams at `/stream?streams=<symbol>@kline_1m/...`, or the base `/stream` endpoint with
  SUBSCRIBE / UNSUBSCRIBE / LIST_SUBSCRIPTIONS requests (`{"method": ..., "params": [...], "id": N}`, answered
  `{"result": ..., "id": N}`), within Binance's limits: more than 1024 streams on a connection is refused with an
  error, more than 5 incoming messages in a second closes the connection, more than 300 connection attempts in 5
  minutes are refused with 429. Each message is
  `{"stream": ..., "data": {"e": "kline", "E": ..., "s": ..., "k": {t,T,s,i,f,L,o,c,h,l,v,n,x,q,V,Q,B}}}` with
  prices and volumes as strings and times, trade ids and counts as integers, exactly like Binance. Every minute
  brings `updates_per_minute` updates of the forming candle (x=false) and then the closed candle (x=true).
  The server pings every `ping_interval_s` and drops a client whose pong is late, as Binance does.
- REST: `GET /api/v3/klines` with symbol, interval, startTime, endTime (inclusive), limit (<= 1000), answering
  12-field arrays, the minute in progress with its partial values; `GET /api/v3/exchangeInfo` (symbols with
  status/baseAsset/quoteAsset, rateLimits, serverTime). Every answer carries the used request weight of the
  current window (`X-MBX-USED-WEIGHT-1M` for Binance's minute); past the limit, 429 with Retry-After.
- Symbols: real ones, or `market_rows`' renamed copies of the real sample (S0001USDT, ...), as many as wanted;
  `list_symbol` / `delist` on demand (a listing trades from the next minute, a delisting stops the minute in
  progress from ever closing; both show in exchangeInfo).

Market time is simulated: a minute lasts `minute_s` seconds and the clock starts when the first client connects
(so a producer started against the server is responsible for every candle), and keeps moving while clients are
disconnected. Faults on demand: `drop_connections` (abort every connection and refuse new ones for a while),
`inject` (send raw frames), `rate_limit` (answer the next REST requests with 429 and Retry-After).

Also here, because the tests and the benches check delivery the same way: reading a topic back and comparing
its (symbol, open_time) keys with the candles served.
"""

from __future__ import annotations

import asyncio
import bisect
import dataclasses
import json
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from kafka import KafkaConsumer, TopicPartition
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from lakehouse.settings import PROJECT_ROOT, Settings
from pipelines.ingestion.archives import ArchiveFile
from pipelines.ingestion.binance_rest import KLINES_PATH
from pipelines.ingestion.exchange_info import EXCHANGE_INFO_PATH, EXCHANGE_INFO_WEIGHT
from pipelines.ingestion.live import LiveOptions, produce_live
from pipelines.ingestion.shards import MAX_STREAMS_PER_CONNECTION, kline_stream, symbol_of

SAMPLE = PROJECT_ROOT / "data" / "sample"
MINUTE_MS = 60_000
KLINES_WEIGHT = 2  # weight Binance charges for one /api/v3/klines request
QUOTES = ("USDT", "FDUSD", "USDC", "BTC", "ETH", "BNB")
MESSAGES_PER_S = 5  # incoming messages a connection may send in a second


def sample_rows(
    symbols: Sequence[str] = ("FILUSDT", "NEARUSDT"), day: str = "2025-02-03", minutes: int | None = None
) -> dict[str, list[list[str]]]:
    """Real 12-field kline rows (strings, as in the archive) of the bundled USD-M futures sample."""
    return {
        symbol: list(ArchiveFile.parse(SAMPLE / "futures-um" / f"{symbol}-1m-{day}.zip").rows())[:minutes]
        for symbol in symbols
    }


def market_rows(n: int, minutes: int | None = None, quote: str = "USDT", first: int = 1) -> dict[str, list[list[str]]]:
    """`n` synthetic symbols S0001<quote>, S0002<quote>, ... (from `first`), each a renamed copy of FILUSDT's or
    NEARUSDT's real candles of 2025-02-03 (the copies share the rows: 2,000 symbols cost no more memory than 2)."""
    real = sample_rows(minutes=minutes)
    sources = [real["FILUSDT"], real["NEARUSDT"]]
    return {f"S{i:04d}{quote}": sources[i % 2] for i in range(first, first + n)}


def _like(value: float, template: str) -> str:
    """A number formatted with as many decimals as Binance uses for that field."""
    decimals = len(template.split(".")[1]) if "." in template else 0
    return f"{value:.{decimals}f}"


def kline_values(row: Sequence[str], fraction: float) -> dict[str, str | int]:
    """The candle as it stands `fraction` of the way through its minute: the archive row itself at 1.0, else a
    consistent partial candle (same open, close moving towards the final close, volumes and trades so far)."""
    o, h, l, c, v, q, n, bv, bq = row[1], row[2], row[3], row[4], row[5], row[7], int(row[8]), row[9], row[10]  # noqa: E741
    if fraction >= 1:
        return {"o": o, "h": h, "l": l, "c": c, "v": v, "q": q, "n": n, "V": bv, "Q": bq}
    close = float(o) + (float(c) - float(o)) * fraction
    return {
        "o": o,
        "h": _like(max(float(o), close), h),
        "l": _like(min(float(o), close), l),
        "c": _like(close, c),
        "v": _like(float(v) * fraction, v),
        "q": _like(float(q) * fraction, q),
        "n": int(n * fraction),
        "V": _like(float(bv) * fraction, bv),
        "Q": _like(float(bq) * fraction, bq),
    }


def kline_event(symbol: str, row: Sequence[str], fraction: float) -> dict[str, Any]:
    """A combined-stream kline message, as Binance sends it."""
    t, close_time = int(row[0]), int(row[6])
    values = kline_values(row, fraction)
    trades = int(values["n"])
    first_trade = t // MINUTE_MS * 1_000_000  # increasing ids; Binance sends -1/-1 for a minute without trades
    k = {
        "t": t,
        "T": close_time,
        "s": symbol,
        "i": "1m",
        "f": first_trade if trades else -1,
        "L": first_trade + trades - 1 if trades else -1,
        "o": values["o"],
        "c": values["c"],
        "h": values["h"],
        "l": values["l"],
        "v": values["v"],
        "n": trades,
        "x": fraction >= 1,
        "q": values["q"],
        "V": values["V"],
        "Q": values["Q"],
        "B": "0",
    }
    event_time = close_time + 1 if fraction >= 1 else t + int(MINUTE_MS * fraction)
    return {"stream": f"{symbol.lower()}@kline_1m", "data": {"e": "kline", "E": event_time, "s": symbol, "k": k}}


def rest_row(row: Sequence[str], fraction: float) -> list[Any]:
    """A /api/v3/klines array: times and trade count as integers, the rest as strings."""
    v = kline_values(row, fraction)
    return [int(row[0]), v["o"], v["h"], v["l"], v["c"], v["v"], int(row[6]), v["q"], v["n"], v["V"], v["Q"], "0"]


class BinanceServer:
    def __init__(
        self,
        rows: Mapping[str, Sequence[Sequence[str]]],
        minute_s: float = 0.03,
        updates_per_minute: int = 3,
        ping_interval_s: float = 0.5,
        pong_timeout_s: float = 10.0,
        unlisted: Iterable[str] = (),
        weight_limit: int = 6000,
        weight_window_s: int = 60,
        max_connects: int = 300,
        connect_window_s: float = 300.0,
    ) -> None:
        # Symbols that share one list of rows (market_rows' copies) share its sorted copy and open times too.
        ordered: dict[int, tuple[list[list[str]], list[int]]] = {}
        for rs in rows.values():
            if id(rs) not in ordered:
                sorted_rows = sorted((list(r) for r in rs), key=lambda r: int(r[0]))
                ordered[id(rs)] = (sorted_rows, [int(r[0]) for r in sorted_rows])
        self.rows = {s.upper(): ordered[id(rs)][0] for s, rs in rows.items()}
        self._open_times = {s.upper(): ordered[id(rs)][1] for s, rs in rows.items()}
        self.base = min(times[0] for times in self._open_times.values())
        self.minutes = (max(times[-1] for times in self._open_times.values()) - self.base) // MINUTE_MS + 1
        self.minute_s = minute_s
        self.ticks_per_minute = updates_per_minute + 1
        self.ping_interval_s = ping_interval_s
        self.pong_timeout_s = pong_timeout_s

        self.started_at: float | None = None  # monotonic time of market minute 0
        self.connected_at: list[float] = []
        self.dropped_at: list[float] = []
        self.pongs = 0
        self.rest_log: list[tuple[float, int, dict[str, str]]] = []  # (monotonic time, status, params)
        self.peak_weight = 0  # the most weight used in one window
        self.requests: list[dict[str, Any]] = []  # control messages received, in order
        self.closed_for_rate = 0  # connections closed for sending more than MESSAGES_PER_S
        self.refused_attempts = 0  # handshakes refused for too many connection attempts
        # Trading window per symbol: [first open_time served, first open_time not served).
        self._trading = {s: (self.base, None) for s in self.rows if s not in {u.upper() for u in unlisted}}
        self.weight_limit, self.weight_window_s = weight_limit, weight_window_s
        self.weight_header = "X-MBX-USED-WEIGHT-" + (
            f"{weight_window_s // 60}M" if weight_window_s % 60 == 0 else f"{weight_window_s}S"
        )
        self.max_connects, self.connect_window_s = max_connects, connect_window_s
        self._attempts: list[float] = []
        self._connections: set[ServerConnection] = set()
        self._refuse_until = 0.0
        self._rate_limits: list[int] = []
        self._weight = (0, 0)  # (wall-clock window, weight used in it)
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._ws_thread: threading.Thread | None = None
        self._http: ThreadingHTTPServer | None = None
        self.ws_port = 0

    # -- lifecycle -------------------------------------------------------------------------------------------

    def __enter__(self) -> BinanceServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        ready = threading.Event()
        self._ws_thread = threading.Thread(target=lambda: asyncio.run(self._serve(ready)), daemon=True)
        self._ws_thread.start()
        if not ready.wait(10):
            raise RuntimeError("the WebSocket side did not start")
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), _rest_handler(self))
        self._http.daemon_threads = True
        threading.Thread(target=self._http.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
        if self._loop is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        if self._ws_thread is not None:
            self._ws_thread.join(10)

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.ws_port}"

    @property
    def rest_url(self) -> str:
        assert self._http is not None
        return f"http://127.0.0.1:{self._http.server_address[1]}"

    # -- market time -----------------------------------------------------------------------------------------

    def elapsed_minutes(self) -> float:
        return 0.0 if self.started_at is None else (time.monotonic() - self.started_at) / self.minute_s

    def set_clock(self, minute: float) -> None:
        """Move market time to `minute` (e.g. `minutes`: every candle has closed, for REST-only tests)."""
        self.started_at = time.monotonic() - minute * self.minute_s

    def market_now_ms(self) -> int:
        return self.base + int(self.elapsed_minutes() * MINUTE_MS)

    @property
    def exhausted(self) -> bool:
        """Every candle has closed (and was streamed to whoever was connected)."""
        return self.elapsed_minutes() >= self.minutes

    def wait_minute(self, minute: float, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while self.elapsed_minutes() < minute:
            if time.monotonic() > deadline:
                raise TimeoutError(f"market minute {minute} not reached (at {self.elapsed_minutes():.1f})")
            time.sleep(0.01)

    def keys(self) -> set[tuple[str, int]]:
        """(symbol, open_time) of every candle served (closed while its symbol was trading)."""
        return {(s, t) for s, times in self._open_times.items() for t in times if self.served(s, t)}

    def served(self, symbol: str, open_time: int) -> bool:
        first, end = self._trading.get(symbol, (1, 0))
        return first <= open_time and (end is None or open_time < end)

    def list_symbol(self, symbol: str) -> int:
        """The symbol trades from the next market minute on; returns that minute's open time."""
        first = self.base + (int(self.elapsed_minutes()) + 1) * MINUTE_MS
        self._trading[symbol] = (first, None)
        return first

    def delist(self, symbol: str) -> int:
        """The symbol stops trading: the minute in progress never closes; returns its open time."""
        end = self.base + int(self.elapsed_minutes()) * MINUTE_MS
        self._trading[symbol] = (self._trading[symbol][0], end)
        return end

    def trading(self) -> list[str]:
        now = self.market_now_ms()
        return sorted(s for s, (first, end) in self._trading.items() if end is None or now < end)

    def row(self, symbol: str, open_time: int) -> list[str]:
        times = self._open_times[symbol]
        i = bisect.bisect_left(times, open_time)
        if i == len(times) or times[i] != open_time:
            raise KeyError((symbol, open_time))
        return self.rows[symbol][i]

    # -- faults ----------------------------------------------------------------------------------------------

    def drop_connections(self, outage_s: float = 0.0) -> int:
        """Abort every connection without a closing handshake (a network cut) and answer new handshakes with 503
        for outage_s. Market time keeps moving. Returns how many connections were cut."""
        self._refuse_until = time.monotonic() + outage_s
        self.dropped_at.append(time.monotonic())
        return self._call(self._abort_all())

    def inject(self, frame: str | bytes) -> int:
        """Send a raw frame (text or binary) to every connected client; returns how many got it."""
        return self._call(self._broadcast(frame))

    def rate_limit(self, times: int = 1, retry_after_s: int = 1) -> None:
        """Answer the next `times` REST requests with 429 Too Many Requests and `Retry-After: retry_after_s`."""
        with self._lock:
            self._rate_limits.extend([retry_after_s] * times)

    @property
    def connections(self) -> int:
        return len(self._connections)

    # -- WebSocket -------------------------------------------------------------------------------------------

    async def _serve(self, ready: threading.Event) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        # Keepalive is ours (see _ping), as Binance's: pings on a timer, a client without pong is dropped.
        async with serve(self._handle, "127.0.0.1", 0, process_request=self._accept, ping_interval=None) as server:
            self.ws_port = next(iter(server.sockets)).getsockname()[1]
            ready.set()
            await self._stopping.wait()

    def _call(self, coroutine: Any) -> Any:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(10)

    async def _abort_all(self) -> int:
        for ws in list(self._connections):
            ws.transport.abort()
        return len(self._connections)

    async def _broadcast(self, frame: str | bytes) -> int:
        connections = list(self._connections)
        for ws in connections:
            await ws.send(frame)
        return len(connections)

    def _streams(self, path: str) -> list[str]:
        """Symbols of a combined-stream path `/stream?streams=a@kline_1m/b@kline_1m` (none for the base `/stream`)."""
        parts = urlsplit(path)
        streams = parse_qs(parts.query).get("streams", [""])[0]
        if parts.path != "/stream":
            raise ValueError(f"unsupported path {path}")
        if not streams:
            return []
        symbols = []
        for stream in streams.split("/"):
            symbol, _, kind = stream.partition("@")
            if kind != "kline_1m" or symbol.upper() not in self.rows or symbol != symbol.lower():
                raise ValueError(f"unknown stream {stream}")
            symbols.append(symbol.upper())
        return symbols

    def _accept(self, connection: ServerConnection, request: Request) -> Response | None:
        now = time.monotonic()
        self._attempts = [t for t in self._attempts if t > now - self.connect_window_s] + [now]
        if len(self._attempts) > self.max_connects:
            self.refused_attempts += 1
            return connection.respond(HTTPStatus.TOO_MANY_REQUESTS, "too many connection attempts\n")
        if now < self._refuse_until:
            return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "service unavailable\n")
        try:
            self._streams(request.path)
        except ValueError as exc:
            return connection.respond(HTTPStatus.BAD_REQUEST, f"{exc}\n")
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        symbols = set(self._streams(ws.request.path))  # this connection's subscriptions; requests change them
        if self.started_at is None:
            self.started_at = time.monotonic()
        self._connections.add(ws)
        self.connected_at.append(time.monotonic())
        tasks = [asyncio.create_task(self._ping(ws)), asyncio.create_task(self._stream(ws, symbols))]
        try:
            await self._receive(ws, symbols)
        except ConnectionClosed:
            pass
        finally:
            for task in tasks:
                task.cancel()
            self._connections.discard(ws)

    async def _receive(self, ws: ServerConnection, symbols: set[str]) -> None:
        """Answer the client's requests; close the connection, as Binance does, past MESSAGES_PER_S a second."""
        received: list[float] = []
        async for raw in ws:
            now = time.monotonic()
            received = [t for t in received if t > now - 1.0] + [now]
            if len(received) > MESSAGES_PER_S:
                self.closed_for_rate += 1
                await ws.close(1008, "Too many requests")
                return
            await ws.send(json.dumps(self._request(raw, symbols)))

    def _request(self, raw: str | bytes, symbols: set[str]) -> dict[str, Any]:
        try:
            request = json.loads(raw)
            method, params, request_id = request["method"], request.get("params", []), request["id"]
        except (ValueError, KeyError, TypeError):
            return {"error": {"code": 3, "msg": "Invalid JSON: expected an object with method and id"}, "id": None}
        self.requests.append(request)
        if method == "LIST_SUBSCRIPTIONS":
            return {"result": sorted(kline_stream(s, "1m") for s in symbols), "id": request_id}
        if method not in {"SUBSCRIBE", "UNSUBSCRIBE"} or not isinstance(params, list):
            return {"error": {"code": 2, "msg": f"Invalid request: method {method!r}"}, "id": request_id}
        if any(not isinstance(p, str) or not p.endswith("@kline_1m") or p != p.lower() for p in params):
            return {"error": {"code": 2, "msg": "Invalid request: unknown stream"}, "id": request_id}
        streams = {symbol_of(p) for p in params}
        if method == "UNSUBSCRIBE":
            symbols -= streams
        elif len(symbols | streams) > MAX_STREAMS_PER_CONNECTION:
            msg = f"Invalid request: more than {MAX_STREAMS_PER_CONNECTION} streams on one connection"
            return {"error": {"code": 2, "msg": msg}, "id": request_id}
        else:
            symbols |= streams
        return {"result": None, "id": request_id}

    async def _stream(self, ws: ServerConnection, symbols: set[str]) -> None:
        """From the current moment to the last close: the forming candle of every subscribed symbol at each tick
        of the minute, the closed one at its end."""
        assert self.started_at is not None
        tick_s = self.minute_s / self.ticks_per_minute
        tick = int((time.monotonic() - self.started_at) / tick_s)
        try:
            while tick < self.minutes * self.ticks_per_minute:
                delay = self.started_at + (tick + 1) * tick_s - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                minute, step = divmod(tick, self.ticks_per_minute)
                open_time = self.base + minute * MINUTE_MS
                for symbol in sorted(symbols):
                    if not self.served(symbol, open_time):
                        continue
                    try:
                        row = self.row(symbol, open_time)
                    except KeyError:
                        continue
                    await ws.send(json.dumps(kline_event(symbol, row, (step + 1) / self.ticks_per_minute)))
                tick += 1
        except ConnectionClosed:
            return

    async def _ping(self, ws: ServerConnection) -> None:
        try:
            while True:
                await asyncio.sleep(self.ping_interval_s)
                pong = await ws.ping(str(int(time.time() * 1000)))
                try:
                    await asyncio.wait_for(pong, self.pong_timeout_s)
                except TimeoutError:
                    await ws.close(1008, "pong timeout")
                    return
                self.pongs += 1
        except ConnectionClosed:
            return

    # -- REST ------------------------------------------------------------------------------------------------

    def rest(self, path: str) -> tuple[int, Any, dict[str, str]]:
        """(status, JSON body, headers) for a REST request path."""
        parts = urlsplit(path)
        params = {k: v[0] for k, v in parse_qs(parts.query).items()}
        with self._lock:
            now = time.time()
            window = int(now // self.weight_window_s)
            weight = EXCHANGE_INFO_WEIGHT if parts.path == EXCHANGE_INFO_PATH else KLINES_WEIGHT
            used = (self._weight[1] if self._weight[0] == window else 0) + weight
            self._weight = (window, used)
            retry_after = self._rate_limits.pop(0) if self._rate_limits else None
            if used > self.weight_limit and retry_after is None:  # Binance counts refused requests too
                retry_after = int((window + 1) * self.weight_window_s - now) + 1
            else:
                self.peak_weight = max(self.peak_weight, used)
        headers = {self.weight_header: str(used)}
        if parts.path == EXCHANGE_INFO_PATH and retry_after is None:
            status, body = 200, self.exchange_info()
        else:
            status, body = self._klines(parts.path, params, retry_after, headers)
        with self._lock:
            self.rest_log.append((time.monotonic(), status, params))
        return status, body, headers

    def _klines(
        self, path: str, params: dict[str, str], retry_after: int | None, headers: dict[str, str]
    ) -> tuple[int, Any]:
        if retry_after is not None:
            headers["Retry-After"] = str(retry_after)
            return 429, {"code": -1003, "msg": "Too many requests; current limit of IP is 6000 per 1 MINUTE."}
        if path != KLINES_PATH:
            return 404, {"code": -1000, "msg": f"unknown path {path}"}
        symbol = params.get("symbol", "")
        if symbol not in self._trading:
            return 400, {"code": -1121, "msg": "Invalid symbol."}
        if params.get("interval") != "1m":
            return 400, {"code": -1120, "msg": "Invalid interval."}
        try:
            limit = int(params.get("limit", 500))
            now = self.market_now_ms()
            end = min(int(params.get("endTime", now)), now)
            start = int(params["startTime"]) if "startTime" in params else None
        except ValueError:
            return 400, {"code": -1100, "msg": "Illegal characters found in a parameter."}
        if not 1 <= limit <= 1000:
            return 400, {"code": -1130, "msg": "Invalid data sent for a parameter."}
        times = self._open_times[symbol]
        stop = bisect.bisect_right(times, end)
        # With startTime: the first `limit` from it; without: the latest `limit`, as Binance does.
        first = bisect.bisect_left(times, start) if start is not None else max(0, stop - limit)
        rows = [r for r in self.rows[symbol][first:stop] if self.served(symbol, int(r[0]))][:limit]
        return 200, [rest_row(r, min(1.0, (now - int(r[0])) / MINUTE_MS)) for r in rows]

    def exchange_info(self) -> dict[str, Any]:
        """`/api/v3/exchangeInfo` with the fields a market-data client reads (a subset of Binance's)."""
        minutes = self.weight_window_s % 60 == 0
        weight = {
            "rateLimitType": "REQUEST_WEIGHT",
            "interval": "MINUTE" if minutes else "SECOND",
            "intervalNum": self.weight_window_s // 60 if minutes else self.weight_window_s,
            "limit": self.weight_limit,
        }
        trading = set(self.trading())
        symbols = []
        for symbol in sorted(self._trading):
            quote = next((q for q in QUOTES if symbol.endswith(q)), symbol[-4:])
            symbols.append(
                {
                    "symbol": symbol,
                    "status": "TRADING" if symbol in trading else "BREAK",
                    "baseAsset": symbol.removesuffix(quote),
                    "baseAssetPrecision": 8,
                    "quoteAsset": quote,
                    "quotePrecision": 8,
                    "quoteAssetPrecision": 8,
                    "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"],
                    "isSpotTradingAllowed": True,
                    "isMarginTradingAllowed": False,
                    "permissions": [],
                }
            )
        return {
            "timezone": "UTC",
            "serverTime": self.market_now_ms(),
            "rateLimits": [
                weight,
                {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
                {"rateLimitType": "RAW_REQUESTS", "interval": "MINUTE", "intervalNum": 5, "limit": 61000},
            ],
            "exchangeFilters": [],
            "symbols": symbols,
        }


def _rest_handler(server: BinanceServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, body, headers = server.rest(self.path)
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json;charset=UTF-8")
            self.send_header("Content-Length", str(len(payload)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


# -- reading a topic back ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Delivery:
    received: int
    lost: int  # expected keys that never arrived
    doubled: int  # records beyond the first for a key
    unexpected: int  # keys that were not expected at all
    sources: dict[str, int]
    first_lost: tuple[tuple[str, int], ...] = ()  # a few of the lost keys, oldest first, to say which


def _consumer(bootstrap_servers: str, topic: str) -> tuple[KafkaConsumer, list[TopicPartition]]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False)
    deadline = time.monotonic() + 30
    while not (partitions := consumer.partitions_for_topic(topic)):
        if time.monotonic() > deadline:
            raise TimeoutError(f"no metadata for topic {topic}")
        time.sleep(0.1)
    return consumer, [TopicPartition(topic, p) for p in sorted(partitions)]


def topic_size(bootstrap_servers: str, topic: str) -> int:
    consumer, partitions = _consumer(bootstrap_servers, topic)
    try:
        return sum(consumer.end_offsets(partitions).values())
    finally:
        consumer.close()


def wait_for_topic_size(bootstrap_servers: str, topic: str, size: int, timeout_s: float = 60) -> int:
    """Poll until the topic holds at least `size` records (or the time is up); returns the size seen."""
    deadline = time.monotonic() + timeout_s
    while (seen := topic_size(bootstrap_servers, topic)) < size and time.monotonic() < deadline:
        time.sleep(0.2)
    return seen


def read_topic(bootstrap_servers: str, topic: str) -> dict[int, list[dict[str, Any]]]:
    """Every record now in the topic, decoded, per partition in offset order."""
    consumer, partitions = _consumer(bootstrap_servers, topic)
    try:
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        ends = consumer.end_offsets(partitions)
        out: dict[int, list[dict[str, Any]]] = {tp.partition: [] for tp in partitions}
        deadline = time.monotonic() + 60
        while any(consumer.position(tp) < ends[tp] for tp in partitions):
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not read {topic} to its end")
            for tp, records in consumer.poll(timeout_ms=500).items():
                for record in records:
                    candle = json.loads(record.value)
                    assert record.key.decode() == candle["symbol"], "the key is the symbol"
                    out[tp.partition].append(candle)
        return out
    finally:
        consumer.close()


def delivery(candles: Iterable[Mapping[str, Any]], expected: set[tuple[str, int]]) -> Delivery:
    """Compare the (symbol, open_time) keys of what arrived with what was expected."""
    candles = list(candles)
    counts = Counter((c["symbol"], c["open_time"]) for c in candles)
    lost = sorted(expected - counts.keys(), key=lambda key: (key[1], key[0]))
    return Delivery(
        received=len(candles),
        lost=len(lost),
        doubled=sum(n - 1 for n in counts.values()),
        unexpected=len(counts.keys() - expected),
        sources=dict(Counter(c["source"] for c in candles)),
        first_lost=tuple(lost[:10]),
    )


@contextmanager
def live_producer(
    settings: Settings, server: BinanceServer, options: LiveOptions, **overrides: Any
) -> Iterator[Future]:
    """The producer in a thread, pointed at the server (of every symbol it holds, unless `overrides` say otherwise,
    e.g. live_quote="USDT"); stopped on exit (its counters are the future's result)."""
    live = dataclasses.replace(
        settings,
        symbols=tuple(server.rows),
        binance_ws_url=server.ws_url,
        binance_rest_url=server.rest_url,
        **overrides,
    )
    stop = threading.Event()
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(produce_live, live, stop, options)
        try:
            yield future
        finally:
            stop.set()
