"""`pipeline run`'s startup names and progress lines: a hook subscriber, lag from its own thread."""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime

import pytest

from pipeline import Settings
from pipeline.app import load_catalog
from pipeline.errors import KafkaError
from pipeline.hooks import StageInfo
from pipeline.progress import LagPoller, ProgressLog, log_names, stage_lag
from pipeline.registry import StagePlan, plan
from pipeline.testing import TestPipeline
from stages.orders import PLACED, Currency, LineItem, OrderPlaced, Payment
from tests.conftest import ROOT

SETTINGS = Settings(schemas_dir=ROOT / "schemas", topic_prefix="dev.")
PAYMENT = StageInfo("payment", "dev.orders.payment", "w1")


def plans() -> list[StagePlan]:
    return plan([Payment], load_catalog(SETTINGS), SETTINGS)


class FakeLag:
    """A lag monitor answering from a table, by group; raises for groups it does not know."""

    def __init__(self, lags: dict[str, int]) -> None:
        self.lags = lags
        self.asked = threading.Event()
        self.closed = threading.Event()

    def lag(self, group: str, topics: list[str]) -> tuple[int, int]:
        self.asked.set()
        if group not in self.lags:
            raise KafkaError(f"lag of group {group}: coordinator not available")
        return 0, self.lags[group]

    def close(self) -> None:
        self.closed.set()


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "pipeline.progress"]


def test_startup_names_every_group_and_topic_of_a_stage(caplog: pytest.LogCaptureFixture) -> None:
    """The log says which groups a stage joins and where its retries and dead letters go."""
    with caplog.at_level(logging.INFO, "pipeline.progress"):
        log_names(plans())
    [line] = lines(caplog)
    assert line == (
        "stage payment: group dev.orders.payment reads dev.orders.placed; retries: "
        "dev.orders.payment.retry.1s, dev.orders.payment.retry.10s, dev.orders.payment.retry.60s"
        " (group dev.orders.payment.retry); dead letters: dev.orders.payment.dlq"
    )


def test_a_line_per_interval_with_counts_since_start_and_the_lag(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Lines come every interval of the runner's clock, the first one interval after start."""
    progress = ProgressLog(plans(), None, interval_s=10)
    progress.on_stage_start(PAYMENT)
    progress.lag["payment"] = 7
    with caplog.at_level(logging.INFO, "pipeline.progress"):
        progress.on_tick(PAYMENT, 100.0)  # starts the interval
        for _ in range(3):
            progress.on_succeeded(PAYMENT, None, None)  # type: ignore[arg-type]
        progress.on_failed(PAYMENT, None, ValueError(), 1, True)  # type: ignore[arg-type]
        progress.on_tick(PAYMENT, 109.0)
        progress.on_tick(PAYMENT, 110.0)
        progress.on_dead_lettered(PAYMENT, None, ValueError())  # type: ignore[arg-type]
        progress.on_tick(PAYMENT, 120.5)
    assert lines(caplog) == [
        "progress payment: processed 3 (+3), failed 1, dead-lettered 0, lag 7",
        "progress payment: processed 3 (+0), failed 1, dead-lettered 1, lag 7",
    ]


def test_a_drained_idle_stage_goes_quiet_but_a_stuck_one_keeps_reporting(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Nothing new and lag 0: one line, then silence. Nothing new but lag left: every time."""
    progress = ProgressLog(plans(), None, interval_s=1)
    progress.on_stage_start(PAYMENT)
    with caplog.at_level(logging.INFO, "pipeline.progress"):
        progress.on_tick(PAYMENT, 0.0)
        progress.lag["payment"] = 0
        for now in (1.0, 2.0, 3.0):
            progress.on_tick(PAYMENT, now)
        progress.lag["payment"] = 5
        for now in (4.0, 5.0):
            progress.on_tick(PAYMENT, now)
        progress.on_stage_stop(PAYMENT)
    assert lines(caplog) == [
        "progress payment: processed 0 (+0), failed 0, dead-lettered 0, lag 0",
        "progress payment: processed 0 (+0), failed 0, dead-lettered 0, lag 5",
        "progress payment: processed 0 (+0), failed 0, dead-lettered 0, lag 5",
        "progress payment: processed 0 (+0), failed 0, dead-lettered 0, lag 5 (stopped)",
    ]


def test_lag_counts_the_retry_group_and_is_unknown_while_the_cluster_cannot_tell() -> None:
    [payment] = plans()
    both = FakeLag({"dev.orders.payment": 4, "dev.orders.payment.retry": 2})
    assert stage_lag(both, payment) == 6
    assert stage_lag(FakeLag({"dev.orders.payment": 4}), payment) is None


def test_the_poller_asks_off_the_stage_threads_and_closes_its_monitor() -> None:
    """The lag is fetched on the poller's own thread; stopping closes the monitor there."""
    monitor = FakeLag({"dev.orders.payment": 3, "dev.orders.payment.retry": 0})
    into: dict[str, int | None] = {}
    poller = LagPoller(plans(), lambda: monitor, into, interval_s=60)
    poller.start()
    assert monitor.asked.wait(10)
    poller.stop()
    assert monitor.closed.wait(10)
    assert into == {"payment": 3}


def order(order_id: str) -> OrderPlaced:
    return OrderPlaced(
        order_id=order_id, customer_id="c1", email="c1@example.com",
        items=[LineItem(sku="sku-1", quantity=1, unit_price_cents=500)],
        currency=Currency.EUR, placed_at=datetime(2026, 1, 1, tzinfo=UTC),
    )  # fmt: skip


def test_it_counts_what_the_runner_reports(caplog: pytest.LogCaptureFixture) -> None:
    """Registered as a hook, it hears the real outcomes: its last line says what was done."""
    progress = ProgressLog(plans(), None, interval_s=3600)
    with (
        caplog.at_level(logging.INFO, "pipeline.progress"),
        TestPipeline([Payment], SETTINGS, hooks=[progress]) as t,
    ):
        for i in range(3):
            t.publish(PLACED, order(f"o{i}"))
        t.run_until_idle()
    assert lines(caplog)[-1].startswith("progress payment: processed 3 (+3), failed 0")


def test_quiet_adds_no_progress_hook() -> None:
    """`pipeline run --quiet`: the pipeline keeps its own hooks and nothing else."""
    from pipeline.app import Pipeline
    from pipeline.testing import MemoryBroker
    from pipeline.testing.transport import MemoryTransport
    from pipeline.worker import RunOptions, with_progress

    pipeline = Pipeline.build(SETTINGS, [Payment], MemoryTransport(MemoryBroker(), SETTINGS))
    assert with_progress(pipeline, RunOptions(progress_interval_s=None)) is pipeline
    loud = with_progress(pipeline, RunOptions())
    assert [type(h) for h in loud.hooks] == [ProgressLog]
    assert loud.hooks[0].interval_s == 10.0  # type: ignore[attr-defined]
