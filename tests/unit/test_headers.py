"""Reading event ids from header bytes any producer may have written, and keeping them on copies."""

from __future__ import annotations

import hashlib
import uuid

import pytest

from pipeline import headers as hdr
from pipeline.context import Context
from tests.unit.test_retry_and_dlq_headers import Rec

JAVA_UUID = uuid.UUID("f47ac10b-58cc-4372-a567-0e02b2c3d479")


def test_a_utf8_id_is_read_as_it_is() -> None:
    assert hdr.id_text(b"order-1") == "order-1"
    assert hdr.id_text("caf\u00e9-7".encode()) == "caf\u00e9-7"


def test_a_raw_16_byte_uuid_is_read_as_the_uuid_it_encodes() -> None:
    """Java producers often write ``UUID`` as its 16 big-endian bytes; not UTF-8 here."""
    assert hdr.id_text(JAVA_UUID.bytes) == str(JAVA_UUID)


@pytest.mark.parametrize("raw", [b"\xff\xfe\x00\x01", b"\xc3(", b"\x80" * 40])
def test_other_bytes_that_are_not_utf8_are_read_as_hex(raw: bytes) -> None:
    assert hdr.id_text(raw) == raw.hex()


def test_text_with_a_nul_counts_as_binary() -> None:
    """No SQL text column holds a NUL, so such an id could never reach the store as text."""
    assert hdr.id_text(b"ab\x00cd") == "6162006364"
    sixteen = bytes(range(16))  # valid UTF-8 (all below 0x80) but binary
    assert hdr.id_text(sixteen) == str(uuid.UUID(bytes=sixteen))


@pytest.mark.parametrize("raw", [b"\xff\xfe", JAVA_UUID.bytes, b"\x00"])
def test_an_id_that_is_not_utf8_never_raises(raw: bytes) -> None:
    assert hdr.event_id_of([("event-id", raw)], "orders[2]@41") == hdr.id_text(raw)


def test_a_record_without_an_id_gets_one_from_its_coordinates() -> None:
    expected = "3ab165ff-1023-53ef-8a21-8b1855b4c9b7"  # as before: stored ids must not change
    assert hdr.event_id_of(None, "orders[2]@41") == expected
    assert hdr.event_id_of([("event-id", b""), ("event-id", None)], "orders[2]@41") == expected


def test_of_repeated_ids_the_last_non_empty_one_counts_as_for_derived_output_ids() -> None:
    raw = [("event-id", b"a"), ("event-id", b"b"), ("event-id", b"")]
    assert hdr.event_id_of(raw, "orders[2]@41") == "b"


def test_derived_ids_of_utf8_ids_are_unchanged() -> None:
    assert hdr.derived_event_id("order-1", "charge", 0) == "4345c8c0-8fcc-99c2-4ded-add475d12c94"


def test_a_derived_id_as_header_bytes_is_the_derived_id_encoded() -> None:
    """The hot path writes the id as bytes; it must be the very id ``derived_event_id`` gives."""
    assert hdr.derived_id_bytes(b"order-1/charge/0") == b"4345c8c0-8fcc-99c2-4ded-add475d12c94"
    for seed in (b"", b"\xff\x00/s/1", "\u00e9v\u00e9nement/s/12".encode(), b"x" * 300):
        expected = str(uuid.UUID(bytes=hashlib.blake2b(seed, digest_size=16).digest()))
        assert hdr.derived_id_bytes(seed) == expected.encode()
        assert hdr.derived_id(seed) == expected


def test_a_copy_of_a_record_without_an_id_carries_the_id_it_was_given() -> None:
    rec = Rec(h=[("trace", b"abc")])
    headers = hdr.with_event_id(list(rec.h), rec)
    assert headers == [
        ("trace", b"abc"),
        ("event-id", hdr.id_from_coordinates("orders[2]@41").encode()),
    ]
    assert hdr.event_id_of(headers, "g.retry.1s[0]@9") == hdr.event_id_of(rec.h, "orders[2]@41")


@pytest.mark.parametrize("raw", [b"order-1", JAVA_UUID.bytes, b"\xff"])
def test_a_copy_of_a_record_with_an_id_keeps_it_byte_for_byte(raw: bytes) -> None:
    rec = Rec(h=[("event-id", raw), ("trace", b"abc")])
    assert hdr.with_event_id(list(rec.h), rec) == rec.h


def test_the_context_reads_binary_event_and_correlation_ids_without_raising() -> None:
    rec = Rec(h=[("event-id", JAVA_UUID.bytes), ("correlation-id", b"\xff\x01")])
    ctx = Context("st", rec, frozenset())
    assert (ctx.event_id, ctx.correlation_id) == (str(JAVA_UUID), "ff01")
    assert Context("st", Rec(h=[("event-id", b"\xfe")]), frozenset()).correlation_id == "fe"
