"""The code location: one Definitions per domain, merged. `dagster dev -m orchestration.definitions`."""

import dagster as dg

from lakehouse.settings import Settings
from orchestration.detection import definitions as detection
from orchestration.ingestion import definitions as ingestion
from orchestration.resources import build_resources
from orchestration.streaming import definitions as streaming


def build_definitions(settings: Settings) -> dg.Definitions:
    shared = dg.Definitions(
        resources=build_resources(settings),
        # One process, one SparkSession: each step of a multiprocess run would start its own JVM.
        executor=dg.in_process_executor,
    )
    domains = [domain.build(settings) for domain in (ingestion, detection, streaming)]
    return dg.Definitions.merge(*domains, shared)


# Dagster's entry point (`dagster dev -m orchestration.definitions`) builds the settings, once, from the environment.
defs = build_definitions(Settings.from_env())
