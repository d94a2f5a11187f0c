"""Per-message cost of the consume loop without Kafka: the framework's StageRunner fed by an
in-memory consumer and producer (through the same ports), next to RAW's loop body, plus the cost
of each step on its own. Deterministic and broker-free, so it isolates Python overhead.

    .venv/bin/python -m bench.micro [--messages 200000] [--workload order|checkout]
"""

from __future__ import annotations

import argparse
import time
import timeit
import uuid
from collections.abc import Callable, Sequence
from random import Random
from typing import Any

from bench.contenders import common, ours
from bench.contenders.workloads import WORKLOADS, Workload
from pipeline import headers as hdr
from pipeline.app import Pipeline
from pipeline.config import Settings
from pipeline.context import Context
from pipeline.ports import RebalanceListener, TopicPartition
from pipeline.runner import StageRunner

PARTITIONS = 6


class Record:
    __slots__ = ("_headers", "_key", "_offset", "_partition", "_value")

    def __init__(
        self, value: bytes, key: bytes, partition: int, offset: int, event_id: bool = True
    ) -> None:
        self._value, self._key, self._partition, self._offset = value, key, partition, offset
        self._headers = [("event-id", str(uuid.uuid4()).encode())] if event_id else None

    def topic(self) -> str:
        return "bench-micro.src"

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes:
        return self._key

    def value(self) -> bytes:
        return self._value

    def headers(self) -> Any:
        return self._headers

    def timestamp(self) -> tuple[int, int]:
        return (1, 0)

    def error(self) -> None:
        return None


class MemoryConsumer:
    def __init__(self, records: list[Record], batch: int) -> None:
        self._batches = [records[i : i + batch] for i in range(0, len(records), batch)]

    def subscribe(self, topics: list[str], listener: RebalanceListener) -> None:
        listener.on_assign([(t, p) for t in topics for p in range(PARTITIONS)])

    def consume(self, max_records: int, timeout_s: float) -> Sequence[Record]:
        return self._batches.pop(0) if self._batches else []

    def pause(self, partitions: list[TopicPartition]) -> None: ...
    def resume(self, partitions: list[TopicPartition]) -> None: ...
    def seek(self, tp: TopicPartition, offset: int) -> None: ...
    def commit(
        self, offsets: dict[TopicPartition, int], *, sync: bool, timeout_s: float | None = None
    ) -> None: ...
    def take_commit_failures(self) -> list[TopicPartition]:
        return []

    def close(self, timeout_s: float | None = None) -> None: ...


class MemoryProducer:
    """Acknowledges everything at the next poll, as a healthy broker would."""

    def __init__(self) -> None:
        self._pending: list[Callable[[Any, Any], None]] = []
        self.stop: Any = None

    def produce(self, topic: str, value: Any, key: Any, headers: Any, on_delivery: Any) -> None:
        self._pending.append(on_delivery)

    def poll(self, timeout_s: float = 0) -> int:
        pending, self._pending = self._pending, []
        for callback in pending:
            callback(None, None)
        return len(pending)

    def flush(self, timeout_s: float) -> int:
        return self.poll() and 0

    def __len__(self) -> int:
        return len(self._pending)

    def delivery_error(self, err: Any, topic: str) -> Any:
        return err


def records(count: int, work: Workload = WORKLOADS["order"]) -> list[Record]:
    rng, out, offsets = Random(7), [], [0] * PARTITIONS
    for i in range(count):
        rec = work.make_record(rng)
        p, value, key = i % PARTITIONS, work.encode_record(rec), rec[work.key_field].encode()
        out.append(Record(value, key, p, offsets[p], work.event_id_header))
        offsets[p] += 1
    return out


def runner_us(
    recs: list[Record], hooks: Sequence[Any] = (), work: Workload = WORKLOADS["order"]
) -> float:
    args = argparse.Namespace(prefix="", src="bench-micro.src", dst="bench-micro.out",
                              group="bench-micro", io_ms=0, concurrency=1,
                              workload=work.name)  # fmt: skip
    settings = Settings(schemas_dir=common.SCHEMAS_DIR)
    pipeline = Pipeline.build(settings, [ours.stage_class(args)])
    consumer, producer = MemoryConsumer(recs, settings.batch_size), MemoryProducer()
    runner = StageRunner(pipeline.plans[0], consumer, producer, pipeline.codec, hooks=hooks)  # type: ignore[arg-type]
    runner._consumer.subscribe(pipeline.plans[0].subscriptions, runner)
    start = time.perf_counter()
    while runner.stats.processed < len(recs):
        runner.step()
    return (time.perf_counter() - start) / len(recs) * 1e6


