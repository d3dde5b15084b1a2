"""How the stream is doing, from the outside: its lag behind the topic, and whether to (re)start it."""

from __future__ import annotations

import json
from dataclasses import dataclass

from kafka import KafkaConsumer, TopicPartition
from pyarrow import fs

from lakehouse.object_store import exists, filesystem
from lakehouse.settings import Settings
from pipelines.streaming.query import checkpoint


def committed_offsets(checkpoint_dir: str, settings: Settings | None = None) -> dict[int, int]:
    """Offsets the stream has fully processed: the newest batch in <checkpoint>/commits, its offsets file. A
    checkpoint on S3 is read with the lake's `settings`."""
    store, root = filesystem(checkpoint_dir, settings or Settings())
    listing = store.get_file_info(fs.FileSelector(f"{root}/commits", allow_not_found=True))
    commits = sorted((int(f.base_name) for f in listing if f.base_name.isdigit()), reverse=True)
    if not commits:
        return {}
    with store.open_input_stream(f"{root}/offsets/{commits[0]}") as file:
        lines = file.read().decode().splitlines()
    offsets = json.loads(lines[-1])  # the last line holds {topic: {partition: next offset}}
    return {int(p): int(o) for topic in offsets.values() for p, o in topic.items()}


def end_offsets(settings: Settings) -> dict[int, int]:
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers, request_timeout_ms=5000)
    try:
        partitions = [
            TopicPartition(settings.kafka_topic, p) for p in consumer.partitions_for_topic(settings.kafka_topic) or ()
        ]
        return {tp.partition: offset for tp, offset in consumer.end_offsets(partitions).items()}
    finally:
        consumer.close()


def lag(committed: dict[int, int], end: dict[int, int]) -> int:
    """Records in the topic that the stream has not committed yet."""
    return sum(max(offset - committed.get(partition, 0), 0) for partition, offset in end.items())


@dataclass(frozen=True)
class Decision:
    start: bool
    reason: str


def supervise(
    recent: list[tuple[str, float | None]],
    now: float,
    base_backoff_s: float = 30.0,
    max_backoff_s: float = 600.0,
    done_when_succeeded: bool = False,
) -> Decision:
    """Whether to start a long-running job, from its recent runs, newest first: (status, end time in epoch seconds).

    Running or queued: leave it. Stopped by a person (canceled): leave it stopped. Succeeded, for a job that ends
    (a replay): leave it. Failed n times in a row: start again once base * 2^(n-1) seconds (at most max) have
    passed since the last failure.
    """
    if recent and recent[0][0] in {"QUEUED", "NOT_STARTED", "STARTING", "STARTED"}:
        return Decision(False, f"running ({recent[0][0].lower()})")
    if recent and recent[0][0] in {"CANCELING", "CANCELED"}:
        return Decision(False, "stopped from the UI; launch the job to resume")
    if recent and recent[0][0] == "SUCCESS" and done_when_succeeded:
        return Decision(False, "finished")
    failures = 0
    for status, _ in recent:
        if status != "FAILURE":
            break
        failures += 1
    if failures == 0:
        return Decision(True, "not running: starting it")
    wait = min(base_backoff_s * 2 ** (failures - 1), max_backoff_s)
    ended = recent[0][1]
    since = now - ended if ended is not None else 0.0
    if since >= wait:
        return Decision(True, f"restarting after {failures} failure(s)")
    return Decision(False, f"failed {failures} time(s); restarting in {wait - since:.0f} s")


def describe_lag(settings: Settings) -> str:
    """ "lag N records" behind the topic; "" before the stream's first batch; why, when the broker cannot say."""
    if not exists(checkpoint(settings), settings):
        return ""
    try:
        return f"lag {lag(committed_offsets(checkpoint(settings), settings), end_offsets(settings))} records"
    except Exception as error:  # the broker may be down: say so, never fail the caller
        return f"lag unknown ({type(error).__name__})"
