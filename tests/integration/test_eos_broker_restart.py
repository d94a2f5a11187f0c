"""Exactly-once workers outlast a broker restart without exiting: a running one holds its
partitions, another whose transaction stays open for the whole absence (longer than the 10 s
transaction timeout) is fenced once the broker's coordinator aborts that transaction and
re-creates its producer in place, one started while the broker is down waits for it, and a
SIGTERM during that wait exits cleanly at once; every input has exactly one output. Found by
chaos run 20261201-170709 (seed 7): a worker started during the broker restart exited 1 with
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
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from chaos.broker import PrivateBroker
from pipeline import Context, Publisher, Topic
from pipeline.app import Pipeline
from pipeline.config import Settings
from pipeline.hooks import Hook, StageInfo
from pipeline.worker import Worker
from tests.integration.app_stages import PINGS, PONGS, EosEcho, Ping, Pong
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
RENEWED = "re-created in place, transactional.id {tid}"
# The coordinator's INFO line once it aborted a transaction open past its timeout (and so
# bumped the producer's epoch: the fence).
ROLLED_BACK = "Completed rollback of ongoing transaction for transactionalId {tid} due to timeout"
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


HELD_PONGS = Topic("test.held-pongs", Pong)


class HeldEcho(EosEcho):
    """EosEcho in a group of its own, run by the holder alone (so it owns every partition)."""

    emits = (HELD_PONGS,)
    group = "eos-held"

    def handle(self, event: Ping, ctx: Context) -> None:
        ctx.emit(HELD_PONGS, Pong(ping_id=event.ping_id, n=event.n, handled_by="held"))


class HoldOneTransaction(Hook):
    """Once ``armed``, the handler of a record that is not the first of its transaction
    waits for ``release``: the transaction stays open with an earlier record's output in it
    (so the coordinator knows it, and times it out)."""

    def __init__(self) -> None:
        self.armed, self.reached, self.release = (threading.Event() for _ in range(3))
        self._in_transaction = 0  # records handled since the last commit or abort

    def on_commit(self, stage: StageInfo, offsets: Any) -> None:
        self._in_transaction = 0

    def on_abort(self, stage: StageInfo) -> None:
        self._in_transaction = 0

    @contextmanager
    def around_handler(self, stage: StageInfo, event: Any, ctx: Any) -> Iterator[None]:
        self._in_transaction += 1
        if self._in_transaction >= 2 and self.armed.is_set() and not self.reached.is_set():
            self.reached.set()
            self.release.wait(120)
        yield


def open_transaction_in(settings: Settings, topic: str) -> bool:
    """Some partition of ``topic`` has records of a transaction still open: its high
    watermark is past its last stable offset (what a read_committed consumer sees as high)."""
    from confluent_kafka import Consumer, TopicPartition

    def highs(isolation: str) -> list[int]:
        consumer = Consumer({"bootstrap.servers": settings.bootstrap_servers,
                             "group.id": "probe", "isolation.level": isolation})  # fmt: skip
        try:
            parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
            return [consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                    for p in sorted(parts)]  # fmt: skip
        finally:
            consumer.close()

    every, stable = highs("read_uncommitted"), highs("read_committed")
    return any(h > s for h, s in zip(every, stable, strict=True))


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
    partitions. The holder (another stage's worker) keeps a transaction open (its handler
    waits) for the whole absence, past the transaction timeout: once back, the coordinator
    aborts it and fences the holder's producer, which the holder re-creates in place. A worker
    started meanwhile waits in init_transactions, and a third one, told to stop (SIGTERM) while
    it waits, exits 0 at once. No worker exits. Once the broker is back, the running worker
    hands over to the one that waited, which handles what is published next: every input has
    exactly one committed output in each group."""
    monkeypatch.setenv("TEST_DELAY_MS", "5")  # the running worker is mid-stream at the crash
    settings = unique_settings(
        private_broker.bootstrap, topic_partitions=3, shutdown_timeout_s=4.0
    )  # a 2 s budget for calls in the loop
    prepare(settings, [EosEcho, HeldEcho])
    hold = HoldOneTransaction()
    hold.armed.set()  # its first transaction is held
    ids = {w: f"test-{w}-{uuid.uuid4().hex[:6]}" for w in ("holder", "first", "second")}
    holder = Worker(Pipeline.build(settings, [HeldEcho], hooks=[hold]), worker_id=ids["holder"])
    first, second = (Worker(Pipeline.build(settings, [EosEcho]), worker_id=ids[w])
                     for w in ("first", "second"))  # fmt: skip
    workers = (holder, first, second)
    holder_tid = f"{holder.pipeline.plans[0].group}-{ids['holder']}"  # Pipeline.runner's id
    log = tmp_path / "stopped-worker.log"
    stopped: subprocess.Popen[bytes] | None = None
    try:
        holder.start()
        first.start()
        publish(settings, range(2000))
        assert hold.reached.wait(60), "the holder never handled a second record"
        wait_until(lambda: open_transaction_in(settings, settings.topic(HELD_PONGS.name)), 30,
                   "the held transaction's first output")  # fmt: skip
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
        server_log = private_broker.layout.nodes[0].server_log
        rolled_back = ROLLED_BACK.format(tid=holder_tid)
        wait_until(lambda: rolled_back in server_log.read_text(), 60,
                   "the coordinator aborting the held transaction")  # fmt: skip
        hold.release.set()  # its output now meets the fence
        renewed = RENEWED.format(tid=holder_tid)
        wait_until(lambda: holder.failed or renewed in caplog.text, 60, "the holder renewing")
        group = settings.topic(EosEcho.group)
        wait_until(lambda: first.failed or group_members(settings, group) >= 2, 60,
                   "both workers in the group")  # fmt: skip
        assert not any(w.failed for w in workers), "a worker crashed"
        first.stop()
        assert first.join(30), "the first worker did not stop within 30s"
        publish(settings, range(2000, 2100))  # only the second worker is left to handle them
        wait_until(lambda: len(committed_pong_ids(settings)) >= 2100, 90, "every output")
        wait_until(lambda: len(committed_pong_ids(settings, pongs=HELD_PONGS)) >= 2100, 60,
                   "every output of the holder")  # fmt: skip
    finally:
        hold.release.set()
        if stopped is not None and stopped.poll() is None:
            stopped.kill()
        for worker in workers:
            worker.stop()
            assert worker.join(30), "a worker did not stop within 30s"
            worker.pipeline.close()
    for pongs in (PONGS, HELD_PONGS):
        counts = Counter(committed_pong_ids(settings, pongs=pongs))
        assert set(counts) == {f"p{n}" for n in range(2100)}, f"an input without its {pongs}"
        assert max(counts.values()) == 1, f"duplicated {pongs}: {counts.most_common(3)}"
    assert not any(w.failed for w in workers), "a worker crashed"
    assert caplog.text.count(renewed) == 1, "the holder renewed its producer once"
    print(f"\nSIGTERM while waiting for the broker: exit 0 in {took:.1f}s; renewals "
          f"logged: {caplog.text.count('re-created in place')}")
