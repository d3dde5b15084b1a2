"""The table registry: the one place that names every table, its schema, key, partitioning and location.

Tables are `<layer>.<entity>`; their files live at `<lakehouse_root>/<layer>/<entity>`. Jobs refer to tables and
columns through these objects, never through string literals of their own.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pyspark.sql.types import (
    BooleanType,
    DataType,
    DateType,
    DoubleType,
    IntegerType,
    LongType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

from lakehouse.settings import Settings

_TYPES: dict[str, DataType] = {
    "string": StringType(),
    "double": DoubleType(),
    "long": LongType(),
    "int": IntegerType(),
    "boolean": BooleanType(),
    "timestamp": TimestampType(),
    "date": DateType(),
}


def schema(ddl: str) -> StructType:
    """`"name type [not null], ..."` -> StructType, so each schema below reads like a CREATE TABLE."""
    fields = []
    for column in (c.strip() for c in ddl.split(",") if c.strip()):
        name, type_name, *rest = column.split()
        fields.append(StructField(name, _TYPES[type_name], nullable=" ".join(rest).lower() != "not null"))
    return StructType(fields)


@dataclass(frozen=True)
class Table:
    layer: str
    entity: str
    schema: StructType
    keys: tuple[str, ...]
    partition_by: tuple[str, ...] = ()
    description: str = ""
    properties: dict[str, str] = field(default_factory=dict)  # Delta table properties, set when it is created

    @property
    def name(self) -> str:
        return f"{self.layer}.{self.entity}"

    @property
    def columns(self) -> list[str]:
        return self.schema.fieldNames()

    def location(self, settings: Settings) -> str:
        return settings.path(self.layer, self.entity)


# One 1-minute candle, as Binance defines it (kline fields), keyed by (symbol, open_time).
_CANDLE = """
    symbol string not null, open_time timestamp not null, close_time timestamp not null,
    open double not null, high double not null, low double not null, close double not null,
    volume double not null, quote_volume double not null, trades long not null,
    taker_buy_volume double not null, taker_buy_quote_volume double not null
