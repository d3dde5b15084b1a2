"""Ingestion: backfills into bronze and silver."""
