"""Pipeline and Publisher get every client from their transport: given another one, they create
no Kafka client at all, and run on the ports it hands out."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline import Settings
from pipeline.app import TRANSACTION_TIMEOUT_S, Pipeline
from pipeline.dlq import StoredRecord
from pipeline.errors import TopicNotFoundError
from pipeline.ports import TopicInfo, Watermarks
from pipeline.publisher import Publisher
from pipeline.serde import SchemaResolver
from pipeline.transport import Transport
from tests.integration.app_stages import PINGS, PONGS, Echo, EosEcho, Ping
from tests.unit.fakes import FakeConsumer, FakeProducer, Record

SCHEMAS = Path(__file__).resolve().parents[1] / "schemas"


class AckingProducer(FakeProducer):
    """Acknowledges every record at once with where it was stored, as a broker would."""

    def produce(self, topic: str, value: Any, key: Any, headers: Any, on_delivery: Any) -> None:
        self.produced.append((topic, key))
        on_delivery(None, Record(topic, 0, len(self.produced) - 1, value, key))


class RecordingAdmin:
    def __init__(self, calls: list[tuple[Any, ...]], existing: set[str]) -> None:
        self._calls = calls
        self.existing = existing

    def topics(self) -> dict[str, TopicInfo]:
        self._calls.append(("admin.topics",))
        return {name: TopicInfo(name, 1) for name in self.existing}

    def create(self, names: list[str], partitions: int | None = None) -> list[str]:
        self._calls.append(("admin.create", tuple(names)))
        created = [n for n in names if n not in self.existing]
        self.existing.update(created)
        return created

    def ensure(self, names: list[str]) -> list[str]:
        self._calls.append(("admin.ensure", tuple(names)))
        return self.create(names)


class RecordingSchemas:
    def __init__(self, calls: list[tuple[Any, ...]]) -> None:
        self._calls = calls
        self.published: dict[bytes, str] = {}

    def publish(self, fingerprint: bytes, schema_json: str) -> None:
        self._calls.append(("schemas.publish", fingerprint))
        self.published[fingerprint] = schema_json

    def reader(self) -> SchemaResolver:
        return self.published.get


class RecordingTransport:
    """Hands out the fakes of ``tests.unit.fakes`` and records what was asked of it."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.consumers: list[FakeConsumer] = []
        self.producers: list[FakeProducer] = []
        self.existing: set[str] = set()
        self.schemas = RecordingSchemas(self.calls)

    def check(self) -> None:
        self.calls.append(("check",))

    def consumer(self, group: str, client_id: str, *, retry: bool = False) -> FakeConsumer:
        self.calls.append(("consumer", group, client_id, retry))
        self.consumers.append(FakeConsumer())
        return self.consumers[-1]

    def producer(self, client_id: str) -> FakeProducer:
        self.calls.append(("producer", client_id))
        self.producers.append(AckingProducer())
        return self.producers[-1]

    def transactional_producer(
        self, client_id: str, transactional_id: str, transaction_timeout_s: float
    ) -> Any:
        self.calls.append(("transactional_producer", client_id, transactional_id,
                           transaction_timeout_s))  # fmt: skip
        self.producers.append(AckingProducer())
        return self.producers[-1]

    def admin(self) -> RecordingAdmin:
        return RecordingAdmin(self.calls, self.existing)

    def lag_monitor(self) -> Any:
        raise AssertionError("not used here")

    def topic_log(self) -> Any:
        return _NoTopicLog()

    def schema_store(self) -> RecordingSchemas:
        return self.schemas


class _NoTopicLog:
    def watermarks(self, topic: str) -> Watermarks:
        raise TopicNotFoundError(topic)

    def read(
        self, topic: str, *, partition: int | None = None, start_offset: int = 0
    ) -> Generator[StoredRecord, None, None]:
        yield from ()

    def delete_up_to(self, topic: str, marks: Watermarks) -> int:
        return 0


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
    transport = RecordingTransport()
    settings = Settings(schemas_dir=SCHEMAS)
    pipeline = Pipeline.build(settings, [Echo], transport=transport)
    plan = pipeline.plans[0]
    assert pipeline.ensure_topics() == pipeline.topics()
    runner = pipeline.runner(plan, worker_id="w1")

    client_id = f"{plan.group}-w1"
    assert transport.calls[0] == ("check",)
    assert ("admin.ensure", tuple(pipeline.topics())) in transport.calls
    assert ("schemas.publish", plan.outputs[PONGS.name][1].fingerprint) in transport.calls
    assert ("consumer", plan.group, client_id, False) in transport.calls
    assert plan.retry_topics, "Echo's default retry policy uses retry topics"
    assert ("consumer", f"{plan.group}.retry", f"{client_id}-retry", True) in transport.calls
    assert ("producer", client_id) in transport.calls

    main, producer = transport.consumers[0], transport.producers[0]
    tp = (PINGS.name, 0)
    value = pipeline.codec.encode(Ping(ping_id="p1", n=1), plan.inputs[PINGS.name], PINGS.name)
    runner.on_assign([tp])
    main.batches = [[Record(PINGS.name, 0, 7, value)]]
    runner.step()
    assert producer.produced == [(PONGS.name, None)]
    runner.on_revoke([tp])  # commits what is done, on the consumer the transport gave
    assert main.commits[-1] == {tp: 8}


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
    transport.existing.add(settings.topic(PINGS.name))
    with Publisher(settings, transport=transport) as publisher:
        where = publisher.publish(PINGS, Ping(ping_id="p1", n=1))
    assert where is not None and (where.topic, where.offset) == (PINGS.name, 0)
    assert transport.producers[0].produced == [(PINGS.name, None)]
    assert ("producer", "publisher") in transport.calls
    assert ("admin.topics",) in transport.calls
    assert [c[0] for c in transport.calls].count("schemas.publish") == 1


def test_a_publisher_refuses_a_topic_its_transport_does_not_have(no_kafka_clients: None) -> None:
    transport = RecordingTransport()
    publisher = Publisher(Settings(schemas_dir=SCHEMAS), transport=transport)
    with publisher, pytest.raises(TopicNotFoundError, match=r"test\.pings"):
        publisher.publish(PINGS, Ping(ping_id="p1", n=1))
    assert transport.producers[0].produced == []


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
