"""Streaming: the long-running runs and their supervisors."""
