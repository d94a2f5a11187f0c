"""Header names the framework reads and writes, and the rules for carrying them forward.

Every event carries an ``event-id``. Outputs get a *deterministic* id derived from their input's
id, the stage and the output's position, so an input that is redelivered (at-least-once) yields
outputs with the same ids and downstream dedupe recognises them as duplicates.
``correlation-id`` and the W3C trace headers are copied from input to outputs unchanged, unless
a hook's ``output_headers`` gives its own (a tracer: its process span's ``traceparent``).

Ids of records from other producers: a record without an ``event-id`` header is given uuid5 of
its coordinates by the first stage that meets it, and every copy that stage makes (retry copy,
dead letter, and so a replay) carries that id as its ``event-id`` header, so the idempotency
store recognises the event across the hop. Header values are bytes and may come from any
producer: an id that is not UTF-8 text (a raw 16-byte UUID, as Java producers often write) is
read as bytes (``id_text``), never decoded blindly.
"""

from __future__ import annotations

import binascii
import hashlib
import operator
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipeline.ports import RawRecord

EVENT_ID = "event-id"
CORRELATION_ID = "correlation-id"
# On every output: the event-id of the input it was derived from (its job's parent), so a
# chain can be followed back one hop at a time; correlation-id names the chain's first event.
PARENT_ID = "parent-id"
TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
# Request-reply (pipeline.reply): a request names the topic its reply goes to; the reply names
# the request's event id. Not propagated: only the stage that reads the request answers it.
REPLY_TO = "reply-to"
IN_REPLY_TO = "in-reply-to"
# On an error reply (no value): why the stage dead-lettered the request, "Type: message".
REPLY_ERROR = "reply-error"
PROPAGATED = (CORRELATION_ID, TRACEPARENT, TRACESTATE)

Headers = dict[str, bytes]
HeaderList = list[tuple[str, bytes | None]]
# Copied per id: cheaper than blake2b(seed, digest_size=16), whose keyword is parsed each call.
_BLAKE2B_16 = hashlib.blake2b(digest_size=16)
_hexlify = binascii.hexlify
# 32 hex digits as 8-4-4-4-12 in one C call each (slices made once): a % format of five slices
# costs about 1.5k instructions more, once per output.
_UUID_GROUPS = operator.itemgetter(
    slice(8), slice(8, 12), slice(12, 16), slice(16, 20), slice(20, 32)
)
_dash_join = b"-".join


def new_event_id() -> str:
    return str(uuid.uuid4())


def derived_event_id(parent_id: str, stage: str, index: int) -> str:
    """A UUID-shaped id that depends only on its inputs (a BLAKE2b digest: ~1 µs, where uuid5
    costs several; this runs once per output on the hot path)."""
    return derived_id(f"{parent_id}/{stage}/{index}".encode())


def derived_id(seed: bytes) -> str:
    """``derived_event_id`` from its seed, ``b"<parent id>/<stage>/<index>"``."""
    return derived_id_bytes(seed).decode()


def derived_id_bytes(seed: bytes) -> bytes:
    """``derived_id`` as the header value: the hot path builds the seed from the parent's header
    bytes and writes the id as bytes, decoding and encoding nothing."""
    h = _BLAKE2B_16.copy()
    h.update(seed)
    return _dash_join(_UUID_GROUPS(_hexlify(h.digest())))


def event_id_of(raw: Sequence[tuple[str, bytes | None]] | None, coordinates: str) -> str:
    """The ``event-id`` header as text, or for records from producers that set none, a stable
    id derived from the record's coordinates (the same on every redelivery). Never raises."""
    return header_event_id(raw) or id_from_coordinates(coordinates)


def header_event_id(raw: Sequence[tuple[str, bytes | None]] | None) -> str | None:
    """The last non-empty ``event-id`` header as text (the last one, as outputs derive their
    ids from it), or None."""
    found = None
    for key, value in raw or ():
        if key == EVENT_ID and value:
            found = value
    return None if found is None else id_text(found)


