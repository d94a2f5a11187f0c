"""The hot path's optimisations keep their behaviour: each test pins what a faster form must
still do (issue 15). The speed itself is measured by ``make bench`` and ``bench.instructions``,
never here."""

from __future__ import annotations

import random
import uuid
from typing import Any

from pipeline import headers as hdr
from pipeline.offsets import Token
from pipeline.outputs import DeliveredThenCompleted, OutputWriter
from tests.unit.test_retry_and_dlq_headers import Rec


def test_the_id_of_a_record_without_event_id_is_uuid5_of_its_coordinates() -> None:
    """The fast form gives exactly uuid.uuid5's ids, so ids already written by earlier
    versions (idempotency stores, dead letters' event-id headers) stay the same."""
    rng = random.Random(15)
    samples = ["orders[0]@0", "orders[2]@41", "caf\u00e9.in[11]@9223372036854775807"]
    samples += [
        f"t-{rng.getrandbits(40):x}[{rng.randrange(1000)}]@{rng.randrange(10**15)}"
        for _ in range(2000)
    ]
    for coordinates in samples:
        expected = str(uuid.uuid5(uuid.NAMESPACE_URL, f"kafka:{coordinates}"))
        assert hdr.id_from_coordinates(coordinates) == expected
        assert hdr.id_from_coordinates_bytes(coordinates) == expected.encode()


def test_every_variant_digit_is_covered() -> None:
    """The variant's hex digit (8, 9, a or b) and the version digit (5) come out as uuid's,
    whatever the digest's byte there: all four variants appear among these samples."""
    seen = set()
    for n in range(200):
        text = hdr.id_from_coordinates(f"x[0]@{n}")
        assert uuid.UUID(text).version == 5 and uuid.UUID(text).variant == uuid.RFC_4122
        seen.add(text[19])
    assert seen == set("89ab")


def test_a_copy_of_a_record_without_an_id_gets_the_uuid5_of_its_coordinates() -> None:
    rec = Rec(h=[("trace", b"abc")])
    expected = str(uuid.uuid5(uuid.NAMESPACE_URL, "kafka:orders[2]@41")).encode()
    assert hdr.with_event_id(list(rec.h), rec)[-1] == ("event-id", expected)


def test_the_delivery_handler_of_a_record_is_its_token() -> None:
    """No object is made per record for its delivery reports (a closure was five GC-tracked
    objects: function, closure tuple, three cells); with on_completed hooks, one slotted one."""
    token, failed = Token(7, 2), []
    assert _writer(failed).callback(("t", 0), token, Rec()) is token  # type: ignore[arg-type]
    assert token.tp == ("t", 0) and token.refused is failed
    wrapped = _writer(failed, completed=lambda r: None).callback(("t", 0), Token(8, 1), Rec())  # type: ignore[arg-type]
    assert isinstance(wrapped, DeliveredThenCompleted) and not hasattr(wrapped, "__dict__")


def _writer(failed: list[Any], completed: Any = None) -> OutputWriter:
    writer = OutputWriter.__new__(OutputWriter)
    writer._failed, writer._on_completed = failed, completed
    return writer


def _delivered(token: Token, failed: list[Any]) -> Token:
    token.tp, token.refused = ("t", 0), failed
    return token


def test_each_acknowledgement_finishes_one_unit_and_never_goes_below_zero() -> None:
    token, failed = Token(7, 2), []
    handler = _delivered(token, failed)
    handler(None, None)
    assert token.outstanding == 1 and not token.done
    handler(None, None)
    assert token.done
    handler(None, None)  # a stray report: still zero
    assert token.outstanding == 0 and failed == []


def test_the_first_refused_delivery_fails_the_token_once() -> None:
    token, failed = Token(7, 3), []
    handler = _delivered(token, failed)
    handler("boom", "msg1")
    handler("boom again", "msg2")
    handler(None, None)
    assert token.failed and not token.done
    assert failed == [(("t", 0), token, "boom", "msg1", False)]


def test_completed_is_told_once_the_last_output_is_acknowledged() -> None:
    token, failed, completed = Token(7, 2), [], []
    rec: Any = Rec()
    handler = DeliveredThenCompleted(_delivered(token, failed), rec, completed.append)
    handler(None, None)
    assert completed == []
    handler(None, None)
    assert completed == [rec]


def test_completed_is_not_told_for_a_failed_or_cancelled_token() -> None:
    for spoil in ("failed", "cancelled"):
        token, completed = Token(7, 2), []
        handler = DeliveredThenCompleted(_delivered(token, []), Rec(), completed.append)  # type: ignore[arg-type]
        handler(None, None)
        setattr(token, spoil, True)
        handler(None, None)
        assert completed == [], spoil


class _Recorder:
    def __init__(self) -> None:
        self.sent: list[tuple[Any, ...]] = []

    def produce(self, topic: str, value: Any, key: Any, headers: Any, on_delivery: Any) -> None:
        self.sent.append((topic, value, key, headers, on_delivery))


