"""Topic management and group lag, through confluent-kafka's AdminClient."""

from __future__ import annotations

import concurrent.futures
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, KafkaException
from confluent_kafka import KafkaError as CKafkaError
from confluent_kafka import TopicPartition as CTopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from pipeline.config import Settings
from pipeline.errors import BrokerUnavailableError, KafkaError, TopicNotFoundError
from pipeline.kafka import config as kconfig
from pipeline.kafka.errors import wrap
from pipeline.kafka.security import refusal
from pipeline.ports import TopicInfo, TopicPartition, TopicSpec
from pipeline.startup import TopicsStopped

__all__ = ["KafkaAdmin", "LagMonitor", "TopicInfo", "usable"]

log = logging.getLogger("pipeline.kafka")
# Every broker refusing connections for this long is an answer: no need to wait for the full
# timeout (a broker that is restarting is back well within it, or the caller retries).
ALL_DOWN_FOR_S = 5.0
METADATA_SLICE_S = 1.0
# While a request's answer is awaited, the stop is looked at this often: a SIGTERM during a
# slow CreateTopics ends the wait at once, not at the admin's timeout.
STOP_SLICE_S = 0.1
# Between looks at the metadata while new topics propagate: 10 ms after the first, doubling up
# to 50 ms. A topic is often listed a few ms after CreateTopics returns, and every worker's
# first output waits for this; a slow one is not asked for the whole metadata more than 20
# times a second.
VISIBLE_FIRST_POLL_S = 0.01
VISIBLE_POLL_S = 0.05
# A new client's first metadata request waits out librdkafka's connection suppression
# (reconnect.backoff.ms / 2: 50 ms by default) although its bootstrap connection is up in a
# millisecond; an admin client asks at once, on every worker's way to its first output. Under
# the user's client_config, which may set it back. (Backoff still doubles per failed attempt.)
FIRST_REQUEST: dict[str, Any] = {"reconnect.backoff.ms": 10}
_clock = time.monotonic  # module attributes, so a test can stand in for them
_sleep = time.sleep


