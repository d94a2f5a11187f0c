"""What every contender shares: the record, its transform, the single-object codec, the librdkafka
settings, the measuring and the command line.

Imports only the standard library, fastavro and pydantic (confluent_kafka is imported by the
contenders that use it), so this module runs in the project venv and in ``bench/.venv-peers``.
Output protocol: a contender prints ``READY`` once it owns partitions and, at the end, one line
``RESULT {json}``; everything else on stdout is ignored.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import sys
import threading
import time
import uuid
from io import BytesIO
from pathlib import Path
from random import Random
from typing import Any, TypeVar

from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.schema import fingerprint, to_parsing_canonical_form
from pydantic import BaseModel, ConfigDict

SCHEMAS_DIR = Path(__file__).resolve().parents[1] / "schemas"
SCHEMA = parse_schema(json.loads((SCHEMAS_DIR / "bench" / "Order.avsc").read_text()))
# Avro single-object encoding, byte for byte what pipeline.serde.SingleObjectCodec writes.
HEADER = b"\xc3\x01" + bytes.fromhex(fingerprint(to_parsing_canonical_form(SCHEMA), "CRC-64-AVRO"))

# The librdkafka settings pipeline.kafka.config builds (run.py checks they have not drifted), so
# RAW does the same I/O as OURS.
CONSUMER_CONFIG: dict[str, Any] = {
    "log_level": 5,
    "enable.auto.commit": False,
    "enable.auto.offset.store": False,
    "auto.offset.reset": "earliest",
    "partition.assignment.strategy": "cooperative-sticky",
    "session.timeout.ms": 10_000,
    "heartbeat.interval.ms": 1_000,
    "isolation.level": "read_committed",
    "fetch.wait.max.ms": 100,
    "queued.max.messages.kbytes": 16384,
}
PRODUCER_CONFIG: dict[str, Any] = {
    "log_level": 5,
    "enable.idempotence": True,
    "linger.ms": 5,
    "compression.type": "lz4",
    # OURS' default (Java's murmur2 for keyed records): the same partitions, so the same batches
    # per Produce request, for both. (librdkafka's own default hashes keys with CRC32.)
    "partitioner": "murmur2_random",
}
BATCH_SIZE = 500  # = Settings.batch_size
BATCH_TIMEOUT_S = 0.1  # = Settings.batch_timeout_s
BATCH_LINGER_S = 0.005  # = Settings.batch_linger_s
COMMIT_INTERVAL_S = 1.0  # = Settings.commit_interval_s


class Order(BaseModel):
    """Same fields and config as the pipeline.Event the OURS stage uses."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    order_id: str
    customer_id: str
    sku: str
    quantity: int
    unit_price: float
    currency: str
    total: float
    country: str
    note: str
    hops: int
    sent_ns: int


M = TypeVar("M", bound=BaseModel)
FX = {"EUR": 1.0, "USD": 0.92, "GBP": 1.17, "SEK": 0.087}


def transform(order: M) -> M:
    """The business logic of every contender: price the order in EUR and count the hop."""
    o: Any = order
    return type(order)(
        order_id=o.order_id,
        customer_id=o.customer_id,
        sku=o.sku.upper(),
        quantity=o.quantity,
        unit_price=o.unit_price,
        currency="EUR",
        total=round(o.quantity * o.unit_price * FX.get(o.currency, 1.0), 2),
        country=o.country,
        note=o.note,
        hops=o.hops + 1,
        sent_ns=o.sent_ns,
    )


def decode(data: bytes) -> Order:
    if data[:10] != HEADER:
        raise ValueError("not a bench.Order in Avro single-object encoding")
    stream = BytesIO(data)
    stream.seek(10)
    record = schemaless_reader(stream, SCHEMA, None)
    if stream.tell() != len(data):
        raise ValueError("trailing bytes")
    return Order.model_validate(record)


def encode_record(record: dict[str, Any]) -> bytes:
    out = BytesIO()
    out.write(HEADER)
    schemaless_writer(out, SCHEMA, record)
    return out.getvalue()


def encode(order: BaseModel) -> bytes:
    return encode_record(order.__dict__)


def sent_ns_of(data: bytes) -> int:
    """``sent_ns`` of an encoded ``bench.Order``: the varint that ends it (its last field), read
    from the end without decoding the rest (its bytes but the last have the high bit set)."""
    start = len(data) - 1
    while data[start - 1] & 0x80:
        start -= 1
    n = 0
    for byte in reversed(data[start:]):
        n = (n << 7) | (byte & 0x7F)
    return (n >> 1) ^ -(n & 1)


def zigzag_varint(n: int) -> bytes:
    """Avro's encoding of a ``long``."""
    z, out = (n << 1) ^ (n >> 63), bytearray()
    while z > 0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


_NOTES = ("gift wrap, leave at the door", "express; call before delivery", "standard shipping")


def make_record(rng: Random, sent_ns: int = 0) -> dict[str, Any]:
    """One input record (about 140 bytes framed); deterministic for a seeded ``rng``."""
    return {
        "order_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "customer_id": f"cust-{rng.randrange(10**6):06d}",
        "sku": f"sku-{rng.randrange(10**5):05d}-{rng.choice('smlx')}",
        "quantity": rng.randint(1, 20),
        "unit_price": round(rng.uniform(1, 500), 2),
        "currency": rng.choice(tuple(FX)),
        "total": 0.0,
        "country": rng.choice(("DE", "FR", "SE", "GB", "US")),
        "note": rng.choice(_NOTES),
        "hops": 0,
        "sent_ns": sent_ns,
    }