def _producing(completed: Any = None) -> tuple[OutputWriter, _Recorder]:
    writer, producer = _writer([], completed), _Recorder()
    writer._stage, writer._physical, writer._suffixes = "st", {"out": "dev.out"}, []
    writer._prefixes = {}
    writer._producer, writer._output_headers = producer, None  # type: ignore[assignment]
    return writer, producer


def _ctx(outputs: list[Any]) -> Any:
    class Ctx:
        pass

    ctx = Ctx()
    ctx.outputs = outputs  # type: ignore[attr-defined]
    return ctx


def _outputs(*extra: list[tuple[str, bytes]]) -> list[Any]:
    from types import SimpleNamespace

    from pipeline.context import Output

    topic = SimpleNamespace(name="out")  # all the writer reads of it
    return [Output(topic, None, b"k%d" % i, headers) for i, headers in enumerate(extra)]  # type: ignore[arg-type]


def test_outputs_carry_derived_ids_the_parent_id_and_the_input_correlation_headers() -> None:
    """With the id derivation and header carrying inlined, each output still gets the id
    derived from its input's id, the stage and its index; the input's id as parent-id; the
    input's correlation and trace headers; then the headers given to emit, in that order."""
    writer, producer = _producing()
    headers = [("event-id", b"in-1"), ("correlation-id", b"c-9"), ("traceparent", b"00-ab"),
               ("other", b"x")]  # fmt: skip
    token = Token(41, 2)
    outputs = _outputs([], [("h", b"v")])
    writer.produce(Rec(h=headers), _ctx(outputs), [b"p0", b"p1"], ("orders", 2), token)  # type: ignore[arg-type]
    carried = [("correlation-id", b"c-9"), ("traceparent", b"00-ab")]
    assert producer.sent == [
        ("dev.out", b"p0", b"k0", [("event-id", hdr.derived_id_bytes(b"in-1/st/0")),
                                   ("parent-id", b"in-1"), *carried], token),
        ("dev.out", b"p1", b"k1", [("event-id", hdr.derived_id_bytes(b"in-1/st/1")),
                                   ("parent-id", b"in-1"), *carried, ("h", b"v")], token),
    ]  # fmt: skip
    assert token.tp == ("orders", 2)


def test_an_input_without_ids_gives_its_outputs_its_coordinates_id_as_parent_and_correlation() -> (
    None
):
    completed: list[Any] = []
    writer, producer = _producing(completed.append)
    writer.produce(Rec(h=[]), _ctx(_outputs([])), [b"p0"], ("orders", 2), Token(41, 1))  # type: ignore[arg-type]
    ((_, _, _, sent, on_delivery),) = producer.sent
    parent = hdr.id_from_coordinates_bytes("orders[2]@41")
    assert sent == [("event-id", hdr.derived_id_bytes(parent + b"/st/0")), ("parent-id", parent),
                    ("correlation-id", parent)]  # fmt: skip
    assert isinstance(on_delivery, DeliveredThenCompleted)


def test_outputs_of_an_input_without_ids_keep_the_ids_earlier_versions_gave_them() -> None:
    """The produce path's coordinates id (a hash state cached per partition) is uuid.uuid5 of
    the coordinates, and the outputs' derived ids are the very bytes earlier versions wrote
    (pinned literally): idempotency stores and dead letters already written still match."""
    writer, producer = _producing()
    inputs = [("orders", 2, 41), ("orders", 2, 42), ("orders", 0, 0), ("orders", 2, 10**12),
              ("caf\u00e9.in", 11, 2**63 - 1)]  # fmt: skip
    for topic, partition, offset in inputs:
        writer.produce(Rec(h=None), _ctx(_outputs([], [])), [b"p0", b"p1"], (topic, partition),  # type: ignore[arg-type]
                       Token(offset, 2))  # fmt: skip
    for n, (topic, partition, offset) in enumerate(inputs):
        expected = str(uuid.uuid5(uuid.NAMESPACE_URL, f"kafka:{topic}[{partition}]@{offset}"))
        for index in (0, 1):
            sent = dict(producer.sent[2 * n + index][3])
            assert sent["parent-id"] == sent["correlation-id"] == expected.encode()
            assert sent["event-id"] == hdr.derived_id_bytes(f"{expected}/st/{index}".encode())
    first = dict(producer.sent[0][3])
    assert first["parent-id"] == b"3ab165ff-1023-53ef-8a21-8b1855b4c9b7"
    assert first["event-id"] == b"6011508b-2088-cafb-07a2-bb7900a8fa4a"
    assert dict(producer.sent[1][3])["event-id"] == b"83e3b58e-96cd-6074-301b-6f50e5a0b2e4"


def test_the_id_at_an_offset_of_a_partition_is_uuid5_of_its_coordinates() -> None:
    rng = random.Random(10)
    for _ in range(500):
        topic, partition = f"t.{rng.getrandbits(30):x}", rng.randrange(1000)
        prefix, offset = hdr.coordinates_prefix(topic, partition), rng.randrange(10**15)
        expected = str(uuid.uuid5(uuid.NAMESPACE_URL, f"kafka:{topic}[{partition}]@{offset}"))
        assert hdr.id_at(prefix, offset) == expected.encode()
        assert hdr.id_at(prefix, offset) == expected.encode()  # the prefix is not consumed