"""
CANDLE_SCHEMA = schema(_CANDLE)
CANDLE_COLUMNS = CANDLE_SCHEMA.fieldNames()  # the candle as every layer holds it: silver's and gold's first columns
PRICE_COLUMNS = ("open", "high", "low", "close")
# The candle's measured quantities: prices and volumes (doubles), and the trade count.
DOUBLE_COLUMNS = tuple(f.name for f in CANDLE_SCHEMA.fields if isinstance(f.dataType, DoubleType))
VOLUME_COLUMNS = tuple(c for c in DOUBLE_COLUMNS if c not in PRICE_COLUMNS)

BRONZE_CANDLES = Table(
    "bronze",
    "candles",
    schema(
        """
        source string not null, symbol string, open_time timestamp, value string not null,
        topic string, partition int, offset long, kafka_timestamp timestamp,
        ingested_at timestamp not null, ingest_date date not null
        """
    ),
    # Kafka records are unique by coordinates; file rows (no coordinates) by source file, key and content.
    keys=("source", "topic", "partition", "offset", "symbol", "open_time", "value"),
    partition_by=("ingest_date",),
    description="Raw candle records exactly as received, with where they came from (Kafka coordinates or file).",
)

SILVER_CANDLES = Table(
    "silver",
    "candles",
    schema(
        _CANDLE
        + """,
        source string not null, kafka_timestamp timestamp, ingested_at timestamp not null,
        open_date date not null
        """
    ),
    keys=("symbol", "open_time"),
    partition_by=("open_date",),
    description="Parsed, validated candles; exactly one row per (symbol, open_time).",
)

SILVER_QUARANTINE = Table(
    "silver",
    "quarantine",
    schema(
        """
        source string not null, symbol string, open_time timestamp, value string,
        reason string not null, topic string, partition int, offset long,
        quarantined_at timestamp not null
        """
    ),
    keys=("source", "topic", "partition", "offset", "symbol", "open_time", "value"),
    description="Records that failed validation, kept with the reason; nothing invalid is dropped silently.",
)

GOLD_THRESHOLDS = Table(
    "gold",
    "thresholds",
    schema(
        """
        version long not null, symbol string not null,
        ret_center double not null, ret_scale double not null,
        range_center double not null, range_scale double not null,
        volume_center double not null, volume_scale double not null, trades_center double not null,
        win_ret_std_limit double not null, win_max_range_limit double not null,
        win_mean_volume_limit double not null,
        k double not null, k_range double not null, robust boolean not null, window_minutes int not null,
        vol_minutes int not null, vol_floor double not null, vol_cap double not null,
        activity_free double not null, activity_cap double not null, scale_quantile double not null,
        train_start timestamp not null, train_end timestamp not null, train_rows long not null,
        trained_at timestamp not null, trained_by string not null
        """
    ),
    keys=("version", "symbol"),
    description="Per-symbol detection thresholds; every training run appends a new version, old ones are kept.",
)


def positive_statistics(columns: list[str]) -> list[str]:
    """The thresholds' statistics that must be positive for a version to be usable: scales, limits, the typical
    trade count (the contract of gold.thresholds, checked by its suite and by the stream's reader)."""
    return [c for c in columns if c.endswith(("_scale", "_limit")) or c == "trades_center"]


GOLD_SCORES = Table(
    "gold",
    "scores",
    schema(
        _CANDLE
        + """,
        ret double, log_ret double, range double, log_volume double,
        z_ret double, z_range double, z_volume double,
        win_ret_std double, win_max_range double, win_mean_volume double, win_count int,
        flag_price boolean, flag_range boolean, flag_volume boolean,
        flag_win_ret_std boolean, flag_win_max_range boolean, flag_win_mean_volume boolean,
        flag_window boolean, votes int not null, confidence string, is_anomaly boolean not null,
        reasons string, thresholds_version long,
        kafka_timestamp timestamp, detected_at timestamp not null, open_date date not null
        """
    ),
    keys=("symbol", "open_time"),
    partition_by=("open_date",),
    description="Every scored candle: features, z-scores, trailing 1 h window statistics, votes and reasons.",
    # The stream commits here about once a minute, on the latency path. Delta writes a checkpoint inline every
    # 10th commit by default (up to 2 s on that minute): every 100th keeps it to 1 % of the minutes. File
    # statistics only for the columns queries filter on (default: the first 32), which the append computes.
    properties={"delta.checkpointInterval": "100", "delta.dataSkippingStatsColumns": "symbol,open_time"},
)

GOLD_BACKTEST_SCORES = Table(
    "gold",
    "backtest_scores",
    StructType([StructField("run_id", StringType(), nullable=False), *GOLD_SCORES.schema.fields]),
    keys=("run_id", "symbol", "open_time"),
    partition_by=("run_id",),
    description="gold.scores as a backtest computed them, one partition per run (thresholds trained by the run).",
)

GOLD_INCIDENTS = Table(
    "gold",
    "incidents",
    schema(
        """
        incident_id string not null, symbol string not null, start timestamp not null,
        last_minute timestamp not null, status string not null, minutes int not null,
        peak_votes int not null, peak_confidence string not null, peak_time timestamp not null,
        peak_abs_z_ret double, peak_z_range double, open_price double not null, close_price double not null,
        price_change double not null, reasons string, thresholds_version long,
        scored_through timestamp not null, previous_last_minute timestamp,
        scope string not null, market_incident_id string, market_change double
        """
    ),
    keys=("incident_id",),
    # A few rows per symbol and day, rewritten while open: one unpartitioned table of small files.
    description="Runs of a symbol's confirmed minutes (pipelines.detection.incidents): open, updated while they "
    "last, closed after the gap; peak confidence, |z|, price change and the peak minute's reasons; scope "
    "'market' when the symbol moved with a market incident, else 'own', and the market's change over its span.",
)

GOLD_MARKET_INCIDENTS = Table(
    "gold",
    "market_incidents",
    schema(
        """
        market_incident_id string not null, start timestamp not null, last_minute timestamp not null,
        status string not null, minutes int not null, symbols string not null, symbol_count int not null,
        active_symbols int not null, peak_votes int not null, peak_confidence string not null,
        peak_time timestamp not null, market_change double not null, scored_through timestamp not null
        """
    ),
    keys=("market_incident_id",),
    description="Minutes in which many symbols were confirmed together (pipelines.detection.market), merged like a "
    "symbol's incidents: the symbols that moved, the market's change (cumulated cross-section median return).",
)

GOLD_ALERTS = Table(
    "gold",
    "alerts",
    schema(
        """
        alert_id string not null, sink string not null, incident_id string not null, kind string not null,
        symbol string not null, confidence string not null, status string not null, attempts int not null,
        error string, message string not null, delivered_at timestamp not null
        """
    ),
    keys=("alert_id", "sink"),
    description="One row per alert and sink: delivered, or dead_letter (with the last error) after every "
    "attempt failed. An alert with a row for a sink is never sent to it again.",
)

REGISTRY: tuple[Table, ...] = (
    BRONZE_CANDLES,
    SILVER_CANDLES,
    SILVER_QUARANTINE,
    GOLD_THRESHOLDS,
    GOLD_SCORES,
    GOLD_BACKTEST_SCORES,
    GOLD_INCIDENTS,
    GOLD_MARKET_INCIDENTS,
    GOLD_ALERTS,
)


@dataclass(frozen=True)
class View:
    """A named query over registry tables, defined the same in every SQL engine (Spark SQL endpoint, DuckDB)."""

    name: str
    query: str
    tables: tuple[Table, ...]  # what it reads: an engine creates it once these exist


# Scored candles with at least one vote: what dashboards and SQL users look at.
GOLD_ANOMALIES = View("gold.anomalies", f"SELECT * FROM {GOLD_SCORES.name} WHERE votes >= 1", (GOLD_SCORES,))
VIEWS: tuple[View, ...] = (GOLD_ANOMALIES,)


def by_name(name: str) -> Table:
    for table in REGISTRY:
        if table.name == name:
            return table
    raise KeyError(f"no table {name!r} in the registry; known: {', '.join(t.name for t in REGISTRY)}")
