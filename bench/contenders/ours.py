"""OURS: the same transform as a pipeline Stage, run by the framework's own StageRunner.

The runner comes from ``Pipeline.runner`` itself (so it is composed as in production: retry
consumer, settings and all), with two measuring subclasses in place of the Kafka adapter classes:
the producer gets a librdkafka ``stats_cb`` (Produce requests), the consumer starts the meter at
the first record and notes its assignment. READY (``Readiness``) means what it means for RAW:
the stage can hand out the next record it fetches, so it owns its input partitions *and* its
topics are ensured (``pipeline.startup``: no batch is handed out before), and every consumer
of the stage has its assignment (RAW's one consumer; OURS' retry consumer too). The runner runs on
its own thread, as in a Worker; the main thread only watches the counters.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Sequence
from typing import Any

from pydantic import AwareDatetime

from bench.contenders import checkout, common
from bench.contenders.checkout import Address, Amount, Currency, Email, Items, OrderId
from pipeline import Context, Event, Hook, Stage, Topic
from pipeline.app import Pipeline
from pipeline.config import Settings
from pipeline.hooks import StageInfo
from pipeline.kafka import KafkaConsumer, KafkaProducer
from pipeline.kafka import transport as kafka_transport
from pipeline.ports import RawRecord, RebalanceListener, TopicPartition
from pipeline.runner import StageRunner
from pipeline.startup import TopicsJob


class Order(Event, schema="bench.Order"):
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


class Checkout(Event, schema="bench.Checkout"):
    """``checkout.Checkout`` as a pipeline Event: the same constrained fields."""

    order_id: OrderId
    customer_email: Email
    placed_at: AwareDatetime
    amount: Amount
    currency: Currency
    shipping_address: Address
    items: Items


class PriceCheckout(Stage):
    __abstract_stage__ = True

    def handle(self, event: Checkout, ctx: Context) -> None:
        ctx.emit(self.emits[0], checkout.transform(event))


class PriceOrder(Stage):
    __abstract_stage__ = True

    def handle(self, event: Order, ctx: Context) -> None:
        ctx.emit(self.emits[0], common.transform(event))


class SlowPriceOrder(Stage):
    """I/O bound: awaits ``io_s`` (a remote call) before the same transform."""

    __abstract_stage__ = True
    io_s = 0.01

    async def handle(self, event: Order, ctx: Context) -> None:
        await asyncio.sleep(self.io_s)
        ctx.emit(self.emits[0], common.transform(event))


def stage_class(args: Any) -> type[Stage]:
    strip = len(args.prefix)  # Settings.topic_prefix adds it back to topics and the group
    model: type[Event] = Checkout if getattr(args, "workload", "order") == "checkout" else Order
    attrs: dict[str, Any] = {
        "consumes": Topic(args.src[strip:], model, key="order_id"),
        "emits": (Topic(args.dst[strip:], model, key="order_id"),),
        "group": args.group[strip:],
        "name": "price_order",
    }
    base: type[Stage] = PriceCheckout if model is Checkout else PriceOrder
    if args.io_ms:
        base, attrs["io_s"] = SlowPriceOrder, args.io_ms / 1000
        if hasattr(Stage, "concurrency"):
            attrs["concurrency"] = args.concurrency
    return type("BenchPriceOrder", (base,), attrs)


METER = common.Meter(0, 0.0)
REQUESTS = common.ProduceRequests()


class Readiness:
    """READY once every condition is met, on whichever thread meets the last one.

    A chain's load starts when every process said READY: said on assignment alone, OURS was
    timed from before it could hand out a record (its topics job still running: on a loaded
    2-core machine 1-2 s with four stages making their retry topics at once), and its
    warm-up began with a backlog RAW never had. The retry consumer subscribes once the topics
    are ensured, and its assignment reads its committed offsets inside the loop's consume (a
    stall of about 90 ms measured on a loaded machine): over before the load starts, too."""

    def __init__(self, *conditions: str) -> None:
        self._left = set(conditions)
        self._lock = threading.Lock()

    def expect(self, condition: str) -> None:
        """One more condition (before any client is made: none can be met yet)."""
        with self._lock:
            self._left.add(condition)

    def met(self, condition: str) -> None:
        with self._lock:
            if not self._left:
                return
            self._left.discard(condition)
            if not self._left:
                common.mark("ready")
                marks = common.MARKS
                # Since "imported" (a variant that does not mark it: since its first mark).
                start = marks.get("imported", min(marks.values()))
                since = {k: round((t - start) / 1e9, 3) for k, t in marks.items()}
                print("STARTUP " + json.dumps(since), flush=True)  # s since imported
                common.ready()


READY = Readiness("assigned", "topics_ensured")


class MeteredConsumer(KafkaConsumer):
    """The framework's consumer; also starts the meter at the first record and says READY once
    it owns input partitions."""

    inputs: frozenset[str] = frozenset()

    def subscribe(self, topics: list[str], listener: RebalanceListener) -> None:
        inputs = self.inputs

        class Announcing:
            def on_assign(self, partitions: list[TopicPartition]) -> None:
                listener.on_assign(partitions)
                if any(topic in inputs for topic, _ in partitions):
                    common.mark("assigned")
                    READY.met("assigned")
                elif partitions:
                    common.mark("assigned_retry")
                    READY.met("assigned_retry")

            def on_revoke(self, partitions: list[TopicPartition]) -> None:
                listener.on_revoke(partitions)

            def on_lost(self, partitions: list[TopicPartition]) -> None:
                listener.on_lost(partitions)

        super().subscribe(topics, Announcing())

    def consume(self, max_records: int, timeout_s: float) -> Sequence[RawRecord]:
        records = super().consume(max_records, timeout_s)
        if records:
            METER.start()
        return records


class CountingProducer(KafkaProducer):
    """The framework's producer with a librdkafka stats_cb counting Produce requests."""

    made: list[KafkaProducer] = []

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config | REQUESTS.config())
        self.made.append(self)


