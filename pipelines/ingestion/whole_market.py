"""The whole market live: every TRADING symbol of a quote asset (or of all), sharded over WebSocket connections.

- The symbols come from `/api/v3/exchangeInfo`, read again every `live_refresh_minutes`: new listings are
  SUBSCRIBEd on a shard with room (or a new shard), delisted symbols UNSUBSCRIBEd.
- A shard is a LiveProducer over a subset of the symbols (base `/stream` endpoint + SUBSCRIBE): it reconnects on
  its own, and its per-symbol state survives its reconnects. One connection-attempt limiter is shared by all.
- Gaps (after an outage every symbol has one) go to one GapFiller: a priority queue, newest page first, drained by
  a few workers whose REST clients wait whenever the IP's used weight nears the limit exchangeInfo announces.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, fields

import requests
from kafka import KafkaProducer

from lakehouse.settings import Settings
from pipelines.ingestion.binance_rest import BinanceRest, BinanceRestError, interval_ms, pages_newest_first
from pipelines.ingestion.exchange_info import (
    EXCHANGE_INFO_PATH,
    ExchangeInfoError,
    WeightLimit,
    request_weight,
    server_time_ms,
    trading_symbols,
)
from pipelines.ingestion.kafka_io import make_producer
from pipelines.ingestion.live import LiveOptions, LiveProducer, LiveStats
from pipelines.ingestion.shards import CONNECT_WINDOW_S, CONNECTS_PER_WINDOW, RateLimiter, place, split

log = logging.getLogger(__name__)


class GapFiller:
    """Gaps of every shard, cut into REST pages and filled newest page first by `workers` threads, each with its
    own REST client (a requests session is not shared between threads). Binance's used-weight header counts for
    the whole IP, so each client sees the weight all of them used."""

    def __init__(self, make_rest: Callable[[], BinanceRest], workers: int, stop: threading.Event) -> None:
        self.make_rest = make_rest
        self.stop = stop
        self._queue: queue.PriorityQueue[tuple[int, int, LiveProducer, str, int, int, bool]] = queue.PriorityQueue()
        self._order = itertools.count()  # FIFO among pages that end on the same minute
        self._threads = [threading.Thread(target=self._work, name=f"gapfill-{i}", daemon=True) for i in range(workers)]

    def submit(self, shard: LiveProducer, symbol: str, start: int, end: int, listing: bool) -> None:
        for page_start, page_end in pages_newest_first(start, end, shard.step_ms):
            self._queue.put((-page_end, next(self._order), shard, symbol, page_start, page_end, listing))

    def pending(self) -> int:
        return self._queue.qsize()

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def _work(self) -> None:
        rest = self.make_rest()
        while not self.stop.is_set():
            try:
                _, _, shard, symbol, start, end, listing = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            shard.fill_gap(symbol, start, end, listing, rest)

    def close(self) -> None:
        """After stop: wait for the workers; pages never fetched are counted unfilled by their shard."""
        for thread in self._threads:
            thread.join(30)
        while True:
            try:
                _, _, shard, symbol, start, end, _ = self._queue.get_nowait()
            except queue.Empty:
                return
            shard.stats.unfilled += (end - start) // shard.step_ms
            log.error("whole market: %s: [%d, %d) not filled (stopped); run the backfill for it", symbol, start, end)


def total(stats: list[LiveStats]) -> LiveStats:
    return LiveStats(**{f.name: sum(getattr(s, f.name) for s in stats) for f in fields(LiveStats)})


class WholeMarket:
    def __init__(
        self,
        settings: Settings,
        producer: KafkaProducer,
        stop: threading.Event,
        options: LiveOptions | None = None,
        stats: LiveStats | None = None,
    ) -> None:
        self.settings = settings
        self.producer = producer
        self.stop = stop
        self.options = options or LiveOptions()
        self.stats = stats or LiveStats()  # the sum of every shard's counters, refreshed every second
        self.weight = WeightLimit()
        self.rest = self._rest_client()
        self.connections = RateLimiter(CONNECTS_PER_WINDOW, CONNECT_WINDOW_S)
        self.gaps = GapFiller(self._rest_client, settings.live_gapfill_workers, stop)
        self.shards: list[LiveProducer] = []
        self._threads: list[threading.Thread] = []
        self._read_at = 0  # serverTime of the last exchangeInfo read

    def _rest_client(self) -> BinanceRest:
        return BinanceRest(
            self.settings.binance_rest_url,
            stop=self.stop,
            weight_limit=self.weight.limit,
            weight_window_s=self.weight.window_s,
            weight_header=self.weight.header,
        )

    def read_symbols(self) -> tuple[str, ...]:
        """The TRADING symbols of the quote now (and the weight budget announced with them)."""
        info = self.rest.get(EXCHANGE_INFO_PATH, {})
        symbols = trading_symbols(info, self.settings.live_quote)
        self.weight = request_weight(info)
        self.rest.weight_limit, self.rest.weight_window_s = self.weight.limit, self.weight.window_s
        self.rest.weight_header = self.weight.header
        self._read_at = server_time_ms(info)
        return symbols

    def run(self) -> LiveStats:
        symbols = self.read_symbols()
        log.info(
            "whole market: %d %s symbols in shards of %d; REST budget %d weight per %.0f s",
            len(symbols),
            self.settings.live_quote,
            self.settings.live_shard_size,
            self.weight.limit,
            self.weight.window_s,
        )
        self.gaps.start()
        for group in split(symbols, self.settings.live_shard_size):
            self._start_shard(group, {})
        refresh_s = self.settings.live_refresh_minutes * 60
        next_refresh = time.monotonic() + refresh_s
        try:
            while not self.stop.wait(1.0):
                self._report()
                if time.monotonic() >= next_refresh:
                    next_refresh = time.monotonic() + refresh_s
                    self.update()
        finally:
            self.stop.set()
            for thread in self._threads:
                thread.join(60)
            self.gaps.close()
            self._report()
            log.info("whole market: stopped; %d shards; %s", len(self.shards), self.stats.line())
        return self.stats

    def update(self) -> None:
        """Re-read exchangeInfo: subscribe new listings (filled from the previous read on), drop delistings."""
        previous_read = self._read_at
        try:
            symbols = set(self.read_symbols())
        except (BinanceRestError, ExchangeInfoError, requests.RequestException) as exc:
            log.error("whole market: exchangeInfo not read (%s); keeping the current symbols", exc)
            return
        current = {s for shard in self.shards for s in shard.symbols}
        added, removed = sorted(symbols - current), current - symbols
        if removed:
            log.info("whole market: %d symbol(s) no longer trading: %s", len(removed), ", ".join(sorted(removed)))
        for shard in self.shards:
            if gone := shard.symbols & removed:
                shard.remove(gone)
        if not added:
            return
        log.info("whole market: %d new symbol(s): %s", len(added), ", ".join(added))
        # Not trading at the previous read: no minute of theirs before it is missing.
        step = interval_ms(self.settings.interval)
        since = dict.fromkeys(added, previous_read // step * step)
        counts = place([len(shard.symbols) for shard in self.shards], len(added), self.settings.live_shard_size)
        start = 0
        for i, count in enumerate(counts):
            group, start = added[start : start + count], start + count
            if not group:
                continue
            if i < len(self.shards):
                self.shards[i].add(group, since)
            else:
                self._start_shard(group, since)

    def _start_shard(self, symbols: list[str], since: dict[str, int]) -> None:
        shard = LiveProducer(
            self.settings,
            self.producer,
            self.rest,
            self.stop,
            self.options,
            symbols=(),
            connections=self.connections,
            fill=self.gaps.submit,
            name=f"shard {len(self.shards)}",
        )
        shard.add(symbols, since)
        self.shards.append(shard)
        self._threads.append(threading.Thread(target=shard.run, name=shard.name, daemon=True))
        self._threads[-1].start()

    def _report(self) -> None:
        for name, value in asdict(total([shard.stats for shard in self.shards])).items():
            setattr(self.stats, name, value)


def produce_whole_market(
    settings: Settings, stop: threading.Event, options: LiveOptions | None = None, stats: LiveStats | None = None
) -> LiveStats:
    """Run the whole-market producer with its own Kafka producer until `stop` is set."""
    producer = make_producer(settings)
    try:
        return WholeMarket(settings, producer, stop, options, stats).run()
    finally:
        producer.close(timeout=10)
