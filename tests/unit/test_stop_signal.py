"""A stop signal reaches the stages even when it interrupts the main thread inside the stop
event's own ``wait`` (found by the chaos test: a worker SIGTERM'd while its main loop waited on
the event logged "received SIGTERM" and then ran on, handling records, until it was killed),
and a Worker given a plain ``threading.Event`` is as safe: it waits on a StopEvent of its own,
which the user's event sets and which sets the user's event in turn."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
import types
from collections.abc import Callable, Iterator

import pytest

from pipeline import Context, Settings, Stage
from pipeline import worker as worker_module
from pipeline.app import Pipeline
from pipeline.errors import ConfigError
from pipeline.hooks import Hook
from pipeline.stop import StopEvent
from pipeline.testing import MemoryBroker
from pipeline.testing.consumer import MemoryConsumer
from pipeline.testing.transport import MemoryTransport
from pipeline.worker import Worker, _on_stop_signals
from tests.hookkit import Recorder
from tests.integration.app_stages import PINGS, Ping
from tests.unit.memory_rig import SCHEMAS


def _set_while_holding_its_lock(event: threading.Event) -> bool:
    """What a signal handler does when it interrupts ``event.wait`` on the same thread: set the
    event while that thread holds the event's lock. True if ``set`` returned."""

    def interrupted_wait() -> None:
        with event._cond:  # type: ignore[attr-defined]  # inside Event.wait, before it sleeps
            event.set()

    thread = threading.Thread(target=interrupted_wait, daemon=True)
    thread.start()
    thread.join(2.0)
    return not thread.is_alive()


def test_a_plain_event_would_block_for_good_which_is_the_defect() -> None:
    assert not _set_while_holding_its_lock(threading.Event())


def test_the_stop_event_is_set_from_inside_its_own_wait() -> None:
    stop = StopEvent()
    assert _set_while_holding_its_lock(stop)
    assert stop.is_set() and stop.set_at is not None
    assert stop.wait(0)


def test_a_signal_during_the_main_threads_wait_sets_the_event() -> None:
    stop = StopEvent()
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    try:
        _on_stop_signals(stop.set)
        with stop._cond:  # as Event.wait holds it; the handler runs on this same thread
            signal.raise_signal(signal.SIGTERM)
        assert stop.is_set()
    finally:
        signal.signal(signal.SIGTERM, before[0])
        signal.signal(signal.SIGINT, before[1])


def test_a_waiter_on_another_thread_still_wakes_at_once() -> None:
    stop = StopEvent()
    woke = threading.Event()

    def waiter() -> None:
        if stop.wait(30):
            woke.set()

    thread = threading.Thread(target=waiter, daemon=True)
    thread.start()
    stop.set()
    assert woke.wait(5), "a thread waiting on the stop did not wake"
    thread.join(5)


# -- a Worker given a plain threading.Event (``Worker(stop=...)``) -----------------------------


class Idle(Stage):
    consumes = PINGS
    group = "stop-signal-idle"

    def handle(self, event: Ping, ctx: Context) -> None:
        pass


def a_worker(stop: threading.Event) -> Worker:
    settings = Settings(schemas_dir=SCHEMAS).model_copy(update={"shutdown_timeout_s": 5.0})
    pipeline = Pipeline.build(settings, [Idle], MemoryTransport(MemoryBroker(), settings))
    pipeline.ensure_topics()
    return Worker(pipeline, worker_id="w", stop=stop)


@contextlib.contextmanager
def signals_restored() -> Iterator[None]:
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before[0])
        signal.signal(signal.SIGINT, before[1])


def when_running(worker: Worker, then: Callable[[], None]) -> threading.Thread:
    """On a thread of its own: once the worker's stage threads run, call ``then``."""

    def wait_then() -> None:
        deadline = time.monotonic() + 20
        while not (worker.runners and all(t.is_alive() for t in worker._threads)):
            assert time.monotonic() < deadline, "the worker never started"
            time.sleep(0.01)
        then()

    thread = threading.Thread(target=wait_then, daemon=True)
    thread.start()
    return thread


