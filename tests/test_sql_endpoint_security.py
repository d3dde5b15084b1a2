"""Attacks on the Spark SQL endpoint through JDBC (beeline): without the password nothing answers; with it, lake
tables read, and writes, DDL, Delta maintenance, queries on files and Java reflection are refused, even when the
client turns spark.sql.runSQLOnFiles back on for its session. The lake is unchanged afterwards."""

from __future__ import annotations

import dataclasses
import subprocess
from collections.abc import Iterator

import pytest

from lakehouse.services.process import ServiceError, free_port
from lakehouse.settings import Settings
from lakehouse.sql_endpoint import SqlServer, beeline, check_exposure
from lakehouse.tables import GOLD_SCORES, GOLD_THRESHOLDS
from marketlake.seed import gold_sample, write_tables
from tests.conftest import SAMPLE

pytestmark = pytest.mark.integration  # starts services of its own
PASSWORD = "test-only-" + "x" * 24
READ_ONLY = "marketlake SQL endpoint is read-only"


@pytest.fixture(scope="module")
def server(spark, base_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SqlServer]:
    from lakehouse.spark import ensure_tables

    home = tmp_path_factory.mktemp("sql-endpoint-security")
    settings = dataclasses.replace(base_settings, home=str(home), lakehouse_root=str(home / "lakehouse"),
                                   sql_port=free_port(), sql_password=PASSWORD)  # fmt: skip
    ensure_tables(spark, settings)
    write_tables(spark, settings, gold_sample(sorted(SAMPLE.glob("futures-um/FILUSDT-1m-2025-02-0*.zip")), days=3))
    service = SqlServer(settings)
    service.start()
    yield service
    service.stop()


def query(server: SqlServer, sql: str, url: str = "") -> list[dict[str, str]]:
    return beeline(url or server.url, sql, user=server.settings.sql_user, password=PASSWORD)


def refusal(server: SqlServer, sql: str, url: str = "") -> str:
    with pytest.raises(subprocess.CalledProcessError) as error:
        query(server, sql, url)
    return error.value.stderr


def history(spark, settings: Settings, table) -> int:
    return spark.sql(f"DESCRIBE HISTORY delta.`{table.location(settings)}`").count()


def test_no_password_no_answer(server: SqlServer) -> None:
    for user, password in ((server.settings.sql_user, "wrong"), (server.settings.sql_user, ""), ("admin", PASSWORD)):
        with pytest.raises(subprocess.CalledProcessError) as error:
            beeline(server.url, "SELECT 1", user=user, password=password)
        assert "Error" in error.value.stderr and "1" not in error.value.stdout


def test_exposed_endpoint_needs_a_password(server: SqlServer) -> None:
    exposed = dataclasses.replace(server.settings, sql_host="0.0.0.0", sql_password="")
    with pytest.raises(ServiceError, match="MARKETLAKE_SQL_PASSWORD"):
        SqlServer(exposed).start()
    check_exposure(dataclasses.replace(exposed, sql_host="127.0.0.1"))  # loopback: allowed without


def test_lake_tables_read(server: SqlServer) -> None:
    assert {r["tableName"] for r in query(server, "SHOW TABLES IN gold")} >= {"scores", "thresholds", "anomalies"}
    assert int(query(server, f"SELECT COUNT(*) AS n FROM {GOLD_SCORES.name}")[0]["n"]) > 0
    assert int(query(server, "SELECT COUNT(*) AS n FROM gold.anomalies")[0]["n"]) > 0
    assert {r["col_name"] for r in query(server, f"DESCRIBE {GOLD_SCORES.name}")} >= {"symbol", "open_time"}


def test_writes_are_refused_and_the_lake_is_unchanged(spark, server: SqlServer) -> None:
    settings, scores, thresholds = server.settings, GOLD_SCORES.name, GOLD_THRESHOLDS.name
    count = query(server, f"SELECT COUNT(*) AS n FROM {scores}")
    versions = {t.name: history(spark, settings, t) for t in (GOLD_SCORES, GOLD_THRESHOLDS)}
    location = GOLD_SCORES.location(settings)
    attacks = [
        f"INSERT INTO {thresholds} SELECT * FROM {thresholds}",
        f"DELETE FROM {scores}",
        f"UPDATE {scores} SET votes = 0",
        f"MERGE INTO {scores} t USING {scores} s ON t.symbol = s.symbol WHEN MATCHED THEN DELETE",
        f"DROP TABLE {scores}",
        "DROP VIEW gold.anomalies",
        f"TRUNCATE TABLE {scores}",
        f"ALTER TABLE {scores} SET TBLPROPERTIES ('delta.logRetentionDuration' = 'interval 0 days')",
        f"CREATE TABLE default.mine USING delta LOCATION '{location}'",
        f"CREATE TABLE default.copy AS SELECT * FROM {scores}",
        "CREATE TABLE default.elsewhere (x INT) USING parquet LOCATION '/tmp/marketlake-attack'",
        f"RESTORE TABLE {scores} TO VERSION AS OF 0",
        f"VACUUM {scores} RETAIN 0 HOURS",
        f"OPTIMIZE {scores}",
        f"DELETE FROM delta.`{location}`",
        "INSERT OVERWRITE DIRECTORY '/tmp/marketlake-attack' SELECT 1",
        "ADD JAR /tmp/marketlake-attack.jar",
        "CREATE TEMPORARY FUNCTION f AS 'org.apache.hadoop.hive.ql.udf.UDFReflect'",
        "EXECUTE IMMEDIATE 'DROP TABLE gold.scores'",
        "SET spark.sql.runSQLOnFiles = true",
    ]
    answers = {sql: refusal(server, sql) for sql in attacks}
    assert {sql: answer[-400:] for sql, answer in answers.items() if READ_ONLY not in answer} == {}
    assert query(server, f"SELECT COUNT(*) AS n FROM {scores}") == count
    assert {t.name: history(spark, settings, t) for t in (GOLD_SCORES, GOLD_THRESHOLDS)} == versions


def test_files_and_reflection_are_refused(server: SqlServer) -> None:
    lake = server.settings.lakehouse_root
    # The client turns SQL on files back on for its session (a Hive JDBC URL's ?conf): the guard still refuses.
    files_on = server.url + "?spark.sql.runSQLOnFiles=true"
    assert query(server, "SET spark.sql.runSQLOnFiles", files_on)[0]["value"] == "true"
    attacks = [
        "SELECT * FROM text.`/etc/passwd`",
        f"SELECT * FROM text.`{lake}/gold/scores/../../../../../../../etc/passwd`",
        f"SELECT * FROM text.`{server.home}/server.log`",
        "SELECT * FROM json.`/etc`",
        "SELECT reflect('java.lang.System', 'getenv', 'MARKETLAKE_SQL_PASSWORD')",
        "SELECT java_method('java.lang.System', 'exit', 0)",
    ]
    answers = {sql: refusal(server, sql, files_on) for sql in attacks}
    assert {sql: answer[-400:] for sql, answer in answers.items() if READ_ONLY not in answer} == {}
    assert PASSWORD not in "".join(answers.values())
    # Reading the lake by path is reading the lake: allowed.
    assert int(query(server, f"SELECT COUNT(*) AS n FROM delta.`{lake}/gold/scores`", files_on)[0]["n"]) > 0
    assert query(server, "SELECT 1 AS one") == [{"one": "1"}]  # still serving
