"""RAW+: RAW's hand-written loop, plus the per-message work of the guarantees OURS keeps.

What ``raw.py`` skips and OURS promises, hand-written as a careful user would, with no framework
code: each output carries a derived ``event-id`` (the input's id, the stage and the output's
index, hashed), the input's id as ``parent-id`` and a ``correlation-id`` (the input's, else its
own id); an input without an ``event-id`` header gets a stable id from its coordinates; each
input's delivery is tracked by a small callable per record, and every second the contiguous
acknowledged offsets of each partition are committed (commit after acknowledgement, without
RAW's blocking flush). Not handled, as in RAW: refused deliveries, retries, dead letters,
rebalances beyond the first assignment; its coordinates ids are not uuid5's bit layout (the same
work: a SHA-1 from a per-partition state and the hex text). RAW and RAW+ read and write Avro
through fastavro's public functions; OURS' bound codec skips their per-call schema work
(``pipeline.serde.body``), about 3% of its instructions, so OURS / RAW+ understates the
framework's own cost by about that much.

It answers one question: how fast can a loop with these guarantees be, written by hand in
Python? OURS' distance from RAW+ is the framework's own cost; RAW+'s distance from RAW is the
guarantees' (``bench.drains --guarded``).
"""

from __future__ import annotations

import binascii
import hashlib
import operator
import time
from collections import deque
from collections.abc import Iterable
from typing import Any, cast

from confluent_kafka import Consumer, Message, Producer, TopicPartition

from bench.contenders import common
from bench.contenders.workloads import WORKLOADS

_SUFFIX = b"/raw-guarded/0"
_BLAKE = hashlib.blake2b(digest_size=16)
_CARRIED = frozenset({"correlation-id", "traceparent", "tracestate"})
_hexlify = binascii.hexlify
_GROUPS = operator.itemgetter(slice(8), slice(8, 12), slice(12, 16), slice(16, 20), slice(20, 32))
_join = b"-".join
_new = object.__new__


def _uuid_text(digest: bytes) -> bytes:
    return _join(_GROUPS(_hexlify(digest)))  # two C calls and a join, as OURS


class Pending:
    """One input waiting for its output's acknowledgement (the producer's ``on_delivery``)."""

    __slots__ = ("done", "offset")

    def __init__(self, offset: int) -> None:  # (the loop makes them with _new, no call)
        self.offset, self.done = offset, False

    def __call__(self, err: Any, _msg: Any) -> None:
        if err is not None:
            raise RuntimeError(f"delivery failed: {err}")  # RAW+ handles no refusals
        self.done = True