def id_text(value: bytes) -> str:
    """An id header's bytes as text: UTF-8 text as it is; other bytes (and text with a NUL,
    which no SQL text column holds) as binary: 16 bytes as the UUID they encode (big-endian,
    as Java's ``UUID`` writes them), any other length as lowercase hex. Never raises."""
    try:
        text = value.decode()
    except UnicodeDecodeError:
        return _binary_id(value)
    return text if "\x00" not in text else _binary_id(value)


def _binary_id(value: bytes) -> str:
    return str(uuid.UUID(bytes=value)) if len(value) == 16 else value.hex()


def has_event_id(raw: Sequence[tuple[str, bytes | None]] | None) -> bool:
    return any(key == EVENT_ID and value for key, value in raw or ())


def with_event_id(headers: HeaderList, record: RawRecord) -> HeaderList:
    """``headers`` of a copy (retry, dead letter) of ``record``, plus, if they carry no
    ``event-id``, the id the stage gave that record (``event_id_of``): the copy keeps its id."""
    if not has_event_id(headers):
        coordinates = f"{record.topic()}[{record.partition()}]@{record.offset()}"
        headers.append((EVENT_ID, id_from_coordinates_bytes(coordinates)))
    return headers


def id_from_coordinates(coordinates: str) -> str:
    """uuid5 of ``"kafka:<coordinates>"`` in the URL namespace, as text."""
    return id_from_coordinates_bytes(coordinates).decode()


# uuid5(NAMESPACE_URL, "kafka:" + coordinates) without the uuid module: SHA-1 over the namespace
# and the name, its first 16 bytes with the version (5) and variant (RFC 4122) bits set. The
# same ids as uuid.uuid5 (a unit test compares them; ids already in idempotency stores and
# dead-letter headers stay valid), at about a fifth of its cost: ``uuid.UUID`` builds an int
# and formats it back, and this runs once per record from a producer that sets no event-id.
_SHA1_KAFKA_URL = hashlib.sha1(uuid.NAMESPACE_URL.bytes + b"kafka:")
# The variant's hex digit: the high two bits of byte 8 become 10, so 0-f maps onto 8, 9, a, b.
_VARIANT = {
    c: b"89ab"[int(chr(c), 16) & 3 : (int(chr(c), 16) & 3) + 1] for c in b"0123456789abcdef"
}


def id_from_coordinates_bytes(coordinates: str) -> bytes:
    """``id_from_coordinates`` as header bytes."""
    h = _SHA1_KAFKA_URL.copy()
    h.update(coordinates.encode())
    return uuid5_text(h.digest())


def coordinates_prefix(topic: str, partition: int) -> hashlib._Hash:
    """The SHA-1 state after ``"kafka:<topic>[<partition>]@"``: what the ids of one partition's
    records share, hashed once per partition instead of formatted and hashed per record."""
    h = _SHA1_KAFKA_URL.copy()
    h.update(f"{topic}[{partition}]@".encode())
    return h


def id_at(prefix: hashlib._Hash, offset: int) -> bytes:
    """``id_from_coordinates_bytes`` of the record at ``offset`` of ``prefix``'s partition."""
    h = prefix.copy()
    h.update(b"%d" % offset)  # the same digits as str(offset)
    return uuid5_text(h.digest())


# The 8-4-4-4-12 groups of a SHA-1 digest's hex, with the version digit (12) and the variant
# digit (16) left out of their groups, for uuid5_text to put back changed.
_UUID5_PARTS = operator.itemgetter(
    slice(8), slice(8, 12), slice(13, 16), 16, slice(17, 20), slice(20, 32)
)


def uuid5_text(digest: bytes) -> bytes:
    """A uuid5 as text (bytes) from its SHA-1 digest: the first 16 bytes, version 5, variant
    RFC 4122. One join of five parts: a %-format of six slices costs about 0.5k more."""
    a, b, c, variant, d, e = _UUID5_PARTS(_hexlify(digest))
    return _dash_join((a, b, b"5" + c, _VARIANT[variant] + d, e))


def to_dict(raw: Sequence[tuple[str, bytes | None]] | None) -> Headers:
    """Kafka allows repeated header keys; the last one wins here, as in most frameworks."""
    if not raw:
        return {}
    return {k: v for k, v in raw if v is not None}


def encode(value: str | bytes) -> bytes:
    return value.encode() if isinstance(value, str) else value
