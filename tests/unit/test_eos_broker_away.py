"""Exactly-once, in the loop: a transaction's commit that cannot finish while the broker is away
(a restart longer than the commit's timeout) holds every record instead of stopping the stage;
once the broker answers, the commit finishes and every input has exactly one output. Past
``transaction_retry_timeout_s`` the stage stops with an error naming it. On the memory broker
and its FakeClock: no Kafka, no sleeping."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from pipeline import Context, Settings, Stage
from pipeline.clock import FakeClock
from pipeline.errors import TransactionError
from pipeline.testing import TestPipeline
from pipeline.testing.producer import MemoryProducer
from tests.conftest import TEST_SCHEMAS
from tests.integration.app_stages import PINGS, PONGS, Ping, Pong

TIMED_OUT = "Timed out waiting for operation to finish, retry call to resume (_TIMED_OUT)"
AWAY = [False]


class Eos(Stage):
    consumes = PINGS
    emits = (PONGS,)
    guarantee = "exactly_once"
    handled: list[int] = []

    def handle(self, event: Ping, ctx: Context) -> None:
        Eos.handled.append(event.n)
        ctx.emit(PONGS, Pong(ping_id=event.ping_id, n=event.n, handled_by="eos"))


@pytest.fixture
def broker_away(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[bool]]:
    """While ``AWAY[0]``, a commit times out as librdkafka's does with the broker down: the
    transaction stays open (it goes on in the background) and calling again resumes it."""
    real = MemoryProducer.commit_transaction

    def commit_transaction(self: MemoryProducer, timeout_s: float) -> None:
        if AWAY[0]:
            raise TransactionError(f"commit_transaction: {TIMED_OUT}", code="_TIMED_OUT",
                                   retriable=True)  # fmt: skip
        real(self, timeout_s)

    monkeypatch.setattr(MemoryProducer, "commit_transaction", commit_transaction)
    AWAY[0] = False
    Eos.handled = []
    yield AWAY
    AWAY[0] = False


def pipeline(retry_timeout_s: float = 120.0) -> TestPipeline:
    settings = Settings(schemas_dir=TEST_SCHEMAS, topic_partitions=2,
                        transaction_retry_timeout_s=retry_timeout_s)  # fmt: skip
    return TestPipeline([Eos], settings)


def publish(t: TestPipeline, numbers: range) -> None:
    for n in numbers:
        t.publish(PINGS, Ping(ping_id=f"p{n}", n=n), key=f"k{n}")


def test_a_commit_waiting_for_the_broker_holds_the_records_then_finishes(
    broker_away: list[bool],
) -> None:
    with pipeline() as t:
        clock: Any = t.clock
        assert isinstance(clock, FakeClock)
        publish(t, range(5))
        broker_away[0] = True
        t.step()  # handled in a transaction whose commit times out: it stays pending
        assert sorted(Eos.handled) == list(range(5))
        publish(t, range(5, 10))
        for _ in range(20):  # 100 s of the broker being away: no crash, nothing handled
            clock.advance(5.0)
            t.step()
        assert sorted(Eos.handled) == list(range(5)), "handled with no transaction open"
        assert t.outputs(PONGS) == [], "visible before the transaction committed"
        broker_away[0] = False
        t.run_until_idle()
        assert sorted(p.n for p in t.outputs(PONGS)) == list(range(10)), "exactly once"
        assert sorted(Eos.handled) == list(range(10)), "the pending batch was handled again"


def test_past_the_bound_the_stage_stops_with_an_error_naming_it(
    broker_away: list[bool],
) -> None:
    t = pipeline(retry_timeout_s=30.0)
    clock: Any = t.clock
    publish(t, range(3))
    broker_away[0] = True
    t.step()
    with pytest.raises(TransactionError, match=r"transaction_retry_timeout_s=30"):
        for _ in range(20):
            clock.advance(5.0)
            t.step()
    broker_away[0] = False
    t.close()  # the error was raised from its step already
    assert sorted(Eos.handled) == [0, 1, 2]
