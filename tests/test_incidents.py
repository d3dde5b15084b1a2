"""gold.incidents' model (pipelines.detection.incidents.advance): hand-made scored minutes folded batch by batch,
replays, and the 2025-02-03 crash day of the bundled sample. Pure pandas."""

from __future__ import annotations

import pandas as pd
import pytest

from lakehouse.tables import GOLD_INCIDENTS
from pipelines.detection.backtest import walk_forward
from pipelines.detection.incidents import CLOSED, OPEN, advance, incidents, latest_incidents
from pipelines.detection.maths import DetectionConfig
from tests.test_detection import T0, sample

NONE = pd.DataFrame(columns=GOLD_INCIDENTS.columns)


def scored(symbol: str, votes: dict[int, int], version: int = 1) -> pd.DataFrame:
    """Scored minutes of one symbol: {minute after T0: votes}; prices rise 1 a minute from 100, z_ret = -votes."""
    minutes = list(votes)
    return pd.DataFrame(
        {
            "symbol": symbol,
            "open_time": T0 + pd.to_timedelta(minutes, unit="min"),
            "open": [100.0 + m for m in minutes],
            "close": [101.0 + m for m in minutes],
            "votes": list(votes.values()),
            "z_ret": [-float(v) for v in votes.values()],
            "z_range": [2.0 * v for v in votes.values()],
            "reasons": [f"minute {m}" for m in minutes],
            "thresholds_version": version,
        }
    )


def quiet(symbol: str, *minutes: int) -> pd.DataFrame:
    return scored(symbol, dict.fromkeys(minutes, 0))


def fold(batches: list[pd.DataFrame], gap: int = 5) -> pd.DataFrame:
    """The table after each batch's rows were upserted (MERGE on incident_id), as the stream does."""
    table = NONE
    for batch in batches:
        rows = advance(latest_incidents(table), batch, gap)
        kept = table[~table["incident_id"].isin(rows["incident_id"])]
        table = pd.concat([t for t in (kept, rows) if not t.empty], ignore_index=True) if not rows.empty else table
    return table.sort_values(["symbol", "start"]).reset_index(drop=True)


def at(minute: int) -> pd.Timestamp:
    return T0 + pd.Timedelta(minutes=minute)


def test_one_batch_gives_the_incidents_of_the_evaluation_with_their_details():
    minutes = pd.concat([scored("A", {0: 2, 1: 3, 2: 2, 3: 0, 7: 2, 13: 2, 14: 1, 20: 0}), scored("B", {1: 2})])
    out = advance(NONE, minutes, 5)
    assert out.columns.tolist() == GOLD_INCIDENTS.columns
    summary = incidents(minutes, 5)
    assert out[["symbol", "start", "last_minute", "minutes"]].values.tolist() == (
        summary[["symbol", "start", "end", "minutes"]].values.tolist()
    )
    first = out.iloc[0]
    assert first["incident_id"] == "A-20240101T0000"
    assert (first["peak_votes"], first["peak_confidence"], first["peak_time"]) == (3, "HIGH", at(1))
    assert (first["peak_abs_z_ret"], first["peak_z_range"], first["reasons"]) == (3.0, 6.0, "minute 1")
    assert first["price_change"] == pytest.approx(108.0 / 100.0 - 1)  # close of minute 7 / open of minute 0
    # A was scored up to minute 20: more than 5 minutes after both its incidents (last at 7 and 13); B only to 1.
    assert out["status"].tolist() == [CLOSED, CLOSED, OPEN]
    assert out["previous_last_minute"].tolist()[:2] == [pd.NaT, at(7)]
    assert out["scored_through"].tolist() == [at(20), at(20), at(1)]


