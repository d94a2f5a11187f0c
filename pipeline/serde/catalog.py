"""Every Avro schema under a directory, parsed once at startup and looked up by name or fingerprint.

Files may reference each other's named types in any order: a file that names a type not yet
known is retried after the others, until a pass makes no progress. Every named type (nested
records and enums too) gets its own entry, so any of them can be looked up or bound.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fastavro.schema import UnknownType, parse_schema

from pipeline.errors import DeclarationError, SchemaError, SchemaNotFoundError
from pipeline.events import Event
from pipeline.serde.binding import Binding, E, bind
from pipeline.serde.schema import AvroSchema, Definition, build, defined_names, reason


class SchemaCatalog:
    """Schemas by full name; immutable once loaded, except for the cache of bindings."""

    def __init__(self, directory: Path, schemas: Mapping[str, AvroSchema]) -> None:
        self.directory = directory
        self._schemas = dict(schemas)
        self._by_short: dict[str, list[str]] = {}
        for full_name in sorted(schemas):
            self._by_short.setdefault(full_name.rsplit(".", 1)[-1], []).append(full_name)
        self._by_fingerprint = {s.fingerprint: s for s in schemas.values()}
        self._bindings: dict[type[Event], Binding[Any]] = {}

    @classmethod
    def load(cls, directory: Path) -> SchemaCatalog:
        """Parse every ``*.avsc`` under ``directory``, recursively.

        Raises SchemaError naming the file: bad JSON, bad Avro, an unknown type, or a full name
        defined twice.
        """
        if not directory.is_dir():
            raise SchemaError(f"schema directory {directory} does not exist")
        documents = {path: _read(path) for path in sorted(directory.rglob("*.avsc"))}
        definitions, owners = _parse_all(documents)
        return cls(
            directory, {name: build(name, definitions, str(owners[name])) for name in owners}
        )

    @property
    def names(self) -> list[str]:
        return sorted(self._schemas)

    def __len__(self) -> int:
        return len(self._schemas)

    def get(self, name: str) -> AvroSchema:
        """A schema by full name, or by short name when only one namespace has it."""
        schema = self._schemas.get(name)
        if schema is not None:
            return schema
        candidates = self._by_short.get(name, []) if "." not in name else []
        if len(candidates) == 1:
            return self._schemas[candidates[0]]
        if candidates:
            raise SchemaNotFoundError(
                f"schema name {name!r} is ambiguous ({', '.join(candidates)}): use the full name"
            )
        raise SchemaNotFoundError(self._not_found(name))

    def by_fingerprint(self, fingerprint: bytes) -> AvroSchema | None:
        return self._by_fingerprint.get(fingerprint)

    def bind(self, model: type[E]) -> Binding[E]:
        """Bind ``model`` to the schema it names (``__avro_schema__``); the result is cached.

        Raises SchemaNotFoundError for a missing schema and SchemaMismatchError listing every
        way the model and schema disagree (see ``pipeline.serde.conformance`` for the rules).
        """
        binding = self._bindings.get(model)
        if binding is None:
            name = getattr(model, "__avro_schema__", None)
            if not isinstance(name, str):
                raise DeclarationError(
                    f"{model.__name__} names no schema: is it an Event subclass?"
                )
            binding = self._bindings[model] = bind(model, self.get(name))
        return binding

    def _not_found(self, name: str) -> str:
        lowered: dict[str, str] = {}
        for full_name in self._schemas:
            lowered.setdefault(full_name.lower(), full_name)
            lowered.setdefault(full_name.rsplit(".", 1)[-1].lower(), full_name)
        close = difflib.get_close_matches(name.lower(), lowered, n=3, cutoff=0.6)
        hint = ", ".join(dict.fromkeys(repr(lowered[c]) for c in close))
        known = f"did you mean {hint}?" if hint else f"it has {len(self._schemas)} schemas"
        return f"no schema named {name!r} in {self.directory}: {known}"


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # ValueError covers bad JSON and bad UTF-8
        raise SchemaError(f"{path}: {reason(exc)}") from exc


def _parse_all(documents: Mapping[Path, Any]) -> tuple[dict[str, Definition], dict[str, Path]]:
    """Parse files in passes until every reference resolves; return definitions and their files."""
    definitions: dict[str, Definition] = {}
    owners: dict[str, Path] = {}
    pending = dict(documents)
    while pending:
        unresolved: dict[Path, str] = {}
        for path, document in pending.items():
            named = dict(definitions)  # a failed attempt must not leave half its names behind
            try:
                parsed = parse_schema(document, named)
            except UnknownType as exc:
                unresolved[path] = exc.name
                continue
            except Exception as exc:  # fastavro raises several types for one cause: bad Avro
                raise SchemaError(f"{path}: not valid Avro: {reason(exc)}") from exc
            for name in _claim(path, defined_names(parsed), owners):
                definitions[name] = named[name]
        if len(unresolved) == len(pending):
            raise _unresolved_error(unresolved, definitions)
        pending = {path: documents[path] for path in unresolved}
    return definitions, owners


def _claim(path: Path, names: list[str], owners: dict[str, Path]) -> list[str]:
    if not names:
        raise SchemaError(f"{path}: defines no named type (record, enum or fixed)")
    for name in names:
        if name in owners:
            where = "twice in this file" if owners[name] == path else f"also in {owners[name]}"
            raise SchemaError(f"{path}: defines {name}, which is defined {where}")
        owners[name] = path
    return names


def _unresolved_error(
    unresolved: Mapping[Path, str], definitions: Mapping[str, Any]
) -> SchemaError:
    problems = []
    for path, name in unresolved.items():
        close = difflib.get_close_matches(name, definitions, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        problems.append(f"{path}: unknown type {name!r}{hint}")
    return SchemaError("; ".join(problems))
