"""A worker's topics ensured while its consumers join: the time to a stage's first output.

``Pipeline.ensure_topics`` creates what is missing (outputs, retry tiers, DLQ, the writer
schemas' topic) in one request, waits until the cluster's metadata lists it, and announces
the writer schemas: on a loaded machine a few hundred milliseconds, which a worker used to wait
before its consumers even subscribed. ``Pipeline.start_topics`` does it on a thread of its own
instead (a ``TopicsJob``), once it has checked, at once, what the first fetch needs: that every
topic the stages' input consumers subscribe to exists.

What must not happen before the job is done does not:

1. nothing is produced: a stage's ``ConsumerSet`` hands out its first batch only once the job
   is done (it waits for it, bounded), and every output, retry copy and dead letter comes from
   handling a batch. So no record can meet a retry or DLQ topic that does not exist yet, and no
   output is readable before its writer schema is findable;
2. the retry consumer subscribes only then (a subscription to a topic that does not exist yet
   would see it only at the next periodic metadata refresh, minutes later);
3. a job that fails is raised by that stage's next ``consume``, records or not (or by making
   the stage's runner, when it failed before): the stage stops, and ``pipeline run`` reports
   the error in one line with the exit code it had when topics were made first (2 for a
   refused login or a bad schema, else 1);
4. a stop asked for while a stage waits for the job ends that wait (``TopicsJob.stop``): the
   batch in hand is not handed out (nothing was committed; it is read again), so a SIGTERM
   during startup is bounded by the shutdown timeout, not by the admin's.

The job runs the same ``ensure_topics`` as ``pipeline topics create``; nothing about a topic
differs. Stages whose one consumer reads its retry topics too (exactly-once stages) wait for
the job before they subscribe.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from pipeline.errors import KafkaError

log = logging.getLogger("pipeline.worker")


class TopicsJob:
    """``work`` (returning the topics it created) on a daemon thread; ``wait`` for it."""

    # Longer than the work's own bounds (each admin request and the metadata wait within the
    # admin timeout, each announce within the schema store's), so never the one that ends it.
    WAIT_S = 120.0
    STOP_POLL_S = 0.05  # how often ``finish`` looks at ``stop``

    def __init__(self, work: Callable[[], list[str]]) -> None:
        self.created: list[str] = []
        # Set by the Worker to its stop event: ``finish`` gives up waiting once it is set.
        self.stop: threading.Event | None = None
        self._error: BaseException | None = None
        self._done = threading.Event()
        thread = threading.Thread(target=self._run, args=(work,), name="ensure-topics")
        thread.daemon = True  # bounded by its requests' timeouts; never holds up an exit
        thread.start()

    @classmethod
    def finished(cls, created: list[str]) -> TopicsJob:
        """A job already done (the topics were ensured at once)."""
        job = cls.__new__(cls)
        job.created, job._error, job._done = created, None, threading.Event()
        job.stop = None
        job._done.set()
        return job

    def _run(self, work: Callable[[], list[str]]) -> None:
        try:
            self.created = work()
        except BaseException as exc:  # raised by wait(), on the stages' threads
            log.error("ensuring the stages' topics failed: %s", exc)
            self._error = exc
        finally:
            self._done.set()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    @property
    def error(self) -> BaseException | None:
        """What the job failed with, once done (None: it succeeded, or is still running)."""
        return self._error if self.done else None

    def finish(self, timeout_s: float = WAIT_S) -> bool:
        """``wait``, unless ``stop`` is set first: then False at once, and the caller must
        hand out and produce nothing (the process is stopping). True once the job is done;
        raises as ``wait`` does."""
        deadline = time.monotonic() + timeout_s
        while not self._done.is_set():
            if self.stop is not None and self.stop.is_set():
                return False
            left = deadline - time.monotonic()
            if left <= 0:
                break  # wait(0) raises the timeout
            self._done.wait(min(left, self.STOP_POLL_S))
        self.wait(0)
        return True

    def wait(self, timeout_s: float = WAIT_S) -> list[str]:
        """The topics created; raises what the work raised, or KafkaError after ``timeout_s``."""
        if not self._done.wait(timeout_s):
            raise KafkaError(f"the stages' topics were not ensured within {timeout_s:g}s")
        if self._error is not None:
            raise self._error
        return self.created
