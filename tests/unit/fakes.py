"""Fake consumer and producer ports for driving a runner step by step, without Kafka."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class Record:
    def __init__(
        self, topic: str, partition: int, offset: int, value: bytes, key: bytes | None = None
    ) -> None:
        self._t, self._p, self._o, self._v, self._k = topic, partition, offset, value, key

    def topic(self) -> str:
        return self._t

    def partition(self) -> int:
        return self._p

    def offset(self) -> int:
        return self._o

    def key(self) -> bytes | None:
        return self._k

    def value(self) -> bytes | None:
        return self._v

    def headers(self) -> list[tuple[str, bytes | None]]:
        return [("event-id", f"id-{self._p}-{self._o}".encode())]

    def timestamp(self) -> tuple[int, int]:
        return (1, 0)

    def error(self) -> None:
        return None


class FakeConsumer:
    """Returns the queued batches, one per consume call, cut to ``max_records`` (the rest stays
    queued, as librdkafka keeps what it fetched)."""

    def __init__(self) -> None:
        self.batches: list[list[Record]] = []
        self.seeks: list[tuple[Any, int]] = []
        self.paused: set[Any] = set()
        self.commits: list[dict[Any, int]] = []
        self.asked: list[int] = []  # max_records of each consume call

    def subscribe(self, topics: list[str], listener: Any) -> None: ...

    def consume(self, max_records: int, timeout_s: float) -> Sequence[Record]:
        self.asked.append(max_records)
        if not self.batches:
            return []
        batch = self.batches[0]
        taken, rest = batch[:max_records], batch[max_records:]
        if rest:
            self.batches[0] = rest
        else:
            self.batches.pop(0)
        return taken

    def pause(self, partitions: list[Any]) -> None:
        self.paused.update(partitions)

    def resume(self, partitions: list[Any]) -> None:
        self.paused.difference_update(partitions)

    def seek(self, tp: Any, offset: int) -> None:
        self.seeks.append((tp, offset))

    def commit(self, offsets: dict[Any, int], *, sync: bool) -> None:
        self.commits.append(dict(offsets))

    def committed(self, partitions: list[Any], timeout_s: float = 10) -> dict[Any, int]:
        return {}

    def group_metadata(self) -> Any:
        return None

    def take_commit_failures(self) -> list[Any]:
        return []

    def close(self) -> None: ...


class FakeProducer:
    """Acknowledges every record at once; ``produced`` keeps (topic, key) in order."""

    def __init__(self) -> None:
        self.produced: list[tuple[str, Any]] = []
        self.flushes: list[float] = []  # the timeout of each flush
        self.stop: Any = None

    def produce(self, topic: str, value: Any, key: Any, headers: Any, on_delivery: Any) -> None:
        self.produced.append((topic, key))
        on_delivery(None, None)

    def poll(self, timeout_s: float = 0) -> int:
        return 0

    def flush(self, timeout_s: float) -> int:
        self.flushes.append(timeout_s)
        return 0

    def __len__(self) -> int:
        return 0

    def delivery_error(self, err: Any, topic: str) -> Any:
        return err
