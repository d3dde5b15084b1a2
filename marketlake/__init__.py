"""The `marketlake` command line."""
