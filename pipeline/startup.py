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
   during startup is bounded by the shutdown timeout, not by the admin's. The job itself ends
   with the worker: it makes no further request once the stop is set, so its thread is gone
   within the bound of the one request in flight (``TopicsJob.join``);
5. a stage waits for the job as long as the job's own requests may take (``bound_s``: each
   admin request and schema announce within its client's timeout, as the ports declare them:
   ``job_bound_s``) and a margin, so a job that fails is reported with its own error, never
   with the waiter's timeout.

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
# The job's bound when a port does not declare its own (a custom or in-memory admin).
DEFAULT_BOUND_S = 120.0
# A stage waits this much longer than the job's bound: the job's own error (a request that
# timed out) is raised, not the wait's.
WAIT_MARGIN_S = 10.0
_clock = time.monotonic  # a module attribute, so a test can stand in for it


class TopicsStopped(Exception):
    """Raised by the job's work at a step boundary once the worker is stopping."""


def job_bound_s(admin: object, store: object, *, admin_calls: int, announces: int) -> float:
    """How long ensuring the topics may take by its parts' own bounds: ``admin_calls``
    create/ensure requests (``AdminPort``'s optional ``ensure_bound_s``) and ``announces``
    writer schemas published (``SchemaStorePort``'s optional ``publish_bound_s``; none without
    a store). ``DEFAULT_BOUND_S`` when a part declares no bound."""
    per_call = getattr(admin, "ensure_bound_s", None)
    per_announce = 0.0 if store is None else getattr(store, "publish_bound_s", None)
    if not isinstance(per_call, int | float) or not isinstance(per_announce, int | float):
        return DEFAULT_BOUND_S
    return admin_calls * per_call + announces * per_announce


class TopicsJob:
    """``work`` (returning the topics it created) on a daemon thread; ``wait`` for it.

    ``bound_s``: how long the work may take by its own requests' bounds (``job_bound_s``); a
    wait gives up only ``WAIT_MARGIN_S`` after it. Made without ``work``, the job starts at
    ``start``: a work that asks ``stopping`` between its steps (and raises ``TopicsStopped``)
    needs the job first."""

    STOP_POLL_S = 0.05  # how often ``finish`` looks at ``stop``

    def __init__(
        self, work: Callable[[], list[str]] | None = None, bound_s: float = DEFAULT_BOUND_S
    ) -> None:
        self.created: list[str] = []
        self.bound_s = bound_s
        # Set by the Worker to its stop event: ``finish`` gives up waiting once it is set, and
        # the work makes no further request.
        self.stop: threading.Event | None = None
        self._error: BaseException | None = None
        self._cut = False  # the work stopped short: the worker is stopping
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        if work is not None:
            self.start(work)

    @property
    def wait_s(self) -> float:
        """How long a stage waits for the job by default."""
        return self.bound_s + WAIT_MARGIN_S

    def start(self, work: Callable[[], list[str]]) -> None:
        thread = threading.Thread(target=self._run, args=(work,), name="ensure-topics")
        thread.daemon = True  # bounded by its requests' timeouts; never holds up an exit
        self._thread = thread
        thread.start()

    @classmethod
    def finished(cls, created: list[str]) -> TopicsJob:
        """A job already done (the topics were ensured at once)."""
        job = cls(bound_s=0.0)
        job.created = created
        job._done.set()
        return job

    def stopping(self) -> bool:
        """The worker is stopping: the work should make no further request."""
        return self.stop is not None and self.stop.is_set()

    def join(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for the job's thread to end; True once it has (or never
        ran). After a stop it ends within the bound of the one request in flight."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout_s)
        return thread is None or not thread.is_alive()

    def _run(self, work: Callable[[], list[str]]) -> None:
        try:
            self.created = work()
        except TopicsStopped:
            self._cut = True
            log.info("ensuring the stages' topics stopped: the worker is stopping")
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

    def finish(self, timeout_s: float | None = None) -> bool:
        """``wait``, unless ``stop`` is set first: then False at once, and the caller must
        hand out and produce nothing (the process is stopping). True once the job is done;
        raises as ``wait`` does. ``timeout_s``: ``wait_s`` unless given."""
        timeout_s = self.wait_s if timeout_s is None else timeout_s
        deadline = _clock() + timeout_s
        while not self._done.is_set():
            if self.stopping():
                return False
            left = deadline - _clock()
            if left <= 0:
                raise self._timed_out(timeout_s)
            self._done.wait(min(left, self.STOP_POLL_S))
        if self._cut:
            return False  # stopped short, as the worker is stopping
        self.wait(0)
        return True

    def wait(self, timeout_s: float | None = None) -> list[str]:
        """The topics created; raises what the work raised, or KafkaError after ``timeout_s``
        (``wait_s`` unless given), or if the work stopped short."""
        timeout_s = self.wait_s if timeout_s is None else timeout_s
        if not self._done.wait(timeout_s):
            raise self._timed_out(timeout_s)
        if self._error is not None:
            raise self._error
        if self._cut:
            raise KafkaError("the stages' topics were not all ensured: the worker stopped")
        return self.created

    def _timed_out(self, timeout_s: float) -> KafkaError:
        return KafkaError(
            f"the stages' topics were not ensured within {timeout_s:g}s (its requests' own "
            f"bound: {self.bound_s:g}s; a call that never times out?)"
        )
