"""librdkafka calls that have no timeout of their own, given one.

A synchronous commit waits for the group coordinator for as long as it takes (it is deferred
while none is known, and each request may take ``socket.timeout.ms``, 60 s by default), so a
worker stopping while the broker was slow to answer overran its shutdown timeout. Such a call
runs on a daemon thread of its own; the caller waits at most ``timeout_s`` for it and goes on
without it after that. The call itself is not cancelled (librdkafka cannot): a commit that
lands later commits only offsets that were finished, though it can move the group's offset back
below a newer commit (of a new owner, say): duplicates, never loss.

A call given up on may still be inside librdkafka when the worker exits: ``abandoned()`` says
how many are, and the worker then skips the interpreter's shutdown (``worker.abandon_process``),
which could crash tearing such a thread down mid-call and turn a clean exit into a signal.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

from pipeline.errors import KafkaError

T = TypeVar("T")
_given_up: set[threading.Thread] = set()  # the threads of calls given up on


def abandoned() -> int:
    """How many calls given up on are still running."""
    alive = [thread for thread in list(_given_up) if thread.is_alive()]
    _given_up.intersection_update(alive)
    return len(alive)


def within(call: Callable[[], T], timeout_s: float, what: str) -> T:
    """``call()``'s result or exception, if it finishes within ``timeout_s``; else
    ``KafkaError`` saying ``what`` had no answer in time."""
    done = threading.Event()
    outcome: list[T] = []
    failure: list[BaseException] = []


    def run() -> None:
        try:
            outcome.append(call())
        except BaseException as exc:  # handed to the caller, who classifies it
            failure.append(exc)
        finally:
            done.set()

    thread = threading.Thread(target=run, name=f"bounded {what}", daemon=True)
    thread.start()
    if not done.wait(max(timeout_s, 0.0)):
        _given_up.add(thread)
        raise KafkaError(f"{what}: no answer within {timeout_s:.1f}s")
    if failure:
        raise failure[0]
    return outcome[0]
