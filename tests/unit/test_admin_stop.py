"""A stop cuts an admin request's wait short: a SIGTERM while topics are created at start ends
the wait within a slice (``STOP_SLICE_S``), not at the admin's timeout. A stand-in AdminClient
whose CreateTopics never completes, on a fake clock (its futures' waits advance it): no
sleeping, no broker."""

from __future__ import annotations

import concurrent.futures
import signal
import threading
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from pipeline import Context, Stage
from pipeline.app import Pipeline
from pipeline.config import Settings
from pipeline.errors import KafkaError
from pipeline.kafka import admin
from pipeline.startup import TopicsStopped
from pipeline.testing import MemoryBroker
from pipeline.testing.transport import MemoryTransport
from pipeline.worker import run_workers
from tests.integration.app_stages import PINGS, Ping
from tests.unit.memory_rig import SCHEMAS


class Plain(Stage):
    consumes = PINGS
    group = "admin-stop"

    def handle(self, event: Ping, ctx: Context) -> None:
        pass


class Never:
    """A future that never completes: each ``result(timeout)`` waits out its timeout."""

    def __init__(self, now: list[float]) -> None:
        self.now = now
        self.waits: list[float | None] = []

    def result(self, timeout: float | None = None) -> None:
        self.waits.append(timeout)
        self.now[0] += timeout if timeout is not None else 1e9
        raise concurrent.futures.TimeoutError()


class Stuck:
    """CreateTopics is accepted and never answered (a controller that is away)."""

    def __init__(self, now: list[float]) -> None:
        self.now = now
        self.futures: list[Never] = []

    def list_topics(self, timeout: float) -> Any:
        return SimpleNamespace(topics={})

    def create_topics(self, new: list[Any], operation_timeout: float) -> dict[str, Never]:
        futures = {topic.topic: Never(self.now) for topic in new}
        self.futures.extend(futures.values())
        return futures

    def poll(self, _timeout: float) -> None:
        pass


def stuck_admin(
    monkeypatch: pytest.MonkeyPatch, now: list[float]
) -> tuple[admin.KafkaAdmin, Stuck]:
    monkeypatch.setattr(admin, "_clock", lambda: now[0])
    client = admin.KafkaAdmin(Settings(bootstrap_servers="127.0.0.1:1"), timeout_s=15.0)
    inner = Stuck(now)
    stand_in: Any = inner
    client._admin = stand_in
    return client, inner


