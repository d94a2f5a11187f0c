"""What Java services compute, checked in: ``murmur2_vectors.tsv`` holds the partitions the
Java producer's default partitioner picks for the keys of ``keys.txt``, printed by the Kafka
jars themselves (``Murmur2Partitions.java``, whose header says how to regenerate it;
``tests/integration/test_java_partitions.py`` re-runs it when a JVM and the jars are here)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
VECTORS = HERE / "murmur2_vectors.tsv"
KEYS = HERE / "keys.txt"
PROGRAM = HERE / "Murmur2Partitions.java"
PARTITION_COUNTS = (3, 6, 7, 12)


@dataclass(frozen=True)
class JavaKey:
    key: str
    murmur2: int  # Utils.murmur2(key bytes), a signed Java int
    partitions: dict[int, int]  # partition count -> BuiltInPartitioner.partitionForKey

    @property
    def raw(self) -> bytes:
        return self.key.encode()  # as Java's StringSerializer and our Publisher encode it


def parse(text: str) -> list[JavaKey]:
    lines = text.splitlines()
    header = lines[0].split("\t")
    counts = [int(column.removeprefix("partitions=")) for column in header[3:]]
    out = []
    for line in lines[1:]:
        key, murmur2, *partitions = line.split("\t")
        out.append(JavaKey(key, int(murmur2), dict(zip(counts, map(int, partitions), strict=True))))
    return out


def java_keys() -> list[JavaKey]:
    return parse(VECTORS.read_text(encoding="utf-8"))
