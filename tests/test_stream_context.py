"""The stream's in-memory silver tail (pure pandas): what it holds, and when it must send the stream to silver."""

import pandas as pd

from pipelines.detection.maths import CANDLE_COLUMNS
from pipelines.streaming.context import SilverTail

T0 = pd.Timestamp("2025-02-03 00:00")


def candles(symbol: str, start_minute: int, count: int) -> pd.DataFrame:
    times = pd.date_range(T0 + pd.Timedelta(minutes=start_minute), periods=count, freq="1min")
    frame = pd.DataFrame({column: 1.0 for column in CANDLE_COLUMNS}, index=range(count))
    return frame.assign(symbol=symbol, open_time=times, close_time=times + pd.Timedelta(seconds=59.999))


def bounds(**symbols: tuple[int, int]) -> pd.DataFrame:
    """{symbol: (first minute, last minute)} -> the bounds frame the stream passes to `uncovered`."""
    rows = {s: (T0 + pd.Timedelta(minutes=a), T0 + pd.Timedelta(minutes=b)) for s, (a, b) in symbols.items()}
    return pd.DataFrame.from_dict(rows, orient="index", columns=["first", "last"])


def seeded(behind: int = 120, ahead: int = 1440) -> SilverTail:
    """A tail seeded from a silver read of AAA and BBB from minute 0 (silver holds minutes 0..59 of each)."""
    tail = SilverTail(behind_minutes=behind, ahead_minutes=ahead)
    tail.clear(version=0)
    stored = pd.concat([candles("AAA", 0, 60), candles("BBB", 0, 60)], ignore_index=True)
    tail.seed(stored, ["AAA", "BBB"], T0, T0 + pd.Timedelta(minutes=60))
    return tail


def test_an_empty_tail_covers_nothing():
    assert SilverTail(120).uncovered(bounds(AAA=(0, 1))) == ["AAA"]


def test_a_seeded_tail_serves_the_range_it_read_and_only_that():
    tail = seeded(ahead=30)
    assert tail.uncovered(bounds(AAA=(0, 60), BBB=(10, 90))) == []
    assert tail.uncovered(bounds(AAA=(-1, 60))) == ["AAA"]  # older than the read: a late candle
    assert tail.uncovered(bounds(AAA=(0, 91))) == ["AAA"]  # past what the read covered
    assert tail.uncovered(bounds(CCC=(0, 1))) == ["CCC"]  # never read
    context = tail.between(["AAA"], T0 + pd.Timedelta(minutes=50), T0 + pd.Timedelta(minutes=70))
    assert context["open_time"].tolist() == list(pd.date_range(T0 + pd.Timedelta(minutes=50), periods=10, freq="1min"))


def test_committed_candles_join_the_tail_and_old_ones_are_trimmed():
    tail = seeded(behind=30)
    tail.committed(candles("AAA", 60, 1), version=1)  # ours: the only commit since version 0
    tail.trim(candles("AAA", 60, 1))  # AAA's newest candle: minute 60; keep 30 minutes behind it
    aaa = tail.between(["AAA"], T0, T0 + pd.Timedelta(days=1))
    assert (aaa["open_time"].min(), aaa["open_time"].max()) == (
        T0 + pd.Timedelta(minutes=30),
        T0 + pd.Timedelta(minutes=60),
    )
    assert len(tail.between(["BBB"], T0, T0 + pd.Timedelta(days=1))) == 60  # not in the batch: untouched
    assert tail.uncovered(bounds(AAA=(30, 61))) == []
    assert tail.uncovered(bounds(AAA=(29, 61))) == ["AAA"]  # trimmed away: silver again


def test_a_reseed_replaces_the_symbols_rows_and_clear_forgets_everything():
    tail = seeded()
    tail.seed(candles("AAA", -120, 10), ["AAA"], T0 - pd.Timedelta(minutes=120), T0)
    assert len(tail.between(["AAA"], T0 - pd.Timedelta(days=1), T0 + pd.Timedelta(days=1))) == 10
    assert len(tail.between(["BBB"], T0, T0 + pd.Timedelta(days=1))) == 60
    tail.clear(version=7)
    assert tail.version == 7 and tail.rows.empty and tail.uncovered(bounds(BBB=(0, 1))) == ["BBB"]


def test_a_commit_that_is_not_just_ours_empties_the_tail():
    tail = seeded()
    tail.committed(candles("AAA", 60, 1), version=2)  # someone else committed version 1
    assert tail.version is None and tail.rows.empty and tail.uncovered(bounds(AAA=(0, 60))) == ["AAA"]


def test_a_seed_of_many_symbols_reads_less_ahead_so_memory_follows_symbols_times_window():
    tail = SilverTail(behind_minutes=120, ahead_minutes=1440, seed_rows=500_000)
    assert tail.seed_window(T0, T0, 3) == (T0, T0 + pd.Timedelta(minutes=1440))  # a few symbols: a day
    assert tail.seed_window(T0, T0, 2000) == (T0, T0 + pd.Timedelta(minutes=250))  # 2,000 x 250 = 500,000 candles
