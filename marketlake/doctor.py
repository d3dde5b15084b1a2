"""`marketlake doctor`: what the platform needs on this machine, each problem with its fix."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from lakehouse.services import process
from lakehouse.services.dagster import DagsterProcess
from lakehouse.services.kafka_broker import KafkaBroker
from lakehouse.services.superset import VENV as SUPERSET_VENV
from lakehouse.services.superset import Superset
from lakehouse.settings import PROJECT_ROOT, Settings
from lakehouse.spark import JarsMissingError, spark_jars
from lakehouse.tables import REGISTRY

MIN_FREE_GIB = 2.0


@dataclass(frozen=True)
class Finding:
    ok: bool
    what: str
    fix: str = ""


def java_version(output: str) -> int | None:
    """The major version in `java -version`'s output ('openjdk version "17.0.15"', '"1.8.0_392"' -> 8)."""
    match = re.search(r'version "(\d+)(?:\.(\d+))?', output)
    if not match:
        return None
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


def check_java() -> Finding:
    java = shutil.which("java")
    if not java:
        return Finding(False, "java: not on PATH", "install a JDK 17+: `apt-get install openjdk-17-jdk-headless`")
    output = subprocess.run([java, "-version"], capture_output=True, text=True, check=False).stderr
    version = java_version(output)
    if version is None or version < 17:
        return Finding(False, f"java: version {version} at {java}", "Spark 4 needs Java 17+: install openjdk-17")
    return Finding(True, f"java {version} ({java})")


def check_ports(settings: Settings) -> Iterator[Finding]:
    """Each port is free, or held by the project's own service (then it is in use as it should be)."""
    broker = KafkaBroker.from_settings(settings).is_running()
    code_port = int(settings.dagster_code_server.rsplit(":", 1)[1])
    owners = [
        ("MARKETLAKE_KAFKA_BOOTSTRAP_SERVERS", settings.kafka_port, broker),
        ("MARKETLAKE_KAFKA_CONTROLLER_PORT", settings.kafka_controller_port, broker),
        ("MARKETLAKE_DAGSTER_PORT", settings.dagster_port, DagsterProcess(settings, "webserver").is_running()),
        ("MARKETLAKE_DAGSTER_CODE_SERVER", code_port, DagsterProcess(settings, "code-server").is_running()),
        ("MARKETLAKE_SUPERSET_PORT", settings.superset_port, Superset(settings).is_running()),
        ("MARKETLAKE_SQL_PORT", settings.sql_port, False),
    ]  # fmt: skip
    for variable, port, ours in owners:
        taken = process.port_open("127.0.0.1", port)
        if taken and not ours:
            yield Finding(False, f"port {port}: taken by another process", f"free it, or set {variable}")
        else:
            yield Finding(True, f"port {port}: {'ours' if taken else 'free'}")


def check_disk(settings: Settings) -> Finding:
    home = Path(settings.home)
    existing = next(p for p in (home, *home.parents) if p.exists())
    free = shutil.disk_usage(existing).free / 2**30
    if free < MIN_FREE_GIB:
        return Finding(
            False, f"disk: {free:.1f} GiB free at {existing}", "free space, or set MARKETLAKE_HOME elsewhere"
        )
    return Finding(True, f"disk: {free:.0f} GiB free at {existing}")


def check_installs(settings: Settings) -> Iterator[Finding]:
    try:
        yield Finding(True, f"spark jars: {len(spark_jars(settings))} in {settings.jars_dir}/spark")
    except JarsMissingError:
        yield Finding(False, f"spark jars: missing in {settings.jars_dir}/spark", "`make jars`")
    kafka = list((Path(settings.jars_dir) / "kafka").glob("kafka_*.jar"))
    yield Finding(bool(kafka), f"kafka broker jars: {'found' if kafka else 'missing'}", "" if kafka else "`make jars`")
    for name, stamp, fix in (
        ("platform virtualenv", PROJECT_ROOT / ".venv" / ".installed", "`make setup`"),
        ("superset virtualenv", SUPERSET_VENV / ".installed", "`make superset-venv`"),
    ):
        yield Finding(
            stamp.exists(), f"{name}: {'installed' if stamp.exists() else 'missing'}", "" if stamp.exists() else fix
        )


def check_tables(settings: Settings) -> Iterator[Finding]:
    """Each registry table has a Delta log (local lakes only; an s3a:// lake is checked by the jobs themselves)."""
    if "://" in settings.lakehouse_root:
        yield Finding(True, f"lake at {settings.lakehouse_root}: remote, not checked here")
        return
    for table in REGISTRY:
        log = Path(table.location(settings)) / "_delta_log"
        commits = sorted(log.glob("*.json")) if log.is_dir() else []
        if commits:
            yield Finding(True, f"table {table.name}: {len(commits)} commits")
        else:
            yield Finding(False, f"table {table.name}: not created yet", "`marketlake up` (or any job) creates it")


def diagnose(settings: Settings) -> list[Finding]:
    return [
        check_java(),
        *check_installs(settings),
        check_disk(settings),
        *check_ports(settings),
        *check_tables(settings),
    ]
