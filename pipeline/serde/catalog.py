"""Every Avro schema under a directory, parsed once at startup and looked up by name or fingerprint;
and ``WriterSchemas``, the schemas other processes write with, found by fingerprint at run time.

Files may reference each other's named types in any order: a file that names a type not yet
known is retried after the others, until a pass makes no progress. Every named type (nested
records and enums too) gets its own entry, so any of them can be looked up or bound.
"""

from __future__ import annotations

import difflib
import json
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from fastavro.schema import UnknownType, parse_schema

from pipeline.errors import DeclarationError, KafkaError, SchemaError, SchemaNotFoundError
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


Clock = Callable[[], float]


class SchemaLog(Protocol):
    """A log of writer schemas (the schema topic), read forward from its start by one reader."""

    def discover(self) -> bool:
        """Find the log's partitions and start reading any new one from its start; False while
        the log does not exist (no writer has published yet)."""
        ...

    def ends(self) -> dict[int, int]:
        """The end offset of each partition being read, asked of the broker now."""
        ...

    def read(self, timeout_s: float) -> tuple[dict[bytes, str], dict[int, int]]:
        """Schemas that arrived since the last call (fingerprint → JSON) and the position reached
        in each partition (the next offset to read); waits up to ``timeout_s`` for something."""
        ...

    def close(self) -> None: ...


class WriterSchemas:
    """Writer schemas by fingerprint, from one long-lived reader of a ``SchemaLog``: a resolver
    for ``SingleObjectCodec``. Safe to share between threads; ``close`` releases the reader.

    A known fingerprint is answered from memory. An unknown one takes what the reader has
    already fetched, then asks the log for its end offsets: only if the log has grown past what
    was read does the reader catch up (for at most ``catch_up_s``) and look again. Otherwise the
    fingerprint is a miss, answered at the cost of that one offsets query. So a writer that
    published its schema before producing is always found, and a burst of records with bogus
    fingerprints costs one query each, not one read of the log each.

    New partitions of the log are looked for at most every ``rediscover_s`` once it exists
    (writers publish to the one partition the topic is created with). When the log cannot be
    read, lookups of unknown fingerprints raise a retriable ``KafkaError`` (the record is not at
    fault), without asking again for ``retry_after_s``.
    """

    READ_WAIT_S = 0.1  # per read while catching up: short, so the deadline is kept

    def __init__(
        self,
        log: SchemaLog,
        *,
        catch_up_s: float = 15.0,
        rediscover_s: float = 30.0,
        retry_after_s: float = 10.0,
        clock: Clock = time.monotonic,
    ) -> None:
        self._log = log
        self._catch_up_s = catch_up_s
        self._rediscover_s = rediscover_s
        self._retry_after_s = retry_after_s
        self._clock = clock
        self._known: dict[bytes, str] = {}
        self._positions: dict[int, int] = {}
        self._discovered_at: float | None = None
        self._failed: tuple[float, str] | None = None  # when the log last failed, and why
        self._lock = threading.Lock()
        self._closed = False
        self.misses = 0  # fingerprints found in neither memory nor the log, counted per lookup

    def __call__(self, fingerprint: bytes) -> str | None:
        with self._lock:
            if self._closed:
                raise KafkaError("the writer schema reader is closed", retriable=True)
            found = self._known.get(fingerprint)
            if found is None:
                found = self._refresh(fingerprint)
            return found

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._log.close()

    def _refresh(self, fingerprint: bytes) -> str | None:
        self._absorb(self._log.read(0.0))  # already fetched: no round trip
        if fingerprint not in self._known:
            self._check_available()
            try:
                ends = self._ends()
                if self._behind(ends):
                    self._catch_up(ends)
            except KafkaError as exc:
                self._failed = (self._clock(), str(exc))
                raise
            self._failed = None
        found = self._known.get(fingerprint)
        if found is None:
            self.misses += 1
        return found

    def _check_available(self) -> None:
        """Fail fast for ``retry_after_s`` after the log could not be read: each lookup would
        otherwise wait out its own timeout, and a batch of them would stall the stage."""
        if self._failed is None:
            return
        failed_at, reason = self._failed
        wait = failed_at + self._retry_after_s - self._clock()
        if wait > 0:
            raise KafkaError(
                f"writer schemas unavailable ({reason}); asking again in {wait:.1f}s",
                retriable=True,
            )

    def _ends(self) -> dict[int, int]:
        now = self._clock()
        stale = self._discovered_at is None or now - self._discovered_at >= self._rediscover_s
        if stale and self._log.discover():
            self._discovered_at = now
        if self._discovered_at is None:
            return {}  # no log yet: nothing to read
        return self._log.ends()

    def _behind(self, ends: Mapping[int, int]) -> bool:
        return any(self._positions.get(p, 0) < end for p, end in ends.items())

    def _catch_up(self, ends: Mapping[int, int]) -> None:
        deadline = self._clock() + self._catch_up_s
        while self._behind(ends):
            left = deadline - self._clock()
            if left <= 0:
                behind = {p: f"{self._positions.get(p, 0)}/{end}" for p, end in ends.items()}
                raise KafkaError(
                    f"reading writer schemas stalled within {self._catch_up_s:.0f}s "
                    f"(offset read/end per partition: {behind})",
                    retriable=True,
                )
            self._absorb(self._log.read(min(left, self.READ_WAIT_S)))

    def _absorb(self, batch: tuple[dict[bytes, str], dict[int, int]]) -> None:
        schemas, positions = batch
        self._known.update(schemas)
        for partition, position in positions.items():
            self._positions[partition] = max(position, self._positions.get(partition, 0))


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
