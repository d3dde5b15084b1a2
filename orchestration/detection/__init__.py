"""Detection: thresholds training, its contract and schedule."""