class KafkaAdmin:
    """``AdminPort`` on confluent-kafka's AdminClient."""

    def __init__(self, settings: Settings, timeout_s: float = 15.0) -> None:
        self._settings = settings
        self._timeout = timeout_s
        self._all_down_since: float | None = None
        self._last_error: str | None = None
        self._refused: BrokerUnavailableError | None = None  # a login or handshake refused
        # Set by the caller (``Pipeline.ensure_topics``): once it says True, a wait for an
        # answer (or for the brokers) ends within a slice with ``TopicsStopped``; a request is
        # still sent, and an answer that comes within the first slice taken.
        self.stopping: Callable[[], bool] | None = None
        conf = FIRST_REQUEST | kconfig.admin(settings) | {"error_cb": self._on_error}
        self._admin = kconfig.create(AdminClient, conf, "admin")

    @property
    def ensure_bound_s(self) -> float:
        """The longest ``create`` / ``ensure`` takes: a metadata read, the request, and the
        wait for the topics to be visible (with its last read), each within the timeout."""
        return 4 * (self._timeout + METADATA_SLICE_S)

    def topics(self) -> dict[str, TopicInfo]:
        meta = self._metadata()
        return {
            name: TopicInfo(name, len(t.partitions))
            for name, t in meta.topics.items()
            if not name.startswith("__")
        }

    def create(
        self,
        names: Sequence[str | TopicSpec],
        partitions: int | None = None,
        config: dict[str, str] | None = None,
    ) -> list[str]:
        """Create the topics that do not exist yet, in one request, and wait for them together;
        returns the ones created."""
        specs = self._shapes(names, partitions, config)
        existing = self.topics()
        missing = [n for n in specs if n not in existing]
        if not missing:
            return []
        replicas = self._settings.topic_replication
        new = [NewTopic(n, specs[n][0], replicas, config=specs[n][1]) for n in missing]
        futures = self._admin.create_topics(new, operation_timeout=self._timeout)
        for name, future in futures.items():
            try:
                self._result(future, f"create topic {name}")
            except KafkaException as exc:
                if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":  # a racing worker made it
                    raise wrap(exc, f"create topic {name}") from None
        self._await_visible(missing)  # returns once they are usable, not merely accepted
        log.info(
            "created topics %s, replication %d",
            ", ".join(f"{n} ({specs[n][0]} partitions)" for n in missing),
            replicas,
        )
        return missing

    def _result(self, future: Any, what: str) -> None:
        """Wait for an admin future, within the timeout, in slices: a stop ends the wait
        (``TopicsStopped``); a request left unanswered fails with one clear line. The request
        itself is not withdrawn (the client cannot), but nobody waits for it."""
        deadline = _clock() + self._timeout
        while True:
            left = deadline - _clock()
            try:
                future.result(timeout=max(min(STOP_SLICE_S, left), 0.0))
            except concurrent.futures.TimeoutError:
                if _clock() >= deadline:
                    raise KafkaError(f"{what}: no answer within {self._timeout:g}s") from None
                self._check_stop()  # after a slice: a quick answer is taken, a slow one not
            else:
                return

    def _check_stop(self) -> None:
        stopping = self.stopping
        if stopping is not None and stopping():
            raise TopicsStopped

    def _shapes(
        self,
        names: Sequence[str | TopicSpec],
        partitions: int | None,
        config: dict[str, str] | None,
    ) -> dict[str, tuple[int, dict[str, str]]]:
        """(partitions, configs) by topic name, in the order given (the first of a name wins)."""
        defaults = self._settings.topic_config()
        shared = (partitions or self._settings.topic_partitions, defaults | (config or {}))
        shapes: dict[str, tuple[int, dict[str, str]]] = {}
        for item in names:
            if isinstance(item, TopicSpec):
                count = item.partitions or self._settings.topic_partitions
                shapes.setdefault(item.name, (count, defaults | dict(item.config)))
            else:
                shapes.setdefault(item, shared)
        return shapes

    def _await_visible(self, names: list[str]) -> None:
        """Wait until every topic of ``names`` is in the metadata with a leader for each of its
        partitions. CreateTopics returns once the controller has them; the brokers learn of
        them a moment later (longer on a loaded machine), and a Publisher or a consumer asking
        in between is told the topic does not exist. Bounded by the admin's timeout; on
        several brokers it is the answering broker's view (the others follow within ms)."""
        deadline, pause = _clock() + self._timeout, VISIBLE_FIRST_POLL_S
        while True:
            topics = self._metadata().topics
            pending = [n for n in names if not usable(topics.get(n))]
            if not pending:
                return
            self._check_stop()
            if _clock() >= deadline:
                raise KafkaError(
                    f"topics created but not in the cluster's metadata after "
                    f"{self._timeout:.0f}s: {', '.join(pending)}"
                )
            _sleep(pause)
            pause = min(2 * pause, VISIBLE_POLL_S)

    def _metadata(self) -> Any:
        """Cluster metadata, asked for in short slices so that the error callback (and the
        log lines of librdkafka, see ``pipeline.kafka.config``) are served in between.

        Gives up with BrokerUnavailableError after ``timeout_s``, or once every broker has
        been down for ``ALL_DOWN_FOR_S`` (a refused connection is known at once); at once
        with AuthenticationError / TLSError when a broker refuses our login or handshake."""
        deadline = _clock() + self._timeout
        while True:
            try:
                left = max(min(METADATA_SLICE_S, deadline - _clock()), 0.1)
                meta = self._admin.list_topics(timeout=left)
            except KafkaException as exc:
                failure = exc.args[0].str()
            else:
                self._all_down_since = self._last_error = self._refused = None
                return meta
            finally:
                self._admin.poll(0)
            if self._refused is not None:  # no point waiting: every retry is refused alike
                raise self._refused
            self._check_stop()  # before the next slice: a stop ends the wait for the brokers
            now = _clock()
            down = self._all_down_since is not None and now - self._all_down_since >= ALL_DOWN_FOR_S
            if down or now >= deadline:
                reason = self._last_error or failure
                raise BrokerUnavailableError(
                    f"cannot reach Kafka at {self._settings.bootstrap_servers}: {reason}"
                )

    def _on_error(self, err: Any) -> None:
        # Served by poll() in _metadata, on this thread. The per-connection errors are what a
        # user can act on ("Connection refused", "Name or service not known"), more than the
        # "Failed to get metadata" that list_topics raises.
        if err.code() == CKafkaError._ALL_BROKERS_DOWN:
            if self._all_down_since is None:
                self._all_down_since = _clock()
            return
        self._last_error = err.str()
        refused = refusal(err, self._settings)
        if refused is not None:  # _metadata raises it: one clear line, not a warning too
            self._refused = refused
        elif err.code() not in (CKafkaError._TRANSPORT, CKafkaError._RESOLVE):
            # Not a plain "cannot connect" (which the final error says): a non-Kafka listener,
            # an authentication failure...
            kconfig.CLIENT_ERRORS_LOG.warning("admin client: %s", err)

    def ensure(self, names: Sequence[str | TopicSpec]) -> list[str]:
        """Create missing topics if allowed, else raise one error naming every missing one."""
        if self._settings.create_topics:
            return self.create(names)
        wanted = {n.name if isinstance(n, TopicSpec) else n for n in names}
        missing = sorted(wanted - set(self.topics()))
        if missing:
            raise TopicNotFoundError(
                f"topics do not exist and create_topics is off: {', '.join(missing)} "
                "(create them with `pipeline topics create`)"
            )
        return []

    def delete(self, names: list[str]) -> None:
        futures = self._admin.delete_topics(names, operation_timeout=self._timeout)
        for name, future in futures.items():
            try:
                self._result(future, f"delete topic {name}")
            except KafkaException as exc:
                raise wrap(exc, f"delete topic {name}") from None


