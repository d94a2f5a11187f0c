"""Commit policy of exactly-once stages (at least once: ``pipeline.offsetcommit``).

Exactly once (``TransactionCommitter``): the stage's producer is transactional. A transaction
is opened before a batch is handled; outputs, retry and dead-letter copies go into it; on the
interval (and on revoke/shutdown) the input positions are added with
``send_offsets_to_transaction`` and the transaction is committed, atomically. An abortable
error aborts and rewinds every partition to its last committed offset. A fenced producer (its
coordinator aborted a transaction open past its timeout, or a newer instance took the
transactional id: the client cannot tell which) is re-created in place, within a bound
(``pipeline.renewal``), and its lost transaction treated as aborted: the same rewind. Past the
bound, or if the renewal fails, the fence stops the stage. An abort that runs out of time (its
coordinator is moving to another broker) goes on in the background and must be *resumed*
before the next ``begin_transaction`` (librdkafka refuses the begin with ``_CONFLICT``): the
next batch resumes it first, and only an abort that still cannot finish stops the stage; a
revoke or the shutdown resumes it too, within their budget, so a worker does not exit with it
pending. A commit that runs out of time (outputs still waiting for a moved partition leader)
is resumed the same way rather than aborted: aborting it would conflict with the commit that
librdkafka carries on in the background (``_CONFLICT``), and rewinding would need the group
coordinator, which may be the broker that is away.

While the broker is away (a restart) neither waits for long: ``start`` retries
``init_transactions`` (``pipeline.patience``), and a pending commit or abort that a step cannot
finish is kept pending, with no transaction open (``waiting``: the ``TransactionAge`` gate holds
every record), and resumed at the next step. Either stops the stage only once the broker has
been away for the patience (``Settings.transaction_retry_timeout_s``).
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from pipeline.errors import KafkaError, ProducerFencedError, TransactionError
from pipeline.fencedcommit import had_landed
from pipeline.hookcalls import Hooks
from pipeline.offsetcommit import DoneStore, OffsetCommitter
from pipeline.offsets import OffsetTracker
from pipeline.patience import Patience, outlast
from pipeline.ports import TopicPartition
from pipeline.renewal import Renewer

__all__ = ["DoneStore", "OffsetCommitter", "Producerish", "TransactionCommitter"]
log = logging.getLogger("pipeline.commit")
MIN_CALL_TIMEOUT_S = 0.5
# A commit that timed out and goes on in the background: its partitions and offsets.
Pending = tuple[set[TopicPartition], dict[TopicPartition, int]]


class Producerish(Protocol):
    def init_transactions(self, timeout_s: float) -> None: ...
    def begin_transaction(self) -> None: ...
    def send_offsets_to_transaction(
        self, offsets: dict[TopicPartition, int], group_metadata: Any, timeout_s: float
    ) -> None: ...
    def commit_transaction(self, timeout_s: float) -> None: ...
    def abort_transaction(self, timeout_s: float) -> None: ...
    def renew(self) -> None: ...


class TransactionCommitter:
    def __init__(
        self,
        consumer: Any,
        producer: Producerish,
        tracker: OffsetTracker,
        hooks: Hooks,
        rewind_all: Callable[[], None],
        timeout_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        patience: Patience | None = None,
    ) -> None:
        self._consumer = consumer
        self._producer = producer
        self._tracker = tracker
        self._on_commit, self._on_abort = hooks.on_commit, hooks.on_abort
        self._on_commit_failed = hooks.on_commit_failed
        self._rewind_all = rewind_all
        self._timeout = timeout_s
        self._clock = clock
        self._patience = patience or Patience()
        self._open = False
        self._claims: list[Callable[[], None]] = []  # outcomes to claim once committed
        self._abort_pending = False  # an abort timed out and goes on in the background
        # A commit that timed out and goes on in the background: what it commits.
        self._commit_pending: Pending | None = None
        # The broker aborts a transaction open past its timeout (and the producer is fenced):
        # one open for half of it is committed before more records join it (``overdue``).
        self._max_open_s = getattr(producer, "transaction_timeout_s", 60.0) / 2
        self._opened_at = 0.0
        # A pending commit or abort the loop could not finish yet (the broker is away): no
        # transaction can begin, so the ``TransactionAge`` gate holds every record meanwhile.
        self.waiting = False
        self._away_since: float | None = None  # when resuming it first failed
        self._away_told = 0.0  # when that was last logged
        self._renewer = Renewer(producer, self._patience, clock)
        self._stop = threading.Event()  # the stage's, once started: a renewal's wait ends on it
        self._assigned: set[TopicPartition] = set()  # the runner's, as last given: for logs

    def start(self, stop: threading.Event) -> bool:
        """``init_transactions``, retried while the broker is away (restarting, its coordinator
        loading) for up to the patience (``pipeline.patience``). False: told to stop while
        waiting, nothing began. Raises at once for a fenced or fatal error, or once the
        patience runs out."""
        self._stop = stop
        return outlast(
            "init_transactions", self._producer.init_transactions, self._patience,
            clock=self._clock, stop=stop,
        )  # fmt: skip

    def uncommitted_fate(self) -> str:
        """What becomes of the records a failed commit left uncommitted (for a log line): a
        commit still pending goes on in the background and may yet commit them, outputs and
        offsets together; otherwise the transaction is (or will be) aborted."""
        if self._commit_pending is not None:
            return ("the transaction's commit is still pending and may yet land (outputs and "
                    "offsets together); if it does not, records will be redelivered")  # fmt: skip
        return "the transaction is aborted: records will be redelivered"

    @property
    def overdue(self) -> bool:
        """The open transaction is old enough to commit now, whatever the commit interval. Not
        one whose commit is pending: it is being committed (``waiting`` holds the records)."""
        if not self._open or self._commit_pending is not None:
            return False
        return self._clock() - self._opened_at >= self._max_open_s

    def before_batch(self) -> None:
        """Finish a pending commit or abort, then begin a transaction. One that still cannot
        finish while the broker is away leaves none open (``waiting``): the batch is held."""
        if self._commit_pending is not None and not self._resume_commit(patient=True):
            return
        if self._abort_pending and not self._resume_abort(patient=True):
            return
        if not self._open:
            try:
                self._producer.begin_transaction()
            except ProducerFencedError as exc:
                if not self._fenced(exc):
                    return
                self._producer.begin_transaction()  # on the new producer; fenced again: raised
            self._open = True
            self._opened_at = self._clock()
        self.waiting = False  # a transaction is open: records may be handled

    def _resume_abort(self, timeout_s: float | None = None, *, patient: bool = False) -> bool:
        """Finish the abort that timed out (calling it again resumes it), within
        ``_resume_timeout``. True once it is no longer pending. If it still does not finish, no
        transaction can begin: ``patient`` (in the loop), False while the broker has been away
        for less than the patience; otherwise the ``TransactionError`` is raised."""
        timeout_s = self._resume_timeout(timeout_s, patient)
        try:
            self._producer.abort_transaction(timeout_s)
        except ProducerFencedError as exc:
            return self._fenced(exc)  # renewed: the abort is moot, the rewind done
        except TransactionError as exc:
            if not exc.retriable:
                self._abort_pending = False  # not resumable: begin will say what is wrong
                log.error("resuming the abort failed: %s", exc)
                return True
            if patient and self._still_away("abort_transaction", exc):
                return False
            raise TransactionError(
                f"the aborted transaction did not finish within {timeout_s:.1f}s"
                f"{self._away_for()}: {exc}",
                code=exc.code,
            ) from None
        self._abort_pending = False
        self._back()
        log.info("the timed-out abort finished; transactions go on")
        return True

    def _resume_timeout(self, timeout_s: float | None, patient: bool) -> float:
        """In the loop (``patient``), one short attempt (``Patience.attempt_s``): the loop may
        try twice a step (the batch, the interval), and a stop must still leave the shutdown
        its budget. Otherwise the caller's budget, or the full timeout."""
        if timeout_s is None:
            timeout_s = min(self._timeout, self._patience.attempt_s) if patient else self._timeout
        return max(timeout_s, MIN_CALL_TIMEOUT_S)

    def _still_away(self, what: str, exc: TransactionError) -> bool:
        """A resumed call did not finish: True (wait, holding the records) while the broker
        has been away for less than the patience; logged at once, then every so often."""
        now, patience = self._clock(), self._patience
        first = self._away_since is None
        if self._away_since is None:
            self._away_since = now
        elif now - self._away_since >= patience.limit_s:
            self.waiting = False
            return False
        if first or now - self._away_told >= patience.log_every_s:
            self._away_told = now
            log.warning("%s not finished after %.0fs (%s); records wait, and it is resumed for "
                        "up to %.0fs (%s)", what, now - self._away_since, exc, patience.limit_s,
                        patience.setting)  # fmt: skip
        self.waiting = True
        return True

    def _away_for(self) -> str:
        if self._away_since is None:
            return ""
        return (f", resumed for {self._clock() - self._away_since:.0f}s "
                f"({self._patience.setting}={self._patience.limit_s:g})")  # fmt: skip

    def _back(self) -> None:
        if self._away_since is not None:
            log.info("the broker answers again after %.0fs", self._clock() - self._away_since)
        self._away_since, self.waiting = None, False

    def commit(
        self, assigned: set[TopicPartition], *, sync: bool, timeout_s: float | None = None
    ) -> None:
        """``timeout_s`` bounds the whole commit (offsets, commit, and an abort if it fails),
        not each call: at shutdown every step shares one deadline."""
        self._assigned = assigned  # the runner's own set: a renewal's log names them
        if self._commit_pending is not None:
            self._resume_commit(timeout_s, patient=not sync)
            return
        if self._abort_pending:
            # A revoke or the shutdown: finish the abort now, within their budget. A process
            # that exits with it pending leaves the transaction (and its input offsets) open
            # until the broker times it out, and a broker restart meanwhile can leave it
            # hanging for good (chaos run b2): the group's offsets stay unstable. The interval:
            # one short attempt, as before a batch; every partition may be held after the abort
            # (its rewind unreadable), so no batch comes, and only this bounds the wait.
            self._resume_abort(timeout_s, patient=not sync)
            return
        if not self._open:
            return
        deadline = self._clock() + (self._timeout if timeout_s is None else timeout_s)
        offsets = {}
        for tp in assigned:
            next_read = self._tracker.partition(tp).next_read
            if next_read is not None:
                offsets[tp] = next_read
        committing = False
        try:
            if offsets:
                metadata = self._consumer.group_metadata()
                self._producer.send_offsets_to_transaction(offsets, metadata, self._left(deadline))
            committing = True
            self._producer.commit_transaction(self._left(deadline))
        except ProducerFencedError as exc:
            self._commit_failed(assigned)
            self._fenced(exc)
            return
        except TransactionError as exc:
            if committing and exc.retriable and not exc.abortable:
                self._commit_pending = (set(assigned), offsets)
                log.warning("commit_transaction not finished yet (%s); resumed before the next "
                            "transaction", exc)  # fmt: skip
                return
            log.warning("transaction failed (%s); aborting and rewinding", exc)
            self._commit_failed(assigned)
            self.abort(self._left(deadline))
            return
        self._committed(assigned, offsets)

    def _resume_commit(self, timeout_s: float | None = None, *, patient: bool = False) -> bool:
        """Finish the commit that timed out (calling it again resumes it), within
        ``_resume_timeout``. One that fails now is aborted. One that still does not finish:
        ``patient``, kept pending (False) as ``_resume_abort`` does; otherwise raised."""
        assert self._commit_pending is not None
        (assigned, offsets), pending = self._commit_pending, self._commit_pending
        self._commit_pending = None
        timeout_s = self._resume_timeout(timeout_s, patient)
        try:
            self._producer.commit_transaction(timeout_s)
        except ProducerFencedError as exc:
            # It may have committed (a newer epoch's init completes a commit under way before
            # fencing): the committed offsets read after the renewal tell which it was.
            return self._fenced(exc, pending)
        except TransactionError as exc:
            if exc.retriable and not exc.abortable:
                # Still in flight: resumable later (a begin meanwhile would be refused).
                self._commit_pending = pending
                if patient and self._still_away("commit_transaction", exc):
                    return False
                raise TransactionError(
                    f"the transaction's commit did not finish within {timeout_s:.1f}s"
                    f"{self._away_for()}: {exc}",
                    code=exc.code,
                ) from None
            log.warning("transaction failed (%s); aborting and rewinding", exc)
            self._back()
            self._commit_failed(assigned)
            self.abort()
            return True
        self._back()
        log.info("the timed-out commit finished; transactions go on")
        self._committed(assigned, offsets)
        return True

    def _committed(self, assigned: set[TopicPartition], offsets: dict[TopicPartition, int]) -> None:
        self._open = False
        claims, self._claims = self._claims, []
        for claim in claims:
            claim()
        # commit_transaction flushed every output, so their tokens are done: let the tracker
        # drop them (it would otherwise keep one per record with outputs, forever).
        self._tracker.committable(assigned)
        self._tracker.take_finished_ids()
        self._tracker.mark_committed(offsets)
        if self._on_commit is not None:
            self._on_commit(offsets)

    def _commit_failed(self, assigned: set[TopicPartition]) -> None:
        if self._on_commit_failed is not None:
            self._on_commit_failed(sorted(assigned))

    def _left(self, deadline: float) -> float:
        # Never 0: librdkafka would then not even try.
        return max(MIN_CALL_TIMEOUT_S, deadline - self._clock())

    def after_commit(self, claim: Callable[[], None]) -> None:
        """Run ``claim`` once the open transaction commits (never if it aborts): an
        acknowledged record in it is not final before."""
        self._claims.append(claim)

    def delivery_failed(self) -> bool:
        """An output of the open transaction failed: the transaction cannot commit."""
        self.abort()
        return True

    def abandon(self) -> None:
        if self._open:
            self.abort()

    def abort(self, timeout_s: float | None = None) -> None:
        if self._commit_pending is not None:
            # A lost assignment or a refused output during a pending commit: librdkafka refuses
            # to abort it (_CONFLICT) and it may yet commit, outputs and offsets, so nothing is
            # dropped or rewound now; resumed, it is aborted (and rewound) only if it fails.
            log.warning("abort_transaction left to the pending commit: resumed first")
            return
        try:
            self._producer.abort_transaction(self._timeout if timeout_s is None else timeout_s)
        except ProducerFencedError as exc:
            self._fenced(exc)  # aborted for us, and rewound
            return
        except TransactionError as exc:
            self._abort_pending = exc.retriable
            if exc.retriable:
                log.warning("abort_transaction not finished yet (%s); resumed before the next "
                            "transaction", exc)  # fmt: skip
            else:
                log.error("abort_transaction failed: %s", exc)
        except KafkaError as exc:
            log.error("abort_transaction failed: %s", exc)
        self._open = False
        self._claims = []
        if self._on_abort is not None:
            self._on_abort()
        self._rewind_all()

    def _fenced(self, fence: ProducerFencedError, pending: Pending | None = None) -> bool:
        """The producer was fenced: re-create it in place (``pipeline.renewal``) and treat its
        lost transaction as aborted: outcomes unclaimed, ``on_abort``, every partition rewound
        to its committed offset (held while that cannot be read). The dead producer's delivery
        reports are served by its renewal, before this transaction's claims are dropped. True
        once a transaction may begin; False if told to stop meanwhile (records are held).
        Raises when it cannot be renewed: the stage stops.

        ``pending``: the fence met a resumed commit, which may have landed before it (see
        ``_landed``). One that did is told as the commit it was (claims, ``on_commit``), once;
        one that did not, or whose outcome cannot be read, as failed and aborted."""
        self._open = False
        tid = getattr(self._producer, "transactional_id", None) or "?"
        where = f"{tid} ({_fmt(self._assigned)})"
        try:
            renewed = self._renewer.renew(fence, self._stop, where)
        except BaseException:
            if pending is not None:
                self._commit_failed(pending[0])
                log.warning("the fenced commit may have landed before the fence; the stage "
                            "stops, and the next owner reads the committed offsets")  # fmt: skip
            raise
        landed = self._landed(pending[1]) if pending is not None else False
        claims = self._claims
        self._claims, self._commit_pending, self._abort_pending = [], None, False
        self._away_since, self.waiting = None, not renewed
        if landed and pending is not None:
            self._claims = claims
            self._committed(*pending)
        else:
            if pending is not None:
                self._commit_failed(pending[0])
            if self._on_abort is not None:
                self._on_abort()
        self._rewind_all()
        return renewed

    def _landed(self, offsets: dict[TopicPartition, int]) -> bool:
        """Whether the resumed commit had landed before the fence (``pipeline.fencedcommit``);
        False when that cannot be known (logged)."""
        gone = {tp for tp in offsets if tp not in self._assigned}
        if gone:  # a new owner may have committed the very same offsets: no verdict from them
            log.warning("the fenced commit may have landed before the fence, or not (%s: no "
                        "longer this worker's); told as failed and aborted", _fmt(gone))
            return False
        timeout_s = self._resume_timeout(None, True)  # one short read: the loop is waiting
        read = functools.partial(self._consumer.committed, timeout_s=timeout_s)
        return had_landed(offsets, self._tracker.committed_to, read) is True


def _fmt(partitions: set[TopicPartition]) -> str:
    return ", ".join(f"{t}[{p}]" for t, p in sorted(partitions)) or "no partitions"
