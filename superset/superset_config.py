"""Superset's configuration for marketlake (SUPERSET_CONFIG_PATH points here).

Everything comes from the environment the project sets when it starts Superset (lakehouse/services/superset.py):
no default secret, metadata in SQLite under <home>/superset.
"""

import os

SECRET_KEY = os.environ["SUPERSET_SECRET_KEY"]  # no default on purpose: Superset must not start with a known key
# docker-compose keeps the metadata in Postgres; a local run keeps it in SQLite.
SQLALCHEMY_DATABASE_URI = os.environ.get(
    "SUPERSET_METADATA_DB_URI", f"sqlite:///{os.environ['SUPERSET_HOME']}/superset.db?check_same_thread=false"
)
DATA_DIR = os.environ["SUPERSET_HOME"]

# Local single-node setup: no Celery, no Redis; an in-process cache is enough for one user.
CACHE_CONFIG = {"CACHE_TYPE": "SimpleCache", "CACHE_DEFAULT_TIMEOUT": 300}
DATA_CACHE_CONFIG = {"CACHE_TYPE": "NullCache"}  # dashboards show fresh rows (freshness is measured)
FEATURE_FLAGS = {"DASHBOARD_NATIVE_FILTERS": True}
TALISMAN_ENABLED = False  # served on loopback over plain HTTP
WTF_CSRF_ENABLED = True
SQLLAB_CTAS_NO_LIMIT = True
PREVENT_UNSAFE_DB_CONNECTIONS = False  # DuckDB is a file on this machine
