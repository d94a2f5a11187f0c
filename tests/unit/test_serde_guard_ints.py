"""The encode guard of integer fields: a value out of range is refused naming its field (a
nullable one too); values of other types, None and missing fields are left to fastavro."""

from __future__ import annotations

import json
from typing import Any

import pytest

from pipeline.serde.guard import OutOfRange, compile_guard
from pipeline.serde.schema import from_json

FLAT = {
    "type": "record",
    "name": "Flat",
    "namespace": "test",
    "fields": [
        {"name": "a", "type": "int"},
        {"name": "b", "type": "int"},
        {"name": "big", "type": "long"},
        {"name": "maybe", "type": ["null", "int"], "default": None},
        {"name": "text", "type": "string"},
    ],
}
ONE = {"type": "record", "name": "One", "namespace": "test",
       "fields": [{"name": "n", "type": "int"}]}  # fmt: skip
INT_MAX, LONG_MAX = 2**31 - 1, 2**63 - 1


def _guard(schema: dict[str, Any]) -> Any:
    guard = compile_guard(from_json(json.dumps(schema), "test"))
    assert guard is not None
    return guard


def _flat(**changes: Any) -> dict[str, Any]:
    return {"a": 1, "b": -2, "big": 3, "maybe": None, "text": "x", **changes}


def test_a_record_in_range_is_returned_as_it_is() -> None:
    record = _flat(a=INT_MAX, b=-(2**31), big=LONG_MAX, maybe=7)
    assert _guard(FLAT)(record) is record


@pytest.mark.parametrize(
    ("changes", "path", "avro_type"),
    [({"a": INT_MAX + 1}, "a", "int"), ({"b": -(2**31) - 1}, "b", "int"),
     ({"big": LONG_MAX + 1}, "big", "long"), ({"maybe": INT_MAX + 1}, "maybe", "int"),
     ({"a": None, "b": INT_MAX + 1}, "b", "int")],
)  # fmt: skip
def test_a_value_out_of_range_is_refused_naming_its_field(
    changes: dict[str, Any], path: str, avro_type: str
) -> None:
    with pytest.raises(OutOfRange) as caught:
        _guard(FLAT)(_flat(**changes))
    assert (caught.value.path, caught.value.avro_type) == (path, avro_type)


@pytest.mark.parametrize(
    "changes",
    [{"a": None}, {"a": "7"}, {"a": 1e20}, {"big": [1]}, {"a": True}],
)
def test_values_of_other_types_are_left_to_fastavro(changes: dict[str, Any]) -> None:
    record = _flat(**changes)
    assert _guard(FLAT)(record) is record


def test_a_missing_field_is_left_to_fastavro() -> None:
    record = _flat()
    del record["a"]
    assert _guard(FLAT)(record) is record


def test_a_record_with_one_integer_field_is_checked_too() -> None:
    guard = _guard(ONE)
    assert guard({"n": INT_MAX}) == {"n": INT_MAX}
    with pytest.raises(OutOfRange, match="int"):
        guard({"n": INT_MAX + 1})


REQUIRED = {"type": "record", "name": "Req", "namespace": "test", "fields": [
    {"name": "a", "type": "int"}, {"name": "big", "type": "long"},
    {"name": "b", "type": {"type": "int"}},
    {"name": "maybe", "type": ["null", "long"]}]}  # fmt: skip


class _Index:
    """Not an int, but struct takes it (``__index__``): left to fastavro, as before."""

    def __init__(self, value: int) -> None:
        self.value = value

    def __index__(self) -> int:
        return self.value


@pytest.mark.parametrize(
    ("changes", "path", "avro_type"),
    [({"a": INT_MAX + 1}, "a", "int"), ({"big": -(2**63) - 1}, "big", "long"),
     ({"b": 2**40}, "b", "int"), ({"a": "x", "b": -(2**31) - 1}, "b", "int"),
     ({"maybe": LONG_MAX + 1}, "maybe", "long"), ({"a": True, "big": 2**64}, "big", "long")],
)  # fmt: skip
def test_required_integers_checked_together_still_name_the_field_out_of_range(
    changes: dict[str, Any], path: str, avro_type: str
) -> None:
    """Two or more integer fields that cannot be null are cleared in one step; one out of
    range is refused naming it, whatever the other fields hold."""
    record = {"a": 1, "big": 2, "b": 3, "maybe": None, **changes}
    with pytest.raises(OutOfRange) as caught:
        _guard(REQUIRED)(record)
    assert (caught.value.path, caught.value.avro_type) == (path, avro_type)


@pytest.mark.parametrize(
    "changes",
    [{}, {"a": INT_MAX, "big": -(2**63), "b": -(2**31)}, {"a": None}, {"b": 1.5},
     {"big": "7"}, {"a": False}, {"a": _Index(2**40)}, {"maybe": 5}],
)  # fmt: skip
def test_required_integers_in_range_or_of_other_types_pass_unchanged(
    changes: dict[str, Any],
) -> None:
    record = {"a": 1, "big": 2, "b": 3, "maybe": None, **changes}
    assert _guard(REQUIRED)(record) is record
    del record["big"]
    assert _guard(REQUIRED)(record) is record  # a missing field: fastavro's to refuse


STAMPED = {"type": "record", "name": "Stamped", "namespace": "test", "fields": [
    {"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
    {"name": "n", "type": "int"},
    {"name": "local",
     "type": {"type": "long", "logicalType": "local-timestamp-millis"}}]}  # fmt: skip


def test_a_naive_timestamp_field_is_taken_as_utc_in_a_copy_and_aware_ones_pass_as_they_are() -> (
    None
):
    from datetime import UTC, datetime, timedelta, timezone

    guard = _guard(STAMPED)
    local = datetime(2026, 12, 1, 12, 0)
    aware = {"at": datetime(2026, 12, 1, tzinfo=timezone(timedelta(hours=2))), "n": 1,
             "local": local}  # fmt: skip
    assert guard(aware) is aware
    naive = {"at": datetime(2026, 12, 1, 12, 0), "n": 1, "local": local}
    fixed = guard(naive)
    assert fixed == {"at": datetime(2026, 12, 1, 12, 0, tzinfo=UTC), "n": 1, "local": local}
    assert naive["at"].tzinfo is None  # the input is never changed
    missing = {"n": 1}
    assert guard(missing) is missing
    with pytest.raises(OutOfRange, match="int"):
        guard({"at": datetime(2026, 12, 1, 12, 0), "n": INT_MAX + 1})


def test_a_record_whose_only_checks_are_timestamps_fixes_naive_ones_in_a_copy() -> None:
    from datetime import UTC, datetime

    schema = {"type": "record", "name": "OnlyStamps", "namespace": "test", "fields": [
        {"name": "at", "type": {"type": "long", "logicalType": "timestamp-micros"}},
        {"name": "text", "type": "string"}]}  # fmt: skip
    guard = _guard(schema)
    aware = {"at": datetime(2026, 12, 1, tzinfo=UTC), "text": "x"}
    assert guard(aware) is aware
    naive = {"at": datetime(2026, 12, 1, 12, 0), "text": "x"}
    assert guard(naive) == {"at": datetime(2026, 12, 1, 12, 0, tzinfo=UTC), "text": "x"}
    assert naive["at"].tzinfo is None
    assert guard([1]) == [1]  # not a record: left to fastavro
