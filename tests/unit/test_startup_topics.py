"""Topics ensured while the consumers join (``pipeline.startup``): no batch is handed out and
the retry consumer does not subscribe before the job is done, a failed job stops the stage,
and ``start_topics`` checks at once what the first fetch needs. Memory broker, a job whose
end the test decides; no sleeping."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import pytest

from pipeline import Event, RetryPolicy, Stage, Topic
from pipeline.app import Pipeline
from pipeline.config import Settings
from pipeline.consumerset import ConsumerSet, Source
from pipeline.errors import KafkaError, TopicNotFoundError
from pipeline.ports import RawRecord, RebalanceListener
from pipeline.startup import TopicsJob
from pipeline.testing import FakeClock, MemoryBroker, MemoryTransport
from tests.unit.memory_rig import AskingConsumer
from tests.unit.test_consumerset import RETRY, Listener
from tests.unit.test_transport_seam import SCHEMAS


class HeldJob:
    """A ``TopicsJob`` that ends when the test says, or when waited for (``ends_on_wait``)."""

    def __init__(self, ends_on_wait: bool = True, error: BaseException | None = None) -> None:
        self.done, self.waited, self._ends_on_wait, self._error = False, 0, ends_on_wait, error

    def wait(self, timeout_s: float = 0) -> list[str]:
        self.waited += 1
        self.done = self.done or self._ends_on_wait
        if self._error is not None:
            raise self._error
        return []

    def finish(self, timeout_s: float = 0) -> bool:
        self.wait(timeout_s)
        return True


class Subscribing(AskingConsumer):
    def __init__(self, broker: MemoryBroker, config: Any, log: list[str]) -> None:
        super().__init__(broker, config)
        self.log = log

    def subscribe(self, topics: list[str], listener: RebalanceListener) -> None:
        self.log.append("subscribe " + ",".join(topics))
        super().subscribe(topics, listener)

    def consume(self, max_records: int, timeout_s: float) -> Sequence[RawRecord]:
        records = super().consume(max_records, timeout_s)
        if records:
            self.log.append(f"fetched {len(records)}")
        return records


def starting(job: Any, inputs: int) -> tuple[ConsumerSet, list[str]]:
    clock = FakeClock()
    broker = MemoryBroker(clock)
    producer = broker.producer()
    for topic in ("in", RETRY):
        broker.create_topic(topic)
    for i in range(inputs):
        producer.produce("in", b"%d" % i, None, None, lambda _e, _m: None)
    producer.flush(1)
    log: list[str] = []
    main = Subscribing(broker, {"group.id": "g"}, log)
    retry = Subscribing(broker, {"group.id": "g.retry"}, log)
    both = ConsumerSet(
        [Source(retry, frozenset([RETRY]), ConsumerSet.RETRY_POLL_INTERVAL_S, deferred=True),
         Source(main, frozenset(["in"]))], clock.monotonic, job,
    )  # fmt: skip
    both.subscribe(["in", RETRY], Listener())
    return both, log


def test_records_fetched_before_the_topics_are_ensured_are_handed_out_only_after() -> None:
    """The inputs' consumer subscribes and fetches at once; the batch it fetched comes out
    of ``consume`` only after the job was waited for, and the retry consumer subscribes
    then, not before."""
    job = HeldJob()
    both, log = starting(job, inputs=3)
    assert log == ["subscribe in"], "the retry consumer waits for its topics"
    got = both.consume(10, 0.1)
    assert [r.offset() for r in got] == [0, 1, 2]
    assert job.waited == 1 and log == ["subscribe in", "fetched 3", f"subscribe {RETRY}"]
    assert both.consume(10, 0.1) == [] and job.waited == 1, "waited for once"


def test_with_nothing_fetched_consume_does_not_wait_for_the_job() -> None:
    """No records: ``consume`` returns at once and the job goes on; once it is done the next
    call subscribes the retry consumer."""
    job = HeldJob(ends_on_wait=False)
    both, log = starting(job, inputs=0)
    assert both.consume(10, 0.1) == []
    assert job.waited == 0 and log == ["subscribe in"]
    job.done = True
    assert both.consume(10, 0.1) == []
    assert log == ["subscribe in", f"subscribe {RETRY}"]


def test_a_job_that_failed_is_raised_by_consume_with_or_without_records() -> None:
    """Ensuring the topics failed: the stage's next ``consume`` raises it (the stage stops,
    its worker exits 1), and hands out nothing."""
    refused = KafkaError("create topic g.dlq: TOPIC_AUTHORIZATION_FAILED")
    job = HeldJob(error=refused)
    both, _ = starting(job, inputs=2)
    with pytest.raises(KafkaError, match="TOPIC_AUTHORIZATION_FAILED"):
        both.consume(10, 0.1)
    idle = HeldJob(ends_on_wait=False, error=refused)
    both, _ = starting(idle, inputs=0)
    assert both.consume(10, 0.1) == []
    idle.done = True
    with pytest.raises(KafkaError, match="TOPIC_AUTHORIZATION_FAILED"):
        both.consume(10, 0.1)


def test_a_topics_job_returns_what_it_created_raises_what_failed_and_is_bounded() -> None:
    assert TopicsJob.finished(["a"]).done and TopicsJob.finished(["a"]).wait() == ["a"]
    assert TopicsJob(lambda: ["b", "c"]).wait() == ["b", "c"]
    failing = TopicsJob(lambda: (_ for _ in ()).throw(TopicNotFoundError("missing: x")))
    with pytest.raises(TopicNotFoundError, match="missing: x"):
        failing.wait()
    release = threading.Event()
    held = TopicsJob(lambda: [str(release.wait())])
    with pytest.raises(KafkaError, match=r"not ensured within 0\.01s"):
        held.wait(0.01)
    with pytest.raises(KafkaError, match=r"not ensured within 0\.01s \(its requests' own bound"):
        held.finish(0.01)  # the wait it gave up after, not "within 0s"
    release.set()
    assert held.wait() == ["True"]


class Ping(Event, schema="test.Ping"):
    ping_id: str
    n: int


PINGS = Topic("startup.pings", Ping, key="ping_id")
PONGS = Topic("startup.pongs", Ping, key="ping_id")


class Echo(Stage):
    consumes = PINGS
    emits = (PONGS,)
    retry = RetryPolicy(tiers=(1.0,))

    def handle(self, event: Ping, ctx: Any) -> None:
        ctx.emit(PONGS, event)


class OrderedEcho(Echo):
    group = "ordered-echo"
    retry = RetryPolicy(ordered=True)


def _pipeline(**settings: Any) -> tuple[Pipeline, MemoryBroker]:
    broker = MemoryBroker()
    s = Settings(schemas_dir=SCHEMAS, **settings)
    return Pipeline.build(s, [Echo], MemoryTransport(broker, s)), broker


def test_start_topics_makes_everything_at_once_when_an_input_is_missing() -> None:
    """An input to create first (a subscription to a missing topic sees it only minutes
    later): the job is done when ``start_topics`` returns, with every topic created."""
    pipeline, broker = _pipeline()
    job = pipeline.start_topics()
    assert job.done and sorted(job.wait()) == sorted(pipeline.topics())
    assert set(pipeline.topics()) <= set(broker.topics())


def test_start_topics_makes_the_rest_on_a_thread_when_the_inputs_exist() -> None:
    """Inputs there: outputs, retry tier and DLQ are made by the job, which reports them."""
    pipeline, broker = _pipeline()
    broker.create([pipeline.settings.topic(PINGS.name)])
    created = pipeline.start_topics().wait()
    assert sorted(created) == sorted(t for t in pipeline.topics() if not t.endswith("pings"))
    assert set(pipeline.topics()) <= set(broker.topics())


def test_start_topics_without_creation_raises_for_a_missing_topic_at_once() -> None:
    """create_topics off: the same startup error as ``ensure_topics``, before any consumer."""
    pipeline, broker = _pipeline(create_topics=False)
    broker.create([pipeline.settings.topic(PINGS.name)])
    with pytest.raises(TopicNotFoundError, match=r"startup\.pongs"):
        pipeline.start_topics()


def test_a_stage_read_by_one_consumer_waits_for_the_job_before_it_is_made() -> None:
    """Ordered retries: no retry topics, one consumer; it is made once the job is done, as
    nothing would hold its first batch back."""
    broker = MemoryBroker()
    s = Settings(schemas_dir=SCHEMAS)
    pipeline = Pipeline.build(s, [OrderedEcho], MemoryTransport(broker, s))
    assert len(pipeline.plans[0].readers) == 1
    job = HeldJob()
    pipeline.runner(pipeline.plans[0], "w", topics=job)
    assert job.waited == 1


def _failed_job(error: BaseException) -> TopicsJob:
    """A real job that has already failed (as one refused within milliseconds is, before the
    worker has made its runners)."""
    job = TopicsJob(lambda: (_ for _ in ()).throw(error))
    with pytest.raises(type(error)):
        job.wait()
    assert job.done
    return job


@pytest.mark.parametrize("stage", [Echo, OrderedEcho], ids=["consumer-set", "one-consumer"])
def test_a_job_that_failed_before_the_runner_is_made_is_raised_not_dropped(stage: Any) -> None:
    """The job failed before the stage's consumers were made: making the runner raises that
    error; a stage must not run on as if its retry/DLQ topics and schemas were there."""
    broker = MemoryBroker()
    s = Settings(schemas_dir=SCHEMAS)
    pipeline = Pipeline.build(s, [stage], MemoryTransport(broker, s))
    refused = KafkaError("create topic echo.dlq: TOPIC_AUTHORIZATION_FAILED")
    with pytest.raises(KafkaError, match="TOPIC_AUTHORIZATION_FAILED"):
        pipeline.runner(pipeline.plans[0], "w", topics=_failed_job(refused))


def _returns_within(call: Any, timeout_s: float = 10.0) -> Any:
    """``call()`` on a thread; its result, or a failure if it is still running after
    ``timeout_s`` (a call that should return at once: the bound is only against a hang)."""
    out: list[Any] = []
    failed: list[BaseException] = []

    def run() -> None:
        try:
            out.append(call())
        except BaseException as exc:  # raised below, on the test's thread
            failed.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout_s)
    assert not thread.is_alive(), f"still waiting after {timeout_s:g}s"
    if failed:
        raise failed[0]
    return out[0]


def _held_job(stop: threading.Event) -> tuple[TopicsJob, threading.Event]:
    release = threading.Event()
    job = TopicsJob(lambda: [str(release.wait())])
    job.stop = stop
    return job, release


def test_a_stop_while_the_first_batch_waits_for_the_job_ends_the_wait_and_hands_out_nothing() -> (
    None
):
    """SIGTERM while the topics are still being made and a batch is in hand: ``consume``
    returns nothing at once (not after the job, bounded only by the admin's timeouts), and the
    retry consumer never subscribes; nothing was handed out, so nothing is committed."""
    stop = threading.Event()
    job, release = _held_job(stop)
    both, log = starting(job, inputs=3)
    stop.set()
    try:
        assert _returns_within(lambda: both.consume(10, 0.1)) == []
        assert log == ["subscribe in", "fetched 3"], "the retry consumer did not subscribe"
    finally:
        release.set()


def test_a_stop_while_a_one_consumer_stage_waits_for_the_job_ends_the_wait() -> None:
    """A stage read by one consumer waits for the job while its runner is made (on the
    worker's main thread): a stop ends that wait too, so the worker can shut down."""
    broker = MemoryBroker()
    s = Settings(schemas_dir=SCHEMAS)
    pipeline = Pipeline.build(s, [OrderedEcho], MemoryTransport(broker, s))
    stop = threading.Event()
    job, release = _held_job(stop)
    stop.set()
    try:
        _returns_within(lambda: pipeline.runner(pipeline.plans[0], "w", topics=job))
        assert not job.done
    finally:
        release.set()


def test_a_worker_whose_topics_job_fails_logs_one_line_per_stage_and_fails(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The job fails while the stage runs: the stage stops with a one-line error (no trace;
    ``pipeline run`` then reports the job's error once, with its exit code), and the worker
    has failed."""
    from pipeline.worker import Worker

    broker = MemoryBroker()
    s = Settings(schemas_dir=SCHEMAS)
    pipeline = Pipeline.build(s, [Echo], MemoryTransport(broker, s))
    broker.create([s.topic(PINGS.name)])
    release = threading.Event()
    refused = KafkaError("create topic echo.dlq: TOPIC_AUTHORIZATION_FAILED")

    def refuse() -> list[str]:
        release.wait(30)
        raise refused

    job = TopicsJob(refuse)
    worker = Worker(pipeline, worker_id="w", topics=job)
    worker.start()
    release.set()
    try:
        assert worker.join(30), "the worker did not stop"
    finally:
        worker.stop()
    assert worker.failed and job.error is refused
    stage_lines = [r for r in caplog.records if "stopped: its topics" in r.getMessage()]
    assert len(stage_lines) == 1 and stage_lines[0].exc_info is None
    assert not [r for r in caplog.records if r.exc_info], "no traceback"


def test_a_worker_whose_runner_cannot_be_made_stops_its_started_stages_and_raises() -> None:
    """The job failed before the worker made its runners: ``run_until_signalled`` raises that
    error (one line from the CLI) after stopping the stages it had started."""
    from pipeline.worker import Worker

    broker = MemoryBroker()
    s = Settings(schemas_dir=SCHEMAS)
    pipeline = Pipeline.build(s, [Echo], MemoryTransport(broker, s))
    refused = KafkaError("create topic echo.dlq: TOPIC_AUTHORIZATION_FAILED")
    worker = Worker(pipeline, worker_id="w", topics=_failed_job(refused))
    with pytest.raises(KafkaError, match="TOPIC_AUTHORIZATION_FAILED"):
        _returns_within(worker.run_until_signalled, 30)
    assert worker.stop_event.is_set()


def test_pipeline_run_raises_the_jobs_error_for_the_cli_to_report_in_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``run_workers`` (``pipeline run``, one worker) whose topics job fails once the stage
    runs raises the job's error, which the CLI prints as one line with its exit code (2 for a
    usage error, else 1), as when the topics were made before anything started."""
    import signal

    from pipeline import worker as worker_module
    from pipeline.worker import RunOptions, Worker

    pipeline, broker = _pipeline()
    broker.create([pipeline.settings.topic(PINGS.name)])
    release = threading.Event()
    refused = KafkaError("create topic echo.dlq: TOPIC_AUTHORIZATION_FAILED")

    def refuse() -> list[str]:
        release.wait(30)
        raise refused

    real_start = Worker.start

    def start_then_fail(self: Worker) -> None:
        real_start(self)
        release.set()  # the job fails once every stage is running

    monkeypatch.setattr(Pipeline, "from_spec", classmethod(lambda cls, spec, s: pipeline))
    monkeypatch.setattr(Pipeline, "start_topics", lambda self, stop=None: TopicsJob(refuse))
    monkeypatch.setattr(Worker, "start", start_then_fail)
    monkeypatch.setattr(worker_module, "exit_within", lambda code: code)
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with pytest.raises(KafkaError, match="TOPIC_AUTHORIZATION_FAILED"):
            worker_module.run_workers("unused", pipeline.settings, 1, RunOptions(None, None))
    finally:
        release.set()
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


class BlockingAdmin:
    """A memory admin whose ``ensure`` blocks (as a CreateTopics in flight to a slow broker)
    until the test releases it; it declares its own bound, as ``KafkaAdmin`` does."""

    ensure_bound_s = 200.0

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.entered, self.release = threading.Event(), threading.Event()
        self.calls: list[str] = []

    def topics(self) -> Any:
        return self._inner.topics()

    def ensure(self, names: Any) -> list[str]:
        self.calls.append("ensure")
        self.entered.set()
        assert self.release.wait(30), "the test never released the admin"
        created: list[str] = self._inner.ensure(names)
        return created

    def create(self, names: Any, partitions: Any = None, config: Any = None) -> list[str]:
        self.calls.append("create")
        created: list[str] = self._inner.create(names, partitions, config)
        return created


def _blocked_start() -> tuple[Pipeline, BlockingAdmin, TopicsJob]:
    pipeline, broker = _pipeline()
    broker.create([pipeline.settings.topic(PINGS.name)])  # the input: the rest on the job
    admin = BlockingAdmin(pipeline.transport.admin())
    pipeline.transport.admin = lambda: admin  # type: ignore[method-assign]
    job = pipeline.start_topics()
    assert admin.entered.wait(10), "the job never asked the admin"
    return pipeline, admin, job


def test_a_worker_stopped_while_its_topics_request_is_blocked_leaves_no_job_running_on() -> None:
    """SIGTERM while the CreateTopics request is in flight: the worker stops at once, and
    the job makes no further request (no schema announced) once that one returns: its thread
    ends with the request's own bound, not after the rest of the job. A stop is no failure."""
    from pipeline.worker import Worker

    pipeline, admin, job = _blocked_start()
    worker = Worker(pipeline, worker_id="w", topics=job)
    worker.start()
    worker.stop()
    try:
        assert _returns_within(lambda: worker.join(10)), "the stop waited for the job"
        assert not job.done and not job.join(0), "still in its request"
    finally:
        admin.release.set()
    assert job.join(10), "the job's thread ran on after its request returned"
    assert admin.calls == ["ensure"], "no request after the stop"
    assert not pipeline.schemas._schemas, "no schema announced"  # type: ignore[union-attr]
    assert job.error is None and not worker.failed, "a stop is no failure"
    assert job.finish() is False, "nothing may be handed out: the topics are not all there"
    with pytest.raises(KafkaError, match="not all ensured: the worker stopped"):
        job.wait(0)
    # A stage made after that (the stop came while the worker made its runners) is made all
    # the same, and stops before it consumes: the stop is not reported as the job's failure.
    pipeline.runner(pipeline.plans[0], "w2", topics=job)


def test_the_topics_job_is_waited_for_as_long_as_its_own_requests_may_take(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A job still within its requests' own bound (here past the 120 s a stage used to wait)
    is waited for, so what a stage reports is the job's own error (a request that timed out),
    never a wait's timeout that says nothing of the cause."""
    from pipeline import startup

    class Ticking:  # time passes 5 s each time it is looked at; the job fails at 150 s
        def __init__(self, failed_at: float, fail: threading.Event) -> None:
            self.now, self._failed_at, self._fail = 0.0, failed_at, fail

        def __call__(self) -> float:
            self.now += 5.0
            if self.now >= self._failed_at:
                self._fail.set()
            return self.now

    fail = threading.Event()

    def slow_then_refused() -> list[str]:
        assert fail.wait(30)
        raise KafkaError("topics created but not in the cluster's metadata after 15s: x.dlq")

    monkeypatch.setattr(startup, "_clock", Ticking(150.0, fail))
    job = TopicsJob(slow_then_refused, bound_s=4 * 16.0 * 2 + 5 * 15.0)  # 203 s, KafkaAdmin's
    with pytest.raises(KafkaError, match="not in the cluster's metadata"):
        _returns_within(job.finish)


def test_the_jobs_bound_is_what_its_admin_and_schema_store_declare() -> None:
    """``start_topics`` gives the job its requests' bound: two admin requests (the stages'
    topics, the cancel topics) and one announce per output schema, as the ports declare
    them (``KafkaAdmin``: four reads and waits within its timeout); a port that declares no
    bound gets ``DEFAULT_BOUND_S``."""
    from dataclasses import replace

    from pipeline import startup
    from pipeline.kafka import KafkaAdmin

    class Store:
        publish_bound_s = 3.0

    admin = BlockingAdmin(None)
    bound = startup.job_bound_s(admin, Store(), admin_calls=2, announces=4)
    assert bound == 2 * 200.0 + 4 * 3.0
    assert startup.job_bound_s(admin, None, admin_calls=2, announces=4) == 400.0, "a registry"
    assert startup.job_bound_s(object(), Store(), admin_calls=1, announces=1) == (
        startup.DEFAULT_BOUND_S
    )
    assert KafkaAdmin(Settings(), timeout_s=15.0).ensure_bound_s == 4 * (15.0 + 1.0)

    pipeline, admin, job = _blocked_start()
    admin.release.set()
    job.wait()
    assert job.bound_s == startup.DEFAULT_BOUND_S, "the memory store declares no bound"
    pipeline = replace(pipeline, schemas=Store())  # type: ignore[arg-type]
    admin.entered.clear()
    job = pipeline.start_topics()
    job.wait()
    assert job.bound_s == 2 * 200.0 + 1 * 3.0  # one output: PONGS
    assert job.wait_s == job.bound_s + startup.WAIT_MARGIN_S
