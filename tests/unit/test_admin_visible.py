"""``KafkaAdmin.create`` returns once its topics are in the metadata, within its timeout: a
stand-in AdminClient whose metadata learns of new topics late, on a fake clock, no sleeping."""

from __future__ import annotations

from concurrent.futures import Future
from types import SimpleNamespace
from typing import Any

import pytest

from pipeline.config import Settings
from pipeline.errors import KafkaError
from pipeline.kafka import admin


class Propagating:
    """CreateTopics succeeds at once; the metadata lists the topics only from the
    ``listed_from``-th look after it, and their partitions have a leader from ``led_from``."""

    def __init__(self, now: list[float], listed_from: int, led_from: int) -> None:
        self.now, self.listed_from, self.led_from = now, listed_from, led_from
        self.created: list[str] = []
        self.looks_since_create = 0

    def list_topics(self, timeout: float) -> Any:
        topics = {}
        if self.created:
            self.looks_since_create += 1
            n = self.looks_since_create
            if n >= self.listed_from:
                leader = 0 if n >= self.led_from else -1
                part = SimpleNamespace(leader=leader, error=None)
                for name in self.created:
                    topics[name] = SimpleNamespace(error=None, partitions={0: part, 1: part})
        return SimpleNamespace(topics=topics)

    def create_topics(self, new: list[Any], operation_timeout: float) -> dict[str, Future[None]]:
        futures: dict[str, Future[None]] = {}
        for topic in new:
            self.created.append(topic.topic)
            futures[topic.topic] = done = Future()
            done.set_result(None)
        return futures

    def poll(self, _timeout: float) -> None:
        pass


def _admin(monkeypatch: pytest.MonkeyPatch, inner: Propagating) -> admin.KafkaAdmin:
    monkeypatch.setattr(admin, "_clock", lambda: inner.now[0])

    def sleep(seconds: float) -> None:
        inner.now[0] += seconds

    monkeypatch.setattr(admin, "_sleep", sleep)
    client = admin.KafkaAdmin(Settings(bootstrap_servers="127.0.0.1:1"), timeout_s=15.0)
    stand_in: Any = inner
    client._admin = stand_in
    return client


def test_create_returns_only_once_the_topics_are_listed_with_a_leader_for_each_partition(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Absent from the metadata for two looks, then listed without leaders, then led: create
    returns after the fifth look, having waited between looks rather than spun (10 ms after
    the first, doubling up to VISIBLE_POLL_S)."""
    inner = Propagating([0.0], listed_from=3, led_from=5)
    client = _admin(monkeypatch, inner)
    assert client.create(["t.a", "t.b"]) == ["t.a", "t.b"]
    assert inner.looks_since_create == 5
    assert inner.now[0] == pytest.approx(0.01 + 0.02 + 0.04 + admin.VISIBLE_POLL_S)
    assert set(client.topics()) == {"t.a", "t.b"}


def test_topics_that_never_show_end_in_a_clear_error_within_the_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Bounded: a topic the metadata never lists fails create after the admin's timeout, with
    one error naming it."""
    inner = Propagating([0.0], listed_from=10**9, led_from=10**9)
    client = _admin(monkeypatch, inner)
    with pytest.raises(KafkaError, match=r"not in the cluster's metadata after 15s: t\.gone$"):
        client.create(["t.gone"])
    assert 15.0 <= inner.now[0] < 15.0 + 2 * admin.VISIBLE_POLL_S
