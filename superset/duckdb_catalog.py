"""Build the DuckDB catalog Superset reads, and confine every connection to it to the lake's folders.

Runs in .venv-superset (where duckdb 1.4.4 and the offline Delta extension live):
    python superset/duckdb_catalog.py <catalog.duckdb> '<json {"gold.scores": "/lake/gold/scores", ...}>' \
        '<json {"gold.anomalies": {"query": "SELECT ...", "tables": ["gold.scores"]}}>'
Tables and views come from the registry (lakehouse/tables.py), so both SQL engines define them alike.
The file is built beside the target and renamed over it, so Superset's read-only connections never see half of it.
Views hold no data: delta_scan reads the table's latest snapshot on every query. The catalog also records the
folders its views read (the macro `lake_directories()`); `confine` allows a connection those folders and nothing
else. superset_config.py runs `confine` on every DuckDB connection Superset opens.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from pathlib import Path
from typing import Any

import duckdb
import duckdb_ext

LAKE_DIRECTORIES = "lake_directories"
# DuckDB shares one database instance (and its settings) between the open connections to a file.
_confining = threading.Lock()


def sql_list(values: list[str]) -> str:
    return "[" + ", ".join("'" + v.replace("'", "''") + "'" for v in values) + "]"


def build(target: Path, tables: dict[str, str], views: dict[str, dict[str, Any]]) -> list[str]:
    """Create the catalog; returns the names it holds (tables without a Delta log yet are left out)."""
    tmp = target.with_suffix(".building")
    tmp.unlink(missing_ok=True)
    con = duckdb_ext.init(duckdb.connect(str(tmp)))
    con.execute("LOAD delta")
    names = []
    for name, location in sorted(tables.items()):
        if "://" not in location and not Path(location, "_delta_log").is_dir():
            continue
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {name.split('.')[0]}")
        con.execute(f"CREATE OR REPLACE VIEW {name} AS SELECT * FROM delta_scan('{location}')")
        names.append(name)
    directories = sorted(tables[name].rstrip("/") + "/" for name in names)
    con.execute(f"CREATE MACRO {LAKE_DIRECTORIES}() AS {sql_list(directories)}::VARCHAR[]")
    for name, view in views.items():
        if all(table in names for table in view["tables"]):
            con.execute(f"CREATE OR REPLACE VIEW {name} AS {view['query']}")
            names.append(name)
    con.close()
    os.replace(tmp, target)
    return names


def _setting(con: Any, name: str) -> Any:
    return con.execute(f"SELECT current_setting('{name}')").fetchone()[0]


def lake_directories(con: Any) -> list[str]:
    """The folders the catalog's views read; none for any other DuckDB database."""
    query = "SELECT COUNT(*) FROM duckdb_functions() WHERE function_name = ? AND function_type = 'macro'"
    if not con.execute(query, [LAKE_DIRECTORIES]).fetchone()[0]:
        return []
    return con.execute(f"SELECT {LAKE_DIRECTORIES}()").fetchone()[0]


def confine(con: Any) -> None:
    """Allow `con` file access to the lake's folders only, and lock its configuration against queries.

    Run after the Delta extension is loaded (loading it is file access too). Not even a temporary directory stays
    allowed: spilling would write outside the lake.
    """
    with _confining:
        if _setting(con, "lock_configuration"):
            # Another open connection to this file confined the shared instance already.
            if _setting(con, "enable_external_access"):
                raise PermissionError("DuckDB configuration is locked with external access enabled")
            return
        con.execute("SET temp_directory = ''")
        con.execute(f"SET allowed_directories = {sql_list(lake_directories(con))}")
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")


if __name__ == "__main__":
    print(json.dumps(build(Path(sys.argv[1]), json.loads(sys.argv[2]), json.loads(sys.argv[3]))))
