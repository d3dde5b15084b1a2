"""Detection: per-symbol thresholds trained from silver, their contract, retraining on demand and nightly."""

import dagster as dg

from lakehouse.settings import Settings
from orchestration.detection.assets import build_assets
from orchestration.detection.checks import build_checks
from orchestration.detection.jobs import TRAIN_THRESHOLDS_JOB
from orchestration.detection.schedules import NIGHTLY_RECALIBRATION


def build(settings: Settings) -> dg.Definitions:
    return dg.Definitions(
        assets=build_assets(settings),
        asset_checks=build_checks(settings),
        jobs=[TRAIN_THRESHOLDS_JOB],
        schedules=[NIGHTLY_RECALIBRATION],
    )
