"""``make run-pipeline``: the example pipelines on a real broker, with a live progress view.

Steps: make sure a broker is there (starting the local one when none is configured), create the
topics, start every example stage in this process, publish demo events, and show per-stage
progress until everything has drained; then exit (``--once``) or keep consuming until Ctrl-C.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from types import FrameType
from typing import Literal

from rich.console import Console
from rich.live import Live
from rich.table import Table

from pipeline.app import Pipeline
from pipeline.config import Settings
from pipeline.context import Context
from pipeline.errors import KafkaError
from pipeline.examples import SCHEMAS_DIR
from pipeline.hooks import Hook, StageInfo
from pipeline.ports import LagPort, RawRecord
from pipeline.publisher import Publisher
from pipeline.registry import StagePlan, load
from pipeline.stop import StopEvent
from pipeline.worker import Worker, abandon_process

EXAMPLES = "pipeline.examples.video,pipeline.examples.orders"
console = Console()


class ProgressView(Hook):
    """What the live table shows, per stage, kept from the stages' hooks (on their threads;
    the table reads plain ints, at most a batch old)."""

    def __init__(self) -> None:
        self.rows: dict[str, Row] = {}

    def row(self, stage: str) -> Row:
        row = self.rows.get(stage)
        if row is None:
            row = self.rows[stage] = Row()
        return row

    def on_stage_start(self, stage: StageInfo) -> None:
        self.row(stage.name)

    def on_succeeded(self, stage: StageInfo, record: RawRecord, ctx: Context) -> None:
        row = self.row(stage.name)
        row.done += 1
        row.outputs += len(ctx.outputs)

    def on_failed(
        self, stage: StageInfo, record: RawRecord, error: Exception, attempt: int, retrying: bool
    ) -> None:
        self.row(stage.name).failed += 1

    def on_retrying(
        self, stage: StageInfo, record: RawRecord, error: Exception, attempt: int,
        tier: int | None,
    ) -> None:  # fmt: skip
        self.row(stage.name).retried += 1

    def on_dead_lettered(self, stage: StageInfo, record: RawRecord, error: Exception) -> None:
        self.row(stage.name).dead_lettered += 1

    def on_breaker_change(self, stage: StageInfo, old: str, new: str) -> None:
        self.row(stage.name).breaker = new


@dataclass(slots=True)
class Row:
    done: int = 0
    failed: int = 0
    retried: int = 0
    dead_lettered: int = 0
    outputs: int = 0
    breaker: str = "-"


def run_demo(settings: Settings, *, events: int, once: bool) -> int:
    # The examples bring their own schemas (inside the package, so a wheel install works).
    settings = settings.model_copy(update={"schemas_dir": SCHEMAS_DIR})
    _ensure_broker(settings)
    view = ProgressView()
    pipeline = Pipeline.build(settings, load(EXAMPLES), hooks=[view])
    created = pipeline.ensure_topics()
    if created:
        console.print(f"created {len(created)} topics")
    worker = Worker(pipeline, worker_id="demo")
    stop = StopEvent()
    _on_interrupt(stop)
    worker.start()
    published = _publish_demo_events(pipeline, events)
    console.print(f"published {published} demo events; Ctrl-C to stop")
    monitor = pipeline.transport.lag_monitor()
    try:
        _watch(pipeline, view, worker, monitor, stop, once)
    finally:
        monitor.close()
        worker.stop()
        if not worker.join(settings.shutdown_timeout_s + 5):
            console.print("[red]stages did not stop in time; exiting without them[/red]")
            abandon_process(1)
    return 1 if worker.failed else 0


def _ensure_broker(settings: Settings) -> None:
    explicit = os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or os.environ.get(
        "PIPELINE_BOOTSTRAP_SERVERS"
    )
    if explicit:
        return
    from pipeline.localkafka import LocalKafka

    broker = LocalKafka()
    if settings.bootstrap_servers != broker.bootstrap_servers:
        return  # configured elsewhere (config file): use it as is
    if not broker.is_running():
        console.print(
            "no broker configured: starting the local Apache Kafka broker (make kafka-up)"
        )
    broker.start()


def _publish_demo_events(pipeline: Pipeline, count: int) -> int:
    from pipeline.examples import orders, video

    rng = random.Random(7)
    now = datetime.now(UTC)
    with Publisher(
        pipeline.settings, pipeline.catalog, pipeline.codec, pipeline.announce,
        transport=pipeline.transport,
    ) as publisher:  # fmt: skip
        for i in range(count):
            vid = f"vid-{uuid.uuid4().hex[:8]}"
            publisher.publish(
                video.UPLOADED,
                video.VideoUploaded(
                    video_id=vid,
                    user_id=f"user-{i % 17}",
                    # One upload in fifty is corrupt: it goes straight to the DLQ.
                    filename=f"clip-{i}.corrupt" if i % 50 == 7 else f"clip-{i}.mov",
                    size_bytes=rng.randint(1_000_000, 900_000_000),
                    uploaded_at=now,
                ),
                wait=False,
            )
            items = [
                orders.LineItem(
                    sku=f"SKU-{rng.randint(1, 40)}",
                    quantity=rng.randint(1, 3),
                    unit_price_cents=rng.randint(199, 9999),
                )
                for _ in range(rng.randint(1, 4))
            ]
            publisher.publish(
                orders.PLACED,
                orders.OrderPlaced(
                    order_id=f"ord-{uuid.uuid4().hex[:8]}",
                    customer_id=f"cust-{i % 23}",
                    email=f"customer{i % 23}@example.com",
                    items=items,
                    currency=rng.choice(list(orders.Currency)),
                    placed_at=now,
                    coupon="WELCOME10" if i % 5 == 0 else None,
                ),
                wait=False,
            )
    return 2 * count


def _watch(
    pipeline: Pipeline,
    view: ProgressView,
    worker: Worker,
    monitor: LagPort,
    stop: threading.Event,
    once: bool,
) -> None:
    drained_at: float | None = None
    with Live(console=console, refresh_per_second=4) as live:
        while not stop.is_set() and not worker.stop_event.is_set():
            table, total_lag = _progress(pipeline, view, monitor)
            live.update(table)
            if total_lag == 0 and drained_at is None:
                drained_at = time.monotonic()
                live.console.print(
                    "[green]all stages drained[/green]"
                    + ("" if once else "; still consuming, Ctrl-C to stop")
                )
            if once and drained_at is not None:
                return
            stop.wait(0.5)


COLUMNS = ("stage", "group", "done", "failed", "retried", "DLQ", "out", "breaker", "lag")


def _progress(pipeline: Pipeline, view: ProgressView, monitor: LagPort) -> tuple[Table, int]:
    """One row per stage. Lag counts the input and the stage's retry topics: an event waiting
    for its retry is not drained yet."""
    table = Table(title="pipeline progress", title_justify="left")
    for column in COLUMNS:
        justify: Literal["left", "right"] = (
            "left" if column in ("stage", "group", "breaker") else "right"
        )
        table.add_column(column, justify=justify, no_wrap=True)
    total_lag = 0
    for plan in pipeline.plans:
        lag = _lag(monitor, plan)
        total_lag += 1 if lag is None else lag  # unknown lag is not drained
        s = view.row(plan.name)
        state = "closed" if s.breaker == "-" and plan.stage.breaker is not None else s.breaker
        breaker = {"open": "[red]open[/red]", "half-open": "[yellow]half-open[/yellow]"}.get(
            state, state
        )
        counts = (s.done, s.failed, s.retried, s.dead_lettered, s.outputs)
        shown = "?" if lag is None else str(lag)
        table.add_row(plan.name, plan.group, *map(str, counts), breaker, shown)
    return table, total_lag


def _lag(monitor: LagPort, plan: StagePlan) -> int | None:
    """The stage's lag, or None while the broker cannot tell (e.g. a partition without a
    leader just after a restart): the view shows '?' and keeps going."""
    try:
        lag = monitor.lag(plan.group, list(plan.inputs))[1]
        if plan.retry_topics:
            lag += monitor.lag(f"{plan.group}.retry", list(plan.retry_topics))[1]
    except KafkaError:
        return None
    return lag


def _on_interrupt(stop: threading.Event) -> None:
    def handler(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