# -- measuring ------------------------------------------------------------------------------

# Milestones of this process's start (``mark``): wall-clock ns, the same clock as the
# orchestrator's, which subtracts the moment it started the process (bench/first_output.py).
MARKS: dict[str, int] = {}


def mark(name: str) -> None:
    """Note when ``name`` first happened (later calls keep the first time)."""
    if name not in MARKS:
        MARKS[name] = time.time_ns()


def cpu_s() -> float:
    """CPU seconds of this whole process: every Python and librdkafka thread."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


_TICK = os.sysconf("SC_CLK_TCK")


def thread_cpu_s(tid: int) -> float:
    """CPU seconds of one thread (Linux): user + system time from /proc."""
    with open(f"/proc/self/task/{tid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


class Meter:
    """A drain of ``count`` records: wall and CPU time from the first record received to the end,
    RSS once 10% are done (after warm-up) and at the end. ``start`` is called from the thread
    that runs the consume loop; that thread's own CPU time is reported apart (``loop_cpu_s``),
    which separates Python work from librdkafka's threads."""

    def __init__(self, count: int, time_limit_s: float) -> None:
        self.count = count
        self.time_limit_s = time_limit_s
        self.done = 0
        self.t0 = self.cpu0 = self.loop_cpu0 = 0.0
        self.loop_tid = 0
        self.rss_warm: float | None = None
        self.blocks_warm = 0

    def start(self) -> None:
        if not self.t0:
            mark("first_record")
            self.t0, self.cpu0 = time.perf_counter(), cpu_s()
            self.loop_tid = threading.get_native_id()
            self.loop_cpu0 = thread_cpu_s(self.loop_tid)

    def add(self, n: int = 1) -> None:
        self.done += n
        if self.rss_warm is None and self.done >= self.count // 10:
            self.rss_warm, self.blocks_warm = rss_mb(), sys.getallocatedblocks()

    @property
    def over_time(self) -> bool:
        return bool(self.t0) and time.perf_counter() - self.t0 > self.time_limit_s

    @property
    def finished(self) -> bool:
        return (self.count > 0 and self.done >= self.count) or self.over_time

    def result(self, **extra: Any) -> dict[str, Any]:
        if not self.t0:  # a figure from t0 = 0 would be the machine's uptime, not a drain
            raise RuntimeError("the meter never started: no record reached the metered consumer")
        seconds = time.perf_counter() - self.t0
        end_rss = rss_mb()
        return {
            "processed": self.done,
            "seconds": seconds,
            "throughput": self.done / seconds if seconds > 0 else 0.0,
            "cpu_s": cpu_s() - self.cpu0,
            "loop_cpu_s": thread_cpu_s(self.loop_tid) - self.loop_cpu0 if self.loop_tid else None,
            "rss_warm_mb": self.rss_warm or end_rss,
            "rss_end_mb": end_rss,
            # Python objects still allocated: growth here is a leak in Python code, while RSS
            # also moves with librdkafka's fetch buffers and the allocator's arenas.
            "py_blocks_growth": sys.getallocatedblocks() - self.blocks_warm,
            "timed_out": self.done < self.count,
            "marks": dict(MARKS),
            **extra,
        }


class ProduceRequests:
    """librdkafka ``stats_cb``: Produce requests sent so far, summed over brokers.

    ``BENCH_PRODUCE_STATS=0`` turns it off (``bench.realcount``): the statistics are built and
    parsed once a second, work that grows with the run's length, not with its records, and a
    drain under callgrind lasts 50 times longer."""

    def __init__(self) -> None:
        self.total = 0
        self.updated = 0.0
        self.off = os.environ.get("BENCH_PRODUCE_STATS") == "0"

    def __call__(self, stats: str) -> None:
        brokers = json.loads(stats).get("brokers", {})
        self.total = sum(b.get("req", {}).get("Produce", 0) for b in brokers.values())
        self.updated = time.monotonic()

    def config(self) -> dict[str, Any]:
        return {} if self.off else {"stats_cb": self, "statistics.interval.ms": 1000}

    def fresh(self, since: float) -> bool:
        return self.off or self.updated > since

    def counted(self) -> int | None:
        """The total, or None when nothing counted (the statistics off): not a zero."""
        return None if self.off else self.total


def report(result: dict[str, Any]) -> None:
    print("RESULT " + json.dumps(result), flush=True)


def ready() -> None:
    print("READY", flush=True)


def stop_on_sigterm() -> threading.Event:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    return stop


def parse_args(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--prefix", required=True, help="run prefix of every topic and group")
    parser.add_argument("--src", required=True, help="input topic (full name)")
    parser.add_argument("--dst", required=True, help="output topic (full name)")
    parser.add_argument("--group", required=True, help="consumer group (full name)")
    parser.add_argument("--count", type=int, default=0, help="records to drain; 0: serve")
    parser.add_argument("--time-limit", type=float, default=120.0, help="drain at most this long")
    parser.add_argument("--io-ms", type=float, default=0.0, help=">0: async handler awaits this")
    parser.add_argument("--concurrency", type=int, default=1, help="handlers in flight (I/O)")
    parser.add_argument(
        "--workload", choices=("order", "checkout"), default="order",
        help="order: bench.Order with event-id headers; checkout: bench.Checkout, no headers",
    )  # fmt: skip
    parser.add_argument(
        "--first-output", action="store_true",
        help="note when the first output is acknowledged (MARKS; bench/first_output.py)",
    )  # fmt: skip
    return parser.parse_args()
