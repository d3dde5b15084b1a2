"""Imports run one way: orchestration -> pipelines -> lakehouse. Nothing imports orchestration."""

import ast
from pathlib import Path

from lakehouse.settings import PROJECT_ROOT

FORBIDDEN = {
    "lakehouse": {"pipelines", "orchestration", "marketlake"},
    "pipelines": {"orchestration", "marketlake", "dagster", "dagster_pyspark"},
    "expectations": {"orchestration", "marketlake"},
    "marketlake": {"orchestration"},
}


def imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_imports_run_one_way():
    violations = [
        f"{path.relative_to(PROJECT_ROOT)} imports {bad}"
        for package, forbidden in FORBIDDEN.items()
        for path in (PROJECT_ROOT / package).rglob("*.py")
        for bad in imported_packages(path) & forbidden
    ]
    assert violations == []
