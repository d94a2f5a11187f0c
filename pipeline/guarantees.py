"""What a stage promises about duplicates, declared per stage.

``idempotency = Idempotency()`` gives the stage an idempotency store (SQLite by default,
PostgreSQL for production, see ``settings.idempotency_url``):

- every consumed batch is checked against it: events already *done* are skipped and counted;
- a handler that writes through ``with ctx.transaction() as tx:`` has its writes and the event's
  id committed in one database transaction; on a redelivery the id is already there, so the
  writes are rolled back (the side effect happens once) while the outputs are emitted again
  (their ids are derived from the input's, so downstream dedupe recognises them);
- an event is recorded *done* after its outputs were acknowledged and before its offset is
  committed. Ids older than ``retention_s`` are deleted every ``cleanup_interval_s``.

Side effects that do not go through ``ctx.transaction()`` (an HTTP call, say) are protected
only against redelivery after completion; make them idempotent on the receiving side, keyed by
``ctx.event_id``.

``guarantee = "exactly_once"`` runs the stage with a transactional producer: its outputs,
retry and dead-letter copies and its input offsets are committed in one Kafka transaction.
Consumers of its outputs must read with ``isolation.level=read_committed`` (our default).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Guarantee = Literal["at_least_once", "exactly_once"]


@dataclass(frozen=True, slots=True)
class Idempotency:
    url: str | None = None  # None: settings.idempotency_url
    retention_s: float = 7 * 24 * 3600.0
    cleanup_interval_s: float = 600.0

    def __post_init__(self) -> None:
        if self.retention_s <= 0 or self.cleanup_interval_s <= 0:
            raise ValueError("retention_s and cleanup_interval_s must be positive")
