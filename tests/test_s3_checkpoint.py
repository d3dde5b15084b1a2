"""The stream's checkpoint on an S3 API server, read without Spark (what `wait_for_catch_up` and the stream's lag in
`marketlake status` do): a real S3Proxy on a free port, the checkpoint's files in its bucket, read back through
pyarrow's S3 file system with the lake's settings."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from lakehouse.object_store import exists, filesystem
from lakehouse.services.cluster import LocalCluster
from lakehouse.services.process import free_port
from lakehouse.settings import Settings
from pipelines.streaming.health import committed_offsets
from pipelines.streaming.query import checkpoint

pytestmark = pytest.mark.integration


@pytest.fixture
def lake_on_s3(tmp_path) -> Iterator[Settings]:
    base = Settings.from_env(env={}, home=str(tmp_path), cluster_s3_port=free_port())
    cluster = LocalCluster.from_settings(base)
    try:
        cluster.s3.start()
        yield cluster.settings(base)  # only its object store runs: no Spark or Kafka is needed here
    finally:
        cluster.s3.stop()


def test_committed_offsets_of_a_checkpoint_on_s3(lake_on_s3):
    settings = lake_on_s3
    location = checkpoint(settings)
    assert location.startswith("s3a://") and not exists(location, settings)

    store, root = filesystem(location, settings)
    files = {
        "offsets/4": 'v1\n{"batchWatermarkMs":0}\n{"marketlake.candles.1m":{"0":10,"1":7,"2":0}}\n',
        "offsets/5": 'v1\n{"batchWatermarkMs":0}\n{"marketlake.candles.1m":{"0":12,"1":9,"2":3}}\n',
        "commits/4": "v1\n{}\n",  # batch 5 planned but not committed
    }
    for name, text in files.items():
        with store.open_output_stream(f"{root}/{name}") as out:
            out.write(text.encode())

    assert exists(location, settings)
    assert committed_offsets(location, settings) == {0: 10, 1: 7, 2: 0}
