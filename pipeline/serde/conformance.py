"""Does a pydantic model match its Avro record schema? Checked once, when a model is bound.

Every problem is collected (not just the first), so one startup shows them all. The rules:

- Every schema field is a model field and every model field is a schema field. A model field's
  Avro name is its ``alias`` if it has one, else its name (so ``video_id = Field(alias="videoId")``
  maps a camelCase schema); a field whose validation and serialization aliases differ is refused.
- Types correspond (left: Avro, logical type in brackets; right: the model's annotation):

  ======================================  ================================================
  string                                  str, a str Enum, a Literal of str
  string [uuid]                           UUID, str
  int, long                               int (32/64-bit range checked on encode)
  float, double                           float
  boolean                                 bool
  bytes, fixed                            bytes
  bytes/fixed [decimal]                   Decimal
  int [date]                              date
  int [time-millis], long [time-micros]   time
  long [timestamp-millis/micros]          datetime (naive is written as UTC), AwareDatetime
                                          (read back UTC-aware either way)
  long [local-timestamp-millis/micros]    datetime, NaiveDatetime
  enum                                    a str Enum or Literal with exactly its symbols, or str
  array<T>                                list[T]
  map<T>                                  dict[str, T]
  record                                  a BaseModel (e.g. Event) checked recursively, or
                                          dict / dict[str, Any]
  union [null, T]                         T | None
  union [A, B, ...]                       a union with one member per branch (None iff null)
  null                                    None
  ======================================  ================================================

  Any other logical type is checked as its underlying type, which is how fastavro reads it.
  Enums must be str Enums (``StrEnum`` or ``(str, Enum)``): their members are written as is.
- A schema field with a default needs a model default (``X | None = None`` for a null default).
  Where both are plain values (None, bool, number, str, enum member, bytes) they must be equal,
  or events built in code would disagree with what readers fill in for old records. A model
  default that the schema lacks is fine: the field is still written on every record.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time
from decimal import Decimal
from enum import Enum
from typing import Annotated, Any, Literal, Union, get_args, get_origin
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, NaiveDatetime
from pydantic.fields import FieldInfo

from pipeline.serde.schema import NAMED_TYPES, AvroSchema, Definition

NoneType = type(None)

_SCALARS: dict[str, tuple[Any, ...]] = {
    "null": (NoneType,),
    "boolean": (bool,),
    "int": (int,),
    "long": (int,),
    "float": (float,),
    "double": (float,),
    "bytes": (bytes,),
    "fixed": (bytes,),
    "string": (str,),
    "string-uuid": (UUID, str),
    "bytes-decimal": (Decimal,),
    "fixed-decimal": (Decimal,),
    "int-date": (date,),
    "int-time-millis": (time,),
    "long-time-micros": (time,),
    "long-timestamp-millis": (datetime, AwareDatetime),
    "long-timestamp-micros": (datetime, AwareDatetime),
    "long-local-timestamp-millis": (datetime, NaiveDatetime),
    "long-local-timestamp-micros": (datetime, NaiveDatetime),
}


@dataclass
class _Context:
    named: Mapping[str, Definition]
    # (model, record) pairs being checked right now: a recursive schema stops here.
    active: set[tuple[type[BaseModel], str]] = field(default_factory=set)


def check_model(model: type[BaseModel], schema: AvroSchema) -> list[str]:
    """Every way ``model`` disagrees with the record ``schema``; empty when they match."""
    ctx = _Context(schema.named_types)
    return _check_record(model, schema.named_types[schema.full_name], "", ctx)


def _check_record(
    model: type[BaseModel], record: Definition, prefix: str, ctx: _Context
) -> list[str]:
    key = (model, record["name"])
    if key in ctx.active:
        return []
    ctx.active.add(key)
    infos = {(info.alias or name): info for name, info in model.model_fields.items()}
    schema_fields = {f["name"]: f for f in record.get("fields", ())}
    problems = [p for name, info in infos.items() for p in _check_aliases(prefix + name, info)]
    for name, schema_field in schema_fields.items():
        path = prefix + name
        info = infos.get(name)
        if info is None:
            problems.append(f"field {path!r} missing from model")
            continue
        problems += _check_type(schema_field["type"], info.annotation, path, ctx)
        problems += _check_default(schema_field, info, path)
    problems += [
        f"model field {prefix + n!r} is not in the schema" for n in infos if n not in schema_fields
    ]
    ctx.active.discard(key)
    return problems


def _check_aliases(path: str, info: FieldInfo) -> list[str]:
    name = info.alias or path.rsplit(".", 1)[-1]
    if {info.validation_alias, info.serialization_alias} <= {None, name}:
        return []
    return [f"model field {path!r} has differing validation/serialization aliases; use alias="]


def _check_type(schema: Any, annotation: Any, path: str, ctx: _Context) -> list[str]:
    annotation = _strip(annotation)
    if isinstance(schema, str):
        schema = ctx.named.get(schema, schema)
    if isinstance(schema, list):
        return _check_union(schema, annotation, path, ctx)
    if _union_members(annotation) is not None:
        return [_mismatch(schema, annotation, path)]
    kind = _kind(schema)
    check = _STRUCTURED.get(kind)
    if check is not None:
        return check(schema, annotation, path, ctx)
    if annotation in _SCALARS.get(kind, ()) or (kind == "string" and _str_values(annotation)):
        return []
    return [_mismatch(schema, annotation, path)]


def _check_union(branches: list[Any], annotation: Any, path: str, ctx: _Context) -> list[str]:
    members = _union_members(annotation) or [annotation]
    schema_rest = [b for b in branches if b != "null"]
    model_rest = [m for m in members if m is not NoneType]
    if (len(schema_rest) < len(branches)) != (len(model_rest) < len(members)):
        return [_mismatch(branches, annotation, path)]  # only one side is nullable
    if len(schema_rest) == len(model_rest) == 1:
        return _check_type(schema_rest[0], model_rest[0], path, ctx)
    unmatched = list(model_rest)
    for branch in schema_rest:
        match = next((m for m in unmatched if not _check_type(branch, m, path, ctx)), None)
        if match is None:
            return [_mismatch(branches, annotation, path)]
        unmatched.remove(match)
    return [] if not unmatched else [_mismatch(branches, annotation, path)]


def _check_record_type(schema: Definition, annotation: Any, path: str, ctx: _Context) -> list[str]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return _check_record(annotation, schema, path + ".", ctx)
    if annotation is dict or (
        get_origin(annotation) is dict and get_args(annotation) == (str, Any)
    ):
        return []
    return [_mismatch(schema, annotation, path)]


def _check_array(schema: Definition, annotation: Any, path: str, ctx: _Context) -> list[str]:
    args = get_args(annotation)
    if get_origin(annotation) is not list or len(args) != 1:
        return [_mismatch(schema, annotation, path)]
    return _check_type(schema["items"], args[0], path + "[]", ctx)


def _check_map(schema: Definition, annotation: Any, path: str, ctx: _Context) -> list[str]:
    args = get_args(annotation)
    if get_origin(annotation) is not dict or len(args) != 2 or args[0] is not str:
        return [_mismatch(schema, annotation, path)]
    return _check_type(schema["values"], args[1], path + "{}", ctx)


def _check_enum(schema: Definition, annotation: Any, path: str, ctx: _Context) -> list[str]:
    if annotation is str:
        return []
    values = _str_values(annotation)
    if values is None:
        return [_mismatch(schema, annotation, path)]
    symbols = set(schema["symbols"])
    if values == symbols:
        return []
    differences = [
        f"{side} lacks {', '.join(sorted(missing))}"
        for side, missing in (("the model", symbols - values), ("the schema", values - symbols))
        if missing
    ]
    return [
        f"field {path!r} has different symbols in {_py(annotation)} and enum {schema['name']}: "
        + "; ".join(differences)
    ]


_STRUCTURED: dict[str, Callable[[Any, Any, str, _Context], list[str]]] = {
    "record": _check_record_type,
    "error": _check_record_type,
    "array": _check_array,
    "map": _check_map,
    "enum": _check_enum,
}


_UNCOMPARABLE = object()


def _check_default(schema_field: Mapping[str, Any], info: FieldInfo, path: str) -> list[str]:
    if "default" not in schema_field:
        return []
    if info.is_required():
        return [f"field {path!r} has a default in the schema but not in the model"]
    if info.default_factory is not None:
        return []
    model_default = _plain(info.default)
    if model_default is _UNCOMPARABLE or model_default == schema_field["default"]:
        return []
    return [
        f"field {path!r} defaults to {schema_field['default']!r} in the schema "
        f"but {info.default!r} in the model"
    ]


def _plain(value: Any) -> Any:
    """A model default as it would appear in a schema's JSON, when that is well defined."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, bytes):
        return value.decode("latin-1")  # Avro writes bytes defaults as code points 0-255
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return _UNCOMPARABLE


