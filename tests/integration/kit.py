"""Helpers for integration tests: unique settings, in-process and subprocess workers, and
reading what landed in a topic. Tests may use confluent_kafka directly; the framework may not."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka import KafkaError as CKafkaError
from confluent_kafka.admin import AdminClient

from pipeline import Event, Stage
from pipeline.app import Pipeline
from pipeline.config import Settings
from pipeline.serde import Codec
from pipeline.stage import Topic
from pipeline.worker import Worker

ROOT = Path(__file__).resolve().parents[2]
OFFSET_BEGINNING = -2  # librdkafka's logical offset: the start of the partition
NOT_READY = {CKafkaError.NOT_LEADER_FOR_PARTITION, CKafkaError.LEADER_NOT_AVAILABLE,
             CKafkaError.UNKNOWN_TOPIC_OR_PART, CKafkaError._TIMED_OUT}  # fmt: skip


def wait_until(
    predicate: Callable[[], Any], timeout_s: float = 30.0, what: str = "condition"
) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.05)


def unique_settings(bootstrap: str, schemas_dir: Path | None = None, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "bootstrap_servers": bootstrap,
        "topic_prefix": f"t{uuid.uuid4().hex[:10]}.",
        "schemas_dir": schemas_dir or ROOT / "tests" / "schemas",
        "topic_partitions": 4,
        "commit_interval_s": 0.2,
        "batch_timeout_s": 0.05,
        "shutdown_timeout_s": 15.0,
    }
    values.update(overrides)
    return Settings(**values)


def settings_env(settings: Settings, **extra: str) -> dict[str, str]:
    """Environment for a `pipeline run` subprocess with the same settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIPELINE_")}
    env.update(
        KAFKA_BOOTSTRAP_SERVERS=settings.bootstrap_servers,
        PIPELINE_TOPIC_PREFIX=settings.topic_prefix,
        PIPELINE_SCHEMAS_DIR=str(settings.schemas_dir),
        PIPELINE_TOPIC_PARTITIONS=str(settings.topic_partitions),
        PIPELINE_COMMIT_INTERVAL_S=str(settings.commit_interval_s),
        PIPELINE_BATCH_TIMEOUT_S=str(settings.batch_timeout_s),
        PIPELINE_SHUTDOWN_TIMEOUT_S=str(settings.shutdown_timeout_s),
        PYTHONPATH=str(ROOT),
    )
    env.update(extra)
    return env


@contextmanager
def running(settings: Settings, stages: Sequence[type[Stage]]) -> Iterator[Worker]:
    """An in-process worker (one thread per stage); stopped gracefully at the end."""
    pipeline = Pipeline.build(settings, stages)
    ensure_visible_topics(pipeline)
    worker = Worker(pipeline, worker_id=f"test-{uuid.uuid4().hex[:6]}")
    worker.start()
    try:
        yield worker
    finally:
        worker.stop()
        assert worker.join(30), "worker did not stop within 30s"
        pipeline.close()
    assert not worker.failed, "a stage crashed"


@dataclass
class WorkerProcess:
    proc: subprocess.Popen[bytes]
    log: Path

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def wait(self, timeout_s: float) -> int:
        return self.proc.wait(timeout_s)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def alive(self) -> bool:
        """True while running; raises with the worker's log if it exited early."""
        if self.proc.poll() is not None:
            raise AssertionError(f"worker exited with {self.proc.returncode}:\n{self.output()}")
        return True


@contextmanager
def worker_process(
    spec: str, env: dict[str, str], log: Path, workers: int = 1, args: Sequence[str] = ()
) -> Iterator[WorkerProcess]:
    cmd = [sys.executable, "-m", "pipeline", "run", spec, "--workers", str(workers), *args]
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    handle = WorkerProcess(proc, log)
    try:
        yield handle
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)


