"""The project's own KRaft broker, written by the candle producer and read through kafka-python."""

import socket
import uuid

import pytest
from kafka import KafkaConsumer

from lakehouse.services.kafka_broker import KafkaBroker
from lakehouse.services.process import ServiceError, free_port
from lakehouse.settings import Settings
from pipelines.ingestion.candles import encode
from pipelines.ingestion.kafka_io import make_producer, publish

pytestmark = pytest.mark.integration


def test_kafka_round_trip_with_kafka_python(kafka_settings):
    settings = kafka_settings
    candle = {"symbol": "FILUSDT", "open_time": 1738540800000, "close": 3.1, "nonce": uuid.uuid4().hex}
    producer = make_producer(settings)  # confluent-kafka; kafka-python reads what it wrote, compressed
    assert publish(producer, settings.kafka_topic, [candle]) == 1
    producer.close()

    consumer = KafkaConsumer(
        settings.kafka_topic,
        bootstrap_servers=settings.kafka_bootstrap_servers,
        auto_offset_reset="earliest",
        consumer_timeout_ms=10_000,
    )
    wanted = encode(candle)
    received = next((got for m in consumer if (got := (m.key, m.value)) == wanted), None)
    consumer.close()
    assert received == wanted


def test_broker_refuses_a_port_that_is_taken(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        s = Settings.from_env(
            env={},
            home=str(tmp_path),
            kafka_bootstrap_servers=f"127.0.0.1:{port}",
            kafka_controller_port=free_port(),
        )
        with pytest.raises(ServiceError, match=f"port {port} of the Kafka broker is taken"):
            KafkaBroker.from_settings(s).start()


def test_broker_that_dies_on_start_reports_its_log(tmp_path):
    # The controller port is taken: the broker cannot come up; start() says so with its log and cleans up.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        s = Settings.from_env(
            env={},
            home=str(tmp_path),
            kafka_bootstrap_servers=f"127.0.0.1:{free_port()}",
            kafka_controller_port=taken.getsockname()[1],
        )
        broker = KafkaBroker.from_settings(s)
        with pytest.raises(ServiceError, match=r"(?s)Kafka broker (exited|not ready).*broker\.log"):
            broker.start(timeout_s=8)
    assert not broker.is_running()
