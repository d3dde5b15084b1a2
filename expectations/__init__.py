"""Great Expectations suites, one per table contract."""
