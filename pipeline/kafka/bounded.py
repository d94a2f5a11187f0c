"""librdkafka calls that have no timeout of their own, given one.

A synchronous commit waits for the group coordinator for as long as it takes (it is deferred
while none is known, and each request may take ``socket.timeout.ms``, 60 s by default), so a
worker stopping while the broker was slow to answer overran its shutdown timeout. Such a call
runs on a daemon thread of its own; the caller waits at most ``timeout_s`` for it and goes on
without it after that. The call itself is not cancelled (librdkafka cannot): a commit that
lands later only moves the group to offsets that were finished anyway.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

from pipeline.errors import KafkaError

T = TypeVar("T")


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

    threading.Thread(target=run, name=f"bounded {what}", daemon=True).start()
    if not done.wait(max(timeout_s, 0.0)):
        raise KafkaError(f"{what}: no answer within {timeout_s:.1f}s")
    if failure:
        raise failure[0]
    return outcome[0]
