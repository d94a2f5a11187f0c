"""``JobTracking``: a stage's opt-in to job status (``track_jobs = JobTracking(...)``).

Bull's ``removeOnComplete`` / ``removeOnFail`` are ``keep_completed`` / ``keep_failed``: False
removes a job's entry as soon as it completes (fails), True keeps it for ``retention_s`` after
it finished. Removal is a tombstone on the compacted jobs topic, written by a job view
(``pipeline.jobs.JobView``) when the entry's ``expires_at`` passes, or at once by the worker
for an entry not kept at all.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.errors import DeclarationError

DAY_S = 86_400.0


@dataclass(frozen=True, slots=True)
class JobTracking:
    """How a stage records its events' job status (see ``pipeline.jobs``).

    retention_s: how long a finished job (completed, failed or dead-lettered) stays findable.
    keep_completed: False removes a completed job's entry at once (Bull's removeOnComplete).
    keep_failed: False removes a failed or dead-lettered job's entry at once (removeOnFail).
    flush_interval_s: longest a transition waits in the worker before it is produced; the
        transitions of one job within it are coalesced into one record.
    """

    retention_s: float = 7 * DAY_S
    keep_completed: bool = True
    keep_failed: bool = True
    flush_interval_s: float = 0.1

    def __post_init__(self) -> None:
        for name in ("retention_s", "flush_interval_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise DeclarationError(
                    f"JobTracking: `{name}` must be a positive number of seconds, not {value!r}"
                )
        if self.flush_interval_s > 1.0:
            raise DeclarationError(
                "JobTracking: `flush_interval_s` is at most 1 s (lookups reflect a transition "
                f"within about a second), not {self.flush_interval_s!r}"
            )
        for name in ("keep_completed", "keep_failed"):
            if not isinstance(getattr(self, name), bool):
                raise DeclarationError(f"JobTracking: `{name}` must be True or False")
