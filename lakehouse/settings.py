"""The one typed settings object. Every knob comes from a MARKETLAKE_* environment variable with a local default.

Settings are built once by an entry point (CLI, Dagster definitions, a test fixture) and passed down;
nothing reads the environment at import time.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def _path(value: str) -> str:
    """Local paths become absolute; URIs such as s3a://bucket/lake stay as they are."""
    return value if "://" in value else str(Path(value).expanduser().resolve())


@dataclass(frozen=True)
class Settings:
    # Where local state lives (broker data, logs, pid files); the lakehouse defaults to a folder inside it.
    home: str = str(PROJECT_ROOT / "var")
    lakehouse_root: str = ""
    checkpoint_root: str = ""
    jars_dir: str = str(PROJECT_ROOT / ".jars")

    spark_master: str = "local[2]"
    spark_shuffle_partitions: int = 2
    spark_driver_memory: str = "2g"
    spark_ui: bool = False

    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    kafka_topic: str = "marketlake.candles.1m"
    kafka_topic_partitions: int = 3
    # Port of the local broker's KRaft controller listener (only used when the project runs the broker).
    kafka_controller_port: int = 9093

    # The candle producer (issue #16, pipelines/ingestion/kafka_io.py, librdkafka): how long it batches, how it
    # compresses (zstd: the smallest on disk at the same speed, read by the broker, spark-sql-kafka and kafka-python
    # with the pinned zstandard; lz4 or snappy would need another package for kafka-python readers), and how long
    # a candle may wait for its acknowledgement before publish raises DeliveryError.
    kafka_linger_ms: int = 5
    kafka_compression: str = "zstd"
    kafka_delivery_timeout_ms: int = 120_000

    # Symbols to stream live and to backfill; the default is what the bundled sample holds.
    symbols: tuple[str, ...] = field(default=("FILUSDT", "NEARUSDT", "LUNAUSDT"))
    interval: str = "1m"
    archive_dir: str = str(PROJECT_ROOT / "data" / "sample")
    binance_archive_url: str = "https://data.binance.vision"
    backfill_start: str = "2022-05-01"

    # Detection: unset means the detector's own default (pipelines/detection/maths.py).
    detection_k: float | None = None
    detection_window_minutes: int | None = None
    detection_robust: bool | None = None
    train_days: int = 30
    binance_ws_url: str = "wss://stream.binance.com:9443"
    binance_rest_url: str = "https://api.binance.com"

    # Whole-market live producer (issue #16, pipelines/ingestion/whole_market.py). live_quote "" streams `symbols`;
    # a quote asset ("USDT") streams every TRADING symbol quoted in it, "*" every TRADING symbol, read from
    # exchangeInfo again every live_refresh_minutes. Streams per WebSocket connection (Binance allows 1024), and
    # threads filling gaps from REST (each waits when the IP's used weight nears its limit).
    live_quote: str = ""
    live_shard_size: int = 200
    live_refresh_minutes: float = 5.0
    live_gapfill_workers: int = 4

    # SQL and dashboards: the Spark Thrift (HiveServer2) endpoint, Superset, and the engine Superset queries.
    sql_port: int = 10000
    # Where the SQL endpoint listens, and its one account: no default password; one is required off loopback.
    sql_host: str = "127.0.0.1"
    sql_user: str = "marketlake"
    sql_password: str = field(default="", repr=False)  # never in logs or test failure output
    superset_port: int = 8088
    superset_engine: str = "duckdb"

    # Dagster: its instance (dagster.yaml, written from these settings by the project's commands) lives in
    # dagster_home; in docker-compose its storage is Postgres and the code location a gRPC server of its own.
    dagster_home: str = ""
    dagster_port: int = 3000
    dagster_postgres_url: str = ""
    dagster_code_server: str = "127.0.0.1:4000"  # where the code location's gRPC server listens
    # A long-running run (stream, producer) that has not reported for this long is failed, then restarted.
    dagster_heartbeat_timeout_s: int = 120
    # --- Supervisor sensors (issue 16): how often each looks at its long-running run, and how long it waits before
    # restarting a failed one (doubling per failure in a row, at most 10 min). Tests shorten both.
    dagster_sensor_interval_s: int = 30
    dagster_restart_backoff_s: float = 30.0
    # What the supervised producer run publishes: "live" (Binance), "replay" (replay_day from archive_dir, at
    # replay_speed market minutes per wall minute) or "off".
    producer: str = "live"
    replay_day: str = ""
    replay_speed: float = 60.0

    # Alerts (pipelines/alerts): a Kafka topic on the same brokers ("" turns it off) and a webhook (off without a
    # URL), each with the lowest confidence it is sent; attempts per alert and sink, back-off from alerts_backoff_s
    # doubling; a closed alert only if asked; no opened (or closed) alert for an incident that starts within
    # alerts_cooldown_minutes of its symbol's previous one. Off by default: incidents already merge a symbol's
    # confirmations less than 30 minutes apart, and a longer cool-down would hide e.g. the 2025-02-03 crash's
    # opening (40 minutes after a small incident) until its escalation.
    alerts_kafka_topic: str = "marketlake.alerts"
    alerts_kafka_min_confidence: str = "MEDIUM"
    alerts_webhook_url: str = field(default="", repr=False)  # a Slack webhook's URL is its secret
    alerts_webhook_min_confidence: str = "MEDIUM"
    alerts_webhook_timeout_s: float = 5.0
    alerts_attempts: int = 3
    alerts_backoff_s: float = 1.0
    alerts_on_close: bool = False
    alerts_cooldown_minutes: int = 0

    # Market incidents (pipelines/detection/market): a minute is a market minute when at least market_min_symbols,
    # and market_min_share of the symbols scored in it, had a confirmed minute in the market_window_minutes to it.
    market_window_minutes: int = 5
    market_min_symbols: int = 2
    market_min_share: float = 0.3

    # --- Real clusters (docs/scaling.md). The lake on S3 or an S3-compatible store: lakehouse_root s3a://bucket/path
    # (checkpoints follow it), read and written through hadoop-aws (Spark) and delta-rs (status). An empty endpoint
    # is AWS's own for s3_region; empty keys leave credentials to the AWS default chain (instance/pod role, env).
    s3_endpoint: str = ""
    s3_region: str = "us-east-1"
    s3_access_key: str = field(default="", repr=False)
    s3_secret_key: str = field(default="", repr=False)
    s3_path_style: bool = False  # True for S3Proxy, MinIO and most S3-compatible stores
    # Executors' heap on a Spark cluster (spark://, k8s://, yarn); local[N] runs them in the driver's JVM.
    spark_executor_memory: str = "1g"
    # The loopback cluster `marketlake cluster up` starts: S3Proxy, a Spark master with cluster_spark_workers
    # workers (cluster_worker_cores cores and cluster_worker_memory each; the workers' ports follow the master's),
    # and three Kafka nodes (node i: broker port cluster_kafka_port + 2i, controller port + 2i + 1).
    cluster_s3_port: int = 9000
    cluster_spark_port: int = 7077
    cluster_spark_workers: int = 2
    cluster_worker_cores: int = 1
    cluster_worker_memory: str = "1g"
    cluster_kafka_port: int = 9192
    # --- end of real clusters

    def __post_init__(self) -> None:
        # Derived defaults: the lakehouse sits in home, checkpoints sit beside the tables.
        if not self.lakehouse_root:
            object.__setattr__(self, "lakehouse_root", _path(str(Path(self.home) / "lakehouse")))
        if not self.checkpoint_root:
            object.__setattr__(self, "checkpoint_root", f"{self.lakehouse_root.rstrip('/')}/_checkpoints")
        if not self.dagster_home:
            object.__setattr__(self, "dagster_home", str(Path(self.home) / "dagster"))
        if not 1 <= self.live_shard_size <= 1024:
            raise ValueError(f"MARKETLAKE_LIVE_SHARD_SIZE={self.live_shard_size}: Binance allows 1 to 1024 streams")
        if self.producer not in {"live", "replay", "off"}:
            raise ValueError(f"MARKETLAKE_PRODUCER={self.producer!r}: use live, replay or off")
        for name in ("alerts_kafka_min_confidence", "alerts_webhook_min_confidence"):
            if getattr(self, name) not in {"LOW", "MEDIUM", "HIGH"}:
                raise ValueError(f"MARKETLAKE_{name.upper()}={getattr(self, name)!r}: use LOW, MEDIUM or HIGH")

    @property
    def kafka_port(self) -> int:
        return int(self.kafka_bootstrap_servers.split(",")[0].rsplit(":", 1)[1])

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides: object) -> Settings:
        env = dict(os.environ if env is None else env)
        values: dict[str, object] = {}
        for name, f in cls.__dataclass_fields__.items():
            raw = env.get(f"MARKETLAKE_{name.upper()}")
            if raw is None:
                continue
            kind = str(f.type).removesuffix(" | None")
            if name in {"home", "lakehouse_root", "checkpoint_root", "jars_dir", "archive_dir", "dagster_home"}:
                values[name] = _path(raw)
            elif kind == "int":
                values[name] = int(raw)
            elif kind == "float":
                values[name] = float(raw)
            elif kind == "bool":
                values[name] = raw.strip().lower() in {"1", "true", "yes", "on"}
            elif name == "symbols":
                values[name] = tuple(s.strip().upper() for s in raw.split(",") if s.strip())
            else:
                values[name] = raw
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]

    def to_env(self) -> dict[str, str]:
        """The MARKETLAKE_* variables that rebuild these settings in another process (Dagster's, a run's)."""
        env = {}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, tuple):
                value = ",".join(value)
            env[f"MARKETLAKE_{name.upper()}"] = str(value).lower() if isinstance(value, bool) else str(value)
        return env

    @property
    def on_s3(self) -> bool:
        return any(root.startswith(("s3a://", "s3://")) for root in (self.lakehouse_root, self.checkpoint_root))

    def object_store_options(self) -> dict[str, str]:
        """The lake's storage options for delta-rs (object_store's AWS keys); {} for a local lake."""
        if not self.on_s3:
            return {}
        options = {"AWS_REGION": self.s3_region}
        if self.s3_endpoint:
            plain_http = str(self.s3_endpoint.startswith("http:")).lower()
            options |= {"AWS_ENDPOINT_URL": self.s3_endpoint, "AWS_ALLOW_HTTP": plain_http}
        if self.s3_access_key:
            options |= {"AWS_ACCESS_KEY_ID": self.s3_access_key, "AWS_SECRET_ACCESS_KEY": self.s3_secret_key}
        if self.s3_path_style:
            options["AWS_VIRTUAL_HOSTED_STYLE_REQUEST"] = "false"
        return options

    def path(self, *parts: str) -> str:
        """A location under the lakehouse root (works for local paths and s3a:// URIs alike)."""
        return "/".join([self.lakehouse_root.rstrip("/"), *parts])