def test_minutes_folded_batch_by_batch_give_the_rows_of_one_batch():
    votes = {0: 2, 1: 2, 2: 0, 3: 3, 4: 0, 9: 2, 10: 0, 16: 2, 17: 0, 30: 0}
    whole = fold([scored("A", votes)])
    for size in (1, 2, 3):
        minutes = list(votes.items())
        batches = [scored("A", dict(minutes[i : i + size])) for i in range(0, len(minutes), size)]
        # All but the watermark: how far each row had seen its symbol when it was last written.
        folded = fold(batches).drop(columns="scored_through")
        pd.testing.assert_frame_equal(folded, whole.drop(columns="scored_through"))
    assert whole["minutes"].tolist() == [3, 1, 1]
    assert whole["status"].tolist() == [CLOSED, CLOSED, CLOSED]


def test_an_incident_opens_grows_and_closes_and_only_changed_incidents_are_returned():
    opened = advance(NONE, scored("A", {0: 2}), 5)
    assert opened[["status", "minutes", "peak_confidence"]].values.tolist() == [[OPEN, 1, "MEDIUM"]]
    assert advance(opened, quiet("A", 1, 2, 3), 5).empty  # quiet minutes within the gap change nothing
    grown = advance(opened, scored("A", {5: 3}), 5)
    assert grown[["incident_id", "status", "minutes", "peak_confidence"]].values.tolist() == [
        ["A-20240101T0000", OPEN, 2, "HIGH"]
    ]
    assert advance(grown, quiet("A", 10), 5).empty  # exactly the gap after its last minute: still open
    closed = advance(grown, quiet("A", 11), 5)
    assert closed[["incident_id", "status", "minutes"]].values.tolist() == [["A-20240101T0000", CLOSED, 2]]
    assert advance(NONE, quiet("A", 1, 2), 5).empty


def test_replayed_minutes_change_nothing():
    first = advance(NONE, scored("A", {0: 2, 1: 3}), 5)
    assert advance(first, scored("A", {0: 2, 1: 3}), 5).empty
    later = advance(first, pd.concat([scored("A", {1: 3}), quiet("A", 20)]), 5)  # 1 is replayed, 20 is new
    assert later[["minutes", "status"]].values.tolist() == [[2, CLOSED]]
    # A batch that closed one incident and opened another, replayed: its minutes are in the latest one already.
    both = advance(first, scored("A", {20: 2}), 5)
    assert both["status"].tolist() == [CLOSED, OPEN]
    assert advance(both.tail(1), scored("A", {20: 2}), 5).empty


def test_each_symbol_is_folded_on_its_own():
    a = advance(NONE, scored("A", {0: 2}), 5)
    out = advance(a, pd.concat([quiet("A", 3), scored("B", {3: 2}), quiet("B", 30)]), 5)
    assert out[["symbol", "status", "previous_last_minute"]].values.tolist() == [["B", CLOSED, pd.NaT]]


@pytest.fixture(scope="module")
def crash_day() -> pd.DataFrame:
    """FILUSDT and NEARUSDT on 2025-02-03, scored with thresholds trained on the two days before, as the demo."""
    candles = pd.concat([sample(s, "2025-02-0[123]") for s in ("FILUSDT", "NEARUSDT")], ignore_index=True)
    scored, _ = walk_forward(candles, DetectionConfig(), train_days=2)
    return scored


def test_the_crash_day_in_hourly_batches_gives_one_first_high_at_01_54_per_symbol(crash_day):
    hours = crash_day["open_time"].dt.floor("h")
    table = fold([crash_day[hours == h] for h in sorted(hours.unique())], gap=30)
    assert table["incident_id"].is_unique
    whole = incidents(crash_day)
    assert table[["symbol", "start", "last_minute", "minutes"]].values.tolist() == (
        whole[["symbol", "start", "end", "minutes"]].values.tolist()
    )
    high = table[table["peak_confidence"] == "HIGH"].groupby("symbol")["peak_time"].min()
    assert high.to_dict() == {"FILUSDT": pd.Timestamp("2025-02-03 01:54"), "NEARUSDT": pd.Timestamp("2025-02-03 01:54")}
    crash = table[table["peak_time"] == pd.Timestamp("2025-02-03 01:54")]
    assert (crash["price_change"] < 0).all() and crash["reasons"].str.contains("price").all()
    # Replaying the whole day in one batch over the finished table changes nothing.
    assert advance(latest_incidents(table), crash_day, 30).empty
