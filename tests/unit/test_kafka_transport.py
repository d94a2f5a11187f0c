"""KafkaTransport builds each client from the same librdkafka options the pipeline used before
the transport seam: the seam changes where clients are made, not how."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline import Settings
from pipeline.kafka import config as kconfig
from pipeline.kafka import transport as ktransport
from pipeline.kafka.transport import KafkaTransport
from pipeline.transport import Transport, kafka

SETTINGS = Settings(bootstrap_servers="127.0.0.1:1", producer_config={"linger.ms": 20})


@pytest.fixture
def configs(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dict[str, Any]]]:
    made: list[tuple[str, dict[str, Any]]] = []
    monkeypatch.setattr(ktransport, "KafkaConsumer", lambda c, *_: made.append(("consumer", c)))
    monkeypatch.setattr(ktransport, "KafkaProducer", lambda c: made.append(("producer", c)))
    return made


def test_the_default_transport_is_kafkas() -> None:
    transport: Transport = kafka(SETTINGS)
    assert isinstance(transport, KafkaTransport) and transport.settings is SETTINGS


def test_a_stage_consumer_and_a_retry_consumer_get_their_own_options(
    configs: list[tuple[str, dict[str, Any]]],
) -> None:
    transport = KafkaTransport(SETTINGS)
    transport.consumer("g", "g-w1")
    transport.consumer("g.retry", "g-w1-retry", retry=True)
    assert configs == [
        ("consumer", kconfig.consumer(SETTINGS, "g", "g-w1")),
        ("consumer", kconfig.retry_consumer(SETTINGS, "g.retry", "g-w1-retry")),
    ]
    assert configs[1][1]["fetch.wait.max.ms"] == 500


def test_a_transactional_producer_adds_its_id_and_timeout_under_the_users_options(
    configs: list[tuple[str, dict[str, Any]]],
) -> None:
    """transactional.id and transaction.timeout.ms come first, so producer_config still wins
    (the order Pipeline.runner used)."""
    transport = KafkaTransport(SETTINGS)
    transport.producer("publisher")
    transport.transactional_producer("g-w1", "g-w1", 10.0)
    user = KafkaTransport(SETTINGS.model_copy(update={"producer_config": {
        "transaction.timeout.ms": 30_000}}))  # fmt: skip
    user.transactional_producer("g-w1", "g-w1", 10.0)
    plain, transactional, overridden = (c for _, c in configs)
    assert plain == kconfig.producer(SETTINGS, "publisher")
    assert transactional == {
        "transactional.id": "g-w1",
        "transaction.timeout.ms": 10_000,
    } | kconfig.producer(SETTINGS, "g-w1")
    assert overridden["transaction.timeout.ms"] == 30_000
