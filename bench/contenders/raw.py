"""RAW: the hand-written confluent-kafka loop the framework is measured against.

consume a batch → Avro decode → pydantic validate → transform → Avro encode → produce; every
second: flush the producer, then commit the next offsets (at-least-once, like OURS). Same
librdkafka settings, batch size, timeouts and consume pattern as OURS (take what is ready; if
nothing is, wait for the first record, then hold it ``BATCH_LINGER_S`` for those just behind
it); no framework code.
"""

from __future__ import annotations

import time
from typing import Any, cast

from confluent_kafka import Consumer, KafkaException, Message, Producer, TopicPartition

from bench.contenders import common
from bench.contenders.workloads import WORKLOADS


class RawLoop:
    def __init__(self, args: Any) -> None:
        self.args = args
        self.meter = common.Meter(args.count, args.time_limit)
        self.work = WORKLOADS[args.workload]
        self.requests = common.ProduceRequests()
        self.consumer = Consumer(
            common.CONSUMER_CONFIG
            | {"bootstrap.servers": args.bootstrap, "group.id": args.group, "client.id": "raw"}
        )
        delivered = _delivered_first if args.first_output else _delivered
        self.producer = Producer(
            common.PRODUCER_CONFIG
            | self.requests.config()
            | {"bootstrap.servers": args.bootstrap, "client.id": "raw", "on_delivery": delivered}
        )
        self.positions: dict[tuple[str, int], int] = {}
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
                time.sleep(common.BATCH_LINGER_S)  # those just behind it join its batch
            records = [first, *self.consumer.consume(common.BATCH_SIZE - 1, 0)] if first else []
        if records:
            self.meter.start()
            self.handle(records)
        self.producer.poll(0)
        if time.monotonic() - self.last_commit >= common.COMMIT_INTERVAL_S:
            self.producer.flush(30)  # outputs durable first, then their inputs' offsets
            self.commit()

    def handle(self, records: list[Message]) -> None:
        dst, produce, positions = self.args.dst, self.producer.produce, self.positions
        decode, transform, encode = self.work.decode, self.work.transform, self.work.encode
        for record in records:
            if record.error() is not None:
                continue
            value = encode(transform(decode(cast(bytes, record.value()))))
            while True:
                try:
                    produce(dst, value, record.key())
                    break
                except BufferError:
                    self.producer.poll(0.05)
            positions[(cast(str, record.topic()), cast(int, record.partition()))] = (
                cast(int, record.offset()) + 1
            )
        self.meter.add(len(records))

    def commit(self) -> None:
        self.last_commit = time.monotonic()
        if self.positions:
            offsets = [TopicPartition(t, p, o) for (t, p), o in self.positions.items()]
            self.consumer.commit(offsets=offsets, asynchronous=True)
            self.positions = {}

    def report(self) -> None:
        result = self.meter.result()
        end = time.monotonic()
        while not self.requests.fresh(end) and time.monotonic() - end < 3:
            self.producer.poll(0.1)
        common.report(result | {"produce_requests": self.requests.counted()})


def _assigned(_consumer: Any, _partitions: Any) -> None:
    common.mark("assigned")
    common.ready()


def _delivered(err: Any, _msg: Any) -> None:
    if err is not None:
        raise KafkaException(err)


def _delivered_first(err: Any, _msg: Any) -> None:
    """``_delivered``, noting the first acknowledgement (the first-output phase only)."""
    if err is not None:
        raise KafkaException(err)
    common.mark("first_output")


if __name__ == "__main__":
    common.mark("imported")
    RawLoop(common.parse_args(__doc__ or "")).run()
