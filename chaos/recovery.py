"""Recovery time after a node kill: how long until each stage's outputs flow again.

A stage has *recovered* from a kill at time t when, on every partition of the input topic, its
group's committed offset has passed the partition's end at the kill: it has finished
everything published before the kill and at least one record published after it. A committed
offset moves only once the work behind it is done (the Effects row is written; the EosCopy
output is committed in the same transaction as the offset), so this is "outputs flow again"
on every partition, whichever leaders, coordinators and transaction coordinators moved. It
needs records after the kill, which the load provides while it runs; once the load is over,
a partition counts as recovered when the group has caught up with its current end.

Commits that land in the first moments after the kill (work that was already done) do not
count: they cannot pass the end at the kill, because nothing published later is done yet.

``recovered`` is pure; ``RecoveryProbe`` is the thread that polls the committed offsets.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping

from confluent_kafka import Consumer, KafkaException, TopicPartition

POLL_S = 0.25  # the resolution of the figure


def recovered(
    ends_at_kill: Mapping[int, int],
    committed: Mapping[int, int],
    ends_now: Mapping[int, int] | None = None,
) -> bool:
    """Whether every partition of ``ends_at_kill`` is past its end at the kill, or, when
    ``ends_now`` is given (the load is over), caught up with its end now. A partition without
    a committed offset has not recovered."""
    for partition, end in ends_at_kill.items():
        done = committed.get(partition, -1)  # Kafka's "no offset" is negative too
        if done > end:
            continue
        if ends_now is not None and max(done, 0) >= max(ends_now.get(partition, end), end):
            continue
        return False
    return True


class RecoveryProbe(threading.Thread):
    """Polls the committed offsets of ``groups`` (name → group id) on ``topic`` from the kill
    on; ``seconds[name]`` is the recovery time of each, None if not within ``timeout_s``."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        groups: Mapping[str, str],
        ends_at_kill: Mapping[int, int],
        killed_at: float,
        load_done: Callable[[], bool],
        timeout_s: float = 180.0,
    ) -> None:
        super().__init__(name="chaos-recovery", daemon=True)
        self._conf: dict[str, str | int | float | bool] = {
            "bootstrap.servers": bootstrap,
            "log_level": 2,
        }
        self._topic = topic
        self._groups = dict(groups)
        self._ends = dict(ends_at_kill)
        self._killed_at = killed_at
        self._load_done = load_done
        self._timeout = timeout_s
        self.seconds: dict[str, float | None] = dict.fromkeys(groups)

    def run(self) -> None:
        # One consumer per group, never subscribed: committed() asks the group's coordinator
        # without joining. (A first version polled AdminClient.list_consumer_group_offsets
        # and the orchestrator died on a librdkafka assertion, enq_once refcnt, while the
        # coordinator's node was down; the consumer's OffsetFetch is the well-trodden path.)
        readers = {name: self._consumer(group) for name, group in self._groups.items()}
        pending = dict(readers)
        try:
            while pending and time.monotonic() - self._killed_at < self._timeout:
                ends_now = self._ends_now() if self._load_done() else None
                for name, reader in list(pending.items()):
                    committed = self._committed(reader)
                    if committed is not None and recovered(self._ends, committed, ends_now):
                        self.seconds[name] = round(time.monotonic() - self._killed_at, 2)
                        del pending[name]
                time.sleep(POLL_S)  # an outside observer's polling interval
        finally:
            for consumer in readers.values():
                consumer.close()

    def _consumer(self, group: str) -> Consumer:
        return Consumer(self._conf | {"group.id": group, "enable.auto.commit": False})

    def _committed(self, reader: Consumer) -> dict[int, int] | None:
        request = [TopicPartition(self._topic, p) for p in self._ends]
        try:
            result = reader.committed(request, timeout=5)
        except KafkaException:  # the coordinator is moving: not recovered yet
            return None
        return {tp.partition: tp.offset for tp in result if tp.error is None}

    def _ends_now(self) -> dict[int, int] | None:
        # A new client each time: an old one may ask a dead leader (see ClusterView.ends).
        consumer = self._consumer("chaos-recovery")
        try:
            marks = {
                p: consumer.get_watermark_offsets(TopicPartition(self._topic, p), 5, cached=False)
                for p in self._ends
            }
            return {p: high for p, (_low, high) in marks.items()}
        except KafkaException:  # a leader is moving
            return None
        finally:
            consumer.close()