class FirstOutput(Hook):
    """Notes when the first input's output is acknowledged (``on_completed`` comes once the
    broker acknowledged every output of the input): the first-output phase only."""

    def before_batch(self, stage: StageInfo, records: Sequence[RawRecord]) -> None:
        common.mark("first_batch")  # handed to the stage (after the topics job)

    def after_batch(self, stage: StageInfo, records: Sequence[RawRecord]) -> None:
        common.mark("first_batch_done")  # handled, its outputs produced (not yet acknowledged)

    def on_completed(self, stage: StageInfo, record: RawRecord) -> None:
        common.mark("first_output")


def main(args: Any, metrics: bool = False, hooks: Sequence[Any] = ()) -> None:
    """``metrics``: as ``pipeline run`` with ``PIPELINE_METRICS_PORT`` (the ``Metrics`` hook, its
    /metrics endpoint and the lag thread). ``hooks``: pipeline hooks (``bench.obscost``)."""
    settings = Settings(
        bootstrap_servers=args.bootstrap, topic_prefix=args.prefix, schemas_dir=common.SCHEMAS_DIR
    )
    if getattr(args, "first_output", False):
        hooks = (*hooks, FirstOutput())
    pipeline = Pipeline.build(settings, [stage_class(args)], hooks=hooks)
    common.mark("built")
    plan = pipeline.plans[0]
    if any(group.endswith(".retry") for group, _ in plan.readers):  # a consumer of its own
        READY.expect("assigned_retry")
    topics = pipeline.start_topics()  # as `pipeline run` does before it starts its stages
    common.mark("topics")  # checked; made (if still making) while the consumers join:
    threading.Thread(target=_mark_when_ensured, args=(topics,), daemon=True).start()
    if metrics:
        from pipeline.metrics import serve_worker

        pipeline, _endpoint = serve_worker(pipeline, 0)
    METER.count, METER.time_limit_s = args.count, args.time_limit
    MeteredConsumer.inputs = frozenset(plan.inputs)
    # Exactly what Pipeline.runner composes (consumers, producer, settings), with these two
    # measuring subclasses in place of the adapter classes its Kafka transport instantiates.
    vars(kafka_transport).update(KafkaConsumer=MeteredConsumer, KafkaProducer=CountingProducer)
    runner = pipeline.runner(plan, "bench", topics=topics)
    common.mark("runner")
    stop = common.stop_on_sigterm()
    runner.stop_event = stop
    thread = threading.Thread(target=runner.run, name=plan.name)
    thread.start()
    if args.count:
        drain(runner, thread)
    thread.join()


def _mark_when_ensured(topics: TopicsJob) -> None:
    try:
        topics.wait()
        READY.met("topics_ensured")  # not on failure: the stage stops, and never says READY
    finally:
        common.mark("topics_ensured")


def drain(runner: StageRunner, thread: threading.Thread) -> None:
    """Done when ``count`` records were handled and every output acknowledged."""
    meter, req = METER, REQUESTS
    while thread.is_alive():
        time.sleep(_watch_interval(meter))
        meter.done = runner.stats.processed
        meter.add(0)  # notes the RSS once warmed up
        in_flight = sum(len(p) for p in CountingProducer.made)
        if (meter.done >= meter.count and not in_flight) or meter.over_time:
            break
    result = meter.result(produce_requests=0)
    end = time.monotonic()
    while not req.fresh(end) and time.monotonic() - end < 3:
        time.sleep(0.05)  # the runner thread serves stats_cb in its producer.poll
    runner.stop_event.set()
    common.report(result | {"produce_requests": req.total if req.updated else None})


def _watch_interval(meter: common.Meter) -> float:
    """This watcher is a second Python thread: each wake takes the GIL from the loop thread,
    which on a loaded machine then waits to be scheduled again (py-spy: about a tenth of OURS'
    samples waited for the GIL at a 10 ms cadence). RAW checks in its own loop, so the watcher
    wakes rarely (50 ms) while far from the end and often only near it, where it can stop the
    clock late by no more than a couple of milliseconds."""
    if not meter.t0 or meter.done <= 0:
        return 0.01
    rate = meter.done / max(time.perf_counter() - meter.t0, 1e-3)
    return min(max((meter.count - meter.done) / rate / 2, 0.002), 0.05)


if __name__ == "__main__":
    common.mark("imported")
    main(common.parse_args(__doc__ or ""))
