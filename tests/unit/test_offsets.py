"""The committable offset is the contiguous low watermark of finished records."""

from __future__ import annotations

import pytest

from pipeline.offsets import OffsetTracker, PartitionOffsets


def test_nothing_is_committable_before_anything_finishes() -> None:
    part = PartitionOffsets()
    part.begin(10)
    assert part.committable() is None


def test_records_without_outputs_are_committable_at_once() -> None:
    part = PartitionOffsets()
    part.begin(10, outstanding=0)
    part.begin(11, outstanding=0)
    assert part.committable() == 12


def test_out_of_order_acks_commit_only_the_contiguous_prefix() -> None:
    part = PartitionOffsets()
    a, b, c = part.begin(5), part.begin(6), part.begin(7)
    c.finish_one()
    assert part.committable() is None
    a.finish_one()
    assert part.committable() == 6
    b.finish_one()
    assert part.committable() == 8


def test_a_record_waits_for_every_one_of_its_outputs() -> None:
    part = PartitionOffsets()
    token = part.begin(0, outstanding=3)
    token.finish_one()
    token.finish_one()
    assert part.committable() is None
    token.finish_one()
    assert part.committable() == 1


def test_a_failed_record_blocks_the_watermark() -> None:
    part = PartitionOffsets()
    bad = part.begin(0)
    part.begin(1, outstanding=0)
    bad.failed = True
    bad.finish_one()
    assert part.committable() is None


def test_committed_offsets_are_not_offered_twice() -> None:
    part = PartitionOffsets()
    part.begin(0, outstanding=0)
    assert part.committable() == 1
    part.committed(1)
    assert part.committable() is None
    part.begin(1, outstanding=0)
    assert part.committable() == 2


def test_rewind_cancels_later_tokens_so_late_acks_cannot_finish_a_new_attempt() -> None:
    part = PartitionOffsets()
    first = part.begin(0, outstanding=0)
    old = part.begin(1)
    part.rewind(1)
    assert old.cancelled and not first.cancelled
    new = part.begin(1)
    old.finish_one()  # the late ack of the first attempt
    assert part.committable() == 1
    new.finish_one()
    assert part.committable() == 2


def test_offsets_must_be_begun_in_increasing_order() -> None:
    part = PartitionOffsets()
    part.begin(3)
    with pytest.raises(ValueError):
        part.begin(3)


def test_tracker_commits_only_the_requested_partitions_and_forgets_dropped_ones() -> None:
    tracker = OffsetTracker()
    tracker.partition(("t", 0)).begin(0, 0)
    pending = tracker.partition(("t", 1)).begin(0)
    assert tracker.committable({("t", 0)}) == {("t", 0): 1}
    tracker.drop([("t", 1)])
    assert pending.cancelled
    assert tracker.committable() == {("t", 0): 1}
    tracker.mark_committed({("t", 0): 1})
    assert tracker.committable() == {}


def test_finished_event_ids_are_handed_over_once_the_watermark_passes_them() -> None:
    tracker = OffsetTracker()
    part = tracker.partition(("t", 0))
    part.begin(0, 0, event_id="a")  # finished at once
    slow = part.begin(1, 1, event_id="b")
    part.begin(2, 0, event_id="c")  # finished, but behind b
    assert tracker.committable() == {("t", 0): 1}
    assert tracker.take_finished_ids() == ["a"]
    slow.finish_one()
    assert tracker.committable() == {("t", 0): 3}
    assert tracker.take_finished_ids() == ["b", "c"]
    assert tracker.take_finished_ids() == []


def test_a_rewind_keeps_what_finished_after_it_and_resumes_it_when_read_again() -> None:
    """Records past the rewind that had finished are not redone: re-read, they are finished
    again at once; unfinished ones are cancelled as before."""
    part = PartitionOffsets()
    failed, done, pending = part.begin(0), part.begin(1), part.begin(2)
    done.finish_one()
    failed.failed = True
    part.rewind(0)
    assert failed.cancelled and pending.cancelled and not done.cancelled
    retry = part.begin(0)
    assert part.resume_kept(1)
    assert not part.resume_kept(2)
    part.begin(2, outstanding=0)
    assert part.committable() is None
    retry.finish_one()
    assert part.committable() == 3


def test_kept_offsets_not_read_again_are_dropped_and_a_drop_forgets_them() -> None:
    tracker = OffsetTracker()
    tp = ("t", 0)
    part = tracker.partition(tp)
    part.begin(0)
    part.begin(1, outstanding=0)
    part.begin(2, outstanding=0)
    tracker.rewind(tp, 0)
    assert tracker.keeping == {tp}
    part.begin(0, outstanding=0)
    assert tracker.resume_kept(tp, 2)  # 1 is gone from the log (compacted): dropped
    assert tracker.keeping == set() and not part.kept
    tracker.rewind(tp, 0)
    assert tracker.keeping == {tp}
    tracker.drop([tp])
    assert tracker.keeping == set()


def test_finished_records_leave_the_queue_at_the_next_begin_not_only_at_a_commit() -> None:
    """Tokens of acknowledged records are not kept a whole commit interval: the next begin
    drops the finished head, and the watermark and the ids it covers are as a commit finds them."""
    part = PartitionOffsets()
    first, second = part.begin(0, 1, "a"), part.begin(1, 1, "b")
    first.finish_one()
    third = part.begin(2, 1, "c")
    assert part.in_flight == 2  # offset 0 left; 1 (unacknowledged) and 2 stay
    second.finish_one()
    assert part.in_flight == 2  # nothing begun since: still queued until a begin or a commit
    assert part.committable() == 2 and part.finished_ids == ["a", "b"]
    third.finish_one()
    failed = part.begin(3, 1)
    failed.finish_one()
    failed.failed = True  # acknowledged, then its delivery failed: not finished
    part.begin(4, 1)
    assert part.in_flight == 2 and part.committable() == 3  # it holds the watermark as before
