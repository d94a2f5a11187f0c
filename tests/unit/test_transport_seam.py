"""Pipeline and Publisher get every client from their transport: given another one, they create
no Kafka client at all, and run on the ports it hands out."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline import Settings
from pipeline.app import TRANSACTION_TIMEOUT_S, Pipeline
from pipeline.errors import TopicNotFoundError
from pipeline.ports import SchemaStorePort, TopicInfo
from pipeline.publisher import Publisher
from pipeline.serde import SchemaResolver
from pipeline.testing import FakeClock, MemoryBroker, MemoryConsumer, MemoryProducer
from pipeline.testing.lockstep import Lockstep
from pipeline.testing.transport import MemoryAdmin, MemoryTransport
from pipeline.transport import Transport
from tests.integration.app_stages import PINGS, PONGS, Echo, EosEcho, Ping

SCHEMAS = Path(__file__).resolve().parents[1] / "schemas"


class RecordingAdmin:
    def __init__(self, calls: list[tuple[Any, ...]], inner: MemoryAdmin) -> None:
        self._calls = calls
        self._inner = inner

    def topics(self) -> dict[str, TopicInfo]:
        self._calls.append(("admin.topics",))
        return self._inner.topics()

    def create(
        self, names: list[str], partitions: int | None = None,
        config: dict[str, str] | None = None,
    ) -> list[str]:  # fmt: skip
        self._calls.append(("admin.create", tuple(names)))
        return self._inner.create(names, partitions, config)

    def ensure(self, names: list[str]) -> list[str]:
        self._calls.append(("admin.ensure", tuple(names)))
        return self._inner.ensure(names)


class RecordingSchemas:
    def __init__(self, calls: list[tuple[Any, ...]], inner: SchemaStorePort) -> None:
        self._calls = calls
        self._inner = inner

    def publish(self, fingerprint: bytes, schema_json: str) -> None:
        self._calls.append(("schemas.publish", fingerprint))
        self._inner.publish(fingerprint, schema_json)

    def reader(self) -> SchemaResolver:
        return self._inner.reader()


class RecordingTransport:
    """A ``MemoryTransport`` that records what was asked of it."""

    def __init__(self, broker: MemoryBroker | None = None) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.broker = broker or MemoryBroker()
        self.inner = MemoryTransport(self.broker, Settings(schemas_dir=SCHEMAS))
        self.consumers: list[MemoryConsumer] = []
        self.producers: list[MemoryProducer] = []
        self.schemas = RecordingSchemas(self.calls, self.inner.schema_store())

    def check(self) -> None:
        self.calls.append(("check",))

    def consumer(
        self, group: str, client_id: str, *, retry: bool = False, linger: bool = False
    ) -> MemoryConsumer:
        self.calls.append(("consumer", group, client_id, retry))
        self.consumers.append(self.inner.consumer(group, client_id, retry=retry))
        return self.consumers[-1]

    def producer(self, client_id: str) -> MemoryProducer:
        self.calls.append(("producer", client_id))
        self.producers.append(self.inner.producer(client_id))
        return self.producers[-1]

    def transactional_producer(
        self, client_id: str, transactional_id: str, transaction_timeout_s: float
    ) -> MemoryProducer:
        self.calls.append(("transactional_producer", client_id, transactional_id,
                           transaction_timeout_s))  # fmt: skip
        self.producers.append(
            self.inner.transactional_producer(client_id, transactional_id, transaction_timeout_s)
        )
        return self.producers[-1]

    def admin(self) -> RecordingAdmin:
        return RecordingAdmin(self.calls, self.inner.admin())

    def lag_monitor(self) -> Any:
        raise AssertionError("not used here")

    def topic_log(self) -> Any:
        return self.inner.topic_log()

    def schema_store(self) -> RecordingSchemas:
        return self.schemas


def _refuse(*_args: Any, **_kwargs: Any) -> Any:
    raise AssertionError("a Kafka client was created")


@pytest.fixture
def no_kafka_clients(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every confluent-kafka client class, wherever the adapter bound it, raises if called."""
    import confluent_kafka
    import confluent_kafka.admin

    import pipeline.kafka.transport  # noqa: F401  (binds the adapter's modules first)

    modules = [confluent_kafka, confluent_kafka.admin]
    modules += [m for name, m in sys.modules.items() if name.startswith("pipeline.kafka")]
    for module in modules:
        for name in ("Consumer", "Producer", "AdminClient"):
            if hasattr(module, name):
                monkeypatch.setattr(module, name, _refuse)
    yield


def test_the_fake_transport_is_a_transport() -> None:
    transport: Transport = RecordingTransport()  # mypy checks the protocol here
    assert transport is not None


