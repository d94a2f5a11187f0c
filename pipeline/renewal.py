"""Re-creating a fenced transactional producer in place, within a bound.

Why a producer of ours is fenced. Kafka fences a transactional producer by bumping the epoch
of its ``transactional.id``; an older epoch is refused from then on. Two things bump it (the
transaction protocol v1 that librdkafka 2.x speaks):

- the transaction coordinator, aborting a transaction left open past ``transaction.timeout.ms``
  (``TransactionCoordinator.abortTimedOutTransactions`` → ``prepareFenceProducerEpoch``). A
  broker away for longer than that while a transaction was open does it once it is back,
  before the worker's resumed abort reaches it;
- a new producer with the same ``transactional.id`` calling ``InitProducerId``: a real fence.

The two cannot be told apart from the client. The coordinator answers the old epoch with
``PRODUCER_FENCED`` in both cases (partition leaders and the group coordinator with
``INVALID_PRODUCER_EPOCH``), and librdkafka turns both into one fatal ``_FENCED`` error
("This instance has been fenced by a newer instance": ``rd_kafka_txn_normalize_err`` in
rdkafka_txnmgr.c, ``rd_kafka_idemp_check_error``); the producer instance is then unusable for
good. KIP-588's ``TRANSACTION_TIMED_OUT``, which would have told them apart, never shipped
(apache/kafka#9311 was closed unmerged), and librdkafka has no such code.

So every fence is renewed, but a bounded number of times: at most ``RENEWALS`` within
``window_s`` (``transaction_retry_timeout_s``). A broker restart fences a worker once; two live
processes sharing a transactional id fence each other within a second or two each round, so
each spends its renewals within seconds, and the one fenced after its last stops (exit 1, as
before); the other keeps the id. Our ids are unique per process (the group and the worker id,
``Pipeline.runner``), so that takes a misconfiguration (two workers given one worker id).
Zombies of a group (a worker that lost its partitions) are not fenced by the transactional id
but by their group generation (KIP-447): ``send_offsets_to_transaction`` carries the
consumer's group metadata, and a stale one makes the transaction abort. A renewed producer
thus commits nothing for partitions its worker no longer owns.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import Protocol

from pipeline.errors import ProducerFencedError
from pipeline.patience import Patience, outlast

log = logging.getLogger("pipeline.commit")
RENEWALS = 3  # within the window: a broker restart costs one
# The fenced errors a new producer can recover from; other fatal errors (authorization, an
# unsupported broker) would only fail again.
FENCED_CODES = frozenset({"_FENCED", "PRODUCER_FENCED", "INVALID_PRODUCER_EPOCH"})


class Renewable(Protocol):
    def renew(self) -> None: ...
    def init_transactions(self, timeout_s: float) -> None: ...


class RenewalBudget:
    """At most ``limit`` renewals within any ``window_s``: pure, on the injected clock."""

    def __init__(self, limit: int, window_s: float, clock: Callable[[], float]) -> None:
        self.limit, self.window_s, self._clock = limit, window_s, clock
        self._taken: deque[float] = deque()

    def take(self) -> bool:
        """True (and counted) if one more renewal fits in the window now."""
        now = self._clock()
        while self._taken and now - self._taken[0] >= self.window_s:
            self._taken.popleft()
        if len(self._taken) >= self.limit:
            return False
        self._taken.append(now)
        return True

    @property
    def taken(self) -> int:
        return len(self._taken)


class Renewer:
    """Renews ``producer`` after a fence: a new client with the same config
    (``TransactionalProducerPort.renew``), then ``init_transactions`` through the patience
    (the broker was just away: its coordinator may still be loading)."""

    def __init__(
        self, producer: Renewable, patience: Patience, clock: Callable[[], float],
        limit: int = RENEWALS,
    ) -> None:  # fmt: skip
        self._producer = producer
        self._patience = patience
        self._clock = clock
        self.budget = RenewalBudget(limit, patience.limit_s, clock)

    def renew(self, fence: ProducerFencedError, stop: threading.Event, where: str) -> bool:
        """True once the new producer is initialised; False if told to stop meanwhile (none is
        made once the stop is set: the worker is leaving). Raises
        ``fence`` if it is not a fence (another fatal error) or the bound is spent, and what
        ``init_transactions`` raised if that failed. ``where``: what to log (the id and the
        partitions that will be read again)."""
        if fence.code not in FENCED_CODES:
            raise fence
        if stop.is_set():  # leaving: a new client nobody uses would cost the shutdown's budget
            log.warning("producer fenced (%s) while stopping: not re-created, transactional.id "
                        "%s; its open transaction counts as aborted", fence, where)  # fmt: skip
            return False
        budget = self.budget
        if not budget.take():
            log.error("producer fenced again (%s), %d times within %.0fs (%s): not re-created "
                      "again (is another live process using transactional.id %s?); stopping",
                      fence, budget.limit, budget.window_s, self._patience.setting,
                      where)  # fmt: skip
            raise fence
        log.warning("producer fenced (%s): re-created in place, transactional.id %s (renewal "
                    "%d of at most %d within %.0fs); its open transaction counts as aborted, "
                    "its inputs are read again from the committed offsets", fence, where,
                    budget.taken, budget.limit, budget.window_s)  # fmt: skip
        self._producer.renew()
        return outlast(
            "init_transactions (renewed producer)", self._producer.init_transactions,
            self._patience, clock=self._clock, stop=stop,
        )  # fmt: skip
