"""Which partition a produced record goes to, as the real clients choose it.

- ``murmur2_random``: the Java client's default (and librdkafka's ``murmur2_random``):
  ``toPositive(murmur2(key)) % n``, Kafka's ``Utils.murmur2`` bit for bit. Both transports
  give it to every producer of the framework (``pipeline.transport.JAVA_COMPATIBLE_PARTITIONER``).
- ``consistent_random``: librdkafka's own default, which a bare ``MemoryBroker.producer()``
  keeps, as a confluent-kafka ``Producer`` configured with no ``partitioner`` does:
  ``crc32(key) % n``.

Records without a key (and, for ``consistent_random``, with an empty one) go to a partition
of the client's own choosing: here round-robin, so that tests are deterministic.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from itertools import count

_M = 0x5BD1E995
_SEED = 0x9747B28C
_MASK = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Kafka's ``Utils.murmur2``: a signed 32-bit result, as Java's int."""
    length = len(data)
    h = (_SEED ^ length) & _MASK
    whole = length - length % 4
    for i in range(0, whole, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    tail = data[whole:]
    if tail:
        for shift, byte in reversed(list(enumerate(tail))):
            h ^= byte << (8 * shift)
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def to_positive(number: int) -> int:
    return number & 0x7FFFFFFF


def murmur2_partition(key: bytes, partitions: int) -> int:
    return to_positive(murmur2(key)) % partitions


def crc32_partition(key: bytes, partitions: int) -> int:
    return zlib.crc32(key) % partitions


KeyedChoice = Callable[[bytes, int], int]
# name -> (choice for a key, whether an empty key counts as no key)
PARTITIONERS: dict[str, tuple[KeyedChoice, bool]] = {
    "murmur2_random": (murmur2_partition, False),
    "consistent_random": (crc32_partition, True),
}


class Partitioner:
    """One producer's choice of partition; keyless records go round-robin."""

    def __init__(self, name: str = "consistent_random") -> None:
        if name not in PARTITIONERS:
            raise ValueError(f"unknown partitioner {name!r}; one of {sorted(PARTITIONERS)}")
        self._keyed, self._empty_is_none = PARTITIONERS[name]
        self._next = count()

    def __call__(self, key: bytes | None, partitions: int) -> int:
        if key is None or (self._empty_is_none and not key):
            return next(self._next) % partitions
        return self._keyed(key, partitions)
