"""Exactly-once workers outlast a broker restart: the running one holds its partitions (its
producer may be fenced once the broker is back, a documented limit), one started while the
broker is down waits for it, and a SIGTERM during that wait exits
cleanly at once; every input has exactly one output. Found by chaos run 20261201-170709 (seed
7): a worker started during the broker restart exited 1 with "init_transactions: still failing
after retries".

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
from pipeline.config import Settings
from pipeline.worker import Worker
from tests.integration.app_stages import PINGS, EosEcho, Ping
from tests.integration.kit import (
    ROOT,
    group_members,
    prepare,
    settings_env,
    unique_settings,
    wait_until,
)
from tests.integration.private_broker import private_broker_at
from tests.integration.test_exactly_once import committed_pong_ids

pytestmark = pytest.mark.timeout(180)  # two broker starts on a loaded 2-core box
WAITING = "the broker does not answer yet"
HELD = "partitions held until they can be read"
FENCED = "This instance has been fenced by a newer instance"
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


@pytest.fixture
def private_broker(tmp_path: Path) -> Iterator[PrivateBroker]:
    with private_broker_at(tmp_path, first=19700) as broker:
        yield broker


def worker_process(settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen([sys.executable, "-c", WORKER], cwd=ROOT, stdout=out,
                                stderr=subprocess.STDOUT, env=settings_env(settings))  # fmt: skip


def publish(settings: Settings, numbers: range) -> None:
    with Publisher(settings) as publisher:
        for n in numbers:
            publisher.publish(PINGS, Ping(ping_id=f"p{n}", n=n), key=f"k{n}", wait=False)
        publisher.flush()


def test_exactly_once_workers_outlast_a_broker_restart(
    private_broker: PrivateBroker, tmp_path: Path, caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """One crash of the broker, under load. The running worker's transaction cannot commit and
    its abort cannot finish; the committed offsets to rewind to cannot be read: it holds its
    partitions (and stays up unless its producer is fenced once the broker is back: the
    documented limit for an absence past the transaction timeout). A worker started
    meanwhile waits in init_transactions, and a third one, told to stop (SIGTERM) while it
    waits, exits 0 at once. Once the broker is back, the first hands over to the second, which
    handles what is published next: every input has exactly one committed output."""
    monkeypatch.setenv("TEST_DELAY_MS", "5")  # the running worker is mid-stream at the crash
    settings = unique_settings(
        private_broker.bootstrap, topic_partitions=3, shutdown_timeout_s=4.0
    )  # a 2 s budget for calls in the loop
    prepare(settings, [EosEcho])
    publish(settings, range(2000))
    first, second = (Worker(Pipeline.build(settings, [EosEcho]), worker_id=f"test-{w}-"
                            f"{uuid.uuid4().hex[:6]}") for w in "ab")  # fmt: skip
    log = tmp_path / "stopped-worker.log"
    stopped: subprocess.Popen[bytes] | None = None
    try:
        first.start()
        wait_until(lambda: len(committed_pong_ids(settings)) >= 100, 60, "the first outputs")
        private_broker.kill_node(1)
        second.start()
        stopped = worker_process(settings, log)
        wait_until(lambda: HELD in caplog.text, 60, "the running worker holding its partitions")
        wait_until(lambda: caplog.text.count(WAITING) >= 1, 30, "the new worker waiting")
        wait_until(lambda: WAITING in log.read_text(), 60, "the worker process waiting")
        signalled = time.monotonic()
        stopped.send_signal(signal.SIGTERM)
        code = stopped.wait(30)
        took = time.monotonic() - signalled
        assert code == 0, log.read_text()
        # The promise: a stop is done within shutdown_timeout_s (the worker's own watchdog
        # abandons the process 5 s after that); the wait in init_transactions must not add to it.
        bound = settings.shutdown_timeout_s + 5
        assert took < bound, f"exited {took:.1f}s after SIGTERM (bound {bound:g}s)"

        private_broker.start_node(1)
        group = settings.topic(EosEcho.group)
        wait_until(lambda: first.failed or group_members(settings, group) >= 2, 60,
                   "both workers in the group")  # fmt: skip
        assert not second.failed, "the worker that waited in init_transactions crashed"
        first.stop()
        assert first.join(30), "the first worker did not stop within 30s"
        publish(settings, range(2000, 2100))  # only the second worker is left to handle them
        wait_until(lambda: len(committed_pong_ids(settings)) >= 2100, 90, "every output")
    finally:
        if stopped is not None and stopped.poll() is None:
            stopped.kill()
        for worker in (first, second):
            worker.stop()
            assert worker.join(30), "a worker did not stop within 30s"
            worker.pipeline.close()
    counts = Counter(committed_pong_ids(settings))
    assert set(counts) == {f"p{n}" for n in range(2100)}, "an input without its output"
    assert max(counts.values()) == 1, f"duplicated outputs: {counts.most_common(3)}"
    assert not second.failed, "the worker that waited in init_transactions crashed"
    # The running worker's broker was away longer than its 10 s transaction timeout with a
    # transaction open: the coordinator may abort it first and fence the producer, which stops
    # the stage (a documented limit: re-creating the producer in place is not built). Any
    # other crash fails the test.
    if first.failed:
        assert FENCED in caplog.text, "the running worker crashed, and not from the fence"
    print(f"\nSIGTERM while waiting for the broker: exit 0 in {took:.1f}s")
