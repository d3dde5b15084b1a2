"""Imports run one way: orchestration -> pipelines -> lakehouse; expectations rest on lakehouse alone; the entry
points (marketlake) start Dagster's processes but never import them; bench uses the project, never the tests."""

import ast
from pathlib import Path

from lakehouse.settings import PROJECT_ROOT

# folder (or module file) -> top-level packages its code must not import
FORBIDDEN = {
    "lakehouse": {"pipelines", "orchestration", "marketlake", "expectations", "dagster", "tests", "bench"},
    "expectations": {"pipelines", "orchestration", "marketlake", "dagster", "tests", "bench"},
    "pipelines": {"orchestration", "marketlake", "dagster", "dagster_pyspark", "tests", "bench"},
    "orchestration": {"marketlake", "tests", "bench"},
    "marketlake": {"orchestration", "tests", "bench"},
    "bench": {"tests", "orchestration"},
    "tests": {"bench"},
    # The detection maths is pure: data in, data out, the same for the stream and the backtest.
    "pipelines/detection/maths.py": {"pyspark", "delta", "kafka", "pipelines", "expectations"},
}


def imported(path: Path) -> set[str]:
    """Top-level names of every absolute import in the file."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_imports_run_one_way():
    violations = [
        f"{path.relative_to(PROJECT_ROOT)} imports {bad}"
        for where, forbidden in FORBIDDEN.items()
        for path in ([PROJECT_ROOT / where] if where.endswith(".py") else (PROJECT_ROOT / where).rglob("*.py"))
        for bad in sorted(imported(path) & forbidden)
    ]
    assert violations == []


def test_the_rules_see_every_package():
    """A new top-level package must be placed in the rules, or nothing would check it."""
    packages = {p.parent.name for p in PROJECT_ROOT.glob("*/__init__.py")} | {"bench"}
    assert packages <= set(FORBIDDEN), packages - set(FORBIDDEN)
