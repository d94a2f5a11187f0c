"""The load: which events are published (a pure, seeded plan) and the thread that sends them.

Every event has a unique id ``e<index>`` (payload field ``eid`` and header ``chaos-id``), a key
out of ``keys`` and, per key, a sequence number 0, 1, 2, ... in publishing order. Keyed records
of one key land on one partition in that order (idempotent producer). A share of the events
are poison: raw bytes that are not our Avro, sent by a plain confluent producer with the same
``chaos-id`` header and a key from the same key space, so each poison record sits on a partition
between good ones.
"""

from __future__ import annotations

import enum
import hashlib
import logging
import random
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Producer

from chaos.stages import WORK, Work
from pipeline.config import Settings
from pipeline.publisher import Delivered, Publisher

log = logging.getLogger("chaos.load")
ID_HEADER = "chaos-id"
_MAGIC = b"\xc3\x01"


class Poison(enum.Enum):
    BAD_MAGIC = "bad_magic"  # not single-object encoding at all
    UNKNOWN_SCHEMA = "unknown_schema"  # the magic, then a fingerprint no schema has
    TRUNCATED = "truncated"  # a real fingerprint, then a body cut short


# Unknown fingerprints are rarer: each one makes a reader look the schema topic through.
_POISON_WEIGHTS = {Poison.BAD_MAGIC: 45, Poison.TRUNCATED: 45, Poison.UNKNOWN_SCHEMA: 10}


@dataclass(frozen=True, slots=True)
class PlannedEvent:
    eid: str
    key: str
    seq: int  # -1 for poison
    poison: Poison | None = None


def plan_load(events: int, keys: int, poison_ratio: float, seed: int) -> list[PlannedEvent]:
    """``events`` events in publishing order; ``round(events * poison_ratio)`` are poison."""
    rng = random.Random(seed)
    poison_at = set(rng.sample(range(events), round(events * poison_ratio)))
    kinds, weights = zip(*_POISON_WEIGHTS.items(), strict=True)
    next_seq: dict[str, int] = {}
    plan = []
    for index in range(events):
        key = f"k{rng.randrange(keys):04d}"
        eid = f"e{index:07d}"
        if index in poison_at:
            plan.append(PlannedEvent(eid, key, -1, rng.choices(kinds, weights)[0]))
            continue
        seq = next_seq.get(key, 0)
        next_seq[key] = seq + 1
        plan.append(PlannedEvent(eid, key, seq))
    return plan


def poison_bytes(kind: Poison, eid: str, fingerprint: bytes) -> bytes:
    """Bytes our codec must refuse; ``fingerprint`` is the real one of ``chaos.Work``."""
    if kind is Poison.BAD_MAGIC:
        return b"not avro: " + eid.encode()
    if kind is Poison.UNKNOWN_SCHEMA:
        return _MAGIC + hashlib.sha256(eid.encode()).digest()[:8] + b"\x02x"
    # The body promises an 8-character string (zigzag varint 16) and ends.
    return _MAGIC + fingerprint + b"\x10"


@dataclass(frozen=True, slots=True)
class Acked:
    eid: str
    partition: int
    offset: int


class Loader(threading.Thread):
    """Publishes the plan at ``rate`` events per second, then waits for every acknowledgement.

    ``acked`` holds what the broker acknowledged (good and poison); a record that could not be
    delivered is in ``failed`` and does not count as published.
    """

    def __init__(
        self, settings: Settings, plan: Sequence[PlannedEvent], rate: float, fingerprint: bytes
    ) -> None:
        super().__init__(name="chaos-load", daemon=True)
        self._settings = settings
        self._plan = plan
        self._rate = rate
        self._fingerprint = fingerprint
        self.acked: list[Acked] = []
        self.failed: list[tuple[str, str]] = []
        self.sent = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._publish_all()
        except BaseException as exc:  # reported by the orchestrator
            log.exception("load publisher failed")
            self.error = exc

    def _publish_all(self) -> None:
        raw = Producer(
            {
                "bootstrap.servers": self._settings.bootstrap_servers,
                "enable.idempotence": True,
                "linger.ms": 5,
                "log_level": 2,
            }
        )
        topic = self._settings.topic(WORK.name)
        started = time.monotonic()
        with Publisher(self._settings, check_topics=False) as publisher:
            for index, event in enumerate(self._plan):
                if index % 50 == 0:
                    _pace(started + index / self._rate)
                    raw.poll(0)
                if event.poison is None:
                    self._publish(publisher, event)
                else:
                    value = poison_bytes(event.poison, event.eid, self._fingerprint)
                    _produce_raw(raw, topic, event, value, self._raw_ack(event))
                self.sent = index + 1
            publisher.flush(600)
        if raw.flush(600):
            raise RuntimeError("poison records still unacknowledged after 600 s")

    def _publish(self, publisher: Publisher, event: PlannedEvent) -> None:
        def report(result: Any) -> None:
            if isinstance(result, Delivered):
                self.acked.append(Acked(event.eid, result.partition, result.offset))
            else:
                self.failed.append((event.eid, str(result)))

        work = Work(eid=event.eid, key=event.key, seq=event.seq)
        publisher.publish(
            WORK, work, headers={ID_HEADER: event.eid}, wait=False, on_delivery=report
        )

    def _raw_ack(self, event: PlannedEvent) -> Any:
        def report(err: Any, msg: Any) -> None:
            if err is None:
                self.acked.append(Acked(event.eid, msg.partition(), msg.offset()))
            else:
                self.failed.append((event.eid, str(err)))

        return report


def _produce_raw(raw: Producer, topic: str, event: PlannedEvent, value: bytes, ack: Any) -> None:
    headers: list[tuple[str, str | bytes | None]] = [(ID_HEADER, event.eid.encode())]
    while True:
        try:
            raw.produce(topic, value, event.key.encode(), headers=headers, on_delivery=ack)
            return
        except BufferError:  # the local queue is full (the broker is away): drain a little
            raw.poll(0.05)


def _pace(due: float) -> None:
    """Hold the publishing rate: this is the load's schedule, not a wait for a condition."""
    delay = due - time.monotonic()
    if delay > 0:
        time.sleep(delay)
