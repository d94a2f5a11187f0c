"""`pipeline run --workers 2` supervises: a worker killed with -9 is logged at once with its
signal and replaced by a new one, and every process carries a title naming its role."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from tests.integration.kit import (
    group_members,
    settings_env,
    unique_settings,
    wait_until,
    worker_process,
)

SPEC = "tests.integration.app_stages"
GROUP = "app_stages.echo"


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except FileNotFoundError:
        return ""


def _workers_of(pid: int) -> list[int]:
    """Child processes of ``pid`` except multiprocessing's resource tracker."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(c) for c in children if "resource_tracker" not in _cmdline(int(c))]


def _titles(pid: int) -> list[str]:
    return sorted(_cmdline(child) for child in _workers_of(pid))


def test_a_worker_killed_with_sigkill_is_logged_and_replaced(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    settings = unique_settings(kafka_bootstrap)
    log = tmp_path / "w.log"
    group = settings.topic(GROUP)
    with worker_process(SPEC, settings_env(settings), log, workers=2) as supervisor:
        wait_until(lambda: supervisor.alive() and group_members(settings, group) == 2, 60,
                   "two members")  # fmt: skip
        first = _workers_of(supervisor.proc.pid)
        assert len(first) == 2, first
        victim = first[0]
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: f"(pid {victim}) killed by SIGKILL" in supervisor.output(), 10,
                   "the supervisor to log the death")  # fmt: skip
        wait_until(
            lambda: len(set(_workers_of(supervisor.proc.pid)) - set(first)) == 1,
            30,
            "a replacement worker",
        )
        # The replacement names itself once started (spawned: after its imports).
        wait_until(lambda: supervisor.alive() and _titles(supervisor.proc.pid) == [
            f"pipeline worker 0/2 {SPEC}", f"pipeline worker 1/2 {SPEC}",
        ], 60, "both workers' process titles")  # fmt: skip
        assert _cmdline(supervisor.proc.pid).startswith(f"pipeline supervisor {SPEC}")
        supervisor.signal(signal.SIGTERM)
        assert supervisor.wait(60) == 0, supervisor.output()
