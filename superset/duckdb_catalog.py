"""Build the DuckDB catalog Superset reads: one view per lakehouse table over its Delta files (delta_scan).

Runs in .venv-superset (where duckdb 1.4.4 and the offline Delta extension live):
    python superset/duckdb_catalog.py <catalog.duckdb> '<json {"gold.scores": "/lake/gold/scores", ...}>'
The file is built beside the target and renamed over it, so Superset's read-only connections never see half of it.
Views hold no data: delta_scan reads the table's latest snapshot on every query.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import duckdb
import duckdb_ext

# Same rule as the Spark endpoint's gold.anomalies view.
VIEWS = {"gold.anomalies": "SELECT * FROM gold.scores WHERE votes >= 1"}


def build(target: Path, tables: dict[str, str]) -> list[str]:
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
    for name, query in VIEWS.items():
        if all(dep in names for dep in ("gold.scores",)):
            con.execute(f"CREATE OR REPLACE VIEW {name} AS {query}")
            names.append(name)
    con.close()
    os.replace(tmp, target)
    return names


if __name__ == "__main__":
    print(json.dumps(build(Path(sys.argv[1]), json.loads(sys.argv[2]))))
