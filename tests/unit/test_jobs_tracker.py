"""The job tracker and writer on their own: which hook makes which entry, attempt numbers,
coalescing, removal at once and retention by tombstones (FakeClock, in-memory broker)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline import Settings
from pipeline.context import Context
from pipeline.errors import KafkaError
from pipeline.hooks import StageInfo
from pipeline.jobs import JobStore, JobTracking, JobView
from pipeline.jobs.state import Job, decode, encode
from pipeline.jobs.tracker import JobTracker
from pipeline.jobs.writer import JobWriter
from pipeline.testing import FakeClock, MemoryBroker
from pipeline.testing.transport import MemoryTransport
from tests.unit.records import record

STAGE = StageInfo("send", "mail.send", "w1")
RETRY = "mail.send.retry.1s"


class Produced:
    """A ProducerPort that keeps what is produced (and acknowledges it at once)."""

    def __init__(self) -> None:
        self.records: list[tuple[str, bytes | None, bytes | None]] = []
        self.stop = None

    def produce(self, topic: str, value: bytes | None, key: bytes | None, headers: Any,
                on_delivery: Any) -> None:  # fmt: skip
        self.records.append((topic, value, key))
        on_delivery(None, None)

    def poll(self, timeout_s: float = 0) -> int:
        return 0

    def flush(self, timeout_s: float) -> int:
        return 0

    def __len__(self) -> int:
        return 0

    def jobs(self) -> list[Job | None]:
        return [None if v is None else decode(v) for _, v, _ in self.records]


def tracker(policy: JobTracking | None = None) -> tuple[JobTracker, Produced, FakeClock]:
    producer, clock = Produced(), FakeClock()
    writer = JobWriter(producer, "_pipeline.jobs")  # type: ignore[arg-type]
    return JobTracker(policy or JobTracking(), writer, clock, frozenset({RETRY})), producer, clock


def ev(offset: int = 5, topic: str = "mail.requested", headers: Any = None) -> Any:
    return record(topic, 0, offset, headers=headers or [("event-id", b"job-1")])


def handle(t: JobTracker, rec: Any) -> Context:
    ctx = Context("send", rec, frozenset())
    with t.around_handler(STAGE, None, ctx):
        pass
    return ctx


def test_transitions_within_a_flush_interval_are_coalesced_into_one_record() -> None:
    """active, progress and completed of one job between two flushes: one record, completed."""
    t, produced, _ = tracker()
    rec = ev()
    ctx = handle(t, rec)
    t.on_progress(STAGE, rec, 50.0, "half")
    ctx.result({"id": "m1"})
    t.on_succeeded(STAGE, rec, ctx)
    t.on_completed(STAGE, rec)
    t.writer.flush()
    [done] = produced.jobs()
    assert done is not None
    assert (done.id, done.state, done.attempt) == ("job-1", "completed", 1)
    assert done.result == {"id": "m1"}
    assert (done.progress, done.note, done.worker, done.stage) == (50.0, "half", "w1", "send")
    assert (done.topic, done.partition, done.offset) == ("mail.requested", 0, 5)
    assert t.writer.put_count == 3 and t.writer.produced == 1


def test_each_flush_writes_the_latest_status_so_far() -> None:
    t, produced, _ = tracker()
    rec = ev()
    handle(t, rec)
    t.writer.flush()
    t.on_progress(STAGE, rec, 50.0, None)
    t.writer.flush()
    assert [(j.state, j.progress) for j in produced.jobs() if j] == [
        ("active", None),
        ("active", 50.0),
    ]


def test_progress_of_a_call_that_timed_out_is_ignored() -> None:
    """A sync call abandoned at its timeout runs on; its progress must not touch the job."""
    t, produced, _ = tracker()
    rec = ev()
    handle(t, rec)
    t.on_failed(STAGE, rec, TimeoutError("handler exceeded 1s"), 1, True)
    t.on_progress(STAGE, rec, 90.0, "late")
    t.writer.flush()
    [retrying] = produced.jobs()
    assert retrying is not None and (retrying.state, retrying.progress) == ("retrying", None)


def test_an_in_place_retry_is_the_next_attempt() -> None:
    """A held partition re-reads the same record: its attempt is the failures so far + 1."""
    t, produced, _ = tracker()
    rec = ev()
    handle(t, rec)
    t.on_failed(STAGE, rec, ConnectionError("smtp down"), 1, True)
    t.writer.flush()
    handle(t, rec)
    t.writer.flush()
    retrying, active = produced.jobs()
    assert retrying is not None and (retrying.state, retrying.attempt) == ("retrying", 1)
    assert retrying.error == "ConnectionError: smtp down"
    assert active is not None and (active.state, active.attempt) == ("active", 2)


def test_a_retry_topic_copy_takes_its_attempt_and_coordinates_from_its_headers() -> None:
    t, produced, _ = tracker()
    copy = ev(0, RETRY, [("event-id", b"job-1"), ("retry-original-topic", b"mail.requested"),
                         ("retry-original-partition", b"3"), ("retry-original-offset", b"41"),
                         ("retry-attempt", b"2")])  # fmt: skip
    handle(t, copy)
    t.writer.flush()
    [active] = produced.jobs()
    assert active is not None and active.attempt == 3
    assert (active.topic, active.partition, active.offset) == ("mail.requested", 3, 41)


def test_a_final_failure_then_its_dead_letter_finish_the_job() -> None:
    t, produced, clock = tracker(JobTracking(retention_s=60))
    rec = ev()
    handle(t, rec)
    t.on_failed(STAGE, rec, ValueError("bad address"), 2, False)
    t.on_dead_lettered(STAGE, rec, ValueError("bad address"))
    t.writer.flush()
    [dead] = produced.jobs()
    assert dead is not None and dead.state == "dead-lettered"
    assert dead.error == "ValueError: bad address"
    assert dead.attempt == 2 and dead.expires_at == clock.time() + 60


def test_an_undecodable_event_is_a_job_that_never_was_active() -> None:
    t, produced, _ = tracker()
    rec = ev()
    t.on_failed(STAGE, rec, ValueError("garbage"), 1, False)
    t.on_dead_lettered(STAGE, rec, ValueError("garbage"))
    t.writer.flush()
    [dead] = produced.jobs()
    assert dead is not None and dead.state == "dead-lettered" and dead.started_at is None


def test_keep_completed_false_removes_the_entry_at_once_with_a_tombstone() -> None:
    """Bull's removeOnComplete: the active entry written earlier is removed by a tombstone."""
    t, produced, _ = tracker(JobTracking(keep_completed=False))
    rec = ev()
    handle(t, rec)
    t.writer.flush()
    t.on_completed(STAGE, rec)
    t.writer.flush()
    assert [(k, v is None) for _, v, k in produced.records] == [(b"job-1", False), (b"job-1", True)]


