"""Ingestion: historical backfills of (day, symbol) partitions into bronze and silver, with silver's contract."""

import dagster as dg

from lakehouse.settings import Settings
from orchestration.ingestion.assets import build_assets


def build(settings: Settings) -> dg.Definitions:
    return dg.Definitions(assets=build_assets(settings))
