"""Superset's configuration for marketlake (SUPERSET_CONFIG_PATH points here).

Everything comes from the environment the project sets when it starts Superset (lakehouse/services/superset.py):
no default secret, metadata in SQLite under <home>/superset.
"""

import copy
import itertools
import os
import sys
import threading
from pathlib import Path
from typing import Any

import duckdb_engine
import sqlglot
from sqlalchemy import event
from sqlalchemy.engine import Engine
from superset.exceptions import SupersetDisallowedSQLFunctionException

sys.path.insert(0, str(Path(__file__).parent))  # duckdb_catalog.py sits beside this file, here and in the image
from duckdb_catalog import confine

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
# SQLite and other file-mapping dialects are refused as connections. DuckDB is not on Superset's list; every DuckDB
# connection is confined to the lake by the hook below instead.
PREVENT_UNSAFE_DB_CONNECTIONS = True
FAB_ADD_SECURITY_API = True  # provision.py keeps the analyst and viewer roles through it


@event.listens_for(Engine, "connect")
def confine_duckdb(dbapi_connection, _record) -> None:
    """Every DuckDB connection Superset opens (SQL Lab, charts, connection tests) reads the lake's folders only."""
    if isinstance(dbapi_connection, duckdb_engine.ConnectionWrapper):
        confine(dbapi_connection)


# Superset opens a connection per query (its engines use NullPool). The first connection to a DuckDB file creates
# the database instance and loads the Delta extension into it: 0.3-1 s, measured, paid by every chart query once the
# connection closed. Connections to a file with an open instance share it (and its loaded extension): a few ms.
# So one connection per catalog stays open; a rebuilt catalog (a new file renamed over the old) gets a new one.
# delta_scan still reads each table's latest snapshot on every query (measured: an append shows at the next query).
_kept: dict[str, tuple[int, Any]] = {}
_keeping = threading.Lock()


@event.listens_for(duckdb_engine.Dialect, "do_connect")
def keep_duckdb_instance(dialect, _record, cargs, cparams) -> None:
    path = cparams.get("database")
    if not path or path == ":memory:":
        return
    inode = os.stat(path).st_ino
    with _keeping:
        kept = _kept.get(path)
        if kept is None or kept[0] != inode:
            # The query's own arguments: DuckDB shares an instance only between connections of identical config.
            connection = dialect.connect(*cargs, **copy.deepcopy(cparams))
            confine(connection)
            _kept[path] = (inode, connection)
            if kept is not None:
                kept[1].close()


# A second fence in front of the engine's, on the SQL text of SQL Lab and charts: DuckDB functions user SQL may not
# call. They read files by themselves (the catalog's views do that), run SQL built from strings (query), or redirect
# DuckDB's logging: a log file outside the allowed folders aborts the process (DuckDB 1.4.4), and the configuration
# lock does not cover `CALL enable_logging(...)`, so this fence is the only one against that.
# fmt: off
DUCKDB_REFUSED_FUNCTIONS = {
    "read_text", "read_blob", "read_csv", "read_csv_auto", "sniff_csv", "read_json", "read_json_auto",
    "read_json_objects", "read_json_objects_auto", "read_ndjson", "read_ndjson_auto", "read_ndjson_objects",
    "read_parquet", "parquet_scan", "parquet_metadata", "parquet_schema", "parquet_file_metadata",
    "parquet_kv_metadata", "glob", "delta_scan", "query", "enable_logging",
}
# fmt: on


def refused_calls(sql: str) -> set[str]:
    """Refused functions `sql` calls, from DuckDB's tokens: comments, quotes, case and line breaks hide nothing."""
    try:
        tokens = sqlglot.tokenize(sql, read="duckdb")
    except sqlglot.errors.TokenError:
        return {"(SQL that cannot be tokenised)"}
    called = set()
    for token, after in itertools.pairwise(tokens):
        if token.token_type == sqlglot.TokenType.COMMAND:  # CALL, EXECUTE...: the rest comes as one string token
            called |= refused_calls(after.text)
        elif token.text.lower() in DUCKDB_REFUSED_FUNCTIONS and after.token_type == sqlglot.TokenType.L_PAREN:
            called.add(token.text.lower())
    return called


def SQL_QUERY_MUTATOR(sql: str, **kwargs: Any) -> str:
    """Superset's hook on every query of SQL Lab and charts: refuse DuckDB SQL calling a refused function."""
    database = kwargs.get("database")
    if database is not None and database.backend == "duckdb" and (called := refused_calls(sql)):
        raise SupersetDisallowedSQLFunctionException(called)
    return sql