# -- reading annotations and schemas --------------------------------------------------------


def _strip(annotation: Any) -> Any:
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    return NoneType if annotation is None else annotation


def _union_members(annotation: Any) -> list[Any] | None:
    if get_origin(annotation) in (Union, types.UnionType):
        return [_strip(a) for a in get_args(annotation)]
    return None


def _str_values(annotation: Any) -> set[str] | None:
    """The values a str Enum or a Literal of str allows; None for anything else."""
    if (
        isinstance(annotation, type)
        and issubclass(annotation, Enum)
        and issubclass(annotation, str)
    ):
        return {member.value for member in annotation}
    args = get_args(annotation)
    if get_origin(annotation) is Literal and all(isinstance(a, str) for a in args):
        return set(args)
    return None


def _kind(schema: Any) -> str:
    """ "long", "record", ... or "<type>-<logicalType>" for a logical type fastavro converts."""
    if isinstance(schema, str):
        return schema
    base = str(schema.get("type"))
    logical = f"{base}-{schema.get('logicalType')}"
    return logical if logical in _SCALARS else base


def _mismatch(schema: Any, annotation: Any, path: str) -> str:
    return f"field {path!r} is {_py(annotation)} in the model but {_avro(schema)} in the schema"


def _avro(schema: Any) -> str:
    if isinstance(schema, str):
        return schema
    if isinstance(schema, list):
        return f"union[{', '.join(_avro(b) for b in schema)}]"
    kind = schema.get("type")
    if "logicalType" in schema:
        return f"{kind} ({schema['logicalType']})"
    if kind in NAMED_TYPES:
        return f"{kind} {schema['name']}"
    if kind == "array":
        return f"array<{_avro(schema['items'])}>"
    if kind == "map":
        return f"map<{_avro(schema['values'])}>"
    return str(kind)


def _py(annotation: Any) -> str:
    annotation = _strip(annotation)
    if annotation is NoneType:
        return "None"
    members = _union_members(annotation)
    if members is not None:
        return " | ".join(_py(m) for m in members)
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Literal:
        return f"Literal[{', '.join(repr(a) for a in args)}]"
    if origin is not None:
        return f"{getattr(origin, '__name__', origin)}[{', '.join(_py(a) for a in args)}]"
    return str(getattr(annotation, "__name__", annotation))
