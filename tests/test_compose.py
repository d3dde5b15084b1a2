"""docker-compose.yml and the root Dockerfile, checked without a Docker engine (none runs here: nothing is built or
started). `docker-compose config` validates the file; the checks then read what it resolved:

- every service runs a command that exists: the platform image's `marketlake ...` commands in this project's CLI,
  the Superset containers' scripts in superset/ (with every environment variable they read), pinned Kafka and
  Postgres images;
- every secret is required; the start order; the platform's containers share one set of settings, which give
  Dagster Postgres storage and the code location's address; the lake is read-only for Superset;
- the Dockerfile builds from the pinned manifests (pyproject.toml, jvm/) and points the settings at what it installs.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from lakehouse.services.dagster import write_config
from lakehouse.settings import PROJECT_ROOT, Settings
from lakehouse.tables import REGISTRY, VIEWS

COMPOSE = shutil.which("docker-compose")
SCRIPTS = PROJECT_ROOT / "superset"
SECRETS = {
    "DAGSTER_POSTGRES_PASSWORD": "check-only",
    "SUPERSET_POSTGRES_PASSWORD": "check-only",
    "SUPERSET_SECRET_KEY": "check-only-not-a-real-secret-0123456789",
    "SUPERSET_ADMIN_PASSWORD": "check-only",
}
STACK = {
    "kafka", "init", "dagster-postgres", "code-location", "webserver", "daemon",
    "superset-postgres", "superset-init", "superset", "superset-provision",
}  # fmt: skip


def compose_config(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    if COMPOSE is None:
        pytest.fail("no docker-compose binary on PATH: `make setup` installs Debian's docker-compose")
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SUPERSET_", "MARKETLAKE_", "DAGSTER_"))}
    return subprocess.run(
        [COMPOSE, "-f", str(PROJECT_ROOT / "docker-compose.yml"), "config"],
        env=base | env,
        capture_output=True,
        text=True,
        check=False,
        cwd=PROJECT_ROOT,
    )


@pytest.fixture(scope="module")
def services() -> dict[str, dict[str, Any]]:
    out = compose_config(SECRETS)
    assert out.returncode == 0, out.stderr
    return yaml.safe_load(out.stdout)["services"]


def built_from(services: dict[str, dict[str, Any]], folder: Path) -> dict[str, dict[str, Any]]:
    """The services whose image is built from this folder."""
    return {name: s for name, s in services.items() if "build" in s and Path(s["build"]["context"]).resolve() == folder}


def mounts(service: dict[str, Any]) -> dict[str, tuple[str, bool]]:
    """target -> (source, read-only), from docker-compose v1's short syntax or v2's long one."""
    found = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, target, *mode = volume.split(":")
            found[target] = (source, mode == ["ro"])
        else:
            found[volume["target"]] = (volume["source"], bool(volume.get("read_only")))
    return found


def published(service: dict[str, Any]) -> set[int]:
    """The container ports published on the host (short or long syntax)."""
    return {
        int(port["target"]) if isinstance(port, dict) else int(str(port).split("/")[0].rsplit(":", 1)[-1])
        for port in service.get("ports", [])
    }


def read_variables(script: Path) -> set[str]:
    """Environment variables a script reads (os.environ["X"] or os.environ.get("X", ...))."""
    return set(re.findall(r"os\.environ(?:\.get\(|\[)\"(\w+)\"", script.read_text()))


def in_project_venv(argv: list[str]) -> subprocess.CompletedProcess[str]:
    """Run one of the virtualenv's commands with this checkout first on the path (the virtualenv may have been
    installed from another checkout)."""
    return subprocess.run(
        [str(Path(sys.executable).with_name(argv[0])), *argv[1:]],
        env=os.environ | {"PYTHONPATH": str(PROJECT_ROOT)},
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def test_the_whole_stack_validates(services: dict[str, dict[str, Any]]) -> None:
    assert set(services) == STACK


def test_secrets_have_no_default() -> None:
    for secret in SECRETS:
        out = compose_config({k: v for k, v in SECRETS.items() if k != secret})
        assert out.returncode != 0 and secret in out.stderr, f"docker-compose starts without {secret}"


def test_platform_commands_exist_in_the_cli(services: dict[str, dict[str, Any]]) -> None:
    platform = built_from(services, PROJECT_ROOT)
    assert set(platform) == {"init", "code-location", "webserver", "daemon"}
    for name, service in platform.items():
        command = service["command"]
        assert command[0] == "marketlake", f"{name} does not run the project's CLI"
        out = in_project_venv([*command, "--help"])  # --help after the options: unknown ones still fail
        assert out.returncode == 0, f"{name}: `{' '.join(command)}` is not a marketlake command: {out.stderr}"
        check = service.get("healthcheck", {}).get("test", [])
        if check[:1] == ["CMD"] and check[1] in {"dagster", "dagster-daemon"}:
            out = in_project_venv([*check[1:], "--help"])
            assert out.returncode == 0, f"{name}'s health check `{' '.join(check[1:])}` does not exist: {out.stderr}"


def test_other_images_are_pinned(services: dict[str, dict[str, Any]]) -> None:
    kafka_version = re.search(r"<kafka.broker.version>(.+)</", (PROJECT_ROOT / "jvm" / "pom.xml").read_text())[1]
    for name, service in services.items():
        if "build" in service:
            continue
        image, _, tag = service["image"].partition(":")
        assert re.fullmatch(r"\d+(\.\d+)+", tag), f"{name}: {service['image']} is not pinned to a version"
        if image == "apache/kafka":
            assert tag == kafka_version, f"the broker image is {tag}, the local broker {kafka_version} (jvm/pom.xml)"


def test_platform_containers_share_one_set_of_settings(services: dict[str, dict[str, Any]], tmp_path: Path) -> None:
    platform = list(built_from(services, PROJECT_ROOT).values())
    env = platform[0]["environment"]
    assert all(s["environment"] == env for s in platform), "the platform's containers differ in their settings"
    fields = {f"MARKETLAKE_{name.upper()}" for name in Settings.__dataclass_fields__}
    assert {k for k in env if k.startswith("MARKETLAKE_")} <= fields, "a MARKETLAKE_* variable no setting reads"
    settings = Settings.from_env(env={k: str(v) for k, v in env.items() if v is not None})
    assert settings.dagster_home == env["DAGSTER_HOME"]
    assert settings.producer == Settings().producer

    code_host, code_port = settings.dagster_code_server.rsplit(":", 1)
    assert code_host == "code-location"
    assert services["code-location"]["healthcheck"]["test"][-2:] == ["-p", code_port]
    assert f":{settings.dagster_port}/" in services["webserver"]["healthcheck"]["test"][-1]
    assert published(services["webserver"]) == {settings.dagster_port}
    assert published(services["superset"]) == {settings.superset_port}
    assert settings.kafka_bootstrap_servers == "kafka:9092"
    assert "PLAINTEXT://kafka:9092" in services["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]

    url = urlsplit(settings.dagster_postgres_url)
    postgres = services["dagster-postgres"]["environment"]
    assert (url.hostname, url.username, url.password, url.path) == (
        "dagster-postgres", postgres["POSTGRES_USER"], postgres["POSTGRES_PASSWORD"], f"/{postgres['POSTGRES_DB']}"
    )  # fmt: skip
    # What each Dagster container writes at start: Postgres storage, and the code location's gRPC server.
    workspace = yaml.safe_load(write_config(dataclasses.replace(settings, dagster_home=str(tmp_path))).read_text())
    instance = yaml.safe_load((tmp_path / "dagster.yaml").read_text())
    assert instance["storage"] == {"postgres": {"postgres_url": {"env": "MARKETLAKE_DAGSTER_POSTGRES_URL"}}}
    server = workspace["load_from"][0]["grpc_server"]
    assert (server["host"], server["port"]) == ("code-location", int(code_port))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dagster.yaml", "workspace.yaml"], "temporary files left"


def test_volumes(services: dict[str, dict[str, Any]]) -> None:
    env = services["code-location"]["environment"]
    _, runs, _, _ = dockerfile(PROJECT_ROOT / "Dockerfile")
    for name in built_from(services, PROJECT_ROOT):
        found = mounts(services[name])
        assert found[env["MARKETLAKE_LAKEHOUSE_ROOT"]] == ("lakehouse", False), f"{name} lacks the lake"
        assert found[env["MARKETLAKE_HOME"]] == ("marketlake_home", False), f"{name} lacks the shared state"
    # A new named volume takes the owner of the image's folder: the image's user must own both.
    owned = next(r for r in runs if "chown marketlake" in r).split()
    assert {env["MARKETLAKE_LAKEHOUSE_ROOT"], env["MARKETLAKE_HOME"]} <= set(owned)
    for name in built_from(services, SCRIPTS):
        assert mounts(services[name])["/lakehouse"] == ("lakehouse", True), f"{name} must mount the lake read-only"


def test_start_order(services: dict[str, dict[str, Any]]) -> None:
    order = {
        "init": {"kafka": "service_healthy"},
        "code-location": {
            "dagster-postgres": "service_healthy", "kafka": "service_healthy",
            "init": "service_completed_successfully",
        },
        "webserver": {"code-location": "service_healthy"},
        "daemon": {"code-location": "service_healthy"},
        "superset-init": {"superset-postgres": "service_healthy", "init": "service_completed_successfully"},
        "superset": {"superset-init": "service_completed_successfully"},
        "superset-provision": {"superset": "service_healthy"},
    }  # fmt: skip
    for name, expected in order.items():
        assert {k: v["condition"] for k, v in services[name]["depends_on"].items()} == expected, name
        for dependency, condition in expected.items():
            assert condition != "service_healthy" or "healthcheck" in services[dependency], dependency


def test_superset_services_run_the_local_scripts_with_their_variables(services: dict[str, dict[str, Any]]) -> None:
    config_vars = read_variables(SCRIPTS / "superset_config.py")
    superset = built_from(services, SCRIPTS)
    assert set(superset) == {"superset-init", "superset", "superset-provision"}
    dockerfile = (SCRIPTS / "Dockerfile").read_text()
    for name, service in superset.items():
        command = service.get("command", [])  # none: the image's own server
        command = " ".join(command) if isinstance(command, list) else command
        for script in re.findall(r"/app/marketlake/(\w+\.py)", command):
            assert (SCRIPTS / script).exists() and script in dockerfile, f"{name} runs {script}, not in the image"
            missing = read_variables(SCRIPTS / script) - set(service["environment"])
            assert not missing, f"{name} lacks {missing} that {script} reads"
        assert config_vars <= set(service["environment"]), f"{name} lacks Superset's config variables"
    for script in ("superset_config.py", "initialise.py", "duckdb_catalog.py", "provision.py", "dashboards.yaml"):
        assert script in dockerfile and (SCRIPTS / script).exists(), f"the image lacks {script}"
    uri = urlsplit(superset["superset"]["environment"]["SUPERSET_METADATA_DB_URI"])
    postgres = services["superset-postgres"]["environment"]
    assert (uri.hostname, uri.username, uri.password, uri.path) == (
        "superset-postgres", postgres["POSTGRES_USER"], postgres["POSTGRES_PASSWORD"], f"/{postgres['POSTGRES_DB']}"
    )  # fmt: skip
    assert "psycopg2" in dockerfile, "Superset's image needs the Postgres driver for its metadata"


def test_catalog(services: dict[str, dict[str, Any]]) -> None:
    init = services["superset-init"]["command"]
    catalog_path, tables, views = re.search(r"duckdb_catalog\.py (\S+)\s+\"(.*)\"\s+\"(.*)\"", init, re.S).groups()
    root = Settings.from_env(env={}, lakehouse_root="/lakehouse")
    assert json.loads(tables.replace('\\"', '"')) == {t.name: t.location(root) for t in REGISTRY}
    expected_views = {v.name: {"query": v.query, "tables": [t.name for t in v.tables]} for v in VIEWS}
    assert json.loads(views.replace('\\"', '"')) == expected_views
    uri = services["superset-provision"]["environment"]["MARKETLAKE_SUPERSET_DATABASE_URI"]
    assert uri == f"duckdb:///{catalog_path}"


def dockerfile(path: Path) -> tuple[list[str], list[str], dict[str, str], str]:
    """Its COPY sources from the build context and RUN commands (every stage); the last stage's MARKETLAKE_* ENV
    values and WORKDIR."""
    text = re.sub(r"\\\n", " ", path.read_text())
    copies = [src for line in re.findall(r"^COPY (?!--from)(.*)$", text, re.M) for src in line.split()[:-1]]
    last = re.split(r"^FROM .*$", text, flags=re.M)[-1]
    env = dict(re.findall(r"(MARKETLAKE_\w+)=(\S+)", "\n".join(re.findall(r"^ENV (.*)$", last, re.M))))
    return copies, re.findall(r"^RUN (.*)$", text, re.M), env, re.findall(r"^WORKDIR (\S+)$", last, re.M)[-1]


def test_dockerfile_builds_from_the_pinned_manifests() -> None:
    copies, runs, env, workdir = dockerfile(PROJECT_ROOT / "Dockerfile")
    packages = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    needed = ["pyproject.toml", "jvm/pom.xml", "jvm/spark/pom.xml", "jvm/kafka/pom.xml", "data/sample/"]
    needed += [f"{p.rstrip('*')}/" for p in packages["include"]]
    ignore = (PROJECT_ROOT / ".dockerignore").read_text().split()
    for path in needed:
        assert (PROJECT_ROOT / path).exists(), path
        assert any(path.startswith(src) for src in copies), f"the Dockerfile does not copy {path}"
        assert any(path.startswith(rule[1:]) for rule in ignore if rule.startswith("!")), f".dockerignore drops {path}"
    assert any("mvn" in r and "-f jvm/pom.xml" in r and "dependency:copy-dependencies" in r for r in runs)
    assert any(re.search(r"pip install .*\s\.(\s|$)", r) for r in runs), "the image does not `pip install .`"
    assert any("openjdk-17-jre-headless" in r for r in runs), "Spark needs Java 17 in the image"
    assert env["MARKETLAKE_JARS_DIR"] == f"{workdir}/.jars"
    assert env["MARKETLAKE_ARCHIVE_DIR"] == f"{workdir}/data/sample"
