"""The contract suite's one fixture: ``harness``, a factory of ``TestPipeline`` on the
in-memory broker or on the real one, so every scenario runs on both.

The real-broker side asks for the session's ``kafka_bootstrap`` (which fails loudly in CI when
no broker can be had) and carries the ``integration`` marker."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import pytest

from pipeline import Settings, Stage
from pipeline.hooks import Hook
from pipeline.kafka import KafkaTransport
from pipeline.testing import TestPipeline
from tests.conftest import TEST_SCHEMAS
from tests.contract.contract_stages import CALLS, DEPENDENCY_UP
from tests.integration.kit import unique_settings

# On Kafka, an abandoned worker leaves its group once it has not polled for this long.
ABANDON_MS = "6000"


class Harness(Protocol):
    side: str

    def __call__(
        self, stages: Sequence[type[Stage]], *, commits: bool = True, hooks: Sequence[Hook] = ()
    ) -> TestPipeline:
        """``commits=False``: nothing is committed while the stages run. ``hooks``: the
        Pipeline's."""
        ...


class _Factory:
    def __init__(self, side: str, bootstrap: str | None) -> None:
        self.side = side
        self._bootstrap = bootstrap
        self.opened: list[TestPipeline] = []

    def __call__(
        self, stages: Sequence[type[Stage]], *, commits: bool = True, hooks: Sequence[Hook] = ()
    ) -> TestPipeline:
        values: dict[str, Any] = {"topic_partitions": 2}
        if self._bootstrap is None:
            t = TestPipeline(stages, Settings(schemas_dir=TEST_SCHEMAS, **values), hooks=hooks)
            if not commits:
                for plan in t.pipeline.plans:
                    t.broker.fail_commits(plan.group, 1_000_000)
        else:
            if not commits:
                values["commit_interval_s"] = 3600.0
            values["consumer_config"] = {
                "session.timeout.ms": ABANDON_MS,
                "max.poll.interval.ms": ABANDON_MS,
            }
            settings = unique_settings(self._bootstrap, **values)
            t = TestPipeline(stages, settings, transport=KafkaTransport(settings), hooks=hooks)
        self.opened.append(t)
        return t


@pytest.fixture(params=["memory", pytest.param("kafka", marks=pytest.mark.integration)])
def harness(request: pytest.FixtureRequest) -> Iterator[Harness]:
    CALLS.clear()
    DEPENDENCY_UP[0] = True
    bootstrap = request.getfixturevalue("kafka_bootstrap") if request.param == "kafka" else None
    factory = _Factory(request.param, bootstrap)
    yield factory
    for t in factory.opened:
        t.close()
