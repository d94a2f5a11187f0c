"""Stage declarations are checked when the class is defined and again, against the schemas,
when the pipeline is planned; every problem is reported with what to do about it."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline import (
    Context,
    DeclarationError,
    DuplicateGroupError,
    Event,
    RetryPolicy,
    Settings,
    Stage,
    Topic,
)
from pipeline.registry import load, plan
from pipeline.serde import SchemaCatalog
from pipeline.stage import deferred_field_checks

SCHEMAS = Path(__file__).resolve().parents[1] / "schemas"


class Ping(Event, schema="test.Ping"):
    ping_id: str
    n: int


class Unschema(Event, schema="test.DoesNotExist"):
    x: int


class WrongPing(Event, schema="test.Ping"):
    ping_id: str
    n: str


class Other(Event, schema="test.Pong"):
    ping_id: str
    n: int
    handled_by: str


PINGS = Topic("pings", Ping)


def _plan(*stages: type[Stage]) -> list[object]:
    return plan(stages, SchemaCatalog.load(SCHEMAS), Settings())  # type: ignore[return-value]


def test_a_stage_without_consumes_is_rejected() -> None:
    with pytest.raises(DeclarationError, match="set `consumes"):

        class NoInput(Stage):
            def handle(self, event: Ping, ctx: Context) -> None: ...


def test_emits_must_be_a_tuple_not_a_bare_topic() -> None:
    with pytest.raises(DeclarationError, match="note the comma"):

        class BareEmits(Stage):
            consumes = PINGS
            emits = PINGS  # type: ignore[assignment]

            def handle(self, event: Ping, ctx: Context) -> None: ...


def test_a_handler_with_the_wrong_signature_is_rejected() -> None:
    with pytest.raises(DeclarationError, match=r"handle must take \(self, event, ctx\)"):

        class OneArg(Stage):
            consumes = PINGS

            def handle(self, event: Ping) -> None:  # type: ignore[override]
                ...


def test_a_stage_without_handle_is_rejected() -> None:
    with pytest.raises(DeclarationError, match="implement"):

        class NoHandle(Stage):
            consumes = PINGS


def test_a_topic_key_must_be_a_model_field() -> None:
    with pytest.raises(DeclarationError, match="key field 'user'"):
        Topic("pings", Ping, key="user")


def test_topic_names_are_validated() -> None:
    with pytest.raises(DeclarationError, match="not valid"):
        Topic("bad topic!", Ping)


def test_group_and_name_are_derived_from_module_and_class() -> None:
    class TranscodeVideo(Stage):
        consumes = PINGS

        def handle(self, event: Ping, ctx: Context) -> None: ...

    assert TranscodeVideo.stage_name() == "transcode_video"
    assert TranscodeVideo.group_id() == "test_declarations.transcode_video"


def test_a_topic_whose_model_has_no_schema_is_a_startup_error() -> None:
    class Reads(Stage):
        consumes = Topic("things", Unschema)

        def handle(self, event: Unschema, ctx: Context) -> None: ...

    with pytest.raises(DeclarationError, match=r"topic 'things'.*test\.DoesNotExist"):
        _plan(Reads)


def test_a_model_that_disagrees_with_its_schema_is_a_startup_error() -> None:
    class Reads(Stage):
        consumes = Topic("pings", WrongPing)

        def handle(self, event: WrongPing, ctx: Context) -> None: ...

    with pytest.raises(DeclarationError, match="'n'"):
        _plan(Reads)


def test_two_stages_in_one_group_are_rejected() -> None:
    class A(Stage):
        consumes = PINGS
        group = "same"

        def handle(self, event: Ping, ctx: Context) -> None: ...

    class B(Stage):
        consumes = PINGS
        group = "same"

        def handle(self, event: Ping, ctx: Context) -> None: ...

    with pytest.raises(DuplicateGroupError, match="share group 'same'"):
        _plan(A, B)


def test_a_handler_annotated_with_another_model_is_rejected() -> None:
    class Mistyped(Stage):
        consumes = PINGS

        def handle(self, event: Other, ctx: Context) -> None: ...

    with pytest.raises(DeclarationError, match="carry Ping"):
        _plan(Mistyped)


def test_all_problems_are_reported_together() -> None:
    class Bad1(Stage):
        consumes = Topic("a", Unschema)
        group = "g"

        def handle(self, event: Unschema, ctx: Context) -> None: ...

    class Bad2(Stage):
        consumes = Topic("b", WrongPing)
        group = "g"

        def handle(self, event: WrongPing, ctx: Context) -> None: ...

    with pytest.raises(DeclarationError) as info:
        _plan(Bad1, Bad2)
    message = str(info.value)
    assert "topic 'a'" in message and "topic 'b'" in message and "share group" in message


def test_a_key_typo_found_while_importing_is_reported_with_the_schema_problems() -> None:
    """While registry imports a module, a Topic's bad key field is kept, not raised, so the
    plan reports it together with an unknown schema elsewhere in the module."""
    with deferred_field_checks():
        typo = Topic("pings", Ping, key="pingid", id_field="uid")
        unknown = Topic("a", Unschema)
    assert len(typo.problems) == 2

    class Uses(Stage):
        consumes = (typo, unknown)

        def handle(self, event: Ping | Unschema, ctx: Context) -> None: ...

    with pytest.raises(DeclarationError) as info:
        _plan(Uses)
    message = str(info.value)
    assert "key field 'pingid'" in message and "id field 'uid'" in message
    assert "'test.DoesNotExist'" in message
    with pytest.raises(DeclarationError, match="key field 'pingid'"):
        typo.check()


def test_the_topic_prefix_applies_to_topics_groups_and_dlq() -> None:
    class P(Stage):
        consumes = PINGS
        group = "grp"

        def handle(self, event: Ping, ctx: Context) -> None: ...

    [p] = plan([P], SchemaCatalog.load(SCHEMAS), Settings(topic_prefix="staging."))
    assert list(p.inputs) == ["staging.pings"]
    assert (p.group, p.dlq_topic) == ("staging.grp", "staging.grp.dlq")


def test_load_finds_the_stages_list_or_a_named_stage() -> None:
    assert [s.__name__ for s in load("stages.orders")] == [
        "Payment",
        "Inventory",
        "Email",
        "Analytics",
    ]
    assert [s.__name__ for s in load("stages.video:Transcode")] == ["Transcode"]


def test_load_explains_a_module_without_a_stages_list() -> None:
    with pytest.raises(DeclarationError, match="has no STAGES list"):
        load("tests.unit.test_declarations")


def test_the_examples_plan_cleanly_against_the_real_schemas() -> None:
    root = Path(__file__).resolve().parents[2]
    plans = plan(
        load("stages.video,stages.orders"), SchemaCatalog.load(root / "schemas"), Settings()
    )
    groups = [p.group for p in plans]
    assert len(groups) == len(set(groups)) == 8
    order_groups = [p.group for p in plans if "orders.placed" in p.inputs]
    assert len(order_groups) == 4, "the order pipeline fans out to four groups"


def test_an_id_field_must_be_a_model_field() -> None:
    with pytest.raises(DeclarationError, match="id field 'uid'"):
        Topic("pings", Ping, id_field="uid")


@pytest.mark.parametrize(
    ("attrs", "is_async", "message"),
    [
        ({"concurrency": 0}, True, "an int from 1 to"),
        ({"concurrency": "8"}, True, "an int from 1 to"),
        ({"concurrency": True}, True, "an int from 1 to"),
        ({"concurrency": 4}, False, "needs `async def handle`"),
        ({"concurrency": 4, "guarantee": "exactly_once"}, True, "exactly_once"),
        ({"concurrency": 4, "retry": RetryPolicy(ordered=True)}, True, "ordered=True"),
    ],
)
def test_concurrency_is_validated(attrs: dict[str, object], is_async: bool, message: str) -> None:
    async def handle_async(self: Stage, event: Ping, ctx: Context) -> None: ...

    def handle_sync(self: Stage, event: Ping, ctx: Context) -> None: ...

    body = {"consumes": PINGS, "handle": handle_async if is_async else handle_sync, **attrs}
    with pytest.raises(DeclarationError, match=message):
        type("Concurrent", (Stage,), body)


def test_an_async_stage_may_set_concurrency() -> None:
    class Fetcher(Stage):
        consumes = PINGS
        concurrency = 64

        async def handle(self, event: Ping, ctx: Context) -> None: ...

    assert Fetcher.concurrency == 64