def test_a_pipeline_runs_a_stage_on_its_transport_without_a_kafka_client(
    no_kafka_clients: None,
) -> None:
    """Build, ensure topics, make a runner and run one step: every client comes from the
    transport, and the stage's output goes to the producer it handed out."""
    transport = RecordingTransport(MemoryBroker(FakeClock()))
    settings = Settings(schemas_dir=SCHEMAS)
    pipeline = Pipeline.build(settings, [Echo], transport=transport)
    plan = pipeline.plans[0]
    assert pipeline.ensure_topics() == pipeline.topics()
    runner = pipeline.runner(plan, worker_id="w1", clock=transport.broker.clock)

    client_id = f"{plan.group}-w1"
    assert transport.calls[0] == ("check",)
    assert ("admin.ensure", tuple(pipeline.topics())) in transport.calls
    assert ("schemas.publish", plan.outputs[PONGS.name][1].fingerprint) in transport.calls
    assert ("consumer", plan.group, client_id, False) in transport.calls
    assert plan.retry_topics, "Echo's default retry policy uses retry topics"
    assert ("consumer", f"{plan.group}.retry", f"{client_id}-retry", True) in transport.calls
    assert ("producer", client_id) in transport.calls

    assert isinstance(transport.broker.clock, FakeClock)
    main, producer = transport.consumers[0], transport.producers[0]
    tp = (PINGS.name, 0)
    value = pipeline.codec.encode(Ping(ping_id="p1", n=1), plan.inputs[PINGS.name], PINGS.name)
    transport.broker.producer().produce(PINGS.name, value, None, None, lambda _e, _m: None)
    stepped = Lockstep(runner, "w1", 30.0)  # run() subscribes on the transport's consumers
    stepped.step()
    assert [(r.topic(), r.key()) for r in transport.broker.records(PONGS.name)] == [
        (PONGS.name, None)
    ]
    assert len(producer) == 0, "the output's delivery report was served"
    stepped.stop(30.0)  # revokes: commits what is done, on the consumer the transport gave
    assert transport.broker.committed_offsets(plan.group) == {tp: 1}
    assert main.group_id == plan.group


def test_an_exactly_once_stage_asks_its_transport_for_a_transactional_producer(
    no_kafka_clients: None,
) -> None:
    """Its transactional id is its client id (unique per process, so two workers never fence
    each other), its retry topics are read by the one consumer its transaction commits."""
    transport = RecordingTransport()
    pipeline = Pipeline.build(Settings(schemas_dir=SCHEMAS), [EosEcho], transport=transport)
    plan = pipeline.plans[0]
    pipeline.runner(plan, worker_id="w1")
    client_id = f"{plan.group}-w1"
    asked = [c for c in transport.calls if c[0] in ("consumer", "producer",
                                                    "transactional_producer")]  # fmt: skip
    assert asked == [
        ("consumer", plan.group, client_id, False),
        ("transactional_producer", client_id, client_id, TRANSACTION_TIMEOUT_S),
    ]


def test_a_publisher_publishes_through_its_transport_without_a_kafka_client(
    no_kafka_clients: None,
) -> None:
    """Its producer and its topic check come from the transport; the acknowledgement is the
    record the transport's producer reported."""
    transport = RecordingTransport()
    settings = Settings(schemas_dir=SCHEMAS)
    transport.broker.create_topic(settings.topic(PINGS.name))
    with Publisher(settings, transport=transport) as publisher:
        where = publisher.publish(PINGS, Ping(ping_id="p1", n=1))
    assert where is not None and (where.topic, where.offset) == (PINGS.name, 0)
    [stored] = transport.broker.records(PINGS.name)
    assert (stored.offset(), stored.key()) == (0, None)
    assert ("producer", "publisher") in transport.calls
    assert ("admin.topics",) in transport.calls
    assert [c[0] for c in transport.calls].count("schemas.publish") == 1


def test_a_publisher_refuses_a_topic_its_transport_does_not_have(no_kafka_clients: None) -> None:
    transport = RecordingTransport()
    publisher = Publisher(Settings(schemas_dir=SCHEMAS), transport=transport)
    with publisher, pytest.raises(TopicNotFoundError, match=r"test\.pings"):
        publisher.publish(PINGS, Ping(ping_id="p1", n=1))
    assert transport.broker.topics() == {}, "nothing was written, no topic made"


def test_a_pipeline_on_another_transport_never_imports_the_kafka_client() -> None:
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from pipeline import Settings\n"
        "from pipeline.app import Pipeline\n"
        "from pipeline.publisher import Publisher\n"
        "from tests.unit.test_transport_seam import RecordingTransport\n"
        "from tests.integration.app_stages import Echo\n"
        f"s = Settings(schemas_dir=Path({str(SCHEMAS)!r}))\n"
        "p = Pipeline.build(s, [Echo], transport=RecordingTransport())\n"
        "p.runner(p.plans[0], worker_id='w')\n"
        "Publisher(s, transport=RecordingTransport(), check_topics=False).close(1)\n"
        "print('confluent_kafka' in sys.modules)\n"
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root
    )
    assert out.stdout.strip() == "False"


def test_the_guard_catches_the_default_kafka_transport(no_kafka_clients: None) -> None:
    """Without a transport, Pipeline and Publisher use Kafka's: the guard above refuses it, so
    the tests using the guard would notice a client created behind the transport's back."""
    settings = Settings(schemas_dir=SCHEMAS)
    with pytest.raises(AssertionError, match="a Kafka client was created"):
        Pipeline.build(settings, [Echo])  # kconfig.check makes throwaway clients
    with pytest.raises(AssertionError, match="a Kafka client was created"):
        Publisher(settings, check_topics=False)
