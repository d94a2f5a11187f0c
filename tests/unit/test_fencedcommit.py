"""Whether a commit resumed into a fence had landed, from the committed offsets read after it
(pure: the read is passed in). The runner's case, on the memory broker, is in
tests/unit/test_producer_renewal.py."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

import pytest

from pipeline.fencedcommit import had_landed
from pipeline.ports import TopicPartition

A, B = ("in", 0), ("in", 1)
BEFORE = {A: 10, B: 20}  # committed before the transaction


Read = Callable[[list[TopicPartition]], Mapping[TopicPartition, int]]


def reads(committed: Mapping[TopicPartition, int]) -> Read:
    def read(partitions: list[TopicPartition]) -> Mapping[TopicPartition, int]:
        return {tp: committed.get(tp, -1001) for tp in partitions}

    return read


def verdict(
    offsets: dict[TopicPartition, int], committed: Mapping[TopicPartition, int]
) -> bool | None:
    return had_landed(offsets, BEFORE.get, reads(committed))


def test_every_moved_partition_committed_at_its_offset_means_it_landed() -> None:
    assert verdict({A: 15, B: 20}, {A: 15, B: 20}) is True, "B did not move: it says nothing"


def test_one_partition_committed_below_its_offset_means_it_did_not() -> None:
    assert verdict({A: 15, B: 25}, {A: 10, B: 25}) is False
    assert had_landed({A: 15}, lambda tp: None, reads({})) is False, "never committed at all"


def test_what_cannot_be_told_apart_is_unknown_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="pipeline.commit"):
        assert verdict({A: 15}, {A: 30}) is None, "past it: another member went on"
        assert verdict({A: 10, B: 20}, {A: 10, B: 20}) is None, "nothing moved: outputs only"

        def unreadable(partitions: list[TopicPartition]) -> Mapping[TopicPartition, int]:
            raise RuntimeError("coordinator not available")

        assert had_landed({A: 15}, BEFORE.get, unreadable) is None
    assert caplog.text.count("may have landed before the fence, or not") == 3
    assert "in[0]@15" in caplog.text and "coordinator not available" in caplog.text