def read_topic(
    settings: Settings,
    topic: Topic,
    codec: Codec | None = None,
    *,
    count: int,
    timeout_s: float = 30.0,
) -> list[tuple[Any, Any]]:
    """Read ``count`` records from the start of ``topic``: (record, decoded event) pairs."""
    pipeline = Pipeline.build(settings)
    codec = codec or pipeline.codec
    binding = pipeline.catalog.bind(topic.model)
    consumer = Consumer(
        {
            "bootstrap.servers": settings.bootstrap_servers,
            "group.id": f"reader-{uuid.uuid4()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([settings.topic(topic.name)])
    out: list[tuple[Any, Any]] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(out) < count and time.monotonic() < deadline:
            for msg in consumer.consume(500, 0.2):
                if msg.error() is None:
                    out.append((msg, codec.decode(msg.value(), binding)))
    finally:
        consumer.close()
        pipeline.close()
    return out


def read_to_end(
    settings: Settings, topic: Topic, codec: Codec | None = None, *, timeout_s: float = 60.0
) -> list[tuple[Any, Any]]:
    """Every record of ``topic`` up to its end offsets as they are now: (record, decoded event)
    pairs. Partitions are assigned directly (no group to join), and the read ends at the end
    offsets, not after a time, so nothing is missed however slow the machine: call it once the
    writers have stopped to count everything they wrote, extras included."""
    pipeline = Pipeline.build(settings)
    codec = codec or pipeline.codec
    binding = pipeline.catalog.bind(topic.model)
    name = settings.topic(topic.name)
    consumer = Consumer(
        {
            "bootstrap.servers": settings.bootstrap_servers,
            "group.id": f"to-end-{uuid.uuid4()}",
            "enable.auto.commit": False,
        }
    )
    out: list[tuple[Any, Any]] = []
    try:
        partitions = consumer.list_topics(name, timeout=10).topics[name].partitions
        tps = [TopicPartition(name, p) for p in partitions]
        ends = {tp.partition: consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in tps}
        consumer.assign([TopicPartition(name, p, OFFSET_BEGINNING) for p in partitions])

        def at_the_end() -> bool:
            for msg in consumer.consume(500, 0.2):
                if msg.error() is None:
                    out.append((msg, codec.decode(msg.value(), binding)))
            at = {tp.partition: tp.offset for tp in consumer.position(tps)}
            return all(end == 0 or at[p] >= end for p, end in ends.items())

        wait_until(at_the_end, timeout_s, f"the end of {name}")
    finally:
        consumer.close()
        pipeline.close()
    return out


def end_offsets(settings: Settings, topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": settings.bootstrap_servers, "group.id": "probe"})
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        return sum(
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in meta.partitions
        )
    except KafkaException as exc:
        # A topic made a moment ago (a worker's startup job) may not have its leader known
        # yet (NOT_LEADER_FOR_PARTITION): "none yet" to a wait_until, never a test error.
        err = exc.args[0] if exc.args else None
        if isinstance(err, CKafkaError) and (err.retriable() or err.code() in NOT_READY):
            return -1
        raise
    finally:
        consumer.close()


def prepare(settings: Settings, stages: Sequence[type[Stage]]) -> None:
    """Create the stages' topics up front, so a test can publish before a worker is up."""
    ensure_visible_topics(Pipeline.build(settings, stages))


def ensure_visible_topics(pipeline: Pipeline) -> None:
    """``ensure_topics()``, then wait until the broker's metadata lists them all: a topic just
    created can be missing from metadata for a moment (longer on a loaded machine), and a
    Publisher checking for it then raises TopicNotFoundError."""
    pipeline.ensure_topics()
    wanted = set(pipeline.topics())
    admin = pipeline.transport.admin()
    wait_until(lambda: wanted <= set(admin.topics()), 30, f"topics {sorted(wanted)} in metadata")


def group_members(settings: Settings, group: str) -> int:
    """Members of ``group`` that hold at least one partition (0 if the group is unknown)."""
    admin = AdminClient({"bootstrap.servers": settings.bootstrap_servers})
    try:
        desc = admin.describe_consumer_groups([group])[group].result(10)
    except Exception:
        return 0
    return sum(1 for m in desc.members if m.assignment and m.assignment.topic_partitions)


def marks(path: Path) -> list[list[str]]:
    if not path.exists():
        return []
    return [line.split() for line in path.read_text().splitlines() if line.strip()]


def producer_config_env(config: dict[str, str]) -> str:
    return json.dumps(config)


def make_pings(n: int, start: int = 0) -> list[Event]:
    from tests.integration.app_stages import Ping

    return [Ping(ping_id=f"p{i}", n=i) for i in range(start, start + n)]


def raw_produce(settings: Settings, topic: str, value: bytes) -> None:
    """Produce bytes that did not come from our publisher (poison, foreign producers)."""
    producer = Producer({"bootstrap.servers": settings.bootstrap_servers})
    producer.produce(topic, value)
    producer.flush(10)


def raw_records(settings: Settings, topic: str, count: int, timeout_s: float = 30) -> list[Any]:
    """The first ``count`` records of ``topic`` as the client returns them (bytes, headers)."""
    consumer = Consumer(
        {
            "bootstrap.servers": settings.bootstrap_servers,
            "group.id": f"raw-{time.monotonic_ns()}",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([topic])
    out: list[Any] = []
    try:
        wait_until(
            lambda: (
                out.extend(m for m in consumer.consume(10, 0.2) if not m.error())
                or len(out) >= count
            ),
            timeout_s,
            f"{count} record(s) in {topic}",
        )
    finally:
        consumer.close()
    return out


def committed_total(settings: Settings, group: str, topic: str) -> int:
    """The sum over ``topic``'s partitions of ``group``'s committed offsets (0 where none)."""
    consumer = Consumer({"bootstrap.servers": settings.bootstrap_servers, "group.id": group})
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        tps = [TopicPartition(topic, p) for p in meta.partitions]
        return sum(max(tp.offset, 0) for tp in consumer.committed(tps, timeout=10))
    finally:
        consumer.close()
