"""Shared fixtures. One Kafka broker per test session, chosen by tests/brokers.py:
KAFKA_BOOTSTRAP_SERVERS, else a Docker engine (testcontainers), else the local JVM broker."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TEST_SCHEMAS = ROOT / "tests" / "schemas"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "integration" in item.path.parts:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    from tests.brokers import acquire_kafka, broker_required

    try:
        with acquire_kafka() as bootstrap:
            yield bootstrap
    except Exception as exc:
        if broker_required():
            raise
        pytest.skip(f"no Kafka broker available: {exc}")


@pytest.fixture(autouse=True)
def _no_stray_pipeline_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # A developer's PIPELINE_* settings must not leak into tests.
    for name in list(os.environ):
        if name.startswith("PIPELINE_") and name not in (
            "PIPELINE_KAFKA_HOME",
            "PIPELINE_KAFKA_VERSION",
        ):
            monkeypatch.delenv(name)
