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
