import pytest

from lakehouse.settings import Settings


def test_defaults_put_the_lakehouse_and_checkpoints_under_home(tmp_path):
    s = Settings.from_env(env={"MARKETLAKE_HOME": str(tmp_path)})
    assert s.lakehouse_root == str(tmp_path / "lakehouse")
    assert s.checkpoint_root == str(tmp_path / "lakehouse" / "_checkpoints")
    assert s.kafka_bootstrap_servers == "127.0.0.1:9092"
    assert s.spark_master == "local[2]"


def test_environment_overrides_are_typed():
    s = Settings.from_env(
        env={
            "MARKETLAKE_LAKEHOUSE_ROOT": "s3a://bucket/lake",
            "MARKETLAKE_SPARK_MASTER": "spark://master:7077",
            "MARKETLAKE_KAFKA_BOOTSTRAP_SERVERS": "k1:9092,k2:9092",
            "MARKETLAKE_SPARK_SHUFFLE_PARTITIONS": "64",
            "MARKETLAKE_SPARK_UI": "true",
            "MARKETLAKE_SYMBOLS": "btcusdt, ethusdt",
            "MARKETLAKE_DETECTION_K": "4.5",
            "MARKETLAKE_DETECTION_ROBUST": "no",
        }
    )
    assert s.lakehouse_root == "s3a://bucket/lake"
    assert s.checkpoint_root == "s3a://bucket/lake/_checkpoints"
    assert s.path("silver", "candles") == "s3a://bucket/lake/silver/candles"
    assert s.spark_master == "spark://master:7077"
    assert s.spark_shuffle_partitions == 64
    assert s.spark_ui is True
    assert s.symbols == ("BTCUSDT", "ETHUSDT")
    assert s.kafka_port == 9092
    assert (s.detection_k, s.detection_robust, s.detection_window_minutes) == (4.5, False, None)


def test_overrides_win_over_the_environment():
    s = Settings.from_env(env={"MARKETLAKE_KAFKA_TOPIC": "a"}, kafka_topic="b")
    assert s.kafka_topic == "b"


def test_settings_travel_to_other_processes_through_the_environment(tmp_path):
    s = Settings.from_env(
        env={"MARKETLAKE_HOME": str(tmp_path)},
        symbols=("FILUSDT", "NEARUSDT"),
        producer="replay",
        replay_day="2025-02-03",
        replay_speed=240.0,
        detection_robust=False,
    )
    assert Settings.from_env(env=s.to_env()) == s
    assert s.dagster_home == str(tmp_path / "dagster")


def test_an_unknown_producer_mode_is_refused():
    with pytest.raises(ValueError, match="live, replay or off"):
        Settings.from_env(env={"MARKETLAKE_PRODUCER": "websocket"})
