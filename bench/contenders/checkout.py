"""The second workload (issue 15): the shape an independent benchmark measured us on.

- ``bench.Checkout``: seven fields, one a ``timestamp-millis`` (a ``datetime`` both ways), every
  field constrained in pydantic (lengths, a pattern, bounds), string-heavy (about 250 bytes
  framed, most of it an address and an item list);
- written by a plain confluent-kafka producer with *no headers at all* (``load.prefill`` with
  ``headers=False``), as a Java service, Debezium or kcat would: the framework has to give each
  record its id from its coordinates, and RAW has nothing to do for that.

Like ``common``, this imports only the standard library, fastavro and pydantic, so it runs in
both venvs.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from io import BytesIO
from random import Random
from typing import Annotated, Any, TypeVar

from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.schema import fingerprint, to_parsing_canonical_form
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

from bench.contenders.common import FX, SCHEMAS_DIR

SCHEMA = parse_schema(json.loads((SCHEMAS_DIR / "bench" / "Checkout.avsc").read_text()))
HEADER = b"\xc3\x01" + bytes.fromhex(fingerprint(to_parsing_canonical_form(SCHEMA), "CRC-64-AVRO"))

# The constrained field types, shared by RAW's model here and OURS' Event (``ours.Checkout``).
OrderId = Annotated[str, StringConstraints(min_length=8, max_length=64)]
Email = Annotated[str, StringConstraints(max_length=254, pattern=r"^[^@\s]+@[^@\s]+\.[a-z]+$")]
Amount = Annotated[float, Field(gt=0, le=1_000_000)]
Currency = Annotated[str, StringConstraints(min_length=3, max_length=3, pattern=r"^[A-Z]{3}$")]
Address = Annotated[str, StringConstraints(min_length=1, max_length=512)]
Items = Annotated[str, StringConstraints(min_length=1, max_length=2048)]


class Checkout(BaseModel):
    """Same fields, constraints and config as the pipeline.Event the OURS stage uses."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    order_id: OrderId
    customer_email: Email
    placed_at: AwareDatetime
    amount: Amount
    currency: Currency
    shipping_address: Address
    items: Items


M = TypeVar("M", bound=BaseModel)


def transform(checkout: M) -> M:
    """The business logic of every contender on this workload: the amount in EUR, the e-mail
    normalised, the address upper-cased for the label printer."""
    c: Any = checkout
    return type(checkout)(
        order_id=c.order_id,
        customer_email=c.customer_email.lower(),
        placed_at=c.placed_at,
        amount=round(c.amount * FX.get(c.currency, 1.0), 2),
        currency="EUR",
        shipping_address=c.shipping_address.upper(),
        items=c.items,
    )


def decode(data: bytes) -> Checkout:
    if data[:10] != HEADER:
        raise ValueError("not a bench.Checkout in Avro single-object encoding")
    stream = BytesIO(data)
    stream.seek(10)
    record = schemaless_reader(stream, SCHEMA, None)
    if stream.tell() != len(data):
        raise ValueError("trailing bytes")
    return Checkout.model_validate(record)


def encode_record(record: dict[str, Any]) -> bytes:
    out = BytesIO()
    out.write(HEADER)
    schemaless_writer(out, SCHEMA, record)
    return out.getvalue()


def encode(checkout: BaseModel) -> bytes:
    return encode_record(checkout.__dict__)


_STREETS = ("Kungsgatan", "Rue de Rivoli", "Friedrichstraße", "Baker Street", "Main Street")
_CITIES = ("Stockholm 111 43, Sweden", "75001 Paris, France", "10117 Berlin, Germany",
           "London NW1 6XE, United Kingdom", "Springfield, IL 62701, USA")  # fmt: skip
_EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


def make_record(rng: Random) -> dict[str, Any]:
    """One input record (about 250 bytes framed); deterministic for a seeded ``rng``."""
    n_items = rng.randint(2, 6)
    items = ", ".join(
        f"{rng.randint(1, 9)} x sku-{rng.randrange(10**5):05d} ({rng.choice('SMLX')}, gift box)"
        for _ in range(n_items)
    )
    ms = rng.randrange(365 * 86_400_000)
    return {
        "order_id": f"ord-{rng.getrandbits(64):016x}",
        "customer_email": f"Customer.{rng.randrange(10**6):06d}@example.com",
        "placed_at": _EPOCH + timedelta(milliseconds=ms),
        "amount": round(rng.uniform(5, 5000), 2),
        "currency": rng.choice(tuple(FX)),
        "shipping_address": f"{rng.randint(1, 250)} {rng.choice(_STREETS)}, apartment "
        f"{rng.randint(1, 40)}, {rng.choice(_CITIES)}",
        "items": items,
    }
