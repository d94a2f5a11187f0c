"""An exactly-once worker that starts while the broker is down waits for it, then handles every
input exactly once; a SIGTERM during that wait exits cleanly at once. Found by chaos run
20261201-170709 (seed 7): a worker started during the broker restart exited 1 with
"init_transactions: still failing after retries".

The broker is the test's own (``chaos.broker.PrivateBroker``, one node, on free ports from
19700 under the test's tmp dir): stopping the session's broker would break every other test.
It is crashed (SIGKILL) and started again once; its starts cost about 10-20 s each on a loaded
box, which is most of this test's time.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from chaos.broker import PrivateBroker
from pipeline import Publisher
from pipeline.app import Pipeline
from pipeline.localkafka import LocalKafka
from pipeline.localkafka.layout import HOST, kafka_home
from pipeline.localkafka.process import port_in_use
from pipeline.worker import Worker
from tests.integration.app_stages import PINGS, EosEcho, Ping
from tests.integration.kit import ROOT, prepare, settings_env, unique_settings, wait_until
from tests.integration.test_exactly_once import committed_pong_ids

pytestmark = pytest.mark.timeout(180)  # two broker starts on a loaded 2-core box
WAITING = "the broker does not answer yet"
# A stand-alone worker process (no topic checks at startup: the broker is down), stopped by
# SIGTERM as `pipeline run` is; its exit code is the worker's.
WORKER = (
    "import sys\n"
    "from pipeline.app import Pipeline\n"
    "from pipeline.config import load_settings\n"
    "from pipeline.logs import setup_logging\n"
    "from pipeline.worker import Worker\n"
    "from tests.integration.app_stages import EosEcho\n"
    "setup_logging()\n"
    "sys.exit(Worker(Pipeline.build(load_settings(), [EosEcho])).run_until_signalled())\n"
)


def free_base_port(first: int = 19700) -> int:
    """A base port with a one-node cluster's two ports (client, controller) free."""
    for base in range(first, first + 400, 5):
        if not (port_in_use(HOST, base) or port_in_use(HOST, base + 1)):
            return base
    raise RuntimeError("no two free ports for a private broker")


@pytest.fixture
def private_broker(tmp_path: Path) -> Iterator[PrivateBroker]:
    from tests.brokers import broker_required

    try:
        LocalKafka(root=kafka_home()).assemble()  # a no-op once assembled (the session's did)
        broker = PrivateBroker(tmp_path / "kafka", free_base_port())
        broker.start()
    except Exception as exc:
        LocalKafka.current(tmp_path / "kafka").stop()
        if broker_required():
            raise
        pytest.skip(f"no private broker: {exc}")
    try:
        yield broker
    finally:
        broker.close()


def test_an_exactly_once_worker_outlasts_a_broker_down_at_its_start(
    private_broker: PrivateBroker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = unique_settings(private_broker.bootstrap, topic_partitions=3)
    prepare(settings, [EosEcho])
    ids = [f"p{i}" for i in range(300)]
    with Publisher(settings) as publisher:
        for i, ping_id in enumerate(ids):
            publisher.publish(PINGS, Ping(ping_id=ping_id, n=i), key=ping_id, wait=False)
        publisher.flush()
    private_broker.kill_node(1)

    pipeline = Pipeline.build(settings, [EosEcho])
    worker = Worker(pipeline, worker_id=f"test-{uuid.uuid4().hex[:6]}")
    log = tmp_path / "stopped-worker.log"
    with open(log, "wb") as out:
        stopped = subprocess.Popen([sys.executable, "-c", WORKER], env=settings_env(settings),
                                   cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        worker.start()
        wait_until(lambda: WAITING in caplog.text, 60, "the in-process worker waiting")
        wait_until(lambda: WAITING in log.read_text(), 60, "the worker process waiting")
        # 1. A SIGTERM while it waits for the broker: a clean exit, at once.
        signalled = time.monotonic()
        stopped.send_signal(signal.SIGTERM)
        code = stopped.wait(30)
        took = time.monotonic() - signalled
        assert code == 0, log.read_text()
        assert took < 8.0, f"exited {took:.1f}s after SIGTERM"
        # 2. The broker comes back: the waiting worker starts and handles everything once.
        private_broker.start_node(1)
        wait_until(lambda: len(committed_pong_ids(settings)) >= len(ids), 60, "every output")
        assert not worker.failed, "a stage crashed"
    finally:
        if stopped.poll() is None:
            stopped.kill()
        worker.stop()
        assert worker.join(30), "worker did not stop within 30s"
        pipeline.close()
    counts = Counter(committed_pong_ids(settings))
    assert set(counts) == set(ids), "an input without its output"
    assert max(counts.values()) == 1, f"duplicated outputs: {counts.most_common(3)}"
    assert not worker.failed
    print(f"\nSIGTERM while waiting for the broker: exit 0 in {took:.1f}s")
