"""``make bench`` runs the job-status phase (bench/jobs_latency.py) and puts its p99s in the
summary line and the targets table, as it does the request-reply round trip."""

from __future__ import annotations

import argparse
from typing import Any

import pytest

from bench import jobs_latency, priority, reply_latency, report, run

JOBS = {"jobs": 20_000, "catch_up_s": 1.5, "view_get_p50_ms": 0.02, "view_get_p99_ms": 0.1,
        "jobs_get_p50_ms": 0.04, "jobs_get_p99_ms": 3.3, "visible_p50_s": 0.09,
        "visible_p99_s": 0.18, "visible_max_s": 0.3}  # fmt: skip


def test_the_job_status_phase_runs_with_the_others_and_reaches_the_summary(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each phase measured once, on the run's broker; the summary names the lookup p99 and the
    visibility p99, and the targets table judges them (20 ms, 1 s)."""
    calls: list[str] = []

    def measured(name: str, figures: Any) -> Any:
        def measure(bootstrap: str, *args: Any, **kwargs: Any) -> Any:
            assert bootstrap == "broker:9092"
            calls.append(name)
            return figures

        return measure

    one = reply_latency.percentiles([i / 1000 for i in range(1, 101)])
    monkeypatch.setattr(priority, "phase", measured("priority", {"io": {"p99_s": 0.4}}))
    monkeypatch.setattr(reply_latency, "measure",
                        measured("reply", {"sequential": one, "dropped_replies": 0}))  # fmt: skip
    monkeypatch.setattr(jobs_latency, "measure", measured("jobs", JOBS))
    args = argparse.Namespace(priority_backlog=10)
    extra = run.extra_phases("broker:9092", "bench-x.", args)
    assert calls == ["priority", "reply", "jobs"]
    assert extra["job_status"] == JOBS
    summary = run.extra_headline(extra)
    assert summary["jobs_get_p99_ms"] == 3.3 and summary["jobs_visible_p99_s"] == 0.18
    table = "\n".join(report.targets_table(summary))
    assert "| jobs_get_p99_ms | ≤ 20.0 | 3.3 | yes |" in table
    assert "| jobs_visible_p99_s | ≤ 1.0 | 0.18 | yes |" in table
