"""Module-level lookups keep one reader per store file, and that reader sees later writes."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline import jobs
from pipeline.jobs.lookup import _opened
from pipeline.jobs.state import Job, encode
from pipeline.jobs.store import JobStore, NoJobView


def _entry(job_id: str, state: str, offset: int) -> tuple[bytes, bytes, str, int, int]:
    job = Job(id=job_id, stage="s", state=state, attempt=1)  # type: ignore[arg-type]
    return (job_id.encode(), encode(job), "jobs", 0, offset)


def test_a_lookup_keeps_its_reader_and_sees_what_the_view_writes_later(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    with pytest.raises(NoJobView):
        jobs.get("j1", store=path)
    assert path.resolve() not in _opened  # a missing store is not kept
    view = JobStore(path)
    assert jobs.get("j1", store=path) is None
    reader = _opened[path.resolve()]
    view.apply([_entry("j1", "active", 0)])
    assert jobs.get("j1", store=path).state == "active"  # type: ignore[union-attr]
    view.apply([_entry("j1", "completed", 1)])
    assert jobs.get("j1", store=path).state == "completed"  # type: ignore[union-attr]
    assert _opened[path.resolve()] is reader  # one reader, not one per call
    view.close()


def test_a_store_that_went_away_is_not_read_through_a_stale_reader(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    JobStore(path).close()
    assert jobs.get("x", store=path) is None
    for leftover in tmp_path.iterdir():
        leftover.unlink()
    with pytest.raises(NoJobView):
        jobs.get("x", store=path)
    assert path.resolve() not in _opened
