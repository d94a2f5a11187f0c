"""``JobsQueued``: the publisher side of job status, a ``before_publish`` hook.

Give it to the ``Publisher`` of the web application that queues jobs, and each event it
publishes (to the tracked ``topics``, or to any) gets a ``waiting`` entry once the broker has
acknowledged the event, so a status endpoint can answer ``waiting`` before any worker took it
(``delayed`` for an event published with ``delay=`` / ``deliver_at=``, until it is due and
handled)::

    queued = JobsQueued(settings, topics=[EMAILS])
    publisher = Publisher(settings, hooks=[queued])
    ...
    queued.close()  # at shutdown: produces what is pending

The entry is produced by a ``JobWriter`` thread, so ``publish`` does not wait for it. It may
reach the jobs topic after the worker's ``active`` (two producers); readers then drop it, as
it is behind (``pipeline.jobs.state.merge``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import partial
from typing import TYPE_CHECKING, Any

from pipeline import delays
from pipeline.clock import SYSTEM, Clock
from pipeline.config import Settings
from pipeline.errors import DeliveryError
from pipeline.hooks import Hook
from pipeline.jobs.state import Job
from pipeline.jobs.writer import JobWriter, ensure_jobs_topic
from pipeline.lanes import lane_topic
from pipeline.transport import Transport, kafka

if TYPE_CHECKING:
    from pipeline.stage import Topic


class JobsQueued(Hook):
    def __init__(
        self,
        settings: Settings,
        *,
        topics: Iterable[Topic] | None = None,
        transport: Transport | None = None,
        clock: Clock = SYSTEM,
    ) -> None:
        transport = kafka(settings) if transport is None else transport
        topic = ensure_jobs_topic(settings, transport)
        self._clock = clock
        # Each lane of a topic with priorities is a topic of its own (``pipeline.lanes``).
        self._names = (
            None
            if topics is None
            else {
                lane_topic(settings.topic(t.name), lane) for t in topics for lane in range(t.lanes)
            }
        )
        self.writer = JobWriter(transport.producer("jobs-queued"), topic)
        self.writer.start("publisher")

    def before_publish(
        self, topic: str, key: bytes | None, headers: list[tuple[str, bytes]]
    ) -> Callable[[Any], None] | None:
        # A delayed publish goes to a delay tier first; the topic it is for is in its headers.
        target = next((v for k, v in headers if k == delays.TARGET and v), None)
        name = target.decode(errors="replace") if target is not None else topic
        if self._names is not None and name not in self._names:
            return None
        return partial(self._delivered, delayed_for=name) if target is not None else self._delivered

    def _delivered(self, outcome: Any, delayed_for: str | None = None) -> None:
        if isinstance(outcome, DeliveryError):
            return  # not stored, so not waiting: publish raised (or told on_delivery)
        now = self._clock.time()
        if delayed_for is not None:  # its coordinates are the tier's: the worker's come later
            job = Job(outcome.event_id, "delayed", 1, None, delayed_for, created_at=now,
                      updated_at=now)  # fmt: skip
        else:
            job = Job(outcome.event_id, "waiting", 1, None, outcome.topic, outcome.partition,
                      outcome.offset, created_at=now, updated_at=now)  # fmt: skip
        self.writer.put(job)

    def close(self) -> None:
        self.writer.close()

    def __enter__(self) -> JobsQueued:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
