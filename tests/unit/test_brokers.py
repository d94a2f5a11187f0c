"""Which broker the test session picks (tests/brokers.py), without starting any."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

import pytest

from pipeline.errors import BrokerUnavailableError
from tests import brokers


@pytest.fixture
def picked(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Replaces both brokers with stand-ins that record which one was started."""
    started: list[str] = []

    def stand_in(name: str) -> Callable[[], AbstractContextManager[str]]:
        @contextmanager
        def start() -> Iterator[str]:
            started.append(name)
            yield f"{name}:9092"

        return start

    monkeypatch.delenv(brokers.ENV_BOOTSTRAP, raising=False)
    monkeypatch.setattr(brokers, "_docker_kafka", stand_in("docker"))
    monkeypatch.setattr(brokers, "_local_kafka", stand_in("local"))
    return started


def acquire() -> str:
    with brokers.acquire_kafka() as bootstrap:
        return bootstrap


@pytest.mark.parametrize(("engine", "expected"), [(True, "docker"), (False, "local")])
def test_by_default_a_docker_engine_that_answers_is_preferred(
    picked: list[str], monkeypatch: pytest.MonkeyPatch, engine: bool, expected: str
) -> None:
    """Without PIPELINE_TEST_BROKER the order is Docker if it answers, else the JVM broker."""
    monkeypatch.setattr(brokers, "docker_available", lambda: engine)
    assert acquire() == f"{expected}:9092"


def test_local_never_asks_docker(picked: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """PIPELINE_TEST_BROKER=local runs the JVM broker even where an engine answers."""
    monkeypatch.setenv(brokers.ENV_BROKER, "local")
    monkeypatch.setattr(brokers, "docker_available", lambda: pytest.fail("asked Docker"))
    assert acquire() == "local:9092"


def test_docker_without_an_engine_fails_instead_of_falling_back(
    picked: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """PIPELINE_TEST_BROKER=docker with no engine is an error, never the JVM broker in disguise."""
    monkeypatch.setenv(brokers.ENV_BROKER, "docker")
    monkeypatch.setattr(brokers, "docker_available", lambda: False)
    with pytest.raises(BrokerUnavailableError, match="no Docker engine answers"):
        acquire()
    assert picked == []


def test_an_unknown_choice_names_the_variable_and_the_choices(
    picked: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A typo in PIPELINE_TEST_BROKER is refused with what was expected."""
    monkeypatch.setenv(brokers.ENV_BROKER, "dokcer")
    with pytest.raises(BrokerUnavailableError, match=r"PIPELINE_TEST_BROKER='dokcer'.*docker"):
        acquire()


def test_a_configured_bootstrap_wins_over_any_choice(
    picked: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """KAFKA_BOOTSTRAP_SERVERS is used as is: no broker is started."""
    monkeypatch.setenv(brokers.ENV_BOOTSTRAP, "elsewhere:9092")
    monkeypatch.setenv(brokers.ENV_BROKER, "docker")
    assert acquire() == "elsewhere:9092"
    assert picked == []
