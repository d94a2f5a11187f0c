"""The Pipeline object: settings, schema catalog, codec and validated stage plans, built once.

It owns everything a worker or the publisher needs; there is no global state. Building one does
all the startup checks (config, schemas, declarations) before anything connects to Kafka.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from pipeline import registry
from pipeline.config import Settings
from pipeline.consumerset import ConsumerSet
from pipeline.errors import SchemaError
from pipeline.kafka import KafkaAdmin, KafkaConsumer, KafkaProducer
from pipeline.kafka import config as kconfig
from pipeline.kafka.schema_topic import SchemaTopic
from pipeline.ports import ConsumerPort
from pipeline.registry import StagePlan
from pipeline.runner import StageRunner
from pipeline.serde import Binding, Codec, SchemaCatalog, SingleObjectCodec
from pipeline.stage import Stage

Announce = Callable[[Binding[Any]], None]


@dataclass(frozen=True)
class Pipeline:
    settings: Settings
    catalog: SchemaCatalog
    codec: Codec
    announce: Announce
    plans: tuple[StagePlan, ...]

    @classmethod
    def build(cls, settings: Settings, stages: Iterable[type[Stage]] = ()) -> Pipeline:
        kconfig.check(settings)  # librdkafka options, before any topic is created
        catalog = load_catalog(settings)
        plans = tuple(registry.plan(stages, catalog, settings)) if stages else ()
        codec, announce = build_codec(settings, catalog)
        return cls(settings, catalog, codec, announce, plans)

    @classmethod
    def from_spec(cls, spec: str, settings: Settings) -> Pipeline:
        return cls.build(settings, registry.load(spec))

    def topics(self) -> list[str]:
        return list(dict.fromkeys(t for plan in self.plans for t in plan.topics))

    def close(self) -> None:
        """Release the codec's reader of writer schemas; the plans' clients belong to runners."""
        self.codec.close()

    def ensure_topics(self) -> list[str]:
        """Create missing topics (or raise TopicNotFoundError if creation is off), and make the
        schemas our stages write with findable by readers."""
        created = KafkaAdmin(self.settings).ensure(self.topics())
        for plan in self.plans:
            for _, binding in plan.outputs.values():
                self.announce(binding)
        return created

    def runner(self, plan: StagePlan, worker_id: str | None = None) -> StageRunner:
        client_id = f"{plan.group}-{worker_id or _default_worker_id()}"
        s = self.settings
        exactly_once = plan.stage.guarantee == "exactly_once"
        consumer: ConsumerPort = KafkaConsumer(kconfig.consumer(s, plan.group, client_id))
        # One transaction commits one group's offsets, so an exactly-once stage reads its retry
        # topics with the same consumer; others use a second one, balanced on its own.
        if plan.retry_topics and not exactly_once:
            retry_group = f"{plan.group}.retry"
            retry = KafkaConsumer(kconfig.retry_consumer(s, retry_group, f"{client_id}-retry"))
            consumer = ConsumerSet(consumer, retry, plan.retry_topics)
        producer_config = kconfig.producer(s, client_id)
        if exactly_once:
            # Unique per process, so two workers never fence each other. A crashed worker's
            # open transaction is then aborted by the broker after transaction.timeout.ms,
            # until which read_committed consumers wait: keep it short.
            producer_config = {
                "transactional.id": client_id,
                "transaction.timeout.ms": 10_000,
            } | producer_config
        return StageRunner(
            plan,
            consumer,
            KafkaProducer(producer_config),
            self.codec,
            batch_size=s.batch_size,
            batch_timeout_s=s.batch_timeout_s,
            commit_interval_s=s.commit_interval_s,
            shutdown_timeout_s=s.shutdown_timeout_s,
            store_url=s.idempotency_url,
        )


def load_catalog(settings: Settings) -> SchemaCatalog:
    directory = settings.schemas_dir
    if not directory.is_dir():
        raise SchemaError(
            f"schemas directory {directory} does not exist (set PIPELINE_SCHEMAS_DIR)"
        )
    return SchemaCatalog.load(directory)


def build_codec(settings: Settings, catalog: SchemaCatalog) -> tuple[Codec, Announce]:
    """The wire format, and how a writer makes its schema findable by readers.

    With a schema registry: the Confluent format (the codec registers schemas as it encodes).
    Without: Avro single-object encoding, with writer schemas shared through a compacted topic
    (see ``pipeline.kafka.schema_topic``) so readers on older schemas can resolve newer writers.
    """
    if settings.schema_registry_url:
        from pipeline.kafka.registry import ConfluentRegistry
        from pipeline.serde import ConfluentCodec

        return ConfluentCodec(catalog, ConfluentRegistry(settings)), _no_announce
    schemas = SchemaTopic(settings)

    def announce(binding: Binding[Any]) -> None:
        schemas.publish(binding.fingerprint, binding.schema.json)

    # The codec owns the reader (one consumer of the schema topic, opened at the first miss).
    return SingleObjectCodec(catalog, resolver=schemas.reader()), announce


def _no_announce(_binding: Binding[Any]) -> None:
    pass


def _default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"
