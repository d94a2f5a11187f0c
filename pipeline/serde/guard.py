"""Encode-time checks that fastavro's writer skips, compiled once per schema.

fastavro writes whatever it is given: an ``int`` field holding 99999999999 becomes a 6-byte
varint that Java readers reject, and a naive ``datetime`` in a ``timestamp-millis/micros`` field
is converted with the *process's* local time zone (``time.mktime``), so the same event means a
different instant on every host. fastavro's validator would catch the first, but it walks the
whole record and every field on each call. Instead ``compile_guard`` walks the schema once and
keeps only the fields that need a check:

- ``int`` must fit 32-bit and ``long`` 64-bit signed integers (in a union, the widest integer
  branch, unless the union also has a float or double branch to write it as); a value outside
  raises ``OutOfRange`` naming its path, e.g. ``video.width``, ``sizes[3]``, or ``labels{}``
  for a map value (map keys are data, so never shown);
- a naive ``datetime`` in a ``timestamp-millis/micros`` field is taken as UTC (aware values are
  written as the instant they are; ``local-timestamp-*`` fields keep naive values as they are).

The guard never mutates its input (for flat models that is the event's own ``__dict__``): a
record, list or map is copied only when a naive datetime inside it must be replaced. Values of
the wrong Python type are left for fastavro to refuse. A union with several branches that are
dicts in Python (records, maps), or several array branches, is not looked into below that level:
which branch fastavro picks depends on the data.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from operator import itemgetter
from typing import Any

from pipeline.serde.schema import AvroSchema, Definition

Check = Callable[[Any], Any]  # returns the value to write: the same object unless it was fixed

_RANGES = {"int": (-(2**31), 2**31 - 1), "long": (-(2**63), 2**63 - 1)}
_TIMESTAMPS = frozenset({"timestamp-millis", "timestamp-micros"})
_LOCAL_TIMESTAMPS = frozenset({"local-timestamp-millis", "local-timestamp-micros"})


class OutOfRange(ValueError):
    """An integer does not fit its Avro type. ``path`` is built as the error propagates up."""

    def __init__(self, avro_type: str, *segments: str) -> None:
        super().__init__(avro_type)
        self.avro_type = avro_type
        self.segments = list(segments)  # innermost first

    @property
    def path(self) -> str:
        out = ""
        for segment in reversed(self.segments):
            out += segment if segment[0] in "[{" or not out else "." + segment
        return out


def compile_guard(schema: AvroSchema) -> Check | None:
    """The check for ``schema``'s record (given a record dict, it returns the dict to write), or
    None when no field of the schema can need one."""
    return _Compiler(schema.named_types).compile(schema.full_name)


class _Compiler:
    def __init__(self, named: Mapping[str, Definition]) -> None:
        self._named = named
        # A record's check once built; while it is being built, a _Later (a reference from
        # inside the record itself, recursion, calls through it).
        self._records: dict[str, Check | None] = {}

    def compile(self, schema: Any) -> Check | None:
        """The check for values of ``schema``, or None when none of them can need one."""
        if isinstance(schema, str):
            if schema in _RANGES:
                return _int_check(schema)
            if schema not in self._named:
                return None
            schema = self._named[schema]
        if isinstance(schema, list):
            return self._union(schema)
        kind = schema.get("type")
        if kind in ("record", "error"):
            return self._record(schema)
        if kind == "array":
            return self._array(schema["items"])
        if kind == "map":
            values = self.compile(schema["values"])
            return None if values is None else _map_check(values)
        if schema.get("logicalType") in _TIMESTAMPS and kind == "long":
            return _as_utc
        return self.compile(kind) if kind in _RANGES else None

    def _record(self, schema: Definition) -> Check | None:
        name = schema["name"]
        if name in self._records:
            return self._records[name]
        later = self._records[name] = _Later()
        fields = _Fields()
        for schema_field in schema.get("fields", ()):
            fields.add(schema_field["name"], schema_field["type"], self)
        later.check = self._records[name] = _record_check(fields) if fields else None
        return later.check

    def _array(self, items: Any) -> Check | None:
        avro_type = _plain_int(items, optional=False)
        if avro_type is not None:
            return _int_array_check(avro_type)
        item_check = self.compile(items)
        return None if item_check is None else _array_check(item_check)

    def _union(self, branches: list[Any]) -> Check | None:
        resolved: list[Any] = [self._named.get(b, b) if isinstance(b, str) else b for b in branches]
        kinds = [b if isinstance(b, str) else b.get("type") for b in resolved]
        logical = {b.get("logicalType") for b in resolved if isinstance(b, dict)}
        checks: list[Check] = []
        widest = "long" if "long" in kinds else "int" if "int" in kinds else None
        if widest is not None and not {"float", "double"} & set(kinds):  # else written as one
            checks.append(_int_check(widest))
        if logical & _TIMESTAMPS and not logical & _LOCAL_TIMESTAMPS:
            checks.append(_as_utc)
        # One check per Python type: records and maps are both dicts. With several branches of
        # one type, which one fastavro writes depends on the data, so none is checked.
        for python_types in (("record", "error", "map"), ("array",)):
            candidates = [b for b, k in zip(resolved, kinds, strict=True) if k in python_types]
            check = self.compile(candidates[0]) if len(candidates) == 1 else None
            if check is not None:
                checks.append(check)
        if not checks:
            return None
        return checks[0] if len(checks) == 1 else _first_of(checks)


def _plain_int(schema: Any, optional: bool = True) -> str | None:
    """ "int" or "long" for a plain integer type (no logical type), or a nullable one, else None."""
    if optional and isinstance(schema, list) and len(schema) == 2 and "null" in schema:
        schema = schema[1] if schema[0] == "null" else schema[0]
    if isinstance(schema, dict) and "logicalType" not in schema:
        schema = schema.get("type")
    return schema if isinstance(schema, str) and schema in _RANGES else None


class _Later:
    """The check of a record still being compiled, for references to it from inside itself."""

    __slots__ = ("check",)

    def __init__(self) -> None:
        self.check: Check | None = None

    def __call__(self, value: Any) -> Any:
        return value if self.check is None else self.check(value)


# struct's codes for a 32-bit and a 64-bit signed integer: packing refuses anything out of range.
_PACK_CODES = {"int": "i", "long": "q"}


@dataclass(slots=True)
class _Fields:
    """A record's fields that need a check. Integers and timestamps (the common cases) are
    checked inline, by name: a call per field would cost more than the comparison."""

    required: list[tuple[str, str]] = field(default_factory=list)  # (name, "int" or "long")
    nullable: list[tuple[str, str]] = field(default_factory=list)  # the same, in a null union
    stamps: list[str] = field(default_factory=list)  # timestamp-millis/micros, not in a union
    others: list[tuple[str, Check]] = field(default_factory=list)

    def add(self, name: str, schema: Any, compiler: _Compiler) -> None:
        avro_type = _plain_int(schema)
        if avro_type is not None:
            required = _plain_int(schema, optional=False) is not None
            (self.required if required else self.nullable).append((name, avro_type))
            return
        check = compiler.compile(schema)
        if check is _as_utc and not isinstance(schema, list):
            self.stamps.append(name)
        elif check is not None:
            self.others.append((name, check))

    def __bool__(self) -> bool:
        return bool(self.required or self.nullable or self.stamps or self.others)


def _record_check(fields: _Fields) -> Check:
    """Checks the fields that need it; copies the record only if one of them was replaced.

    The integer fields that cannot be null are cleared all at once: one ``struct.pack`` of
    their values, which refuses any value out of its type's range or not an integer (or a
    missing field). Only then does the exact per-field check run, to name the field, or let a
    value of another type through for fastavro to refuse. A record with nothing else to check
    (the usual flat event) gets a check of that alone."""
    bulk = _bulk(fields.required)
    if bulk is not None and not (fields.nullable or fields.stamps or fields.others):
        return _ints_only(fields.required, *bulk)
    if fields.stamps and not (fields.required or fields.nullable or fields.others):
        return _stamps_only(fields.stamps)
    return _any_fields(fields, bulk)


def _ints_only(
    required: list[tuple[str, str]], pack: Callable[..., bytes], values: Callable[[Any], Any]
) -> Check:
    def check(record: Any) -> Any:
        try:
            pack(*values(record))
        except Exception:  # out of range, another type, missing, or not a record at all
            if isinstance(record, dict):  # not one: fastavro refuses it with its own error
                _check_ints(record, required)
        return record

    return check


def _stamps_only(stamps: list[str]) -> Check:
    def check(record: Any) -> Any:
        if isinstance(record, dict):  # not one: fastavro refuses it with its own error
            for name in stamps:
                value = record.get(name)
                if isinstance(value, datetime) and value.tzinfo is None:
                    return _naive_as_utc(record, stamps)
        return record

    return check


def _any_fields(
    fields: _Fields, bulk: tuple[Callable[..., bytes], Callable[[Any], Any]] | None
) -> Check:
    required, nullable, stamps, others = (
        fields.required,
        fields.nullable,
        fields.stamps,
        fields.others,
    )

    def check(record: Any) -> Any:
        if not isinstance(record, dict):
            return record  # not a record: fastavro refuses it with its own error
        if bulk is not None:
            try:
                bulk[0](*bulk[1](record))
            except Exception:
                _check_ints(record, required)
        if nullable:
            _check_ints(record, nullable)
        if stamps:
            get = record.get
            for name in stamps:
                value = get(name)
                if isinstance(value, datetime) and value.tzinfo is None:
                    record = _naive_as_utc(record, stamps)
                    break
        return _check_others(record, others) if others else record

    return check


def _bulk(
    required: list[tuple[str, str]],
) -> tuple[Callable[..., bytes], Callable[[Any], Any]] | None:
    """(``struct.pack`` of the required integers' types, the getter of their values)."""
    if not required:
        return None
    if len(required) == 1:  # itemgetter of one name gives the bare value: ask for it twice
        required = required * 2
    codes = "".join(_PACK_CODES[avro_type] for _, avro_type in required)
    return struct.Struct("<" + codes).pack, itemgetter(*(name for name, _ in required))


def _check_ints(record: dict[str, Any], ints: list[tuple[str, str]]) -> None:
    """The exact check of integer fields: a value that is an int out of its type's range is
    refused naming its field; anything else (None, another type, missing) is left to fastavro."""
    for name, avro_type in ints:
        value = record.get(name)
        low, high = _RANGES[avro_type]
        if isinstance(value, int) and not low <= value <= high:
            raise OutOfRange(avro_type, name)


def _naive_as_utc(record: dict[str, Any], stamps: list[str]) -> dict[str, Any]:
    """A copy of ``record`` with its naive timestamps taken as UTC."""
    replaced = dict(record)
    for name in stamps:
        if name in record:
            replaced[name] = _as_utc(record[name])
    return replaced


def _check_others(record: dict[str, Any], others: list[tuple[str, Check]]) -> dict[str, Any]:
    replaced = None
    for name, field_check in others:
        value = record.get(name)
        try:
            new = field_check(value)
        except OutOfRange as exc:
            exc.segments.append(name)
            raise
        if new is not value:
            if replaced is None:
                replaced = dict(record)
            replaced[name] = new
    return record if replaced is None else replaced


def _int_check(avro_type: str) -> Check:
    low, high = _RANGES[avro_type]

    def check(value: Any) -> Any:
        if isinstance(value, int) and not low <= value <= high:
            raise OutOfRange(avro_type)
        return value

    return check


def _int_array_check(avro_type: str) -> Check:
    low, high = _RANGES[avro_type]

    def check(items: Any) -> Any:
        if not isinstance(items, list):
            return items
        try:  # one loop with no call per item: an array of numbers is the common case
            for index, item in enumerate(items):
                if not low <= item <= high:
                    raise OutOfRange(avro_type, f"[{index}]")
        except TypeError:
            pass  # an item is not a number: fastavro refuses it with its own error
        return items

    return check


def _as_utc(value: Any) -> Any:
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def _array_check(item_check: Check) -> Check:
    def check(items: Any) -> Any:
        if not isinstance(items, list):
            return items
        replaced = None
        for index, item in enumerate(items):
            try:
                new = item_check(item)
            except OutOfRange as exc:
                exc.segments.append(f"[{index}]")
                raise
            if new is not item:
                if replaced is None:
                    replaced = list(items)
                replaced[index] = new
        return items if replaced is None else replaced

    return check


def _map_check(value_check: Check) -> Check:
    def check(values: Any) -> Any:
        if not isinstance(values, dict):
            return values
        replaced = None
        for key, value in values.items():
            try:
                new = value_check(value)
            except OutOfRange as exc:
                exc.segments.append("{}")
                raise
            if new is not value:
                if replaced is None:
                    replaced = dict(values)
                replaced[key] = new
        return values if replaced is None else replaced

    return check


def _first_of(checks: list[Check]) -> Check:
    """Each check acts on one Python type only (int, datetime, dict, list), so at most one
    changes or refuses the value: applying them in turn is applying the right one."""

    def check(value: Any) -> Any:
        for one in checks:
            value = one(value)
        return value

    return check
