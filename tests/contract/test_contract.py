"""One set of scenarios, run on the in-memory broker and on the real one: what a user's
in-memory test shows is what Kafka does."""

from __future__ import annotations

from typing import Any

from pipeline import headers
from tests.contract.conftest import Harness
from tests.contract.contract_stages import (
    CALLS,
    DEPENDENCY_UP,
    Answer,
    Audit,
    Billing,
    Flaky,
    Guarded,
)
from tests.hookkit import Recorder
from tests.integration.app_stages import PINGS, PONGS, SEEN, Ping


def test_every_event_comes_out_with_its_key_and_a_derived_event_id(harness: Harness) -> None:
    """Six pings through a stage come out as six pongs, each with its input's key and an
    event id derived from the input's."""
    with harness([Answer]) as t:
        sent = {
            f"p{n}": t.publish(PINGS, Ping(ping_id=f"p{n}", n=n), key=f"k{n}") for n in range(6)
        }
        t.run_until_idle()
        out = t.records(PONGS)
        pongs = t.outputs(PONGS)
    assert sorted(p.ping_id for p in pongs) == sorted(sent)
    by_key = {r.key: dict(r.headers) for r in out}
    for ping_id, record in sent.items():
        input_id = dict(record.headers)[headers.EVENT_ID].decode()
        derived = headers.derived_event_id(input_id, "answer", 0)
        assert by_key[record.key][headers.EVENT_ID].decode() == derived, ping_id


def test_every_group_reading_a_topic_gets_every_event(harness: Harness) -> None:
    """Two stages in two groups on one input each handle every event (fan-out)."""
    with harness([Audit, Billing]) as t:
        for n in range(4):
            t.publish(PINGS, Ping(ping_id=f"p{n}", n=n), key=f"k{n}")
        t.run_until_idle()
        seen = sorted((s.stage, s.ping_id) for s in t.outputs(SEEN))
    assert seen == sorted((stage, f"p{n}") for stage in ("audit", "billing") for n in range(4))


def test_a_poison_event_is_dead_lettered_with_its_bytes_and_error_headers(
    harness: Harness,
) -> None:
    """An event the handler cannot process goes to the stage's DLQ byte for byte, with the
    dlq-* headers naming where it came from and why; the others are not held up."""
    with harness([Answer]) as t:
        poison = t.publish(PINGS, Ping(ping_id="poison", n=0), key="k")
        t.publish(PINGS, Ping(ping_id="fine", n=1), key="k")
        t.run_until_idle()
        [dead] = t.dead_letters(Answer)
        pongs = t.outputs(PONGS)
    assert [p.ping_id for p in pongs] == ["fine"]
    assert (dead.record.key, dead.record.value) == (poison.key, poison.value)
    failure = dead.failure
    assert failure.original_coordinates == poison.coordinates
    assert failure.exception_type == "builtins.ValueError"
    assert failure.exception_message == "cannot answer poison"
    assert failure.attempts == 1
    assert failure.stage == "answer"


def test_offsets_are_committed_up_to_the_end_once_outputs_are_acknowledged(
    harness: Harness,
) -> None:
    """When the stage is idle its group's committed offsets equal the input's end offsets,
    and every output is in its topic."""
    with harness([Answer]) as t:
        for n in range(5):
            t.publish(PINGS, Ping(ping_id=f"p{n}", n=n), key=f"k{n}")
        t.run_until_idle()
        assert t.lag(Answer) == (5, 0)
        assert len(t.records(PONGS)) == 5


def test_events_a_crashed_worker_had_not_committed_are_handled_again(harness: Harness) -> None:
    """A worker that dies after handling but before committing leaves its events to the next
    one, which handles them again: nothing is lost (at-least-once)."""
    with harness([Answer], commits=False) as t:
        for n in range(3):
            t.publish(PINGS, Ping(ping_id=f"p{n}", n=n), key=f"k{n}")
        t.run_until(lambda: sum(CALLS.values()) == 3, what="handled once")
        t.crash(Answer)
        t.run_until(lambda: sum(CALLS.values()) == 6, what="handled again")
    assert dict(CALLS) == {f"p{n}": 2 for n in range(3)}


def test_a_failed_event_is_retried_from_its_retry_tier(harness: Harness) -> None:
    """A transient failure sends the event to the first retry tier; it is handled again once
    due and comes out, with nothing dead-lettered."""
    with harness([Flaky]) as t:
        t.publish(PINGS, Ping(ping_id="p0", n=0), key="k")
        t.run_until_idle(timeout_s=60)
        pongs = t.outputs(PONGS)
        dead = t.dead_letters(Flaky)
    assert [p.ping_id for p in pongs] == ["p0"]
    assert dead == []
    assert CALLS["p0"] == 2


def test_an_open_breaker_holds_the_event_until_the_probe_succeeds(harness: Harness) -> None:
    """The failure that opens the breaker does not spend the event: after the cooldown the
    probe handles it, and nothing is dead-lettered."""
    DEPENDENCY_UP[0] = False
    with harness([Guarded]) as t:
        t.publish(PINGS, Ping(ping_id="p0", n=0), key="k")
        t.run_until_idle(timeout_s=60)
        pongs = t.outputs(PONGS)
        dead = t.dead_letters(Guarded)
    assert [p.ping_id for p in pongs] == ["p0"]
    assert dead == []
    assert CALLS["p0"] == 2


def _at(record: Any) -> str:
    return f"{record.topic}[{record.partition}]@{record.offset}"


def test_hooks_hear_each_outcome_once_it_is_final(harness: Harness) -> None:
    """A hook hears the success, its completion once the output is acknowledged, the poison
    event's failure and then its dead letter (once the broker has it), and the commit."""
    rec = Recorder()
    with harness([Answer], hooks=[rec]) as t:
        poison = t.publish(PINGS, Ping(ping_id="poison", n=0), key="k")
        fine = t.publish(PINGS, Ping(ping_id="fine", n=1), key="k")
        t.run_until_idle()
    assert rec.of("failed") == [("failed", "answer", _at(poison), "ValueError", 1, False)]
    assert rec.of("dead_lettered") == [("dead_lettered", "answer", _at(poison), "ValueError")]
    assert rec.of("succeeded") == [("succeeded", "answer", _at(fine), 1)]
    assert rec.of("completed") == [("completed", "answer", _at(fine))]
    names = rec.names()
    assert names.index("failed") < names.index("dead_lettered")
    assert names.index("succeeded") < names.index("completed")
    committed = [c[2].get((fine.topic, fine.partition)) for c in rec.of("commit")]
    assert fine.offset + 1 in committed


def test_hooks_hear_a_retry_once_its_copy_is_acknowledged(harness: Harness) -> None:
    rec = Recorder()
    with harness([Flaky], hooks=[rec]) as t:
        sent = t.publish(PINGS, Ping(ping_id="p0", n=0), key="k")
        t.run_until_idle(timeout_s=60)
    assert rec.of("retrying") == [("retrying", "flaky", _at(sent), "ConnectionError", 1, 0)]
    assert rec.of("failed") == [("failed", "flaky", _at(sent), "ConnectionError", 1, True)]
    names = rec.names()
    assert names.index("failed") < names.index("retrying") < names.index("succeeded")
    assert len(rec.of("completed")) == 1
