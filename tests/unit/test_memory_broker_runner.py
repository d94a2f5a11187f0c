"""The real StageRunner, unchanged, on the in-memory broker: a stage's outputs are written,
its offsets committed after their acknowledgement, and a stop revokes and leaves cleanly.
The broker runs on the system clock here (the runner's loop waits in ``consume``), and the
test awaits conditions rather than sleeping."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from pipeline import Settings
from pipeline.app import Pipeline
from pipeline.runner import StageRunner
from pipeline.testing import MemoryBroker
from tests.integration.app_stages import PINGS, PONGS, Echo, EosEcho, Ping

SCHEMAS = Path(__file__).resolve().parents[1] / "schemas"


def await_condition(
    broker: MemoryBroker, condition: Callable[[], bool], timeout_s: float = 30
) -> None:
    """Woken by the broker at every write, so no polling."""
    deadline = time.monotonic() + timeout_s
    with broker.condition:
        while not condition():
            left = deadline - time.monotonic()
            assert left > 0, "condition not met in time"
            broker.condition.wait(left)


def run_stage(stage: type, producer_config: dict[str, str]) -> tuple[MemoryBroker, str]:
    """Publish 6 pings, run ``stage`` until its 6 pongs are visible, stop it."""
    broker = MemoryBroker(default_partitions=2)
    pipeline = Pipeline.build(Settings(schemas_dir=SCHEMAS), [stage])
    plan = pipeline.plans[0]
    broker.create(plan.topics)
    publisher = broker.producer()
    for n in range(6):
        value = pipeline.codec.encode(
            Ping(ping_id=f"p{n}", n=n), plan.inputs[PINGS.name], PINGS.name
        )
        publisher.produce(PINGS.name, value, str(n).encode(), [("event-id", f"e{n}".encode())],
                          lambda _err, _msg: None)  # fmt: skip
    publisher.flush(1)
    runner = StageRunner(
        plan, broker.consumer({"group.id": plan.group}), broker.producer(producer_config),
        pipeline.codec, batch_timeout_s=0.05, commit_interval_s=0,
    )  # fmt: skip
    thread = threading.Thread(target=runner.run)
    thread.start()
    try:
        await_condition(broker, lambda: len(broker.records(PONGS.name)) == 6)
    finally:
        runner.stop_event.set()
        thread.join(30)
    assert not thread.is_alive()
    return broker, plan.group


def test_a_stage_runs_on_the_memory_broker_and_commits_after_its_outputs() -> None:
    """Echo answers 6 pings with 6 pongs; at stop every input offset is committed."""
    broker, group = run_stage(Echo, {})
    assert sorted(r.value() is not None for r in broker.records(PONGS.name)) == [True] * 6
    assert broker.lag(group, [PINGS.name]) == (6, 0)


def test_an_exactly_once_stage_commits_outputs_and_offsets_in_transactions() -> None:
    """EosEcho on a transactional memory producer: 6 pongs visible to read_committed, the
    input offsets committed with them."""
    broker, group = run_stage(EosEcho, {"transactional.id": "eos-1"})
    assert len(broker.records(PONGS.name, read_committed=False)) == 6
    assert sum(broker.committed_offsets(group).values()) == 6
    assert broker.pending(group, PINGS.name) == 0
