"""``JobWriter``: produces a worker's job entries to the jobs topic, coalesced, off the loop.

Hooks only ``put`` the job's latest status into a map (a dict write under a lock, on whatever
thread the hook runs). A thread of the writer's own produces what the map holds every
``interval_s`` (or sooner when woken), one record per job however many transitions it went
through meanwhile, and serves the producer's delivery reports; ``flush`` does the same on the
caller's thread (at a commit and at stop, so a harness on a fake clock sees every entry).
The consume loop never waits for the jobs topic.

The jobs topic is compacted and keyed by job id: a record's value is the job's status as JSON
(``pipeline.jobs.state.encode``), a tombstone (no value) removes it. Status is an observation
of the pipeline, not part of it: an entry the broker refuses is logged and counted, never
retried by us (the producer already retried it up to ``message.timeout.ms``), and the event's
own processing is unaffected.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from pipeline.config import Settings
from pipeline.errors import KafkaError, TopicNotFoundError
from pipeline.jobs.state import Job, encode
from pipeline.ports import ProducerPort
from pipeline.transport import Transport

log = logging.getLogger("pipeline.jobs")
TOPIC = "_pipeline.jobs"
CLOSE_TIMEOUT_S = 2.0  # at stop, after the stage's own shutdown: status is not worth more
_ALWAYS = threading.Event()
_ALWAYS.set()


def jobs_topic(settings: Settings) -> str:
    return settings.topic(TOPIC)


def ensure_jobs_topic(settings: Settings, transport: Transport) -> str:
    """The jobs topic's name, created compacted if missing (``TopicNotFoundError`` when it is
    missing and ``create_topics`` is off)."""
    topic = jobs_topic(settings)
    admin = transport.admin()
    if topic in admin.topics():
        return topic
    if not settings.create_topics:
        raise TopicNotFoundError(f"jobs topic {topic!r} does not exist and create_topics is off")
    admin.create([topic], config={"cleanup.policy": "compact"})
    return topic


class JobWriter:
    def __init__(self, producer: ProducerPort, topic: str, interval_s: float = 0.1) -> None:
        self._producer, self._topic, self._interval = producer, topic, interval_s
        # A produce finding the local queue full gives up at once rather than wait for room
        # (it would hold the consume loop at a commit): the entries wait for the next flush.
        producer.stop = _ALWAYS
        self._pending: dict[str, Job | None] = {}  # None: a tombstone
        self._lock = threading.Lock()  # guards _pending
        self._producing = threading.Lock()  # one flush at a time: a job's entries stay in order
        self._wake, self._stopped = threading.Event(), threading.Event()
        self._thread: threading.Thread | None = None
        self.put_count = self.produced = self.failed = 0

    def put(self, job: Job) -> None:
        with self._lock:
            self._pending[job.id] = job
            self.put_count += 1

    def remove(self, job_id: str) -> None:
        with self._lock:
            self._pending[job_id] = None
            self.put_count += 1

    def wake(self) -> None:
        self._wake.set()

    def start(self, name: str) -> None:
        self._thread = threading.Thread(target=self._run, name=f"{name}-jobs", daemon=True)
        self._thread.start()

    def flush(self) -> None:
        """Produce what is pending now (on the caller's thread) and serve delivery reports.
        Never waits long for room in the producer's queue (see ``__init__``): what does not
        fit stays pending for the next flush, unless a newer status of its job came meanwhile."""
        with self._producing:
            with self._lock:
                pending, self._pending = self._pending, {}
            produce = self._producer.produce
            items = list(pending.items())
            for done, (job_id, job) in enumerate(items):
                value = None if job is None else encode(job)
                try:
                    produce(self._topic, value, job_id.encode(), None, self._delivered)
                except KafkaError as exc:
                    self._requeue(items[done:], exc)
                    break
                self.produced += 1
            self._producer.poll(0)

    def close(self, timeout_s: float = CLOSE_TIMEOUT_S) -> None:
        """Stop the thread, produce what is pending and wait (bounded) for acknowledgements."""
        self._stopped.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        self.flush()
        left = self._producer.flush(timeout_s)
        if left:
            log.warning("jobs: %d job entries unacknowledged at stop", left)

    def _run(self) -> None:
        while not self._stopped.is_set():
            self._wake.wait(self._interval)
            self._wake.clear()
            try:
                self.flush()
            except Exception as exc:  # not the broker (flush handles that): said, and on
                self.failed += 1
                log.warning("jobs: flushing job entries to %s failed (%s)", self._topic, exc)

    def _requeue(self, items: list[tuple[str, Job | None]], exc: KafkaError) -> None:
        self.failed += 1
        if self.failed == 1 or self.failed % 1000 == 0:
            log.warning("jobs: cannot produce to %s now (%s); %d job entries wait for the next "
                        "flush", self._topic, exc, len(items))  # fmt: skip
        with self._lock:
            for job_id, job in items:
                self._pending.setdefault(job_id, job)

    def _delivered(self, err: Any, _msg: Any) -> None:
        if err is not None:
            self.failed += 1
            if self.failed == 1 or self.failed % 1000 == 0:
                log.warning("jobs: %d job entries not delivered to %s (last: %s)",
                            self.failed, self._topic, err)  # fmt: skip
