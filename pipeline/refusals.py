"""What happens to an input whose output (or retry / dead-letter copy) the broker refused.

The Kafka adapter classifies the error (``KafkaError.permanent``, ``.batch_wide``); this turns
it into a bounded outcome for the input:

- *retriable* (a broker or topic unavailable, the local queue full): the partition is re-read
  from the input after a backoff that grows with every failure in a row on that partition and
  is reset once the partition is committed past it (an exactly-once transaction holding the
  input's outputs may still abort before). Logged when the partition starts failing and when
  it recovers, not at every attempt. A dead letter that cannot be written is always retried
  this way: its input stays uncommitted, never lost.
- *permanent* (too large, invalid, not authorised): no retry can fix it, so the input is
  dead-lettered (its own bytes, the error in the headers) when the re-read reaches it, instead
  of being handled again.
- *permanent for a whole batch*: a broker refuses a produce batch as a whole (a record too
  large for the topic fails every record produced alongside it), so the error may not be this
  input's. Its handler runs once more with the outputs produced alone (the producer flushed
  before and after); if they are refused again, the input is dead-lettered.

Work past the refused input that had finished is kept (``OffsetTracker.rewind``), so the
re-read does not emit its outputs again. Pure bookkeeping over the holds and the tracker.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from typing import Literal

from pipeline.backoff import Backoff, Streaks
from pipeline.errors import KafkaError
from pipeline.holds import Holds
from pipeline.hookcalls import Hooks
from pipeline.offsets import OffsetTracker, Token
from pipeline.outputs import FailedDelivery
from pipeline.ports import RawRecord, TopicPartition
from pipeline.retrytopics import Origin
from pipeline.routing import Router

log = logging.getLogger("pipeline.runner")
ALONE_FLUSH_S = 5.0  # producing outputs alone: how long to wait for the producer to empty


class Verdict(enum.Enum):
    DEAD_LETTER = "dead_letter"  # dead-letter the input when it is read again
    ALONE = "alone"  # handle it again, its outputs produced alone


class Refusals:
    def __init__(
        self,
        stage: str,
        holds: Holds,
        tracker: OffsetTracker,
        router: Router,
        assigned: set[TopicPartition],
        hooks: Hooks,
        backoff: Backoff,
    ) -> None:
        self._stage = stage
        self._holds = holds
        self._tracker = tracker
        self._router = router
        self._assigned = assigned  # the runner's own set
        self._on_delivery_stall = hooks.on_delivery_stall
        self._on_undeliverable = hooks.on_undeliverable
        self._streaks = Streaks(backoff)
        # What to do with an input when it is read again, by (partition, offset).
        self.verdicts: dict[tuple[TopicPartition, int], tuple[Verdict, KafkaError]] = {}
        self._tried_alone: set[tuple[TopicPartition, int]] = set()

    @property
    def active(self) -> bool:
        return bool(self._streaks or self.verdicts or self._tried_alone)

    def serve(self, failed: list[FailedDelivery]) -> bool:
        """Act on refused deliveries; True if some were not stale (their input was not
        rewound since, and its partition is still ours)."""
        fresh = False
        for tp, token, err, dead_letter in failed:
            if not token.cancelled and tp in self._assigned:
                self.refused(tp, token, err, dead_letter)
                fresh = True
        return fresh

    def settled(
        self, record: RawRecord, tp: TopicPartition, origin: Origin | None
    ) -> Literal["finished", "dead_lettered"] | None:
        """Whether a record read again after a rewind is settled without its handler: it had
        finished before (its outputs are out already), or it is to be dead-lettered."""
        offset = record.offset()
        if tp in self._tracker.keeping and self._tracker.resume_kept(tp, offset):
            return "finished"
        verdict = self.verdicts.get((tp, offset))
        if verdict is None or verdict[0] is not Verdict.DEAD_LETTER:
            return None
        self._router.dead_letter(record, tp, verdict[1], origin)
        return "dead_lettered"

    def refused(self, tp: TopicPartition, token: Token, err: KafkaError, dead_letter: bool) -> None:
        """An output or copy of the input behind ``token`` was not delivered: decide its fate,
        and re-read the partition from it."""
        key = (tp, token.offset)
        where = f"{tp[0]}[{tp[1]}]@{token.offset}"
        if not err.permanent or dead_letter:
            self._retry(tp, token.offset, err, where, dead_letter)
        elif err.batch_wide and key not in self._tried_alone:
            log.warning("%s: output of %s refused (%s), maybe for another record of its batch; "
                        "handling it again with its outputs produced alone",
                        self._stage, where, err)  # fmt: skip
            self.verdicts[key] = (Verdict.ALONE, err)
            # Tried alone from now on, whether or not the handler succeeds on the re-read: a
            # retry copy refused this way again is dead-lettered, not re-handled without end.
            self._tried_alone.add(key)
            self._holds.rewind(tp, token.offset, 0.0)
        else:
            log.error("%s: output of %s can never be delivered (%s); dead-lettering the input",
                      self._stage, where, err)  # fmt: skip
            if self._on_undeliverable is not None:
                self._on_undeliverable(tp, token.offset, err)
            self.verdicts[key] = (Verdict.DEAD_LETTER, err)
            self._holds.rewind(tp, token.offset, 0.0)

    def _retry(
        self, tp: TopicPartition, offset: int, err: KafkaError, where: str, dead_letter: bool
    ) -> None:
        attempt, delay = self._streaks.failed(tp, offset)
        what = "dead letter" if dead_letter else "output"
        if self._on_delivery_stall is not None:
            self._on_delivery_stall(tp, offset, err, attempt)
        if attempt == 1:
            log.error("%s: %s of %s not delivered (%s); input uncommitted, re-reading it in "
                      "%.2fs, backing off while this lasts", self._stage, what, where, err,
                      delay)  # fmt: skip
        else:
            log.debug("%s: %s of %s not delivered again (attempt %d, %s); next in %.2fs",
                      self._stage, what, where, attempt, err, delay)  # fmt: skip
        self._holds.rewind(tp, offset, delay)

    def take_alone(self, tp: TopicPartition, offset: int) -> bool:
        """Whether this input's outputs are to be produced alone (asked once per read)."""
        key = (tp, offset)
        verdict = self.verdicts.get(key)
        if verdict is None or verdict[0] is not Verdict.ALONE:
            return False
        del self.verdicts[key]
        self._tried_alone.add(key)
        return True

    def check(self) -> None:
        """Forget what partitions committed past their refused input no longer need."""
        # Past it means committed past it: a transaction holding its outputs may still abort.
        for tp, attempts in self._streaks.recovered(self._tracker.committed_to):
            log.warning("%s: %s[%d] delivering again after %d failed attempt(s)",
                        self._stage, tp[0], tp[1], attempts)  # fmt: skip
        if self.verdicts or self._tried_alone:
            done = self._tracker.committed_to
            for key in [k for k in self.verdicts if _past(k, done)]:
                del self.verdicts[key]  # in place: the Refused gate watches this very dict
            self._tried_alone = {k for k in self._tried_alone if not _past(k, done)}

    def forget(self, partitions: list[TopicPartition]) -> None:
        self._streaks.forget(partitions)
        gone = set(partitions)
        for key in [k for k in self.verdicts if k[0] in gone]:
            del self.verdicts[key]  # in place, as in check
        self._tried_alone = {k for k in self._tried_alone if k[0] not in gone}


def _past(
    key: tuple[TopicPartition, int], committed: Callable[[TopicPartition], int | None]
) -> bool:
    done_to = committed(key[0])
    return done_to is not None and done_to > key[1]
