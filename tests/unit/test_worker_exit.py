"""A worker process exits soon after its stages stopped, even if a thread it started never
returns (interpreter shutdown would otherwise wait for that thread for ever)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HANGS_AT_EXIT = """
import threading
from pipeline.worker import exit_within
threading.Thread(target=threading.Event().wait, name="never-returns").start()
raise SystemExit(exit_within(3, grace_s=0.5))
"""


def test_a_non_daemon_thread_that_never_returns_does_not_hold_up_the_exit() -> None:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", HANGS_AT_EXIT], cwd=ROOT, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert done.returncode == 3, done.stderr
    assert time.monotonic() - started < 30
    assert "never-returns" in done.stderr
