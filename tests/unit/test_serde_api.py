"""The serde package's public surface is curated, and its libraries stay inside it: fastavro is
imported only under pipeline/serde, and confluent_kafka never is."""

from __future__ import annotations

import re
from pathlib import Path

import pipeline.serde

PIPELINE = Path(pipeline.serde.__file__).resolve().parents[1]
IMPORTS = re.compile(r"^\s*(?:from|import)\s+(fastavro|confluent_kafka)\b", re.MULTILINE)

EXPECTED = {
    "AvroSchema",
    "Binding",
    "Codec",
    "ConfluentCodec",
    "InMemoryRegistry",
    "RegistryPort",
    "SchemaCatalog",
    "SchemaResolver",
    "SingleObjectCodec",
}


def imports_of(library: str) -> set[str]:
    return {
        str(path.relative_to(PIPELINE))
        for path in PIPELINE.rglob("*.py")
        if library in IMPORTS.findall(path.read_text(encoding="utf-8"))
    }


def test_all_lists_exactly_the_public_names() -> None:
    """Changing the serde surface is deliberate: it updates this set."""
    assert set(pipeline.serde.__all__) == EXPECTED
    assert all(getattr(pipeline.serde, name) is not None for name in EXPECTED)


def test_fastavro_is_imported_only_by_serde() -> None:
    """Every module that imports fastavro lives in pipeline/serde."""
    assert imports_of("fastavro")
    assert all(path.startswith("serde/") for path in imports_of("fastavro"))


def test_serde_never_imports_the_kafka_client() -> None:
    """The registry is reached through RegistryPort, not confluent_kafka."""
    assert not any(path.startswith("serde/") for path in imports_of("confluent_kafka"))
