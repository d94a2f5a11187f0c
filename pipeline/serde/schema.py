"""One named Avro type, made self-contained, parsed once and fingerprinted.

A schema file may reference a type defined in another file. Readers, writers and registries
need the whole type, so every ``AvroSchema`` inlines what it references (each definition at its
first use, later uses by full name, as the spec requires). Its ``json`` is what a registry is
given; its ``parsed`` form is what every read and write reuses; its ``fingerprint`` is the
CRC-64-AVRO (Rabin) of the Parsing Canonical Form, as the 8 little-endian bytes that Avro
single-object encoding puts on the wire.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from fastavro.schema import (
    SchemaParseException,
    UnknownType,
    parse_schema,
    to_parsing_canonical_form,
)
from fastavro.schema import fingerprint as _fingerprint

from pipeline.errors import SchemaError

ParsedSchema = dict[str, Any]
Definition = dict[str, Any]

NAMED_TYPES = frozenset({"record", "error", "enum", "fixed"})


@dataclass(frozen=True, eq=False)
class AvroSchema:
    """A named Avro type with everything it references inlined."""

    full_name: str
    type: str  # "record", "enum" or "fixed"
    source: str  # the .avsc file, or where a writer schema came from ("registry schema id 7")
    json: str
    parsed: ParsedSchema
    canonical_form: str
    fingerprint: bytes
    # Every named type inside, by full name, so checks can follow references.
    named_types: Mapping[str, Definition] = field(repr=False)


def build(full_name: str, definitions: Mapping[str, Definition], source: str) -> AvroSchema:
    """Inline ``full_name``'s references from ``definitions`` and parse the result once."""
    inliner = _Inliner(definitions)
    document = inliner.walk(definitions[full_name], root=True)
    try:
        parsed = cast(ParsedSchema, parse_schema(document, {}))  # a dict parses to a dict
        canonical = to_parsing_canonical_form(parsed)
    except Exception as exc:  # fastavro raises several types for one cause: bad Avro
        raise SchemaError(f"{source}: {full_name} is not valid Avro: {reason(exc)}") from exc
    return AvroSchema(
        full_name=full_name,
        type=document["type"],
        source=source,
        json=json.dumps(document, separators=(",", ":")),
        parsed=parsed,
        canonical_form=canonical,
        fingerprint=fingerprint_of(canonical),
        named_types=inliner.defined,
    )


def from_json(text: str, source: str) -> AvroSchema:
    """Parse a complete writer schema handed over as JSON (by a resolver or a registry)."""
    try:
        named: dict[str, Definition] = {}
        parsed = parse_schema(json.loads(text), named)
    except Exception as exc:
        raise SchemaError(f"{source}: not a valid Avro schema: {reason(exc)}") from exc
    if not isinstance(parsed, dict) or parsed.get("type") not in NAMED_TYPES:
        raise SchemaError(f"{source}: expected a named Avro type (a record), got {text[:40]!r}")
    return build(parsed["name"], named, source)


def fingerprint_of(canonical_form: str) -> bytes:
    """CRC-64-AVRO of a Parsing Canonical Form, 8 bytes little-endian (as on the wire)."""
    return bytes.fromhex(_fingerprint(canonical_form, "CRC-64-AVRO"))


def defined_names(parsed: Any) -> list[str]:
    """Full names of every named type a parsed document defines, in document order."""
    inliner = _Inliner({})
    inliner.walk(parsed, root=True)
    return inliner.order


def reason(exc: Exception) -> str:
    """One line saying why a schema was refused (the library's own words, which name no data)."""
    if isinstance(exc, json.JSONDecodeError):
        return f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
    if isinstance(exc, UnknownType):
        return f"unknown type {exc.name!r}"
    if isinstance(exc, SchemaParseException):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"  # a malformed document tripped fastavro up


_CHILDREN = ("items", "values")  # keys whose values are schemas, besides each field's "type"


class _Inliner:
    """Copies a parsed schema, replacing the first reference to each named type by its definition.

    fastavro's parsed form already uses full names everywhere, so no namespace tracking is needed;
    a definition without a namespace gets ``"namespace": ""`` so that it keeps meaning the null
    namespace when it is inlined inside a namespaced record.
    """

    def __init__(self, definitions: Mapping[str, Definition]) -> None:
        self._definitions = definitions
        self.defined: dict[str, Definition] = {}
        self.order: list[str] = []

    def walk(self, node: Any, root: bool = False) -> Any:
        if isinstance(node, str):
            if node in self._definitions and node not in self.defined:
                return self.walk(self._definitions[node])
            return node
        if isinstance(node, list):
            return [self.walk(branch) for branch in node]
        if not isinstance(node, dict):
            return node
        return self._walk_object(node, root)

    def _walk_object(self, node: Mapping[str, Any], root: bool) -> Definition:
        out = {key: value for key, value in node.items() if not key.startswith("__")}
        if out.get("type") in NAMED_TYPES and isinstance(out.get("name"), str):
            self._define(out, root)
        for key in _CHILDREN:
            if key in out:
                out[key] = self.walk(out[key])
        if "fields" in out:
            out["fields"] = [{**f, "type": self.walk(f.get("type"))} for f in out["fields"]]
        return out

    def _define(self, out: Definition, root: bool) -> None:
        name = out["name"]
        self.order.append(name)
        self.defined[name] = out
        out.pop("namespace", None)
        if "." not in name and not root:
            out["namespace"] = ""
