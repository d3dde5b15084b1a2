"""What the cluster settings switch, without starting anything: Spark's s3a and executor configuration, delta-rs's
storage options, the Kafka nodes' quorum and replication, and the settings `marketlake cluster up` prints."""

import sys
from pathlib import Path

from lakehouse.services.cluster import LocalCluster
from lakehouse.services.kafka_broker import KafkaBroker
from lakehouse.settings import Settings
from lakehouse.spark import cluster_conf, s3a_conf


def properties(node: KafkaBroker) -> dict[str, str]:
    return dict(line.split("=", 1) for line in node.server_properties().splitlines() if line)


def test_a_local_lake_and_master_add_nothing():
    settings = Settings.from_env(env={}, home="/tmp/x")
    assert not settings.on_s3
    assert s3a_conf(settings) == {} and cluster_conf(settings) == {}
    assert settings.object_store_options() == {}


def test_an_s3a_lake_on_a_loopback_endpoint():
    settings = Settings.from_env(
        env={
            "MARKETLAKE_LAKEHOUSE_ROOT": "s3a://bucket/lake",
            "MARKETLAKE_S3_ENDPOINT": "http://127.0.0.1:9000",
            "MARKETLAKE_S3_ACCESS_KEY": "key",
            "MARKETLAKE_S3_SECRET_KEY": "secret",
            "MARKETLAKE_S3_PATH_STYLE": "true",
        }
    )
    assert settings.checkpoint_root == "s3a://bucket/lake/_checkpoints"
    assert "secret" not in repr(settings)
    conf = s3a_conf(settings)
    assert conf["spark.hadoop.fs.s3a.endpoint"] == "http://127.0.0.1:9000"
    assert conf["spark.hadoop.fs.s3a.connection.ssl.enabled"] == "false"
    assert conf["spark.hadoop.fs.s3a.path.style.access"] == "true"
    assert conf["spark.hadoop.fs.s3a.secret.key"] == "secret"
    assert settings.object_store_options() == {
        "AWS_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9000",
        "AWS_ALLOW_HTTP": "true",
        "AWS_ACCESS_KEY_ID": "key",
        "AWS_SECRET_ACCESS_KEY": "secret",
        "AWS_VIRTUAL_HOSTED_STYLE_REQUEST": "false",
    }


def test_aws_itself_takes_credentials_from_its_default_chain():
    conf = s3a_conf(Settings.from_env(env={}, lakehouse_root="s3a://bucket/lake"))
    assert "spark.hadoop.fs.s3a.endpoint" not in conf and "spark.hadoop.fs.s3a.access.key" not in conf


def test_executors_on_a_cluster_get_this_python_and_their_heap():
    conf = cluster_conf(Settings.from_env(env={}, spark_master="spark://10.0.0.1:7077", spark_executor_memory="3g"))
    assert conf["spark.pyspark.python"] == sys.executable
    assert conf["spark.executor.memory"] == "3g"


def test_the_loopback_cluster_and_the_settings_that_use_it(tmp_path):
    base = Settings.from_env(env={}, home=str(tmp_path), cluster_spark_port=7100, cluster_kafka_port=9200)
    cluster = LocalCluster.from_settings(base)
    used = cluster.settings(base)
    assert used.spark_master == "spark://127.0.0.1:7100"
    assert [w.port for w in cluster.spark[1:]] == [7101, 7102]
    assert used.kafka_bootstrap_servers == "127.0.0.1:9200,127.0.0.1:9202,127.0.0.1:9204"
    assert used.lakehouse_root == "s3a://marketlake/lake" and used.checkpoint_root.startswith("s3a://marketlake/")
    assert used.s3_secret_key == (tmp_path / "s3proxy" / "secret_key").read_text()  # generated once, kept

    nodes = [properties(node) for node in cluster.kafka]
    assert {n["controller.quorum.voters"] for n in nodes} == {"1@127.0.0.1:9201,2@127.0.0.1:9203,3@127.0.0.1:9205"}
    assert [n["node.id"] for n in nodes] == ["1", "2", "3"]
    assert all(n["default.replication.factor"] == "3" and n["min.insync.replicas"] == "2" for n in nodes)
    assert len({node.cluster_id for node in cluster.kafka}) == 1


def test_a_single_broker_keeps_one_copy():
    single = properties(KafkaBroker(home=Path("/tmp/k"), port=9092, controller_port=9093, jars_dir=Path("/tmp")))
    assert single["controller.quorum.voters"] == "1@127.0.0.1:9093"
    assert single["offsets.topic.replication.factor"] == "1" and single["min.insync.replicas"] == "1"


def test_cluster_status_before_up(tmp_path):
    from typer.testing import CliRunner

    from marketlake.cli import app

    result = CliRunner().invoke(app, ["cluster", "status"], env={"MARKETLAKE_HOME": str(tmp_path)})
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert len(lines) == 7 and all(line.endswith("stopped") for line in lines)  # S3Proxy, master, 2 workers, 3 nodes
