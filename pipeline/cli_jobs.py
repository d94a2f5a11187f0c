"""``pipeline job ID``, ``pipeline jobs`` and ``pipeline job-view``: job status on the command
line (``pipeline.jobs``).

``job`` and ``jobs`` read the local job view's store (``Settings.jobs_store``), which a running
``pipeline job-view`` (or a ``JobView`` in the web app) keeps up to date; ``--sync`` reads the
jobs topic into the store first, so they also work where no view runs. A missing store, an
unknown ``--state`` or bad settings is one line and exit 2; a job the view does not hold, or a
broker that does not answer within ``--timeout``, exit 1.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

from pipeline.errors import ConfigError, PipelineError

if TYPE_CHECKING:
    from pipeline.config import Settings
    from pipeline.jobs import Job, JobStore

T = TypeVar("T")

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="TOML settings file.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
SyncOpt = Annotated[
    bool, typer.Option("--sync", help="Read the jobs topic into the store first (no view needed).")
]
TimeoutOpt = Annotated[float, typer.Option(min=0.5, help="Seconds --sync may take.")]
COLUMNS = ("id", "stage", "state", "attempt", "progress", "updated", "error")


def job_command(
    job_id: Annotated[str, typer.Argument(help="The job's id (what publish returned).")],
    as_json: JsonOpt = False,
    sync: SyncOpt = False,
    timeout: TimeoutOpt = 30.0,
    config: ConfigOpt = None,
) -> None:
    """One job's state, attempt, progress, result and error."""
    from pipeline.cli import _fail

    try:
        job = _read(config, sync, timeout, lambda store: store.get(job_id))
    except PipelineError as exc:
        raise _fail(_usage(exc)) from None
    if job is None:
        typer.secho(f"error: no job {job_id} in the job view", fg="red", err=True)
        raise typer.Exit(1)
    if as_json:
        typer.echo(json.dumps(job.to_dict()))
        return
    for name, value in job.to_dict().items():
        if value is not None:
            shown = _when(value) if name.endswith("_at") else value
            typer.echo(f"{name}: {json.dumps(shown) if name == 'result' else shown}")


def jobs_command(
    stage: Annotated[str | None, typer.Option("--stage", help="Only this stage's jobs.")] = None,
    state: Annotated[str | None, typer.Option("--state", help="Only jobs in this state.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="At most this many.")] = 20,
    as_json: JsonOpt = False,
    sync: SyncOpt = False,
    timeout: TimeoutOpt = 30.0,
    config: ConfigOpt = None,
) -> None:
    """The most recently updated jobs, newest first."""
    from pipeline.cli import _fail
    from pipeline.jobs import STATES

    try:
        if state is not None and state not in STATES:
            raise ConfigError(f"--state must be one of {', '.join(STATES)}, not {state!r}")
        jobs = _read(config, sync, timeout, lambda store: store.find(stage, state, limit))
    except PipelineError as exc:
        raise _fail(_usage(exc)) from None
    if as_json:
        typer.echo(json.dumps([j.to_dict() for j in jobs]))
        return
    rows = [COLUMNS, *(_row(j) for j in jobs)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    for row in rows:
        typer.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def job_view_command(config: ConfigOpt = None) -> None:
    """Keep the local job view (Settings.jobs_store) up to date until Ctrl-C."""
    from pipeline.cli import _fail, _settings
    from pipeline.jobs import JobView

    try:
        settings = _settings(config)
        with JobView(settings) as view:
            typer.echo(f"following {view.topic} into {view.store.path} (Ctrl-C stops)")
            while True:
                time.sleep(1.0)
    except PipelineError as exc:
        raise _fail(exc) from None
    except KeyboardInterrupt:
        raise typer.Exit(0) from None


def _read(config: Path | None, sync: bool, timeout_s: float, read: Callable[[JobStore], T]) -> T:
    """``read`` the store (after reading the jobs topic into it, with ``sync``), then close."""
    from pipeline.cli import _settings
    from pipeline.jobs import JobStore, JobView

    settings: Settings = _settings(config)
    if not sync:
        store = JobStore(settings.jobs_store, create=False)
        try:
            return read(store)
        finally:
            store.close()
    view = JobView(settings)
    try:
        view.catch_up(timeout_s)
        return read(view.store)
    finally:
        view.close()


def _usage(exc: PipelineError) -> PipelineError:
    # A missing store is fixed by starting a view (or by --sync): a usage error, exit 2.
    from pipeline.jobs.store import NoJobView

    return ConfigError(str(exc)) if isinstance(exc, NoJobView) else exc


def _row(job: Job) -> tuple[str, ...]:
    progress = "-" if job.progress is None else f"{job.progress:g}%"
    error = (job.error or "")[:60]
    return (job.id, job.stage or "-", job.state, str(job.attempt), progress,
            _when(job.updated_at), error)  # fmt: skip


def _when(ts: object) -> str:
    if not isinstance(ts, int | float):
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")
