"""Topics of different shapes go to the broker in one CreateTopics request, and a pipeline
creates its stages' topics and its schema store's together (issue 15: the time to the first
output). Stand-ins for the AdminClient and the in-memory transport; no broker, no sleeping."""

from __future__ import annotations

from concurrent.futures import Future
from typing import Any

import pytest

from pipeline import Event, Stage, Topic
from pipeline.app import Pipeline
from pipeline.config import Settings
from pipeline.kafka import admin
from pipeline.kafka.schema_topic import SchemaTopic
from pipeline.ports import TopicSpec
from pipeline.testing import MemoryBroker, MemoryTransport
from tests.unit.test_admin_visible import Propagating, _admin


class Recording(Propagating):
    """Propagating at once, keeping every CreateTopics request it was sent."""

    def __init__(self, existing: tuple[str, ...] = ()) -> None:
        super().__init__([0.0], listed_from=1, led_from=1)
        self.created += list(existing)
        self.requests: list[list[Any]] = []

    def create_topics(self, new: list[Any], operation_timeout: float) -> dict[str, Future[None]]:
        self.requests.append(list(new))
        return super().create_topics(new, operation_timeout)


def test_topics_of_different_shapes_are_created_in_one_request_each_with_its_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Plain names take the call's partitions and configs; a TopicSpec its own (on top of the
    settings' topic configs); one request holds them all, the first mention of a name wins,
    and a topic that exists is not asked for."""
    inner = Recording(existing=("t.old",))
    client = _admin(monkeypatch, inner)
    spec = TopicSpec("t.compact", 1, (("cleanup.policy", "compact"),))
    created = client.create(["t.a", spec, "t.old", "t.a", TopicSpec("t.b")], partitions=3)
    assert created == ["t.a", "t.compact", "t.b"]
    assert len(inner.requests) == 1
    shapes = {n.topic: (n.num_partitions, n.config) for n in inner.requests[0]}
    assert shapes == {
        "t.a": (3, {}),
        "t.compact": (1, {"cleanup.policy": "compact"}),
        "t.b": (Settings().topic_partitions, {}),
    }


def test_ensure_with_creation_off_names_a_missing_spec_topic_too(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``ensure`` without creation reports every missing topic, TopicSpecs by their names."""
    from pipeline.errors import TopicNotFoundError

    inner = Recording(existing=("t.a",))
    monkeypatch.setattr(admin, "_clock", lambda: 0.0)
    client = admin.KafkaAdmin(Settings(bootstrap_servers="127.0.0.1:1", create_topics=False))
    stand_in: Any = inner
    client._admin = stand_in
    with pytest.raises(TopicNotFoundError, match=r"t\.s, t\.z"):
        client.ensure(["t.a", "t.z", TopicSpec("t.s", 1)])
    assert inner.requests == []


class Ping(Event, schema="test.Ping"):
    ping_id: str
    n: int


PINGS = Topic("batched.pings", Ping, key="ping_id")
PONGS = Topic("batched.pongs", Ping, key="ping_id")


class Echo(Stage):
    consumes = PINGS
    emits = (PONGS,)

    def handle(self, event: Ping, ctx: Any) -> None:
        ctx.emit(PONGS, event)


class StoreWithTopic:
    """The in-memory schema store, plus the optional topics of ``SchemaStorePort``."""

    def __init__(self, inner: Any, calls: list[str]) -> None:
        self._inner, self.calls = inner, calls

    def topics(self) -> list[TopicSpec]:
        return [TopicSpec("store.schemas", 1, (("cleanup.policy", "compact"),))]

    def topics_ensured(self) -> None:
        self.calls.append("ensured")

    def publish(self, fingerprint: bytes, schema_json: str) -> None:
        self.calls.append("publish")
        self._inner.publish(fingerprint, schema_json)

    def reader(self) -> Any:
        return self._inner.reader()


class OneCallAdmin:
    def __init__(self, inner: Any, calls: list[str]) -> None:
        self._inner, self.calls = inner, calls

    def ensure(self, names: Any) -> list[str]:
        self.calls.append("ensure " + " ".join(getattr(n, "name", n) for n in names))
        return list(self._inner.ensure(names))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def _pipeline(calls: list[str], **settings: Any) -> tuple[Pipeline, MemoryBroker]:
    from tests.unit.test_transport_seam import SCHEMAS

    broker = MemoryBroker()
    transport = MemoryTransport(broker, Settings(schemas_dir=SCHEMAS, **settings))
    store = StoreWithTopic(transport.schema_store(), calls)
    vars(transport).update(schema_store=lambda: store)
    admin_ = transport.admin
    vars(transport).update(admin=lambda: OneCallAdmin(admin_(), calls))
    built = Pipeline.build(Settings(schemas_dir=SCHEMAS, **settings), [Echo], transport)
    return built, broker


def test_a_pipeline_creates_its_stages_topics_and_its_schema_stores_in_one_call() -> None:
    """One ``ensure`` names the stage's topics and the store's; the store hears that they
    exist before the first writer schema is announced; the store's topic has its own shape."""
    calls: list[str] = []
    pipeline, broker = _pipeline(calls)
    created = pipeline.ensure_topics()
    assert calls[0] == "ensure " + " ".join([*pipeline.topics(), "store.schemas"])
    assert calls[1:] == ["ensured", "publish"]
    assert created == [*pipeline.topics(), "store.schemas"]
    assert broker.topics()["store.schemas"].partitions == 1


def test_without_topic_creation_the_store_creates_its_own_topics_as_before() -> None:
    """With ``create_topics`` off nothing of the store's is asked for, nor told: ``publish``
    looks its topic up itself."""
    calls: list[str] = []
    pipeline, broker = _pipeline(calls, create_topics=False)
    broker.create(pipeline.topics())
    assert pipeline.ensure_topics() == []
    assert calls == ["ensure " + " ".join(pipeline.topics()), "publish"]


def test_the_schema_topics_producer_is_acknowledged_by_all_replicas_but_not_idempotent() -> None:
    """A schema record is keyed by its fingerprint in a compacted topic: a duplicate is
    harmless, and an idempotent producer's first send waits for a producer id. It never
    creates the topic through a metadata request (broker defaults, not compacted)."""
    settings = Settings(producer_config={"enable.idempotence": True})
    config = SchemaTopic(settings)._producer_config()
    assert config["enable.idempotence"] is False
    assert config["acks"] == "all"
    assert config["allow.auto.create.topics"] is False
    assert SchemaTopic(settings).topics() == [
        TopicSpec(settings.topic("_pipeline.schemas"), 1, (("cleanup.policy", "compact"),))
    ]


def test_a_new_admin_client_asks_without_waiting_out_the_connection_suppression(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """librdkafka holds a fresh client's first request for reconnect.backoff.ms / 2; the admin
    lowers it, and a user's client_config still wins."""
    from pipeline.kafka import config as kconfig

    assert admin.FIRST_REQUEST["reconnect.backoff.ms"] <= 20
    seen: dict[str, Any] = {}
    monkeypatch.setattr(kconfig, "create", lambda _f, conf, _role: seen.update(conf))
    admin.KafkaAdmin(Settings())
    assert seen["reconnect.backoff.ms"] == admin.FIRST_REQUEST["reconnect.backoff.ms"]
    admin.KafkaAdmin(Settings(client_config={"reconnect.backoff.ms": "250"}))
    assert seen["reconnect.backoff.ms"] == "250"
