"""Whether an exactly-once commit that was resumed into a fence had landed before it.

A ``commit_transaction`` that timed out goes on in the background and is resumed later
(``pipeline.commit``). If the producer is fenced meanwhile, the resumed call raises the fence,
yet the transaction may have committed: Kafka's coordinator completes a transaction whose
commit had reached it (``PrepareCommit``) when a new epoch is taken, and aborts one still open.
So once the fence is met the transaction is complete, one way or the other, and the group's
committed offsets say which:

- each partition the transaction moved is committed exactly at its offset: it landed;
- one is committed below it: it did not (the commit is atomic, and offsets never go back);
- otherwise it cannot be known here: no partition moved (outputs only), the offsets cannot be
  read, or one is past it (another member took the partition and went on). That is logged.

Pure but for the read, which is passed in.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from pipeline.ports import TopicPartition

log = logging.getLogger("pipeline.commit")


def had_landed(
    offsets: Mapping[TopicPartition, int],
    committed_before: Callable[[TopicPartition], int | None],
    read: Callable[[list[TopicPartition]], Mapping[TopicPartition, int]],
) -> bool | None:
    """True: the transaction that would commit ``offsets`` landed; False: it did not; None:
    that cannot be known (logged). ``committed_before``: each partition's offset committed
    before it; ``read``: the group's committed offsets now (raises when they cannot be read)."""
    moved = {}
    for tp, offset in offsets.items():
        before = committed_before(tp)
        if before is None or offset > before:
            moved[tp] = offset
    found: Mapping[TopicPartition, int] = {}
    if moved:
        try:
            found = read(sorted(moved))
        except Exception as exc:  # the client's own error type: the port does not wrap it
            log.warning("cannot read the committed offsets after the fence (%s)", exc)
    if moved and found and all(found.get(tp) == offset for tp, offset in moved.items()):
        log.info("the fenced commit had landed before the fence (committed: %s): told as "
                 "committed", _fmt(moved))  # fmt: skip
        return True
    if any(found.get(tp, offset) < offset for tp, offset in moved.items()):
        return False
    log.warning("the fenced commit may have landed before the fence, or not (%s): told as "
                "failed and aborted; its records are read again from the committed offsets, "
                "whichever it was", _fmt(moved) if moved else "no offsets moved")  # fmt: skip
    return None


def _fmt(offsets: Mapping[TopicPartition, int]) -> str:
    return ", ".join(f"{t}[{p}]@{o}" for (t, p), o in sorted(offsets.items()))