def test_a_worker_given_a_plain_event_waits_on_one_a_signal_can_set_in_its_wait() -> None:
    # The main loop waits on the worker's event and the signal handler sets that event: a
    # plain Event there is the deadlock above. The worker waits on a StopEvent of its own.
    theirs = threading.Event()
    worker = a_worker(theirs)
    assert _set_while_holding_its_lock(worker.stop_event), "set() blocked inside its own wait"
    with signals_restored():
        _on_stop_signals(worker.stop_event.set)  # what run_until_signalled installs
        with worker.stop_event._cond:  # type: ignore[attr-defined]
            signal.raise_signal(signal.SIGTERM)
    assert worker.stop_event.is_set()


def test_a_sigterm_stops_a_worker_given_a_plain_event_and_sets_that_event() -> None:
    theirs = threading.Event()
    worker = a_worker(theirs)
    with signals_restored():
        when_running(worker, lambda: os.kill(os.getpid(), signal.SIGTERM))
        assert worker.run_until_signalled() == 0
    assert not any(t.is_alive() for t in worker._threads)
    assert theirs.wait(5), "the user's event hears the stop too (their waiters wake)"


def test_the_users_plain_event_set_from_another_thread_stops_the_worker() -> None:
    theirs = threading.Event()
    worker = a_worker(theirs)
    with signals_restored():
        when_running(worker, theirs.set)
        started = time.monotonic()
        assert worker.run_until_signalled() == 0
    assert time.monotonic() - started < 10, "stopped at once, not at some timeout"
    assert worker.stop_event.is_set() and not any(t.is_alive() for t in worker._threads)


def test_the_users_plain_event_stops_a_worker_started_without_signals() -> None:
    theirs = threading.Event()
    worker = a_worker(theirs)
    worker.start()
    theirs.set()
    assert worker.join(10), "the stages stopped"
    assert worker.stop_event.is_set()


def test_a_worker_stopped_by_itself_sets_the_users_plain_event() -> None:
    theirs = threading.Event()
    worker = a_worker(theirs)
    worker.start()
    worker.stop()  # as a crashed stage does
    assert worker.join(10)
    assert theirs.wait(5)


def test_a_users_event_set_before_the_run_means_nothing_starts() -> None:
    theirs = threading.Event()
    worker = a_worker(theirs)
    theirs.set()
    with signals_restored():
        assert worker.run_until_signalled() == 0
    assert worker.runners == []


# -- a start that raises stops what it began -----------------------------------------------


class IdleToo(Stage):
    consumes = PINGS
    group = "stop-signal-idle-too"

    def handle(self, event: Ping, ctx: Context) -> None:
        pass


class RefusingTransport(MemoryTransport):
    """Makes every consumer but those of the group ``refused``: that one is a bad config,
    seen only when the worker makes the stage's runner. ``mirror_at_refusal`` is the worker's
    mirror thread at that moment (the mirror had begun: the defect needs it running)."""

    def __init__(self, broker: MemoryBroker, settings: Settings, refused: str) -> None:
        super().__init__(broker, settings)
        self.refused = refused
        self.worker: Worker | None = None
        self.mirror_at_refusal: threading.Thread | None = None

    def consumer(
        self, group: str, client_id: str, *, retry: bool = False, linger: bool = False
    ) -> MemoryConsumer:
        if group != self.refused:
            return super().consumer(group, client_id, retry=retry, linger=linger)
        assert self.worker is not None and self.worker._mirror is not None
        self.mirror_at_refusal = self.worker._mirror._thread
        raise ConfigError(f"consumer of {group}: a bad option")


def a_worker_refusing(
    stages: list[type[Stage]], refused: str, stop: threading.Event, hooks: list[Hook]
) -> tuple[Worker, RefusingTransport]:
    settings = Settings(schemas_dir=SCHEMAS).model_copy(update={"shutdown_timeout_s": 5.0})
    transport = RefusingTransport(MemoryBroker(), settings, refused)
    pipeline = Pipeline.build(settings, stages, transport, hooks=hooks)
    pipeline.ensure_topics()
    transport.worker = Worker(pipeline, worker_id="w", stop=stop)
    return transport.worker, transport


