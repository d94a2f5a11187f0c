"""Header names the framework reads and writes, and the rules for carrying them forward.

Every event carries an ``event-id``. Outputs get a *deterministic* id derived from their input's
id, the stage and the output's position, so an input that is redelivered (at-least-once) yields
outputs with the same ids and downstream dedupe recognises them as duplicates.
``correlation-id`` and the W3C trace headers are copied from input to outputs unchanged.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence

EVENT_ID = "event-id"
CORRELATION_ID = "correlation-id"
TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
PROPAGATED = (CORRELATION_ID, TRACEPARENT, TRACESTATE)

Headers = dict[str, bytes]
_blake2b = hashlib.blake2b


def new_event_id() -> str:
    return str(uuid.uuid4())


def derived_event_id(parent_id: str, stage: str, index: int) -> str:
    """A UUID-shaped id that depends only on its inputs (a BLAKE2b digest: ~1 µs, where uuid5
    costs several; this runs once per output on the hot path)."""
    return derived_id(f"{parent_id}/{stage}/{index}".encode())


def derived_id(seed: bytes) -> str:
    """``derived_event_id`` from its seed, ``b"<parent id>/<stage>/<index>"``: the hot path
    builds the seed from the parent's header bytes without decoding them."""
    h = _blake2b(seed, digest_size=16).hexdigest()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def event_id_of(raw: Sequence[tuple[str, bytes | None]] | None, coordinates: str) -> str:
    """The ``event-id`` header, or for records from producers that set none, a stable id
    derived from the record's coordinates (the same on every redelivery)."""
    return header_event_id(raw) or id_from_coordinates(coordinates)


def header_event_id(raw: Sequence[tuple[str, bytes | None]] | None) -> str | None:
    for key, value in raw or ():
        if key == EVENT_ID and value:
            return value.decode()
    return None


def id_from_coordinates(coordinates: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"kafka:{coordinates}"))


def to_dict(raw: Sequence[tuple[str, bytes | None]] | None) -> Headers:
    """Kafka allows repeated header keys; the last one wins here, as in most frameworks."""
    if not raw:
        return {}
    return {k: v for k, v in raw if v is not None}


def encode(value: str | bytes) -> bytes:
    return value.encode() if isinstance(value, str) else value
