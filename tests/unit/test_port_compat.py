"""A custom transport's consumer written before ``commit`` / ``close`` took ``timeout_s`` keeps
working: the bound is passed only to ports that take it, and its older calls are made."""

from __future__ import annotations

from pipeline.consumerset import ConsumerSet, Source
from pipeline.ports import close_port, commit_port


class OldConsumer:
    def __init__(self) -> None:
        self.commits: list[tuple[dict[tuple[str, int], int], bool]] = []
        self.closed = 0

    def commit(self, offsets: dict[tuple[str, int], int], *, sync: bool) -> None:
        self.commits.append((offsets, sync))

    def close(self) -> None:
        self.closed += 1


class NewConsumer(OldConsumer):
    def __init__(self) -> None:
        super().__init__()
        self.bounds: list[float | None] = []

    def commit(
        self, offsets: dict[tuple[str, int], int], *, sync: bool, timeout_s: float | None = None
    ) -> None:
        super().commit(offsets, sync=sync)
        self.bounds.append(timeout_s)

    def close(self, timeout_s: float | None = None) -> None:
        super().close()
        self.bounds.append(timeout_s)


def test_an_older_port_gets_its_own_calls_and_a_newer_one_the_bound() -> None:
    old, new = OldConsumer(), NewConsumer()
    for consumer in (old, new):
        commit_port(consumer, {("t", 0): 5}, True, 2.0)  # type: ignore[arg-type]
        close_port(consumer, 2.0)  # type: ignore[arg-type]
    assert old.commits == [({("t", 0): 5}, True)] and old.closed == 1
    assert new.commits == [({("t", 0): 5}, True)] and new.closed == 1
    assert new.bounds == [2.0, 2.0]


def test_a_consumer_set_of_an_older_port_commits_and_closes_within_a_bound() -> None:
    old = OldConsumer()
    consumers = ConsumerSet([Source(old, frozenset({"t"}))])  # type: ignore[arg-type]
    consumers.commit({("t", 0): 7}, sync=True, timeout_s=3.0)
    consumers.close(3.0)
    assert old.commits == [({("t", 0): 7}, True)] and old.closed == 1
