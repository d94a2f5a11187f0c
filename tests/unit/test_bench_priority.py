"""``bench.priority`` refuses, in one line and before any broker is asked, a low-lane backlog
its cases cannot finish or measure with (``--priority-backlog 500`` used to wait out its
120 s start-up check: the io case waits for two batches of 500 before it measures)."""

from __future__ import annotations

import sys

import pytest

from bench import priority, run


def test_a_backlog_smaller_than_a_case_drains_while_measuring_is_refused_in_one_line() -> None:
    # io: 2 batches of 500, then up to 8 calls of 20 ms at once for 10 s (4,000).
    assert priority.min_backlog("io") == 2 * 500 + 4_000
    assert priority.min_backlog("sync") == 2 * 50 + 5_000  # one 2 ms call at a time
    with pytest.raises(ValueError, match="too small for the io case: it needs at least 5000") as e:
        priority.check_backlog(500, flag="--priority-backlog")
    assert str(e.value).startswith("--priority-backlog 500 ") and "\n" not in str(e.value)
    with pytest.raises(ValueError, match="the sync case"):
        priority.check_backlog(5_000)
    priority.check_backlog(50_000)  # bench.run's default
    priority.check_backlog(5_000, ["io"])


def test_bench_run_refuses_it_at_once_with_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def no_broker() -> str:
        raise AssertionError("refused only after asking for a broker")

    monkeypatch.setattr(run, "bootstrap_servers", no_broker)
    monkeypatch.setattr(sys, "argv", ["bench.run", "--priority-backlog", "500"])
    assert run.main() == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --priority-backlog 500 is too small for the io case")
    assert err.count("\n") == 1


def test_bench_priority_alone_refuses_it_for_the_case_asked(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["bench.priority", "--bootstrap", "unused:1", "--case", "io", "--backlog", "500"]
    monkeypatch.setattr(sys, "argv", argv)
    assert priority.main() == 2
    assert capsys.readouterr().err.startswith("error: --backlog 500 is too small for the io")


def test_bench_run_modes_without_the_priority_phase_do_not_check_its_backlog(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(run, "bootstrap_servers", lambda: "broker:9092")
    monkeypatch.setattr(run, "only_first_output", lambda args, bootstrap: 0)
    argv = ["bench.run", "--only-first-output", "--priority-backlog", "500"]
    monkeypatch.setattr(sys, "argv", argv)
    assert run.main() == 0
