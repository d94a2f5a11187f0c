"""The Pipeline object: settings, schema catalog, codec and validated stage plans, built once.

It owns everything a worker or the publisher needs, including the transport its clients come
from (``pipeline.transport``; Kafka unless another is given) and the hooks every stage's
runner reports to (``pipeline.hooks``); there is no global state.
Building one does all the startup checks (config, schemas, declarations) before anything
connects to Kafka.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pipeline import delaymover, keylimit, registry
from pipeline.clock import SYSTEM, Clock
from pipeline.config import Settings
from pipeline.consumerset import ConsumerSet
from pipeline.errors import SchemaError
from pipeline.hooks import Hook, check
from pipeline.jsonlogs import LogContext, structured
from pipeline.ports import AdminPort, ConsumerPort, ProducerPort, SchemaStorePort, TopicSpec
from pipeline.registry import StagePlan
from pipeline.runner import StageRunner
from pipeline.schedules import Schedule, check_schedules, load_schedules
from pipeline.serde import Binding, Codec, SchemaCatalog, SingleObjectCodec
from pipeline.stage import Stage
from pipeline.startup import TopicsJob, TopicsStopped, job_bound_s
from pipeline.transport import Transport, kafka

if TYPE_CHECKING:
    from pipeline.alertwatch import AlertWatch
    from pipeline.scheduler import Scheduler

Announce = Callable[[Binding[Any]], None]
# A crashed worker's open transaction is aborted by the broker after this long, until which
# read_committed consumers of its outputs wait: keep it short.
TRANSACTION_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Pipeline:
    settings: Settings
    catalog: SchemaCatalog
    codec: Codec
    announce: Announce
    plans: tuple[StagePlan, ...]
    transport: Transport
    hooks: tuple[Hook, ...] = ()
    schedules: tuple[Schedule, ...] = ()  # cron schedules (pipeline.schedules)
    # Where ``announce`` publishes writer schemas (None: a schema registry does).
    schemas: SchemaStorePort | None = None

    @classmethod
    def build(
        cls,
        settings: Settings,
        stages: Iterable[type[Stage]] = (),
        transport: Transport | None = None,
        hooks: Sequence[Hook] = (),
        schedules: Sequence[Schedule] = (),
    ) -> Pipeline:
        """``hooks`` hear every stage (each stage's own ``hooks`` are added for it).
        ``schedules``: cron schedules, fired by one worker of all that run them."""
        hooks = check(hooks, "Pipeline hooks")
        declared = check_schedules(schedules)
        if structured():  # JSON log lines: let them know each stage's and event's whereabouts
            hooks = (LogContext(), *hooks)
        if transport is None:
            transport = kafka(settings)
        transport.check()  # client options, before any topic is created
        catalog = load_catalog(settings)
        stages = list(stages)
        stages += delaymover.movers(stages, settings, transport.topic_log)  # delayed topics
        stages += [delaymover.mover_stage(t, settings, transport.topic_log)
                   for t in keylimit.deferrals(stages)]  # fmt: skip
        plans = tuple(registry.plan(stages, catalog, settings)) if stages else ()
        for schedule in declared:  # every emitted model has a schema, checked now
            catalog.bind(schedule.emit.model)
        schemas = None if settings.schema_registry_url else transport.schema_store()
        codec, announce = build_codec(settings, catalog, transport, schemas)
        return cls(settings, catalog, codec, announce, plans, transport, hooks, declared, schemas)

    @classmethod
    def from_spec(
        cls, spec: str, settings: Settings, transport: Transport | None = None
    ) -> Pipeline:
        """The stages a ``pipeline run`` spec names, with the ``HOOKS`` of their modules."""
        stages, hooks = registry.load(spec), registry.load_hooks(spec)
        return cls.build(settings, stages, transport, hooks, load_schedules(spec))

    def topics(self) -> list[str]:
        emitted = [self.settings.topic(s.emit.name) for s in self.schedules]
        read = [t for plan in self.plans for t in plan.topics]
        return list(dict.fromkeys([*read, *emitted]))

    def close(self) -> None:
        """Release the codec's reader of writer schemas; the plans' clients belong to runners."""
        self.codec.close()

    def ensure_topics(
        self, admin: AdminPort | None = None, stopping: Callable[[], bool] | None = None
    ) -> list[str]:
        """Create missing topics (or raise TopicNotFoundError if creation is off), and make the
        schemas our stages write with findable by readers.

        The stages' topics (inputs, outputs, retry and DLQ topics) and the schema store's are
        created in one admin request and waited for together: each request then waits for its
        topics to reach the metadata, a wait that on a loaded machine takes longer than the
        request. Every worker's first output waits for this (see ``start_topics``).
        ``stopping``: asked before each further request, and by an admin that has a
        ``stopping`` attribute (``KafkaAdmin``) while it waits for one; once true,
        ``TopicsStopped``."""

        def step() -> None:
            if stopping is not None and stopping():
                raise TopicsStopped

        admin = admin or self.transport.admin()
        if stopping is not None and hasattr(admin, "stopping"):
            admin.stopping = stopping  # a request in flight is not waited for after a stop
        store, ensured = self._store_topics()
        created = admin.ensure([*self.topics(), *store])
        ensured()  # so announcing makes no look-up of its own
        step()
        created += self.ensure_internal_topics(admin)
        for binding in self._announced():
            step()
            self.announce(binding)
        return created

    def _announced(self) -> list[Binding[Any]]:
        """The writer schemas ``ensure_topics`` makes findable: the outputs', the schedules'."""
        bindings = [binding for plan in self.plans for _, binding in plan.outputs.values()]
        return bindings + [self.catalog.bind(s.emit.model) for s in self.schedules]

    def start_topics(self, stop: threading.Event | None = None) -> TopicsJob:
        """``ensure_topics`` on a thread of its own while the workers' consumers join
        (``pipeline.startup``), once one metadata request has shown that every topic the
        stages' input consumers subscribe to exists; at once, as ``ensure_topics``, when one
        does not, when topics may not be created (so a missing one is the same startup error),
        or with schedules (the scheduler starts with the worker, on its topics). ``stop``: set,
        the work at once stops short with ``TopicsStopped`` (the job: its wait ends)."""
        admin = self.transport.admin()
        if stop is not None and hasattr(admin, "stopping"):
            admin.stopping = stop.is_set  # also the metadata read below
        if self.settings.create_topics and not self.schedules:
            existing = admin.topics()
            first = [t for p in self.plans for t in p.subscriptions if t not in p.retry_topics]
            if all(t in existing for t in first):
                # Its own requests' bound: the stages' topics, the cancel topics, the schemas.
                bound = job_bound_s(admin, self.schemas, admin_calls=2,
                                    announces=len(self._announced()))  # fmt: skip
                job = TopicsJob(bound_s=bound)
                job.stop = stop  # the worker sets it again, to the event it stops on
                job.start(lambda: self.ensure_topics(admin, job.stopping))
                return job
        return TopicsJob.finished(self.ensure_topics(admin, None if stop is None else stop.is_set))

    def _store_topics(self) -> tuple[list[TopicSpec], Callable[[], None]]:
        """The schema store's topics (``SchemaStorePort``'s optional ``topics``) and what to
        tell it once they exist, when this pipeline writes with it and may create topics (if
        it may not, ``publish`` still creates its own topic, as it always did)."""
        topics = getattr(self.schemas, "topics", None)
        ensured = getattr(self.schemas, "topics_ensured", None)
        if topics is None or ensured is None or not self.settings.create_topics:
            return [], _nothing
        return list(topics()), ensured

    def ensure_internal_topics(self, admin: AdminPort | None = None) -> list[str]:
        """The one-partition compacted topics beside ``topics()``: each delayed topic's
        cancellations and the schedules' state. Apart, so that ``pipeline topics create
        --stages`` makes them too, with one partition whatever its ``--partitions``."""
        admin = admin or self.transport.admin()
        created = delaymover.ensure_cancel_topics(admin, self.plans, self.settings.create_topics)
        if self.schedules:
            # The scheduler's modules load only for a pipeline with schedules.
            from pipeline.scheduler import ensure_state_topic

            created += ensure_state_topic(self.settings, self.transport)
        return created

    def scheduler(self, worker_id: str | None = None, clock: Clock = SYSTEM) -> Scheduler | None:
        """The component that fires this pipeline's schedules (None without any); every
        worker runs one, and one of them, the owner, fires (``pipeline.scheduler``)."""
        if not self.schedules:
            return None
        from pipeline.scheduler import Scheduler

        bindings = {s.name: self.catalog.bind(s.emit.model) for s in self.schedules}
        return Scheduler(
            self.schedules, self.settings, self.transport, self.codec, bindings,
            worker_id=worker_id or default_worker_id(), clock=clock, hooks=self.hooks,
        )  # fmt: skip

    def runner(
        self,
        plan: StagePlan,
        worker_id: str | None = None,
        clock: Clock = SYSTEM,
        topics: TopicsJob | None = None,
    ) -> StageRunner:
        """The stage's runner on this pipeline's transport; ``clock`` drives its holds, due
        times, breaker and commit interval (a test broker's FakeClock, say). ``topics``: the
        ``start_topics`` job still ensuring its topics, which its consumers wait for."""
        worker_id = worker_id or default_worker_id()
        client_id = f"{plan.group}-{worker_id}"
        s = self.settings
        exactly_once = plan.stage.guarantee == "exactly_once"
        # One transaction commits one group's offsets, so an exactly-once stage reads its retry
        # topics with the same consumer; others read retries and each priority lane with a
        # consumer of their own, each balanced on its own (``plan.readers``).
        def make(group: str, suffix: str, retry: bool) -> ConsumerPort:
            return self.transport.consumer(group, client_id + suffix, retry=retry, linger=not retry)

        consumer = ConsumerSet.for_plan(plan, make, clock.monotonic, topics)
        producer: ProducerPort
        if exactly_once:
            # Unique per process, so two workers never fence each other.
            producer = self.transport.transactional_producer(
                client_id, transactional_id=client_id, transaction_timeout_s=TRANSACTION_TIMEOUT_S
            )
        else:
            producer = self.transport.producer(client_id)
        alerts, extra = _feature_hooks(plan, s, self.transport, clock, client_id)
        runner = StageRunner(
            plan,
            consumer,
            producer,
            self.codec,
            batch_size=s.batch_size,
            batch_timeout_s=s.batch_timeout_s,
            commit_interval_s=s.commit_interval_s,
            shutdown_timeout_s=s.shutdown_timeout_s,
            store_url=s.idempotency_url,
            clock=clock,
            hooks=(*self.hooks, *extra) if extra else self.hooks,
            worker_id=worker_id,
            poll_limit_s=_max_poll_interval_s(s),
            partition_counts=partition_counts(self.transport) if plan.stage.rate_limit else None,
            transaction_retry_timeout_s=s.transaction_retry_timeout_s,
        )
        if alerts is not None:
            alerts.attach(runner.hooks)  # it tells on_alert / on_resolved to the stage's hooks
        return runner


def _feature_hooks(
    plan: StagePlan, settings: Settings, transport: Transport, clock: Clock, client_id: str
) -> tuple[AlertWatch | None, tuple[Hook, ...]]:
    """The subscribers of the features ``plan``'s stage declares: its alerts' watch (also
    returned alone, to attach), its job tracker, its error replies. Each feature's module loads
    only for a stage that declares it: every worker imports this one."""
    alerts = tracker = failed_replies = None
    if plan.stage.alerts is not None:
        from pipeline import alertwatch

        alerts = alertwatch.watch(plan, settings, transport, clock)
    if plan.stage.track_jobs is not None:
        from pipeline.jobs import tracker as jobs_tracker

        tracker = jobs_tracker.track(plan, settings, transport, clock, client_id)
    if plan.replies:
        from pipeline import replyfailures

        failed_replies = replyfailures.watch(plan, transport, client_id)
    return alerts, tuple(h for h in (alerts, tracker, failed_replies) if h is not None)


def partition_counts(transport: Transport) -> Callable[[Sequence[str]], dict[str, int]]:
    """How a rate-limited stage reads its topics' partition counts (its share of the limit):
    through one admin client, made at the first read (each read bounded by its timeout)."""
    admin: list[AdminPort] = []

    def counts(topics: Sequence[str]) -> dict[str, int]:
        if not admin:
            admin.append(transport.admin())
        infos = admin[0].topics()
        return {t: infos[t].partitions for t in topics if t in infos}

    return counts


def load_catalog(settings: Settings) -> SchemaCatalog:
    directory = settings.schemas_dir
    if not directory.is_dir():
        raise SchemaError(
            f"schemas directory {directory} does not exist (set PIPELINE_SCHEMAS_DIR)"
        )
    return SchemaCatalog.load(directory)


def build_codec(
    settings: Settings,
    catalog: SchemaCatalog,
    transport: Transport,
    schemas: SchemaStorePort | None = None,
) -> tuple[Codec, Announce]:
    """The wire format, and how a writer makes its schema findable by readers.

    With a schema registry: the Confluent format (the codec registers schemas as it encodes).
    Without: Avro single-object encoding, with writer schemas shared through the transport's
    schema store (on Kafka a compacted topic, see ``pipeline.kafka.schema_topic``) so readers
    on older schemas can resolve newer writers. ``schemas``: that store (default: the
    transport's).
    """
    if settings.schema_registry_url:
        from pipeline.kafka.registry import ConfluentRegistry
        from pipeline.serde import ConfluentCodec

        registry = ConfluentRegistry(settings)
        subjects = settings.schema_registry_subject_strategy
        return ConfluentCodec(catalog, registry, subjects), _no_announce
    if schemas is None:
        schemas = transport.schema_store()

    def announce(binding: Binding[Any]) -> None:
        schemas.publish(binding.fingerprint, binding.schema.json)

    # The codec owns the reader (one consumer of the schema topic, opened at the first miss).
    return SingleObjectCodec(catalog, resolver=schemas.reader()), announce


def _no_announce(_binding: Binding[Any]) -> None:
    pass


def _nothing() -> None:
    pass


def default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


# librdkafka's default max.poll.interval.ms.
DEFAULT_MAX_POLL_INTERVAL_MS = 300_000


def _max_poll_interval_s(settings: Settings) -> float:
    """How long a consumer may go without polling before it leaves its group."""
    raw = settings.consumer_config.get("max.poll.interval.ms", DEFAULT_MAX_POLL_INTERVAL_MS)
    try:
        return int(raw) / 1000
    except ValueError:  # the client refuses it at startup with its own message
        return DEFAULT_MAX_POLL_INTERVAL_MS / 1000
