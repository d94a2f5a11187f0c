"""The gates before the handler, on the memory broker with a fake clock (no Kafka, no
sleeping): a retry not yet due holds its partition until the due time, and each stage carries
only the gates for what it enables."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline import BreakerPolicy, Context, RetryPolicy, Settings, Stage
from pipeline import gates as g
from pipeline.clock import FakeClock
from pipeline.guarantees import Idempotency
from pipeline.retrytopics import Origin, retry_headers
from tests.integration.app_stages import PINGS, PONGS, Ping, Pong
from tests.unit.memory_rig import SCHEMAS, Rig
from tests.unit.records import record


class Echo(Stage):
    consumes = PINGS
    emits = (PONGS,)
    group = "echo"
    handled: list[int] = []

    def handle(self, event: Ping, ctx: Context) -> None:
        Echo.handled.append(event.n)
        ctx.emit(PONGS, Pong(ping_id=event.ping_id, n=event.n, handled_by="echo"))


class Plain(Echo):
    group = "plain"
    retry = RetryPolicy(tiers=())


class Everything(Echo):
    group = "everything"
    breaker = BreakerPolicy()
    idempotency = Idempotency()


def test_a_retry_not_yet_due_holds_its_partition_until_its_due_time_on_the_fake_clock() -> None:
    Echo.handled.clear()
    with Rig(Echo) as rig:
        # The 10 s tier: a copy's due time is clipped to its topic's delay after it was written.
        retry_tp = (rig.plan.retry_topics[1], 0)
        value = rig.encode(7)
        original = record(PINGS.name, 0, 7, value, headers=[("event-id", b"p7")])
        origin = Origin(PINGS.name, 0, 7, 0)
        due_ms = rig.clock.wall_ms() + 5_000
        headers = retry_headers(original, origin, 1, due_ms, rig.clock.wall_ms(), ValueError("x"))
        rig.publish(retry_tp[0], value, None, headers)

        rig.step()
        assert Echo.handled == [] and retry_tp in rig.consumer.paused
        assert rig.consumer.position(retry_tp) == 0, "the partition is re-read from the held record"

        rig.clock.advance(4.9)
        rig.step()
        assert retry_tp in rig.consumer.paused, "not due yet: still held"
        assert Echo.handled == []

        rig.clock.advance(0.2)
        rig.step()  # resumed: the seek back makes the broker hand the copy over again
        assert retry_tp not in rig.consumer.paused
        assert Echo.handled == [7] and [p.n for p in rig.pongs()] == [7]
        assert rig.committed() == {retry_tp: 1}


@pytest.mark.parametrize(
    ("stage", "expected"),
    [
        (Plain, [g.HeldInBatch, g.Refused]),
        (Echo, [g.HeldInBatch, g.RetryDue, g.Refused]),
        (Everything, [g.HeldInBatch, g.Deduplicate, g.RetryDue, g.Refused, g.Breaker]),
    ],
)
def test_a_stage_carries_only_the_gates_it_enables(
    stage: type[Stage], expected: list[type[g.Gate]]
) -> None:
    runner = Rig(stage).runner
    assert [type(gate) for gate in runner._parts.chain.gates] == expected
    assert [type(check.__self__) for check in runner._input_checks] == [
        kind for kind in expected if kind is not g.RetryDue
    ], "the stage's input records are not asked about retry due times"
    batch = [type(gate) for gate in runner._batch_gates]
    assert batch == ([g.Deduplicate] if stage is Everything else [])


def test_the_fake_clock_moves_both_kinds_of_time_and_never_back() -> None:
    clock = FakeClock(1_000.0, monotonic=5.0)
    clock.advance(1.5)
    assert (clock.monotonic(), clock.time(), clock.wall_ms()) == (6.5, 1_001.5, 1_001_500)
    with pytest.raises(ValueError):
        clock.advance(-1)


class Guarded(Echo):
    group = "guarded"
    retry = RetryPolicy(in_process_attempts=1)
    breaker = BreakerPolicy(failure_threshold=1, cooldown_s=5)

    def handle(self, event: Ping, ctx: Context) -> None:
        if event.n == 1:
            raise ConnectionError("remote down")
        super().handle(event, ctx)


def test_a_probe_that_cannot_be_decoded_is_dead_lettered_and_the_next_record_probes() -> None:
    """The failure that opens the breaker is held, so after the cooldown the partition is read
    again from it. Here retention deleted it meanwhile: the first record read, the probe, is
    one that cannot be decoded."""
    Echo.handled.clear()
    with Rig(Guarded) as rig:
        tp = (PINGS.name, 0)
        rig.ping(1)
        rig.publish(PINGS.name, b"not avro")
        rig.ping(2)
        rig.step()
        breaker = rig.runner._breaker
        assert breaker is not None and breaker.state.value == "open" and tp in rig.consumer.paused
        assert rig.consumer.position(tp) == 0, "held from the failure, nothing after it handled"
        assert Echo.handled == []
        rig.broker.delete_records(PINGS.name, {0: 1})
        rig.clock.advance(6)
        rig.step()
        assert breaker.state.value == "closed", "the second record probed, and succeeded"
        assert Echo.handled == [2] and [p.n for p in rig.pongs()] == [2]
        assert [r.value() for r in rig.records(rig.plan.dlq_topic)] == [b"not avro"]
        assert rig.committed() == {tp: 3}


class Remembering(Echo):
    group = "remembering"
    retry = RetryPolicy(in_process_attempts=1)
    idempotency = Idempotency()

    def handle(self, event: Ping, ctx: Context) -> None:
        if event.n == 1:
            raise ConnectionError("first delivery fails")
        super().handle(event, ctx)


def test_only_a_success_marks_an_event_done_not_its_retry_copy(tmp_path: Path) -> None:
    """The token is begun (with the event id) before the handler: a failure sent to a retry
    topic must not record the id as done, or the retry copy would be dropped as a duplicate."""
    settings = Settings(schemas_dir=SCHEMAS, idempotency_url=f"sqlite:///{tmp_path}/ids.db")
    with Rig(Remembering, settings, store_url=settings.idempotency_url,
             commit_interval_s=60) as rig:  # fmt: skip
        rig.ping(1)
        rig.ping(2)
        rig.step()
        assert rig.copies(rig.plan.retry_topics[0]) == [1]
        assert [p.n for p in rig.pongs()] == [2]
        rig.runner._tracker.committable()
        assert rig.runner._tracker.take_finished_ids() == ["p2"]
