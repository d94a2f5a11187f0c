"""The chaos runner, small: the fault matrix's kill/SIGTERM/scaling rows in about a minute."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.kit import ROOT

SMALL = shlex.split(
    "--events 5000 --kills 5 --sigterms 1 --scale-cycles 1 --rate 250 --seed 1 "
    "--no-broker-restart --drain-timeout 90"
)


@pytest.mark.timeout(240)
def test_kills_sigterms_and_scaling_lose_nothing_and_duplicate_no_side_effect(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """Three workers handle 5,000 keyed events (1% poison) while five are killed with -9, one
    gets SIGTERM and the pool scales up and down: every good event has exactly one side
    effect, the DLQ holds exactly the poison, the exactly-once copy has one committed output
    per input, and every SIGTERM exits 0 within the shutdown timeout. The session's broker is
    shared, so it is not restarted here (``make chaos`` does that on a private one)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIPELINE_")}
    env.update(KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap, PYTHONPATH=str(ROOT))
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "chaos.runner", *SMALL, "--run-dir", str(run_dir)]
    done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=230)
    faults = run_dir / "faults.log"
    context = (
        f"{done.stdout}\n--- stderr tail ---\n{done.stderr[-4000:]}\n--- faults ---\n"
        f"{faults.read_text() if faults.exists() else '(none)'}"
    )
    assert done.returncode in (0, 1), context
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures["published"] == 5000, context
    assert figures["lost"] == 0, context
    assert figures["duplicate_side_effects"] == 0, context
    assert figures["dlq_equals_poison"], context
    assert figures["eos_duplicate_outputs"] == 0, context
    assert figures["eos_missing_outputs"] == 0, context
    assert figures["order_violations"] == 0, context
    assert figures["kills"] == 5, context
    assert figures["sigterm_clean_exits"] == figures["sigterms"] >= 1 + 1 + 3, context
    assert figures["scale_events"] == 2, context
    assert figures["unexpected_exits"] == 0, context
    assert done.returncode == 0, context
