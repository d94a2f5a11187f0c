"""Avro serialization: schemas parsed once at startup, models bound to them, two wire formats.

- ``SchemaCatalog.load(dir)`` parses every ``.avsc``; ``catalog.bind(Model)`` checks a model
  against its schema (all problems at once) and returns the ``Binding`` used per message.
- ``SingleObjectCodec`` (default, no registry) and ``ConfluentCodec`` (with a ``RegistryPort``)
  implement ``Codec``. Decoding raises only ``DecodeError`` subclasses, encoding only
  ``SerializationError``; messages never contain payload values.

fastavro is imported only inside this package.
"""

from pipeline.serde.binding import Binding
from pipeline.serde.catalog import SchemaCatalog
from pipeline.serde.codec import Codec
from pipeline.serde.confluent import ConfluentCodec
from pipeline.serde.registry import InMemoryRegistry, RegistryPort
from pipeline.serde.schema import AvroSchema
from pipeline.serde.single_object import SchemaResolver, SingleObjectCodec

__all__ = [
    "AvroSchema",
    "Binding",
    "Codec",
    "ConfluentCodec",
    "InMemoryRegistry",
    "RegistryPort",
    "SchemaCatalog",
    "SchemaResolver",
    "SingleObjectCodec",
]
