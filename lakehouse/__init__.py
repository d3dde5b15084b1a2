"""Infrastructure: settings, the table registry, the Spark session factory, local services, maintenance."""