def raw_us(recs: list[Record], work: Workload = WORKLOADS["order"]) -> float:
    producer = MemoryProducer()
    decode, transform, encode = work.decode, work.transform, work.encode
    start = time.perf_counter()
    for rec in recs:
        value = encode(transform(decode(rec.value())))
        producer.produce("out", value, rec.key(), None, _ack)
    producer.poll()
    return (time.perf_counter() - start) / len(recs) * 1e6


def _ack(_err: Any, _msg: Any) -> None:
    pass


class _PositionalProducer(MemoryProducer):
    """``MemoryProducer`` called as librdkafka's produce is by RAW+ (eight positional)."""

    def produce(self, *args: Any) -> None:  # type: ignore[override]
        self._pending.append(args[4])


def guarded_us(recs: list[Record], work: Workload = WORKLOADS["order"]) -> float:
    """RAW+'s loop body (``bench.contenders.raw_guarded``) over ``recs``: its handle, the
    delivery reports, and the settling of acknowledged inputs, on an in-memory producer."""
    import argparse
    from collections import deque

    from bench.contenders.raw_guarded import GuardedLoop, Pending

    loop = object.__new__(GuardedLoop)
    loop.args = argparse.Namespace(dst="out")
    loop.work, loop.producer = work, _PositionalProducer()  # type: ignore[assignment]
    loop.pending, loop.prefixes, loop.acked = {}, {}, {}
    loop.meter = common.Meter(len(recs), 0)
    pending: dict[tuple[str, int], deque[Pending]] = loop.pending
    start = time.perf_counter()
    loop.handle(recs)  # type: ignore[arg-type]
    loop.producer.poll(0)
    loop.settle()
    assert not any(pending.values())
    return (time.perf_counter() - start) / len(recs) * 1e6


def steps(rec: Record, work: Workload) -> list[tuple[str, Callable[[], Any]]]:
    event = work.decode(rec.value())
    parent = str(uuid.uuid4())
    prefix = hdr.coordinates_prefix("t", 1)  # what OutputWriter keeps per input partition
    return [
        ("decode: fastavro + pydantic validate", lambda: work.decode(rec.value())),
        ("transform (builds the output model)", lambda: work.transform(event)),
        ("encode: fastavro", lambda: work.encode(event)),
        (
            "Context(...) + ctx.headers + ctx.event_id",
            lambda: Context("s", rec, frozenset()).event_id,
        ),
        ("headers.derived_event_id (per output)", lambda: hdr.derived_event_id(parent, "s", 0)),
        ("headers.id_from_coordinates (no event-id)", lambda: hdr.id_from_coordinates("t[1]@2")),
        ("headers.id_at (no event-id, per partition)", lambda: hdr.id_at(prefix, 2)),
    ]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--messages", type=int, default=200_000)
    p.add_argument("--workload", choices=tuple(WORKLOADS), default="order")
    a = p.parse_args()
    work = WORKLOADS[a.workload]
    recs = records(a.messages, work)
    from pipeline.metrics import Metrics

    raw, runner = raw_us(recs, work), runner_us(recs, work=work)
    metered = runner_us(recs, [Metrics()], work)
    print(f"RAW loop body      {raw:6.1f} µs/msg")
    print(f"StageRunner.step   {runner:6.1f} µs/msg  ({runner / raw:.2f} x RAW; no Kafka)")
    print(f"  with Metrics     {metered:6.1f} µs/msg  ({metered / runner - 1:+.1%} for metrics)")
    for name, fn in steps(recs[0], work):
        print(f"  {min(timeit.repeat(fn, number=20_000, repeat=3)) / 20_000 * 1e6:6.2f} µs  {name}")


if __name__ == "__main__":
    main()