def test_a_stop_during_a_create_that_never_answers_ends_its_wait_within_a_slice(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [0.0]
    client, inner = stuck_admin(monkeypatch, now)
    asked: list[float] = []

    def stopping() -> bool:  # the SIGTERM comes 0.35 s into the wait
        asked.append(now[0])
        return now[0] >= 0.35

    client.stopping = stopping
    with pytest.raises(TopicsStopped):
        client.create(["t.a"])
    [future] = inner.futures
    assert all(w is not None and w <= admin.STOP_SLICE_S for w in future.waits), future.waits
    assert now[0] < 0.35 + admin.STOP_SLICE_S + 1e-9, "ended within a slice of the stop"


def test_without_a_stop_a_create_that_never_answers_fails_clearly_at_the_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [0.0]
    client, _ = stuck_admin(monkeypatch, now)
    with pytest.raises(KafkaError, match=r"create topic t\.a: no answer within 15s"):
        client.create(["t.a"])
    assert 15.0 <= now[0] < 15.0 + admin.STOP_SLICE_S + 1e-9


def test_a_stop_while_the_brokers_cannot_be_reached_ends_the_metadata_wait(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The metadata read before the create retries in slices too: a stop ends it."""
    now = [0.0]
    client, inner = stuck_admin(monkeypatch, now)

    def list_topics(timeout: float) -> Any:
        now[0] += timeout
        raise admin.KafkaException(SimpleNamespace(str=lambda: "Failed to get metadata"))

    inner.list_topics = list_topics  # type: ignore[method-assign]
    client.stopping = lambda: now[0] >= 2.0
    with pytest.raises(TopicsStopped):
        client.create(["t.a"])
    assert now[0] <= 2.0 + admin.METADATA_SLICE_S


# -- at start: Pipeline.start_topics with a stop --------------------------------------------------


class StoppedMidway(Never):
    """A future that never completes; the stop (a SIGTERM) comes during its third wait."""

    def __init__(self, now: list[float], stop: Callable[[], None]) -> None:
        super().__init__(now)
        self.stop = stop

    def result(self, timeout: float | None = None) -> None:
        if len(self.waits) == 2:
            self.stop()
        super().result(timeout)


class StuckTransport(MemoryTransport):
    """The memory transport, but its admin is a ``KafkaAdmin`` whose CreateTopics never
    answers; the stop comes while it waits."""

    def __init__(self, settings: Settings, now: list[float], stop: Callable[[], None]) -> None:
        super().__init__(MemoryBroker(), settings)
        self.now, self.stop, self.made = now, stop, Stuck(now)
        self.made.create_topics = self._create  # type: ignore[method-assign]

    def _create(self, new: list[Any], operation_timeout: float) -> dict[str, Never]:
        futures = {topic.topic: StoppedMidway(self.now, self.stop) for topic in new}
        self.made.futures.extend(futures.values())
        return futures

    def admin(self) -> Any:
        client = admin.KafkaAdmin(self.settings, timeout_s=15.0)
        stand_in: Any = self.made
        client._admin = stand_in
        return client


@pytest.mark.parametrize("inputs_exist", [False, True], ids=["at-once", "job"])
def test_a_stop_while_topics_are_created_at_start_ends_the_start_within_a_slice(
    monkeypatch: pytest.MonkeyPatch, inputs_exist: bool
) -> None:
    """Made at once (an input topic is missing): ``start_topics`` raises ``TopicsStopped``
    (``pipeline run`` exits 0). Made by the job: the job stops short and its thread ends."""
    now, stop = [0.0], threading.Event()
    monkeypatch.setattr(admin, "_clock", lambda: now[0])
    settings = Settings(schemas_dir=SCHEMAS)
    transport = StuckTransport(settings, now, stop.set)
    if inputs_exist:
        inputs = SimpleNamespace(error=None, partitions={0: SimpleNamespace(leader=0, error=None)})
        transport.made.list_topics = (  # type: ignore[method-assign]
            lambda timeout: SimpleNamespace(topics={PINGS.name: inputs})
        )
    pipeline = Pipeline.build(settings, [Plain], transport)
    if inputs_exist:
        job = pipeline.start_topics(stop)
        assert job.join(10), "the job's thread ends once the stop is seen"
        assert not job.finish(0), "stopped short: the stages hand out nothing"
    else:
        with pytest.raises(TopicsStopped):
            pipeline.start_topics(stop)
    [future, *_] = transport.made.futures
    assert len(future.waits) == 3 and now[0] <= 3 * admin.STOP_SLICE_S + 1e-9


@pytest.fixture
def signals_restored() -> Iterator[None]:
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    yield
    signal.signal(signal.SIGTERM, before[0])
    signal.signal(signal.SIGINT, before[1])


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.usefixtures("signals_restored")
def test_a_sigterm_while_pipeline_run_creates_topics_exits_0_within_a_slice(
    monkeypatch: pytest.MonkeyPatch, workers: int
) -> None:
    """``pipeline run`` (one worker, or the supervisor before it forks): a SIGTERM during a
    CreateTopics that never answers ends the run at once, exit 0, nothing started."""
    now = [0.0]
    monkeypatch.setattr(admin, "_clock", lambda: now[0])
    settings = Settings(schemas_dir=SCHEMAS)
    transport = StuckTransport(settings, now, lambda: signal.raise_signal(signal.SIGTERM))
    pipeline = Pipeline.build(settings, [Plain], transport)
    monkeypatch.setattr(Pipeline, "from_spec", staticmethod(lambda spec, s: pipeline))
    assert run_workers("stages", settings, workers) == 0
    [future, *_] = transport.made.futures
    assert len(future.waits) == 3 and now[0] <= 3 * admin.STOP_SLICE_S + 1e-9
