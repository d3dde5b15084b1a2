"""docker-compose.yml, validated by `docker-compose config` (no Docker engine runs here, so nothing is built or run).

Checks that the containers run the same Superset scripts as `marketlake superset up`, with every environment
variable those scripts read, and a DuckDB catalog of the registry's tables.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from lakehouse.settings import PROJECT_ROOT, Settings
from lakehouse.tables import REGISTRY

COMPOSE = shutil.which("docker-compose")
SCRIPTS = PROJECT_ROOT / "superset"
pytestmark = pytest.mark.skipif(COMPOSE is None, reason="no docker-compose binary (make compose-config installs it)")


def compose_config(**env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SUPERSET_", "MARKETLAKE_"))}
    return subprocess.run(
        [str(COMPOSE), "-f", str(PROJECT_ROOT / "docker-compose.yml"), "config"],
        env=base | env,
        capture_output=True,
        text=True,
        check=False,
        cwd=PROJECT_ROOT,
    )


@pytest.fixture(scope="module")
def services() -> dict:
    out = compose_config(SUPERSET_SECRET_KEY="check-only-not-a-real-secret-0123456789", SUPERSET_ADMIN_PASSWORD="x")
    assert out.returncode == 0, out.stderr
    return yaml.safe_load(out.stdout)["services"]


def read_variables(script: Path) -> set[str]:
    """Environment variables a script reads (os.environ["X"] or os.environ.get("X", ...))."""
    return set(re.findall(r"os\.environ(?:\.get\(|\[)\"(\w+)\"", script.read_text()))


def test_secrets_have_no_default() -> None:
    out = compose_config(SUPERSET_ADMIN_PASSWORD="x")
    assert out.returncode != 0 and "SUPERSET_SECRET_KEY" in out.stderr
    out = compose_config(SUPERSET_SECRET_KEY="check-only-not-a-real-secret-0123456789")
    assert out.returncode != 0 and "SUPERSET_ADMIN_PASSWORD" in out.stderr


def test_services_run_the_local_scripts_with_their_variables(services: dict) -> None:
    config_vars = read_variables(SCRIPTS / "superset_config.py")
    runs = {
        "superset-init": ["initialise.py", "duckdb_catalog.py"],
        "superset-provision": ["provision.py"],
    }
    for service, scripts in runs.items():
        command = services[service]["command"]
        command = " ".join(command) if isinstance(command, list) else command
        for script in scripts:
            assert f"/app/marketlake/{script}" in command, f"{service} does not run {script}"
            missing = read_variables(SCRIPTS / script) - set(services[service]["environment"])
            assert not missing, f"{service} lacks {missing} that {script} reads"
    for service in ("superset-init", "superset"):
        assert config_vars <= set(services[service]["environment"]), f"{service} lacks Superset's config variables"
    dockerfile = (SCRIPTS / "Dockerfile").read_text()
    for script in ("superset_config.py", "initialise.py", "duckdb_catalog.py", "provision.py", "dashboards.yaml"):
        assert script in dockerfile and (SCRIPTS / script).exists(), f"the image lacks {script}"


def test_order_and_catalog(services: dict) -> None:
    assert services["superset"]["depends_on"]["superset-init"]["condition"] == "service_completed_successfully"
    assert services["superset-provision"]["depends_on"]["superset"]["condition"] == "service_healthy"
    init = services["superset-init"]["command"]
    catalog_path, tables = re.search(r"duckdb_catalog\.py (\S+)\s+\"(.*)\"", init, re.S).groups()
    root = Settings.from_env(env={}, lakehouse_root="/lakehouse")
    assert json.loads(tables.replace('\\"', '"')) == {t.name: t.location(root) for t in REGISTRY}
    uri = services["superset-provision"]["environment"]["MARKETLAKE_SUPERSET_DATABASE_URI"]
    assert uri == f"duckdb:///{catalog_path}"