def usable(topic: Any) -> bool:
    """A topic's metadata (None: not listed) shows it usable: no error, every partition led."""
    if topic is None or topic.error is not None or not topic.partitions:
        return False
    return all(p.leader >= 0 and p.error is None for p in topic.partitions.values())


class LagMonitor:
    """Committed offsets and lag of consumer groups, for progress views and tests (``LagPort``).

    One long-lived client reads high watermarks; committed offsets come from the group
    coordinator through the AdminClient. Nothing here joins a group.
    """

    def __init__(self, settings: Settings, timeout_s: float = 10.0) -> None:
        self._timeout = timeout_s
        self._settings = settings
        self._refused: BrokerUnavailableError | None = None
        self._admin = AdminClient(kconfig.admin(settings))
        self._consumer = kconfig.create(
            Consumer,
            kconfig.common(settings)
            | {
                "group.id": "pipeline-lag-monitor",
                "enable.auto.commit": False,
                "error_cb": self._on_error,
            },
            "lag monitor consumer",
        )

    def lag(self, group: str, topics: list[str]) -> tuple[int, int]:
        """(records committed since the start of the log, records not yet committed)."""
        done = lag = 0
        for low, position, high in self._positions(group, topics).values():
            done += max(0, position - low)
            lag += max(0, high - position)
        return done, lag

    def partition_lag(self, group: str, topics: list[str]) -> dict[TopicPartition, int]:
        return {
            tp: max(0, high - position)
            for tp, (_, position, high) in self._positions(group, topics).items()
        }

    def _positions(
        self, group: str, topics: list[str]
    ) -> dict[TopicPartition, tuple[int, int, int]]:
        """(low watermark, committed position or low, high watermark) per partition."""
        try:
            meta = self._consumer.list_topics(timeout=self._timeout)
            parts = [
                CTopicPartition(t, p)
                for t in topics
                if t in meta.topics
                for p in meta.topics[t].partitions
            ]
            request = [ConsumerGroupTopicPartitions(group, parts)]
            result = self._admin.list_consumer_group_offsets(request)[group].result(self._timeout)
            out = {}
            for tp in result.topic_partitions:
                low, high = self._consumer.get_watermark_offsets(
                    CTopicPartition(tp.topic, tp.partition), timeout=self._timeout, cached=False
                )
                out[(tp.topic, tp.partition)] = (low, tp.offset if tp.offset >= 0 else low, high)
            return out
        except KafkaException as exc:
            self._consumer.poll(0)  # serves the error callback: was the connection refused?
            raise self._refused or KafkaError(f"lag of group {group}: {exc}") from None
        finally:
            # Neither client is otherwise polled: serve their queued log lines and errors.
            self._admin.poll(0)
            self._consumer.poll(0)

    def _on_error(self, err: Any) -> None:
        self._refused = refusal(err, self._settings) or self._refused

    def close(self) -> None:
        self._consumer.close()
