"""Job status: the state, progress and result of each event a tracking stage handles.

A stage opts in with ``track_jobs = JobTracking(...)``. Its ``JobTracker`` (a hook subscriber)
writes each event's transitions to a compacted Kafka topic keyed by the event's id (the id
``publish`` returns); a ``JobView`` process materialises that topic into a local SQLite store,
and ``get`` / ``get_async`` / ``list_jobs`` (or ``pipeline job ID``, ``pipeline jobs``) read it::

    class SendEmail(Stage):
        consumes = EMAILS
        track_jobs = JobTracking(retention_s=86_400)

        def handle(self, event: EmailRequested, ctx: Context) -> dict[str, str]:
            ctx.progress(50, "rendered")
            return {"message_id": mailer.send(event)}    # the job's result

    job = pipeline.jobs.get(delivered.event_id)          # Job(state="completed", result=...)

Modules: ``state`` (the pure state machine), ``result`` (result and progress checks),
``tracking`` (the declaration), ``tracker`` and ``writer`` (the worker side), ``queued`` (the
publisher side: ``waiting``), ``store`` and ``view`` (the materialised view), ``lookup``.
"""

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipeline.jobs.lookup import get, get_async, list_jobs
    from pipeline.jobs.queued import JobsQueued
    from pipeline.jobs.result import NOTE_MAX_CHARS, RESULT_MAX_BYTES
    from pipeline.jobs.state import STATES, Job, State
    from pipeline.jobs.store import JobStore, JobStoreError
    from pipeline.jobs.tracker import JobTracker
    from pipeline.jobs.tracking import JobTracking
    from pipeline.jobs.view import JobView
    from pipeline.jobs.writer import jobs_topic

__all__ = [
    "NOTE_MAX_CHARS",
    "RESULT_MAX_BYTES",
    "STATES",
    "Job",
    "JobStore",
    "JobStoreError",
    "JobTracker",
    "JobTracking",
    "JobView",
    "JobsQueued",
    "State",
    "get",
    "get_async",
    "jobs_topic",
    "list_jobs",
]

# Each name's module, loaded on first use (``__getattr__``): every handler's ``Context`` imports
# ``pipeline.jobs.result``, which loads this package, and a worker without job tracking needs
# neither the SQLite store nor the view, the lookups or the publisher side.
_MODULES = {
    "get": "lookup", "get_async": "lookup", "list_jobs": "lookup",
    "JobsQueued": "queued",
    "NOTE_MAX_CHARS": "result", "RESULT_MAX_BYTES": "result",
    "STATES": "state", "Job": "state", "State": "state",
    "JobStore": "store", "JobStoreError": "store",
    "JobTracker": "tracker",
    "JobTracking": "tracking",
    "JobView": "view",
    "jobs_topic": "writer",
}  # fmt: skip
_SUBMODULES = frozenset(_MODULES.values())


def __getattr__(name: str) -> object:
    from importlib import import_module

    if name in _SUBMODULES:  # ``pipeline.jobs.store`` as an attribute, as when all were loaded
        return import_module(f"pipeline.jobs.{name}")
    module = _MODULES.get(name)
    if module is None:
        raise AttributeError(f"module 'pipeline.jobs' has no attribute {name!r}")
    return getattr(import_module(f"pipeline.jobs.{module}"), name)
