"""The Dagster code location: thin wiring of pipelines/ functions into assets, checks, jobs and schedules."""
