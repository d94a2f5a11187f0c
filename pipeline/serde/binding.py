"""A model bound to its Avro record schema: checked once at startup, then reused per message."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from operator import attrgetter
from typing import Any, Generic, cast, get_args

from pydantic import BaseModel, PlainSerializer, WrapSerializer
from typing_extensions import TypeVar

from pipeline.errors import SchemaMismatchError
from pipeline.events import Event
from pipeline.serde.conformance import check_model
from pipeline.serde.guard import Check, compile_guard
from pipeline.serde.schema import AvroSchema, ParsedSchema

E = TypeVar("E", bound=Event, default=Event)


@dataclass(frozen=True, eq=False, slots=True)
class Binding(Generic[E]):
    """Everything the per-message path needs, precomputed.

    ``to_record`` turns an event into what fastavro writes. For a flat model (no nested models,
    aliases or custom serializers) it is the instance ``__dict__`` itself, with no copy; otherwise
    ``model_dump(by_alias=True)``.

    ``guard`` (None when the schema has no ``int``, ``long`` or timestamp field) then checks that
    record against what the Avro writer does not (``pipeline.serde.guard``): it raises
    ``OutOfRange`` for an integer its type cannot hold, and hands naive datetimes over as UTC.
    """

    model: type[E]
    schema: AvroSchema
    parsed: ParsedSchema  # = schema.parsed, one attribute lookup closer
    fingerprint: bytes  # = schema.fingerprint
    to_record: Callable[[E], Mapping[str, Any]]
    flat: bool  # whether ``to_record`` is the ``__dict__`` itself (read inline by the writer)
    guard: Check | None
    # ``model.model_validate``, or the model's own validator when that is what it calls (one
    # Python call and its keyword arguments less per record).
    validate: Callable[[Any], E]

    @property
    def name(self) -> str:
        return self.schema.full_name


def bind(model: type[E], schema: AvroSchema) -> Binding[E]:
    """Check ``model`` against ``schema``; raise SchemaMismatchError listing every problem."""
    if schema.type not in ("record", "error"):
        raise SchemaMismatchError(
            f"{model.__name__} vs {schema.full_name}: a model binds to a record schema, "
            f"and {schema.full_name} is a{'n' if schema.type == 'enum' else ''} {schema.type}"
        )
    problems = check_model(model, schema)
    if problems:
        raise SchemaMismatchError(f"{model.__name__} vs {schema.full_name}: " + "; ".join(problems))
    flat = _is_flat(model)
    return Binding(
        model=model,
        schema=schema,
        parsed=schema.parsed,
        fingerprint=schema.fingerprint,
        to_record=attrgetter("__dict__") if flat else _dump,
        flat=flat,
        guard=compile_guard(schema),
        validate=_validator(model),
    )


def _validator(model: type[E]) -> Callable[[Any], E]:
    """What validates a decoded record as ``model``: its pydantic-core validator itself, unless
    the model is not complete yet (its validator is a placeholder until it is rebuilt) or
    overrides ``model_validate``."""
    own = getattr(model.model_validate, "__func__", None)
    if own is not BaseModel.model_validate.__func__ or not model.__pydantic_complete__:  # type: ignore[attr-defined]
        return model.model_validate
    return cast(Callable[[Any], E], model.__pydantic_validator__.validate_python)


def _dump(event: BaseModel) -> dict[str, Any]:
    return event.model_dump(by_alias=True)


def _is_flat(model: type[BaseModel]) -> bool:
    """True when ``model_dump()`` would return exactly the instance ``__dict__``."""
    decorators = model.__pydantic_decorators__
    if decorators.field_serializers or decorators.model_serializers:
        return False
    for name, info in model.model_fields.items():
        if info.alias not in (None, name) or _needs_dump([info.annotation, *info.metadata]):
            return False
    return True


def _needs_dump(parts: Iterable[Any]) -> bool:
    """Whether a nested model or a custom serializer occurs anywhere in these annotation parts."""
    for part in parts:
        if isinstance(part, (PlainSerializer, WrapSerializer)):
            return True
        if isinstance(part, type) and issubclass(part, BaseModel):
            return True
        if _needs_dump(get_args(part)):
            return True
    return False