def test_a_start_that_raises_ends_the_mirror_of_the_users_event() -> None:
    # Nobody has a worker to stop once start() raised: the mirror thread it began would wait
    # on the user's event for good (and a started stage run on) unless start() stops them.
    theirs = threading.Event()
    worker, transport = a_worker_refusing([Idle], Idle.group, theirs, [])
    with pytest.raises(ConfigError, match="a bad option"):
        worker.start()
    mirror = transport.mirror_at_refusal
    assert mirror is not None, "the mirror had begun when start() failed"
    mirror.join(5)
    assert not mirror.is_alive(), "the mirror thread outlived the failed start"
    assert theirs.is_set(), "the user's event hears the stop, as at any stop"


def test_a_start_that_raises_stops_the_stages_it_started_and_tells_the_hooks() -> None:
    # The first stage runs when the second cannot be made: it stops before start() raises,
    # and hooks told on_worker_start (the progress log starts its lag poller there) are told
    # on_worker_stop.
    recorder = Recorder()
    worker, _ = a_worker_refusing([Idle, IdleToo], IdleToo.group, threading.Event(), [recorder])
    with pytest.raises(ConfigError, match="a bad option"):
        worker.start()
    assert [r.plan.name for r in worker.runners] == ["idle"]
    assert not any(t.is_alive() for t in worker._threads), "the started stage ran on"
    assert recorder.names().count("worker_stop") == 1


def test_a_start_that_raises_before_any_stage_still_tells_the_hooks_it_stopped() -> None:
    recorder = Recorder()
    worker, _ = a_worker_refusing([Idle], Idle.group, threading.Event(), [recorder])
    with pytest.raises(ConfigError, match="a bad option"):
        worker.start()
    assert worker._threads == []
    told = [n for n in recorder.names() if n.startswith("worker_")]
    assert told == ["worker_start", "worker_stop"]


def test_a_stage_thread_that_cannot_start_stops_the_rest_and_its_error_is_raised(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Out of threads at the second stage: the first one stops, and the caller sees that error,
    # not a join of the thread that never started ("cannot join thread before it is started").
    theirs = threading.Event()
    worker, _ = a_worker_refusing([Idle, IdleToo], "none refused", theirs, [])
    refused_name = worker.pipeline.plans[1].name

    class NoMoreThreads(threading.Thread):
        def start(self) -> None:
            if self.name == refused_name:
                raise RuntimeError("can't start new thread")
            super().start()

    monkeypatch.setattr(worker_module, "threading", types.SimpleNamespace(
        **{**vars(threading), "Thread": NoMoreThreads}))  # fmt: skip
    with pytest.raises(RuntimeError, match="can't start new thread"):
        worker.start()
    assert len(worker._threads) == 1 and not worker._threads[0].is_alive()
    assert worker._mirror is not None and worker._mirror.join(5), "the mirror ended"


def test_a_mirror_thread_that_cannot_start_is_not_kept_and_the_users_event_is_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Out of threads for the mirror itself: start() raises that error, the user's event is set
    # (nobody has a worker to stop), and the mirror kept no thread that never started (joining
    # it raised "cannot join thread before it is started").
    from pipeline import stop as stop_module

    theirs = threading.Event()
    recorder = Recorder()
    worker, _ = a_worker_refusing([Idle], "none refused", theirs, [recorder])

    class NoMirrorThread(threading.Thread):
        def start(self) -> None:
            if self.name == "stop-mirror":
                raise RuntimeError("can't start new thread")
            super().start()

    monkeypatch.setattr(stop_module, "threading", types.SimpleNamespace(
        **{**vars(threading), "Thread": NoMirrorThread}))  # fmt: skip
    with pytest.raises(RuntimeError, match="can't start new thread"):
        worker.start()
    assert worker._mirror is not None and worker._mirror._thread is None
    assert worker._mirror.join(5), "nothing left to join"
    assert theirs.is_set(), "the user's event hears the stop"
    assert worker._threads == [], "no stage began"
    assert [n for n in recorder.names() if n.startswith("worker_")] == [], "never told start"
