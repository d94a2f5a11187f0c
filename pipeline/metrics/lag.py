"""Consumer lag per partition, under kafka_exporter's names, so its dashboards and alerts read
ours: ``kafka_consumergroup_lag{consumergroup,topic,partition}`` and
``kafka_consumergroup_lag_sum{consumergroup,topic}``.

Lag is the group's committed offset to the partition's end, read from the broker (as
kafka_exporter reads it), never on a consume thread: a thread of its own asks every
``interval_s``, each call bounded by the lag monitor's timeout, and a scrape serves the last
answer. A group the broker cannot tell about is left out until it can (a stale lag would
look like progress).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Sequence

from prometheus_client.core import GaugeMetricFamily, Metric

from pipeline.ports import LagPort, TopicPartition
from pipeline.registry import StagePlan

log = logging.getLogger("pipeline.metrics")
LAG_INTERVAL_S = 5.0

Reader = tuple[str, list[str]]  # (consumer group, the topics it reads)


def readers(plans: Iterable[StagePlan]) -> list[Reader]:
    """The groups the stages read with, as ``Pipeline.runner`` splits them
    (``StagePlan.readers``: retry topics and priority lanes in groups of their own)."""
    return [reader for plan in plans for reader in plan.readers]


class LagCollector:
    """A prometheus-client collector of the last lag read; ``start`` its polling thread."""

    def __init__(
        self,
        monitor: Callable[[], LagPort],
        groups: Sequence[Reader],
        interval_s: float = LAG_INTERVAL_S,
    ) -> None:
        self._monitor = monitor
        self._groups = list(groups)
        self._interval = interval_s
        self._lag: dict[str, dict[TopicPartition, int]] = {}
        self._failing: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="metrics-lag", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self, timeout_s: float = 15.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def _run(self) -> None:
        monitor = self._monitor()  # created and closed on this thread
        try:
            while True:
                self.poll(monitor)
                if self._stop.wait(self._interval):
                    return
        finally:
            monitor.close()

    def poll(self, monitor: LagPort) -> None:
        for group, topics in self._groups:
            try:
                lag = monitor.partition_lag(group, topics)
            except Exception as exc:  # KafkaError, BrokerUnavailableError: left out, logged
                self._lag.pop(group, None)
                if group not in self._failing:
                    log.warning("consumer lag of %s unavailable: %s", group, exc)
                    self._failing.add(group)
                continue
            self._failing.discard(group)
            self._lag[group] = lag  # replaced whole: a scrape reads one consistent answer

    def collect(self) -> Iterable[Metric]:
        lag = GaugeMetricFamily(
            "kafka_consumergroup_lag",
            "Records not yet committed by the consumer group, per partition.",
            labels=("consumergroup", "topic", "partition"),
        )
        total = GaugeMetricFamily(
            "kafka_consumergroup_lag_sum",
            "Records not yet committed by the consumer group, per topic.",
            labels=("consumergroup", "topic"),
        )
        for group, partitions in list(self._lag.items()):
            sums: dict[str, int] = {}
            for (topic, partition), n in sorted(partitions.items()):
                lag.add_metric((group, topic, str(partition)), n)
                sums[topic] = sums.get(topic, 0) + n
            for topic, n in sums.items():
                total.add_metric((group, topic), n)
        return [lag, total]