def test_expired_entries_are_tombstoned_by_the_view_and_removed_everywhere(
    tmp_path: Path,
) -> None:
    """Retention: past ``expires_at`` the view writes a tombstone and drops the row; another
    view reading the topic drops it too."""
    clock = FakeClock()
    settings = Settings(jobs_store=tmp_path / "a.db")
    transport = MemoryTransport(MemoryBroker(clock), settings)
    view = JobView(settings, transport=transport, clock=clock, sweep_interval_s=10)
    producer = transport.producer("worker")
    for job_id, expires in (("old", clock.time() + 30), ("new", clock.time() + 300)):
        entry = Job(job_id, "completed", expires_at=expires, updated_at=clock.time())
        producer.produce(view.topic, encode(entry), job_id.encode(), None, lambda e, m: None)
    producer.flush(1)
    view.catch_up(5)
    assert {j.id for j in view.find()} == {"old", "new"}
    clock.advance(31)
    view.poll_once(0)
    assert [j.id for j in view.find()] == ["new"]
    other = JobView(settings, transport=transport, clock=clock,
                    store=JobStore(tmp_path / "b.db"))  # fmt: skip
    other.catch_up(5)
    assert [j.id for j in other.find()] == ["new"]
    view.close()
    other.close()


class FullOnce(Produced):
    """Its local queue is full for the second record of the first flush."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def produce(self, topic: str, value: bytes | None, key: bytes | None, headers: Any,
                on_delivery: Any) -> None:  # fmt: skip
        self.calls += 1
        if self.calls == 2:
            raise KafkaError("produce: the producer's local queue is full (stopping)")
        super().produce(topic, value, key, headers, on_delivery)


def test_entries_that_do_not_fit_the_producer_s_queue_wait_for_the_next_flush() -> None:
    """A full queue never blocks the flush: the rest stay pending, unless newer came."""
    producer = FullOnce()
    writer = JobWriter(producer, "_pipeline.jobs")  # type: ignore[arg-type]
    assert producer.stop is not None and producer.stop.is_set()  # never waits for room
    for job_id in ("a", "b", "c"):
        writer.put(Job(job_id, "active"))
    writer.flush()
    assert [k for _, _, k in producer.records] == [b"a"]
    writer.put(Job("c", "completed"))  # newer than the pending c: it wins
    writer.flush()
    assert [(k, decode(v).state) for _, v, k in producer.records if v] == [
        (b"a", "active"), (b"b", "active"), (b"c", "completed")]  # fmt: skip
