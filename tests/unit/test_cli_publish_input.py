"""`pipeline publish` reads its JSON strictly and refuses values Avro cannot hold: exit 2 and one
line naming the field, before anything connects."""

from __future__ import annotations

import json
from typing import Any

from tests.unit.test_cli_errors import cli

RESERVED = {"order_id": "o-1", "skus": ["sku-1"], "units": 3}


def publish(topic: str, event: dict[str, Any]) -> tuple[int, list[str]]:
    result = cli("publish", topic, json.dumps(event))
    return result.returncode, result.stderr.strip().splitlines()


def test_a_string_for_an_int_field_is_refused_not_converted() -> None:
    """A string "12" for the int field units is a mistake: exit 2, one line naming units."""
    code, lines = publish("orders.reservations", {**RESERVED, "units": "12"})
    assert code == 2
    assert lines == [
        "error: invalid StockReserved for orders.reservations: units: Input should be a valid "
        "integer"
    ]


def test_an_int_outside_the_avro_int_range_is_refused_naming_the_field() -> None:
    """units: 99999999999 passes the model but not Avro's 32-bit int: exit 2, one line."""
    code, lines = publish("orders.reservations", {**RESERVED, "units": 99999999999})
    assert code == 2
    assert lines == [
        "error: cannot encode StockReserved as orders.StockReserved: field 'units' does not fit "
        "an Avro int (32-bit signed)"
    ]


def test_a_nested_int_outside_its_range_is_named_by_its_path() -> None:
    """An array item's record field is named as items[1].quantity."""
    item = {"sku": "s", "quantity": 1, "unit_price_cents": 100}
    order = {
        "order_id": "o-1",
        "customer_id": "c-1",
        "email": "a@b.c",
        "items": [item, {**item, "quantity": 2**31}],
        "currency": "EUR",
        "placed_at": "2024-01-01T00:00:00Z",
    }
    code, lines = publish("orders.placed", order)
    assert code == 2
    assert len(lines) == 1 and "field 'items[1].quantity' does not fit an Avro int" in lines[0]


def test_every_invalid_field_is_reported_on_one_line() -> None:
    """Two bad fields: both named, still one line."""
    code, lines = publish("orders.reservations", {**RESERVED, "units": 1.5, "skus": "sku-1"})
    assert code == 2
    assert len(lines) == 1 and "units:" in lines[0] and "skus:" in lines[0]
