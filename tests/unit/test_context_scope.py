"""The Context the invoker builds per event (``Context.of`` a stage's shared ``Scope``) behaves
exactly as one built with the public constructor: the same stage name, allowed outputs, keys,
buffered outputs and store; emit's common case (no headers, delay or priority) buffers the same
Output as the general path."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.context import Context, Scope
from pipeline.errors import DeclarationError
from pipeline.events import Event
from pipeline.failures import RetryPolicy
from pipeline.invoke import Invoker
from pipeline.stage import Topic
from tests.unit.test_retry_and_dlq_headers import Rec


class Note(Event, schema="test.ScopeNote"):
    id: str
    text: str


KEYED = Topic("notes.keyed", Note, key="id")
PLAIN = Topic("notes.plain", Note)
ALLOWED = frozenset({KEYED.name, PLAIN.name})


def _both(rec: Rec) -> list[Context]:
    scope = Scope("st", ALLOWED, None, "g")
    return [Context("st", rec, ALLOWED, None, "g"), Context.of(scope, rec)]


@pytest.mark.parametrize("index", [0, 1])
def test_emit_buffers_the_same_outputs_either_way(index: int) -> None:
    ctx = _both(Rec())[index]
    note = Note(id="n-1", text="x")
    ctx.emit(KEYED, note)  # the key from the topic's key field
    ctx.emit(PLAIN, note)  # the input record's key
    ctx.emit(PLAIN, note, key="given", headers={"h": "v"})
    got = [(o.topic.name, o.event, o.key, o.headers, o.delay, o.lane, o.reply_to, o.due_ms)
           for o in ctx.outputs]  # fmt: skip
    assert got == [
        ("notes.keyed", note, b"n-1", [], None, 0, None, None),
        ("notes.plain", note, b"k", [], None, 0, None, None),
        ("notes.plain", note, b"given", [("h", b"v")], None, 0, None, None),
    ]
    assert ctx.stage == "st" and ctx.result_json is None and ctx.record.offset() == 41


@pytest.mark.parametrize("index", [0, 1])
def test_emit_refuses_a_topic_not_declared_and_a_wrong_model(index: int) -> None:
    ctx = _both(Rec())[index]
    with pytest.raises(DeclarationError, match="not in its `emits`"):
        ctx.emit(Topic("elsewhere", Note), Note(id="1", text=""))

    class Other(Event, schema="test.ScopeOther"):
        n: int

    with pytest.raises(DeclarationError, match="carries Note, not Other"):
        ctx.emit(PLAIN, Other(n=1))  # type: ignore[arg-type]
    assert ctx.outputs == []


def test_the_store_set_on_the_invoker_reaches_every_context() -> None:
    seen: list[Context] = []
    invoke = Invoker("st", lambda _e, ctx: seen.append(ctx), False, ALLOWED, RetryPolicy(), None)
    with pytest.raises(DeclarationError, match="no idempotency store"):
        invoke.call_sync(None, Rec()).transaction()

    class Store:
        def transaction(self, group: str, event_id: str) -> Any:
            return (group, event_id)

    invoke.store = Store()
    ctx = invoke.call_sync(None, Rec(h=[("event-id", b"e-1")]))
    assert ctx.transaction() == ("", "e-1") and ctx is seen[-1]
    assert isinstance(invoke.store, Store)


class Counted(Event, schema="test.ScopeCounted"):
    n: int


@pytest.mark.parametrize("index", [0, 1])
def test_a_key_field_that_is_not_text_is_keyed_by_its_text(index: int) -> None:
    topic = Topic("counted", Counted, key="n")
    ctx = [Context("st", Rec(), frozenset({"counted"})),
           Context.of(Scope("st", frozenset({"counted"})), Rec())][index]  # fmt: skip
    ctx.emit(topic, Counted(n=42))
    assert ctx.outputs[0].key == b"42"
