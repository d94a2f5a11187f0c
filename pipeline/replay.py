"""Replaying a dead-letter topic: the steps of ``pipeline dlq replay``.

1. Read the topic as it stands at the start (``read_snapshot``): dead letters added meanwhile,
   including any a replayed event causes, are not read, so a replay cannot loop.
2. Keep the records the ``ReplayFilter`` matches, up to ``limit``; count the others as skipped.
3. Send each back to the stage that failed it, with its original key and value and rewritten
   headers (``pipeline.dlq.replay_headers``), paced by a ``RateLimiter``: into the stage's
   first retry topic, due at once with no attempts counted, which only that stage's group reads;
   a stage without retry topics gets it on the topic in ``dlq-original-topic``, where every
   group reading that topic sees it again.
4. Wait for every acknowledgement (idempotent producer, ``acks=all``); count what failed.

The dead letters are left in place; ``pipeline dlq purge`` removes them. Every client comes from
the transport given (``pipeline.transport``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from typing import Any

from pipeline.dlq import (
    Failure,
    Header,
    RateLimiter,
    ReplayFilter,
    ReplayTally,
    StoredRecord,
    first_retry_topic,
    retry_entry_headers,
)
from pipeline.dlq import replay_headers as rewrite
from pipeline.errors import KafkaError
from pipeline.ports import ProducerPort
from pipeline.transport import Transport

Report = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class ReplayRequest:
    topic: str  # physical name of the dead-letter topic
    chosen: ReplayFilter
    limit: int | None = None
    rate: float | None = None  # records per second
    dry_run: bool = False
    ack_timeout_s: float = 60.0


def replay(transport: Transport, request: ReplayRequest, say: Report, warn: Report) -> ReplayTally:
    """Run the steps above; ``say`` gets dry-run lines, ``warn`` every failure."""
    run = _Replay(transport, request, say, warn)
    with closing(transport.topic_log().read(request.topic)) as records:
        for record in records:
            if request.limit is not None and run.tally.matched >= request.limit:
                break
            if request.chosen.matches(record):
                run.send(record)
            else:
                run.tally.skipped += 1
    return run.finish()


class _Replay:
    def __init__(self, transport: Transport, request: ReplayRequest, say: Report, warn: Report):
        self.tally = ReplayTally()
        self._request = request
        self._say, self._warn = say, warn
        self._existing = set(transport.admin().topics())
        self._limiter = RateLimiter(request.rate) if request.rate else None
        self._sink = None
        if not request.dry_run:
            self._sink = Republisher(transport.producer("pipeline-dlq-replay"))

    def send(self, record: StoredRecord) -> None:
        self.tally.matched += 1
        failure = Failure.of(record)
        target = failure.original_topic
        if target is None or target not in self._existing:
            # Producing to a missing topic would only fail after message.timeout.ms.
            self.tally.failed += 1
            why = "it has no dlq-original-topic header" if target is None else f"{target} is gone"
            self._warn(f"{record.coordinates}: cannot replay, {why}")
        elif self._sink is None:
            entry = first_retry_topic(failure.group, self._existing) or target
            self._say(f"would replay {record.coordinates} -> {entry}")
        else:
            self._send(record, failure, self._sink)

    def _send(self, record: StoredRecord, failure: Failure, sink: Republisher) -> None:
        if self._limiter is not None:
            sink.wait(self._limiter.reserve())
        now = _now_ms()
        headers = rewrite(record, now)
        target = first_retry_topic(failure.group, self._existing)
        if target is not None:
            headers += retry_entry_headers(failure, now)
        else:
            target = failure.original_topic or ""
        try:
            sink.send(target, record.key, record.value, headers)
        except KafkaError as exc:  # refused locally (e.g. too large): the others still go
            self.tally.failed += 1
            self._warn(f"{record.coordinates}: {exc}")

    def finish(self) -> ReplayTally:
        if self._sink is None:
            return self.tally
        timeout = self._request.ack_timeout_s
        unacknowledged = self._sink.finish(timeout)
        self.tally.replayed = self._sink.acked
        self.tally.failed += len(self._sink.errors) + unacknowledged
        for message in self._sink.errors[:5]:
            self._warn(message)
        if len(self._sink.errors) > 5:
            self._warn(f"... and {len(self._sink.errors) - 5} more delivery failures")
        if unacknowledged:
            self._warn(f"{unacknowledged} record(s) unacknowledged after {timeout:.0f}s")
        return self.tally


class Republisher:
    """Produces records and counts the broker's answers (idempotent producer, ``acks=all``).

    ``wait`` serves acknowledgements while pacing; ``finish`` waits for every record in flight.
    """

    def __init__(self, producer: ProducerPort) -> None:
        self._producer = producer
        self.acked = 0
        self.errors: list[str] = []

    def send(
        self, topic: str, key: bytes | None, value: bytes | None, headers: list[Header]
    ) -> None:
        self._producer.produce(topic, value, key, headers, self._delivered)

    def wait(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self._producer.poll(left)

    def finish(self, timeout_s: float) -> int:
        """Wait for every acknowledgement; returns how many records are still unacknowledged."""
        return self._producer.flush(timeout_s)

    def _delivered(self, err: Any, msg: Any) -> None:
        if err is None:
            self.acked += 1
        else:
            self.errors.append(str(self._producer.delivery_error(err, msg.topic())))


def _now_ms() -> int:
    return int(time.time() * 1000)
