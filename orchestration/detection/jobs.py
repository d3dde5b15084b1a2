"""Retraining on demand: the thresholds asset as a job, queued one at a time with the other Spark batch runs."""

import dagster as dg

from lakehouse.services.dagster import SPARK_BATCH_TAG
from orchestration.keys import THRESHOLDS_KEY

TRAIN_THRESHOLDS_JOB = dg.define_asset_job(
    "train_thresholds_job",
    selection=dg.AssetSelection.keys(THRESHOLDS_KEY),
    description="Retrain every symbol's thresholds from the trailing period of silver candles.",
    tags={SPARK_BATCH_TAG: "batch"},  # the run queue runs one of these at a time (dagster.yaml)
)
