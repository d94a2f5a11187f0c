"""The chaos runner on its own 3-node cluster, small: one kill -9 of the busiest leader and one of
the active controller under load, with replication 3 and min ISR 2 (``make chaos NODES=3`` is
the full run). It starts a private cluster on free ports under the test's tmp dir, so it never
touches the session's broker; the three JVM starts cost about 15 s."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.localkafka import LocalKafka
from pipeline.localkafka.assembly import is_assembled
from pipeline.localkafka.layout import HOST, kafka_home, kafka_version
from pipeline.localkafka.process import port_in_use
from tests.integration.kit import ROOT

SMALL = shlex.split(
    "--nodes 3 --leader-kills 1 --controller-kills 1 --events 3000 --rate 100 --seed 3 "
    "--kills 0 --sigterms 0 --scale-cycles 0 --drain-timeout 90"
)


def free_base_port(first: int = 29192) -> int:
    """A base port with the six ports of a 3-node cluster free (client + controller each)."""
    for base in range(first, first + 600, 10):
        if not any(port_in_use(HOST, base + i) for i in range(6)):
            return base
    pytest.skip("no six free ports for a private 3-node cluster")


# Opt-in: node kills can still stall an exactly-once worker in a transaction call for minutes
# before it is fenced and replaced (nothing lost; see the README's 3-node chaos paragraph), so
# this run does not pass every time yet and must not gate `make test`. Run it with
# CHAOS_CLUSTER_TEST=1 make test PYTEST_ARGS=tests/integration/test_chaos_cluster.py, or the
# full scenario with `make chaos NODES=3`.
@pytest.mark.skipif(
    not os.environ.get("CHAOS_CLUSTER_TEST"),
    reason="opt-in (CHAOS_CLUSTER_TEST=1): exactly-once failover can still stall, see README",
)
@pytest.mark.timeout(280)
def test_leader_and_controller_kills_lose_nothing_and_every_stage_recovers(
    tmp_path: Path,
) -> None:
    """Every good event has exactly one side effect, the exactly-once copy exactly one committed
    output, the DLQs exactly the poison, no worker crashes, and both stages flow again after
    each node kill (a recovery time is measured for each)."""
    if not is_assembled(kafka_home() / "dist" / kafka_version() / "libs"):
        pytest.skip("the broker jars are not assembled (make kafka-up once)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIPELINE_")}
    env.pop("KAFKA_BOOTSTRAP_SERVERS", None)  # the run brings its own cluster
    env.update(PYTHONPATH=str(ROOT), PIPELINE_KAFKA_HOME=str(kafka_home()))
    run_dir = tmp_path / "run"
    cmd = [
        sys.executable, "-m", "chaos.runner", *SMALL, "--run-dir", str(run_dir),
        "--broker-home", str(tmp_path / "kafka"), "--broker-port", str(free_base_port()),
    ]  # fmt: skip
    try:
        done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=270)
    finally:  # a runner killed by the timeout leaves its cluster (and workers' broker) behind
        LocalKafka.current(tmp_path / "kafka").stop()
    faults = run_dir / "faults.log"
    context = (
        f"{done.stdout}\n--- stderr tail ---\n{done.stderr[-4000:]}\n--- faults ---\n"
        f"{faults.read_text() if faults.exists() else '(none)'}"
    )
    assert done.returncode in (0, 1), context
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures["nodes"] == 3, context
    assert figures["published"] == 3000, context
    assert figures["lost"] == 0, context
    assert figures["duplicate_side_effects"] == 0, context
    assert figures["dlq_equals_poison"], context
    assert figures["eos_duplicate_outputs"] == 0, context
    assert figures["eos_missing_outputs"] == 0, context
    assert (figures["leader_kills"], figures["controller_kills"]) == (1, 1), context
    assert figures["failovers_recovered"], context
    for kill in figures["failovers"]:
        assert set(kill["recovery_s"]) == {"effects", "eos-copy"}, context
        assert kill["node_ready_s"] is not None and kill["in_sync_s"] is not None, context
    assert figures["unexpected_exits"] == 0, context
    assert done.returncode == 0, context
