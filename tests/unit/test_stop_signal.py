"""A stop signal reaches the stages even when it interrupts the main thread inside the stop
event's own ``wait`` (found by the chaos test: a worker SIGTERM'd while its main loop waited on
the event logged "received SIGTERM" and then ran on, handling records, until it was killed)."""

from __future__ import annotations

import signal
import threading

from pipeline.stop import StopEvent
from pipeline.worker import _on_stop_signals


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
