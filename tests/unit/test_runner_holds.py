"""The consume loop's seek-back bookkeeping, on the memory broker (no Kafka): a record is
never skipped when several holds and rewinds happen in one batch."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from pipeline import BreakerPolicy, Context, RetryPolicy, Settings, Stage
from pipeline.backoff import Backoff
from pipeline.guarantees import Idempotency
from pipeline.idempotency.base import IdempotencyStoreError
from pipeline.ports import RawRecord, TopicPartition
from pipeline.stop import StopEvent
from pipeline.testing import MemoryConsumer
from tests.integration.app_stages import PINGS, Ping
from tests.unit.memory_rig import SCHEMAS, Rig, key_for


class FailsOnN10AndN5(Stage):
    """Ordered, with a breaker that opens on the second failure; each ping fails only once."""

    consumes = PINGS
    group = "holds"
    retry = RetryPolicy(ordered=True, in_process_attempts=1, ordered_backoff=Backoff(5, jitter=0))
    breaker = BreakerPolicy(failure_threshold=2, cooldown_s=5)
    failed: set[int] = set()
    succeeded: list[int] = []

    def handle(self, event: Ping, ctx: Context) -> None:
        if event.n in (10, 5) and event.n not in self.failed:
            self.failed.add(event.n)
            raise ConnectionError("down")
        self.succeeded.append(event.n)


class Interleaving(MemoryConsumer):
    """Hands a batch out partition by partition in turn (p0, p1, p0, ...), as a librdkafka
    batch can mix partitions' fetches; the memory broker hands out one partition after the
    other."""

    def consume(self, max_records: int, timeout_s: float) -> Sequence[RawRecord]:
        records = super().consume(max_records, timeout_s)
        rank = {id(r): i for i, r in enumerate(records)}
        per_partition: dict[int, int] = {}
        order = []
        for r in records:
            order.append((per_partition.setdefault(r.partition(), 0), r.partition(), rank[id(r)]))
            per_partition[r.partition()] += 1
        return [records[i] for _, _, i in sorted(order)]


def test_a_breaker_hold_keeps_an_earlier_rewind_in_the_same_batch() -> None:
    """A@0 (n=10) fails (rewound to 0), then B@0 (n=5) fails and opens the breaker (everything
    held), then A@1 comes up in the same batch: A must still be re-read from 0, not from 1."""
    FailsOnN10AndN5.failed.clear()
    FailsOnN10AndN5.succeeded.clear()
    with Rig(FailsOnN10AndN5, partitions=2, consumer=Interleaving) as rig:
        a, b = (PINGS.name, 0), (PINGS.name, 1)
        rig.ping(10, key=key_for(0, 2))
        rig.ping(11, key=key_for(0, 2))
        rig.ping(5, key=key_for(1, 2))
        rig.step()
        assert FailsOnN10AndN5.failed == {10, 5} and FailsOnN10AndN5.succeeded == []
        assert rig.consumer.position(a) == 0, "A would be re-read from 1: offset 0 would be lost"
        assert rig.consumer.position(b) == 0
        assert set(rig.consumer.paused) == {a, b}
        rig.clock.advance(10)  # past the cooldown and the ordered backoff
        rig.step(5)
        assert sorted(FailsOnN10AndN5.succeeded) == [5, 10, 11], "each handled again, once"
        assert rig.committed() == {a: 2, b: 1}


class Remembers(Stage):
    consumes = PINGS
    group = "remembers"
    idempotency = Idempotency(cleanup_interval_s=1)

    def handle(self, event: Ping, ctx: Context) -> None: ...


def test_an_idempotency_cleanup_failure_is_logged_not_fatal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(schemas_dir=SCHEMAS, idempotency_url=f"sqlite:///{tmp_path}/ids.db")
    with Rig(Remembers, settings, store_url=settings.idempotency_url) as rig:
        rig.step()  # run() opened the store; this step commits, and cleans up for the first time
        dedupe = rig.runner._dedupe
        assert dedupe is not None

        def down(_older_than_s: float) -> int:
            raise IdempotencyStoreError("database is locked")

        monkeypatch.setattr(dedupe.store, "cleanup", down)
        rig.clock.advance(5)
        rig.step()  # commits on the interval, then tries the cleanup: must not raise
        assert dedupe.last_cleanup == rig.clock.monotonic()


def test_shutdown_gets_what_is_left_of_its_timeout_since_the_stop_request() -> None:
    """A step blocked in a client call when the stop came (25 s of a 30 s timeout): flushing
    and committing get the 5 s left, so the worker still exits within its timeout."""
    rig = Rig(FailsOnN10AndN5, shutdown_timeout_s=30.0)
    rig.step()  # running, parked before its next step
    stop = rig.runner.stop_event
    assert isinstance(stop, StopEvent)
    stop.set()
    assert stop.set_at is not None
    stopped = stop.set_at
    stop.set_at -= 25.0
    rig.close()
    took = time.monotonic() - stopped  # whatever this thread lost meanwhile, a loaded machine
    assert len(rig.producer.flushes) == 1 and 5.0 - took <= rig.producer.flushes[0] <= 5.0


def test_a_revoke_flushes_and_commits_within_half_the_shutdown_timeout() -> None:
    """Another member joins and takes one of the two partitions: the revoke (inside consume)
    flushes for half the shutdown timeout, then commits."""
    with Rig(FailsOnN10AndN5, partitions=2, shutdown_timeout_s=30.0) as rig:
        rig.ping(1, key=key_for(0, 2))
        rig.ping(2, key=key_for(1, 2))
        rig.step()
        assert len(rig.consumer.assignment) == 2
        other = rig.broker.consumer({"group.id": rig.plan.group})
        other.subscribe(rig.plan.subscriptions, _Ignoring())
        rig.step()  # the revoke of what moves to the other member
        assert rig.producer.flushes == [15.0]
        assert len(rig.consumer.assignment) < 2
        other.close()


class _Ignoring:
    def on_assign(self, partitions: list[TopicPartition]) -> None: ...
    def on_revoke(self, partitions: list[TopicPartition]) -> None: ...
    def on_lost(self, partitions: list[TopicPartition]) -> None: ...
