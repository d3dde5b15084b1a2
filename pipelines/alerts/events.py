"""Alerts from gold.incidents rows: which alerts an incident implies, their deterministic ids and messages. Pure.

An incident implies an `opened` alert, an `escalated` one when it reached HIGH after opening at MEDIUM, and a
`closed` one if asked for. Each depends only on the incident's row (not on how its minutes were batched), and its
id is the incident's id and the kind, so replays and restarts imply the same alerts with the same ids.
Cool-down: an incident that starts within `cooldown_minutes` of its symbol's previous incident is part of a storm;
it gets no opened or closed alert, only its escalation (a move to HIGH is always news).
A market incident (pipelines.detection.market) implies the same kinds of alert, one for all its symbols, keyed
MARKET; a symbol's incident marked as moving with the market implies none of its own.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

import pandas as pd

from pipelines.detection.incidents import CLOSED
from pipelines.detection.market import MARKET, MARKET_SYMBOL
from pipelines.detection.maths import CONFIDENCE

OPENED, ESCALATED, CLOSED_KIND, TEST = "opened", "escalated", "closed", "test"
RANK = {name: votes for votes, name in CONFIDENCE.items() if name}  # LOW 1 < MEDIUM 2 < HIGH 3
HIGH = CONFIDENCE[max(CONFIDENCE)]


@dataclass(frozen=True)
class Alert:
    alert_id: str
    incident_id: str
    kind: str
    symbol: str
    confidence: str
    message: str  # JSON, with a Slack-compatible `text`

    def at_least(self, confidence: str) -> bool:
        return RANK[self.confidence] >= RANK[confidence]


def alert_id(incident_id: str, kind: str) -> str:
    return f"{incident_id}:{kind}"


def alerts_of(
    incidents: pd.DataFrame, cooldown_minutes: int, on_close: bool = False, market: pd.DataFrame | None = None
) -> list[Alert]:
    """Every alert the incidents imply (gold.incidents rows; gold.market_incidents rows as `market`), in order of
    incident start and kind. A symbol's incident with the market (scope `market`) has none of its own: the market
    incident's alerts name its symbols."""
    own = incidents[incidents["scope"] != MARKET]
    events = [(row, row.incident_id, row.symbol, _storm(row, cooldown_minutes)) for row in own.itertuples(index=False)]
    if market is not None:
        events += [(row, row.market_incident_id, MARKET_SYMBOL, False) for row in market.itertuples(index=False)]
    out = []
    for row, incident, symbol, storm in sorted(events, key=lambda e: (e[0].start, e[2])):
        escalated = row.peak_confidence == HIGH and row.peak_time > row.start
        kinds = {
            OPENED: (not storm, "MEDIUM" if escalated else row.peak_confidence),
            ESCALATED: (escalated, HIGH),
            CLOSED_KIND: (on_close and not storm and row.status == CLOSED, row.peak_confidence),
        }
        out += [
            _alert(row, incident, symbol, kind, confidence) for kind, (wanted, confidence) in kinds.items() if wanted
        ]
    return out


def _storm(incident, cooldown_minutes: int) -> bool:
    """Whether a symbol's incident starts within the cool-down of its previous one."""
    return pd.notna(incident.previous_last_minute) and (
        incident.start - incident.previous_last_minute <= pd.Timedelta(minutes=cooldown_minutes)
    )


def _alert(incident, incident_key: str, symbol: str, kind: str, confidence: str) -> Alert:
    key = alert_id(incident_key, kind)
    said = market_text(incident, kind, confidence) if symbol == MARKET_SYMBOL else text(incident, kind, confidence)
    body = {
        "alert_id": key,
        "kind": kind,
        "confidence": confidence,
        "text": said,
        "incident": {name: _json_value(value) for name, value in incident._asdict().items()},
    }
    return Alert(key, incident_key, kind, symbol, confidence, json.dumps(body, sort_keys=True))


def _when(incident, kind: str) -> pd.Timestamp:
    return {OPENED: incident.start, ESCALATED: incident.peak_time, CLOSED_KIND: incident.last_minute}[kind]


def text(incident, kind: str, confidence: str) -> str:
    """One line a person can act on (Slack shows `text`): what, when, how much against the market, why."""
    market = "" if pd.isna(incident.market_change) else f" (market {incident.market_change:+.2%})"
    return (
        f"{incident.symbol} {confidence} incident {kind} at {_when(incident, kind):%Y-%m-%d %H:%M} UTC: "
        f"price {incident.price_change:+.2%}{market} over {incident.minutes} confirmed minute(s) since "
        f"{incident.start:%H:%M}; peak at {incident.peak_time:%H:%M}: {incident.reasons or 'no reasons'} "
        f"[{incident.incident_id}]"
    )


def market_text(incident, kind: str, confidence: str, named: int = 10) -> str:
    """A market incident as one line: how many symbols moved together, which (the first `named`), the market's move."""
    symbols = incident.symbols.split(",")
    more = f" and {len(symbols) - named} more" if len(symbols) > named else ""
    return (
        f"MARKET {confidence} incident {kind} at {_when(incident, kind):%Y-%m-%d %H:%M} UTC: "
        f"{incident.symbol_count} of {incident.active_symbols} symbols moved together "
        f"({', '.join(symbols[:named])}{more}); market {incident.market_change:+.2%} since "
        f"{incident.start:%H:%M}; peak at {incident.peak_time:%H:%M} [{incident.market_incident_id}]"
    )


def _json_value(value: object) -> object:
    """A gold.incidents value as JSON: times as ISO strings, missing values as null."""
    if not isinstance(value, str) and pd.isna(value):
        return None
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return value.item() if hasattr(value, "item") else value


def test_alert(now: datetime) -> Alert:
    """One alert to check that sinks are wired (`marketlake alerts test`), with an id of its own each time."""
    key = f"test-{now:%Y%m%dT%H%M%S}"
    said = f"marketlake test alert {key}: this sink is configured and reachable"
    body = {"alert_id": key, "kind": TEST, "confidence": HIGH, "text": said, "incident": None}
    return Alert(key, key, TEST, "TEST", HIGH, json.dumps(body, sort_keys=True))


def describe(message: bytes) -> str:
    """An alert from the topic as one line for a person: its kind, confidence and text; anything else as it came."""
    try:
        body = json.loads(message)
        return f"{body['kind']:<9} {body['confidence']:<6} {body['text']}"
    except (ValueError, TypeError, KeyError):
        return f"(not an alert) {message[:200]!r}"