class GuardedLoop:
    def __init__(self, args: Any) -> None:
        self.args = args
        self.meter = common.Meter(args.count, args.time_limit)
        self.work = WORKLOADS[args.workload]
        self.requests = common.ProduceRequests()
        self.consumer = Consumer(
            common.CONSUMER_CONFIG
            | {"bootstrap.servers": args.bootstrap, "group.id": args.group, "client.id": "raw+"}
        )
        self.producer = Producer(
            common.PRODUCER_CONFIG
            | self.requests.config()
            | {"bootstrap.servers": args.bootstrap, "client.id": "raw+"}
        )
        self.pending: dict[tuple[str, int], deque[Pending]] = {}
        self.prefixes: dict[tuple[str, int], Any] = {}  # SHA-1 state after "<topic>[<p>]@"
        self.acked: dict[tuple[str, int], int] = {}  # the offset to commit, per partition
        self.last_commit = time.monotonic()

    def run(self) -> None:
        stop = common.stop_on_sigterm()
        self.consumer.subscribe([self.args.src], on_assign=_assigned)
        while not stop.is_set() and not (self.args.count and self.meter.finished):
            self.step()
        self.producer.flush(30)
        self.commit()
        if self.args.count:
            self.report()
        self.consumer.close()

    def step(self) -> None:
        records = self.consumer.consume(common.BATCH_SIZE, 0)
        if not records:
            first = self.consumer.poll(common.BATCH_TIMEOUT_S)
            if first:
                time.sleep(common.BATCH_LINGER_S)
            records = [first, *self.consumer.consume(common.BATCH_SIZE - 1, 0)] if first else []
        if records:
            self.meter.start()
            self.handle(records)
        self.producer.poll(0)
        self.settle()  # acknowledged trackers die young (not promoted for a commit interval)
        if time.monotonic() - self.last_commit >= common.COMMIT_INTERVAL_S:
            self.commit()

    def handle(self, records: list[Message]) -> None:  # noqa: C901 - one loop body, inline
        dst, produce, pending = self.args.dst, self.producer.produce, self.pending
        decode, transform, encode = self.work.decode, self.work.transform, self.work.encode
        prefixes = self.prefixes
        for record in records:
            if record.error() is not None:
                continue
            tp = (cast(str, record.topic()), cast(int, record.partition()))
            offset = cast(int, record.offset())
            value = encode(transform(decode(cast(bytes, record.value()))))
            parent: bytes | None = None
            carried: list[tuple[str, str | bytes | None]] = []
            correlated = False
            # Annotated, not cast: cast(list[tuple[...]], x) is a call plus two GenericAliases.
            raw_headers: Iterable[tuple[str, bytes]] = record.headers() or ()  # type: ignore[assignment]
            for k, v in raw_headers:
                if k == "event-id" and v:
                    parent = v
                elif k in _CARRIED:  # correlation-id, traceparent, tracestate, as OURS
                    carried.append((k, v))
                    correlated = correlated or k == "correlation-id"
            if parent is None:  # another producer's record: an id from its coordinates
                prefix = prefixes.get(tp)
                if prefix is None:
                    prefix = prefixes[tp] = hashlib.sha1(b"%s[%d]@" % (tp[0].encode(), tp[1]))
                h = prefix.copy()
                h.update(b"%d" % offset)
                parent = _uuid_text(h.digest())
            h = _BLAKE.copy()
            h.update(parent + _SUFFIX)
            headers: list[tuple[str, str | bytes | None]] = [
                ("event-id", _uuid_text(h.digest())),
                ("parent-id", parent),
                *carried,
            ]
            if not correlated:
                headers.append(("correlation-id", parent))
            waiting = _new(Pending)  # no Python __init__ call
            waiting.offset, waiting.done = offset, False
            queue = pending.get(tp)
            if queue is None:
                queue = pending[tp] = deque()
            queue.append(waiting)
            while True:
                try:
                    # Positional, as OURS calls it: keywords cost more to parse than the rest.
                    produce(dst, value, record.key(), -1, waiting, None, 0, headers)
                    break
                except BufferError:
                    self.producer.poll(0.05)
        self.meter.add(len(records))

    def settle(self) -> None:
        """Each partition's acknowledged head inputs leave its queue (in offset order)."""
        acked = self.acked
        for tp, queue in self.pending.items():
            last = None
            while queue and queue[0].done:
                last = queue.popleft().offset
            if last is not None:
                acked[tp] = last + 1

    def commit(self) -> None:
        """The offset after each partition's contiguous acknowledged inputs."""
        self.last_commit = time.monotonic()
        self.settle()
        if self.acked:
            offsets = [TopicPartition(t, p, o) for (t, p), o in self.acked.items()]
            self.consumer.commit(offsets=offsets, asynchronous=True)
            self.acked = {}

    def report(self) -> None:
        result = self.meter.result()
        end = time.monotonic()
        while not self.requests.fresh(end) and time.monotonic() - end < 3:
            self.producer.poll(0.1)
        common.report(result | {"produce_requests": self.requests.counted()})


def _assigned(_consumer: Any, _partitions: Any) -> None:
    common.mark("assigned")
    common.ready()


if __name__ == "__main__":
    common.mark("imported")
    GuardedLoop(common.parse_args(__doc__ or "")).run()
